"""Shared fixtures: the Docker engine (real, never mocked) and the packaged baseline."""

from __future__ import annotations

import os

import pytest


def _docker_client():
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
        return client, None
    except Exception as e:  # any failure to reach an engine means "no engine here"
        return None, f"{e.__class__.__name__}: {e}"


@pytest.fixture(scope="session")
def docker_client():
    """A client of a Docker engine that answers. Outside CI a missing engine skips the test
    with the reason; under CI=true it fails, since CI must run the Docker tests."""
    client, why = _docker_client()
    if client is None:
        message = f"no Docker engine answers ({why}); `make test` starts one when run as root"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    yield client
    client.close()


@pytest.fixture(scope="session")
def host_image(docker_client):
    from sandbox.images.host import build_host_image

    return build_host_image(docker_client)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "docker_client" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory):
    """The default corpus, built once per test session by prepare.py itself."""
    import subprocess
    import sys

    from agent.paths import baseline_dir

    out = tmp_path_factory.mktemp("data") / "pystdlib"
    subprocess.run([sys.executable, str(baseline_dir() / "prepare.py"), "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    return out
