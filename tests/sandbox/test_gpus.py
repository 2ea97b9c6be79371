"""GPUs for Docker trials without the NVIDIA toolkit: device nodes, driver libraries and the
GPU's UUID, from a fake driver root (real device nodes made with mknod, a real Docker engine)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sandbox.gpus import GPUError, device_passthrough, list_gpus

INFO = """Model: \t\t NVIDIA H100 80GB HBM3
IRQ:   \t\t 0
GPU UUID: \t GPU-{uuid}
Video BIOS: \t 96.00.99.00.01
Bus Type: \t PCIe
Device Minor: \t {minor}
"""


def fake_driver(root: Path, gpus: list[tuple[str, int, str]], nodes: bool = True) -> Path:
    """`gpus`: (bus id, device minor, uuid) as /proc/driver/nvidia/gpus shows them."""
    for bus, minor, uuid in gpus:
        folder = root / "proc/driver/nvidia/gpus" / bus
        folder.mkdir(parents=True)
        (folder / "information").write_text(INFO.format(uuid=uuid, minor=minor))
    dev = root / "dev"
    dev.mkdir()
    if nodes:
        for name in ["nvidiactl", "nvidia-uvm", *(f"nvidia{m}" for _, m, _ in gpus)]:
            os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    lib = root / "usr/lib/x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (lib / "libcuda.so.580.65.06").write_text("fake libcuda\n")
    (lib / "libcuda.so.1").symlink_to("libcuda.so.580.65.06")
    (lib / "libnvidia-ml.so.1").write_text("fake nvml\n")
    return root


def test_gpus_are_indexed_in_bus_order_with_their_minor_and_uuid(tmp_path):
    root = fake_driver(tmp_path, [("0000:c1:00.0", 0, "b"), ("0000:18:00.0", 3, "a")])
    assert [(g.index, g.minor, g.uuid) for g in list_gpus(str(root))] == [
        (0, 3, "GPU-a"), (1, 0, "GPU-b")]


def test_passthrough_names_nodes_libraries_and_uuid(tmp_path):
    root = fake_driver(tmp_path, [("0000:18:00.0", 3, "a"), ("0000:c1:00.0", 0, "b")])
    p = device_passthrough((1,), root=str(root))
    targets = [d.split(":")[1] for d in p.devices]
    assert targets == ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0"]
    assert p.env == {"CUDA_VISIBLE_DEVICES": "GPU-b"}
    mounted = dict((t, s) for s, t in p.mounts)
    assert mounted["/usr/local/nvidia/lib64/libcuda.so.1"].endswith("libcuda.so.580.65.06")
    assert "/usr/local/nvidia/lib64/libnvidia-ml.so.1" in mounted


def test_a_gpu_the_driver_does_not_list_is_a_clear_error(tmp_path):
    root = fake_driver(tmp_path, [("0000:18:00.0", 0, "a")])
    with pytest.raises(GPUError, match=r"GPU 2 not found \(the driver lists: 0\)"):
        device_passthrough((2,), root=str(root))


def test_a_missing_device_node_is_a_clear_error(tmp_path):
    root = fake_driver(tmp_path, [("0000:18:00.0", 0, "a")], nodes=False)
    with pytest.raises(GPUError, match="no device node .*nvidia0"):
        device_passthrough((0,), root=str(root))


def test_the_container_gets_the_nodes_and_libraries(docker_client, host_image, tmp_path):
    """Through a real engine, the way DockerSandbox passes them to the host image: the device
    nodes appear as character devices the trial user can open, a driver library outside the
    host's /usr is mounted at its own path and put on LD_LIBRARY_PATH, and
    CUDA_VISIBLE_DEVICES holds the UUID."""
    import sys

    from docker.types import Mount

    from sandbox.images.host import host_mounts

    root = fake_driver(tmp_path / "root", [("0000:18:00.0", 2, "abc")])
    p = device_passthrough((0,), root=str(root), libs_in_place=True)
    lib = root / "usr/lib/x86_64-linux-gnu"
    assert p.env == {"CUDA_VISIBLE_DEVICES": "GPU-abc", "LD_LIBRARY_PATH": str(lib)}
    mounts = [m.as_docker() for m in host_mounts()]
    mounts += [Mount(t, s, type="bind", read_only=True) for s, t in p.mounts]
    script = ("import os, stat\n"
              "for n in ('nvidiactl', 'nvidia-uvm', 'nvidia2'):\n"
              "    st = os.stat('/dev/' + n)\n"
              "    open('/dev/' + n, 'rb').close()\n"
              "    print(n, stat.S_ISCHR(st.st_mode))\n"
              "lib = os.environ['LD_LIBRARY_PATH']\n"
              "print(open(lib + '/libcuda.so.1').read().strip())\n"
              "print(os.environ['CUDA_VISIBLE_DEVICES'])\n")
    container = docker_client.containers.create(
        host_image, [sys.executable, "-c", script], mounts=mounts, devices=p.devices,
        environment=p.env, user="65534:65534", network_disabled=True, read_only=True,
        cap_drop=["ALL"], security_opt=["no-new-privileges"])
    try:
        container.start()
        code = container.wait(timeout=60)["StatusCode"]
        out = container.logs().decode()
    finally:
        container.remove(force=True)
    assert code == 0, out
    assert out.split() == ["nvidiactl", "True", "nvidia-uvm", "True", "nvidia2", "True",
                           "fake", "libcuda", "GPU-abc"], out
