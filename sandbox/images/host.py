"""The offline host image: an empty root file system plus read-only mounts of the host.

Where no registry can be reached (CI, air-gapped clusters) no base image can be pulled, so
`autoresearch sandbox build --from-host` imports a root file system that holds nothing but
mount points, a passwd entry for the unprivileged trial user and the merged-/usr symlinks.
At run time the host's /usr, the dynamic linker cache and the Python environment that runs
the orchestrator are bind-mounted read-only at their own paths, so the container runs the very
interpreter and packages (torch included) that the host has, and can change none of them.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

HOST_IMAGE = "autoresearch-sandbox/host:1"
LABEL = "autoresearch-sandbox"
TRIAL_UID = 65534  # "nobody": owns nothing on the host
TRIAL_GID = 65534

# Folders the image provides as mount points for the trial (see sandbox.docker).
MOUNT_POINTS = ("src", "data", "out", "tmp", "proc", "sys", "dev", "etc", "home")
# Debian and most current distributions merge /bin, /lib ... into /usr.
USR_LINKS = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}

_PASSWD = (
    "root:x:0:0:root:/root:/usr/sbin/nologin\n"
    f"trial:x:{TRIAL_UID}:{TRIAL_GID}::/tmp:/usr/sbin/nologin\n"
)
_GROUP = f"root:x:0:\ntrial:x:{TRIAL_GID}:\n"


def rootfs_tar() -> bytes:
    """The image's whole root file system, as an uncompressed tar (a few kB)."""
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in MOUNT_POINTS:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
            if name == "tmp":
                info.mode = 0o1777
            tar.addfile(info)
        for name, target in USR_LINKS.items():
            if Path("/" + name).is_symlink() or not Path("/" + name).exists():
                info = tarfile.TarInfo(name)
                info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, now
                tar.addfile(info)
        for name, text in (("etc/passwd", _PASSWD), ("etc/group", _GROUP)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, now
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_host_image(client, tag: str = HOST_IMAGE, force: bool = False) -> str:
    """Import the empty root file system as `tag` unless it already exists. Returns the tag."""
    import docker.errors

    if not force:
        try:
            client.images.get(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
    repository, _, version = tag.rpartition(":")
    client.api.import_image_from_data(
        rootfs_tar(),
        repository=repository,
        tag=version,
        changes=[f"LABEL {LABEL}=host-image", f"USER {TRIAL_UID}:{TRIAL_GID}"],
    )
    client.images.get(tag)  # raises if the import did not produce the image
    return tag


@dataclass(frozen=True)
class HostMount:
    """One read-only bind mount of a host path at the same path in the container."""

    path: str

    def as_docker(self):
        from docker.types import Mount

        return Mount(target=self.path, source=self.path, type="bind", read_only=True)


def python_roots() -> list[str]:
    """Folders that hold the running interpreter and its packages (venv and base install)."""
    roots: list[str] = []
    for p in (sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))):
        real = os.path.realpath(p)
        if os.path.basename(real) == "bin":
            real = os.path.dirname(real)
        if real.startswith("/usr/") or real == "/usr":
            continue
        if not any(real == r or real.startswith(r + "/") for r in roots):
            roots = [r for r in roots if not r.startswith(real + "/")] + [real]
    return roots


_ROOTS: dict[str, list[str]] = {}


def interpreter_roots(python: str) -> list[str]:
    """The folders `python` (any interpreter, a venv's included) runs from, read from the file
    system: the interpreter may be a training folder's, so it is never run on the host. Its
    own folder and the folder its links lead to; for a venv (pyvenv.cfg beside bin/), the
    base interpreter's folder that `home` names. A folder called bin stands for its parent."""
    if python == sys.executable:
        return python_roots() + [os.path.dirname(python)]
    if python not in _ROOTS:
        found = [os.path.dirname(os.path.abspath(python)),
                 os.path.dirname(os.path.realpath(python))]
        for prefix in {os.path.dirname(f) for f in found}:
            cfg = os.path.join(prefix, "pyvenv.cfg")
            if os.path.isfile(cfg):
                for line in Path(cfg).read_text(encoding="utf-8", errors="replace").splitlines():
                    key, _, value = line.partition("=")
                    if key.strip() == "home" and value.strip():
                        home = value.strip()
                        found += [home, os.path.dirname(os.path.realpath(
                            os.path.join(home, os.path.basename(python))))]
        roots: list[str] = []
        for p in found:
            real = os.path.realpath(p)
            if os.path.basename(real) == "bin":
                real = os.path.dirname(real)
            if real not in roots:
                roots.append(real)
        _ROOTS[python] = roots
    return _ROOTS[python]


def host_mounts() -> list[HostMount]:
    """Everything the container needs from the host to run this Python, read-only."""
    paths = ["/usr"]
    for name in ("lib", "lib64", "bin", "sbin"):
        p = Path("/" + name)
        if p.exists() and not p.is_symlink():  # a distribution without merged /usr
            paths.append(str(p))
    if Path("/etc/ld.so.cache").exists():
        paths.append("/etc/ld.so.cache")
    # The venv's own python is a symlink into the base install: mount both, at their own paths.
    venv_bin = os.path.dirname(sys.executable)
    paths += [r for r in python_roots() if r not in paths]
    if not any(venv_bin == p or venv_bin.startswith(p + "/") for p in paths):
        paths.append(venv_bin)
    return [HostMount(p) for p in paths]
