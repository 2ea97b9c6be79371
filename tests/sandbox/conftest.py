"""Fixtures of the sandbox tests: each backend, the Docker one against a real engine."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["local", "docker"])
def backend(request):
    if request.param == "local":
        from sandbox.local import LocalSandbox

        return LocalSandbox()
    client = request.getfixturevalue("docker_client")
    request.getfixturevalue("host_image")
    from sandbox.docker import DockerSandbox

    return DockerSandbox(client=client)
