"""NVIDIA GPUs for Docker trials, with or without the NVIDIA container toolkit.

With the toolkit, Docker's `DeviceRequest(device_ids=...)` does everything. Without it (or
without a registry, on the offline host image) we do by plain Docker means what the toolkit
does: pass the GPU's device node and the driver's control nodes into the container, bind-mount
the driver's user-space libraries and `nvidia-smi` read-only, and name the GPU by its UUID in
`CUDA_VISIBLE_DEVICES`, which is right whether or not the container can see the other GPUs.

Everything here reads files under a root folder (`/` by default) so that tests can give it a
fake one: `dev/nvidia*`, `proc/driver/nvidia/gpus/<bus>/information`, the driver libraries.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# The driver's control nodes every CUDA process opens besides its GPU's own /dev/nvidiaN.
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
# The driver's user-space libraries a CUDA program loads (what the toolkit mounts for the
# "compute" and "utility" capabilities).
DRIVER_LIBS = ("libcuda.so*", "libnvidia-ml.so*", "libnvidia-ptxjitcompiler.so*",
               "libnvidia-nvvm.so*", "libnvidia-gpucomp.so*", "libcudadebugger.so*")
# Where the GPU image (pytorch/pytorch) looks for the driver: its LD_LIBRARY_PATH has it.
CONTAINER_LIB_DIR = "/usr/local/nvidia/lib64"


class GPUError(RuntimeError):
    """A GPU that was asked for cannot be given to the trial; the message says why."""


@dataclass(frozen=True)
class GPU:
    index: int  # nvidia-smi's index: the order of PCI bus ids
    minor: int  # N of /dev/nvidiaN
    uuid: str
    bus: str


def list_gpus(root: str = "/") -> list[GPU]:
    """The driver's GPUs, from /proc/driver/nvidia/gpus (no nvidia-smi needed)."""
    found = []
    for info in sorted(glob.glob(os.path.join(root, "proc/driver/nvidia/gpus/*/information"))):
        fields = {}
        for line in Path(info).read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        try:
            minor = int(fields["Device Minor"])
        except (KeyError, ValueError):
            continue
        bus = Path(info).parent.name
        found.append((bus.lower(), minor, fields.get("GPU UUID", "")))
    return [GPU(index=i, minor=minor, uuid=uuid, bus=bus)
            for i, (bus, minor, uuid) in enumerate(sorted(found))]


def toolkit_available(client) -> tuple[bool, str]:
    """(True, why) when Docker can honour a DeviceRequest for NVIDIA GPUs."""
    try:
        runtimes = client.info().get("Runtimes") or {}
    except Exception:  # an engine that cannot say: treat as no toolkit
        runtimes = {}
    if "nvidia" in runtimes:
        return True, "the nvidia runtime is registered with Docker"
    hook = shutil.which("nvidia-container-runtime-hook")
    if hook:
        return True, f"the NVIDIA container toolkit's hook is installed ({hook})"
    return False, ("no NVIDIA container toolkit (no nvidia runtime, "
                   "no nvidia-container-runtime-hook)")


def driver_libraries(root: str = "/") -> list[Path]:
    """The driver's libraries: found next to libcuda.so.1 (the dynamic linker's cache first,
    then the usual folders). Symlinks are kept as names; their targets are resolved later."""
    folder = _libcuda_folder(root)
    if folder is None:
        return []
    libs: list[Path] = []
    for pattern in DRIVER_LIBS:
        libs += sorted(Path(p) for p in glob.glob(str(folder / pattern)))
    return libs


def _libcuda_folder(root: str) -> Path | None:
    if root == "/":
        try:
            out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10,
                                 env={"PATH": "/usr/sbin:/sbin:/usr/bin:/bin"}).stdout
            for line in out.splitlines():
                if line.strip().startswith("libcuda.so.1 ") and "=>" in line:
                    return Path(line.split("=>", 1)[1].strip()).parent
        except (OSError, subprocess.SubprocessError):
            pass
    for folder in ("usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib64",
                   "usr/lib", "usr/local/nvidia/lib64", "lib64"):
        path = Path(root) / folder
        if (path / "libcuda.so.1").exists():
            return path
    return None


@dataclass(frozen=True)
class Passthrough:
    """The Docker options that give one trial its GPUs without the toolkit."""

    devices: list[str]  # "host:container:rwm"
    mounts: list[tuple[str, str]]  # (host file, container path), read-only binds
    env: dict[str, str]


def device_passthrough(gpu_ids: tuple[int, ...], *, root: str = "/",
                       libs_in_place: bool = False) -> Passthrough:
    """Device nodes, driver libraries and nvidia-smi for the GPUs `gpu_ids` (nvidia-smi
    indices). `libs_in_place`: the container already sees the host's /usr (the host image),
    so only libraries outside it are mounted, at their own paths."""
    gpus = {g.index: g for g in list_gpus(root)}
    missing = [i for i in gpu_ids if i not in gpus]
    if missing:
        have = ", ".join(str(i) for i in sorted(gpus)) or "none"
        raise GPUError(f"GPU {', '.join(map(str, missing))} not found (the driver lists: "
                       f"{have}); check --gpus against `nvidia-smi -L`")
    dev = Path(root) / "dev"
    nodes = [f"nvidia{gpus[i].minor}" for i in gpu_ids]
    absent = [n for n in nodes if not (dev / n).exists()]
    if absent:
        raise GPUError(f"no device node {', '.join(str(dev / n) for n in absent)}: is the "
                       "NVIDIA driver loaded?")
    devices = [f"{dev / n}:/dev/{n}:rwm" for n in [*CONTROL_NODES, *nodes] if (dev / n).exists()]
    devices += [f"{p}:/dev/nvidia-caps/{p.name}:rwm"
                for p in sorted((dev / "nvidia-caps").glob("*"))]  # MIG access nodes
    mounts: list[tuple[str, str]] = []
    env = {"CUDA_VISIBLE_DEVICES": ",".join(gpus[i].uuid or str(i) for i in gpu_ids)}
    libs = driver_libraries(root)
    if not libs:
        raise GPUError("the NVIDIA driver's libcuda.so.1 was not found on this host")
    if libs_in_place:
        outside = [p for p in libs if not str(p.resolve()).startswith("/usr/")]
        mounts += [(str(p.resolve()), str(p)) for p in outside]
        if outside:
            env["LD_LIBRARY_PATH"] = str(outside[0].parent)
    else:
        mounts += [(str(p.resolve()), f"{CONTAINER_LIB_DIR}/{p.name}") for p in libs]
        smi = shutil.which("nvidia-smi") if root == "/" else None
        if smi:
            mounts.append((os.path.realpath(smi), "/usr/local/nvidia/bin/nvidia-smi"))
    return Passthrough(devices=devices, mounts=mounts, env=env)


_UVM_TRIED: set[str] = set()


def ensure_uvm(python: str, root: str = "/", modprobe: str | None = None) -> bool:
    """Make /dev/nvidia-uvm exist before an unprivileged trial's first CUDA call: the node
    appears at a machine's first CUDA init, made by the driver's setuid helper
    nvidia-modprobe, which a trial user under no-new-privileges cannot run (its CUDA init then
    fails). So, on a host with the driver (dev/nvidiactl) and no dev/nvidia-uvm yet, run the
    helper as root, else initialise CUDA once as root in a child (`python`: the session's own
    interpreter, never a training folder's; the session never imports torch itself). Tried
    once per process. True when the node exists afterwards."""
    dev = Path(root) / "dev"
    if not (dev / "nvidiactl").exists():
        return False  # no NVIDIA driver here: nothing to make
    if (dev / "nvidia-uvm").exists():
        return True
    if root in _UVM_TRIED:  # tried once in this process: a trial's own error says the rest
        return False
    _UVM_TRIED.add(root)
    modprobe = modprobe or shutil.which("nvidia-modprobe")
    attempts = ([[modprobe, "-u", "-c=0"]] if modprobe else []) + [
        [python, "-I", "-c", "import torch; torch.cuda.init()"]]
    for argv in attempts:
        try:
            subprocess.run(argv, capture_output=True, timeout=120, check=False,
                           env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        except (OSError, subprocess.TimeoutExpired):
            continue
        if (dev / "nvidia-uvm").exists():
            return True
    return False
