"""The offline host image, against a real Docker engine (DESIGN.md, Sandbox)."""

from __future__ import annotations

import sys

from sandbox.images.host import LABEL, TRIAL_UID, host_mounts, rootfs_tar


def run_container(client, image, command, mounts=(), env=None, timeout=300):
    container = client.containers.create(
        image, command, mounts=[m.as_docker() for m in host_mounts()] + list(mounts),
        environment={"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
        working_dir="/src", network_disabled=True, read_only=True, tmpfs={"/tmp": "size=256m"},
        security_opt=["no-new-privileges"], cap_drop=["ALL"], mem_limit="3g",
        memswap_limit="3g", pids_limit=256, labels={LABEL: "test"},
    )
    try:
        container.start()
        status = container.wait(timeout=timeout)
        return status["StatusCode"], container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def test_rootfs_holds_only_mount_points_and_users():
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(rootfs_tar())) as tar:
        files = [m for m in tar.getmembers() if m.isfile()]
    assert sorted(m.name for m in files) == ["etc/group", "etc/passwd"]
    assert sum(m.size for m in files) < 1024


def test_host_image_runs_the_host_python_unprivileged_and_read_only(docker_client, host_image):
    script = (
        "import os, torch\n"
        "print('uid', os.getuid(), 'torch', torch.__version__)\n"
        "for path in ('/usr/evil', '/evil', '" + sys.prefix + "/evil'):\n"
        "    try:\n"
        "        open(path, 'w')\n"
        "        print('wrote', path)\n"
        "    except OSError as e:\n"
        "        print('refused', path, e.errno)\n"
    )
    code, log = run_container(docker_client, host_image, [sys.executable, "-c", script])
    assert code == 0, log
    import torch

    assert f"uid {TRIAL_UID} torch {torch.__version__}" in log
    assert "wrote" not in log and log.count("refused") == 3
    image = docker_client.images.get(host_image)
    assert image.attrs["Size"] < 1_000_000  # the image itself is empty; the host lends the rest
    assert image.labels.get(LABEL) == "host-image"


def test_a_missing_host_image_is_built_and_said(docker_client, host_image):
    """--sandbox docker on an engine without the offline image builds it (a second) instead
    of stopping at trial 0 with "image ... is missing" (issue 28), and the session says so."""
    import pytest

    from sandbox import select_sandbox
    from sandbox.docker import GPU_IMAGE, image_exists

    if image_exists(docker_client, GPU_IMAGE):
        pytest.skip(f"{GPU_IMAGE} exists here: the default image is that one")
    docker_client.images.remove(host_image, force=True)
    assert not image_exists(docker_client, host_image)
    backend, why = select_sandbox("docker")
    assert backend.built and image_exists(docker_client, host_image)
    assert why == f"docker backend, image {host_image} (built just now: the offline host image)"
    backend, why = select_sandbox("docker")  # there now: nothing built, nothing said
    assert not backend.built and why == f"docker backend, image {host_image}"
