"""What a trial cannot do through the Ray executor (issue 21, point 5), against a real local
Ray instance that the executor starts itself: its out/ comes back without following links
(a link to /etc/shadow or /proc/self/environ brings nothing of the target), an entry it cannot
read never turns the trial into a crash, and the instance listens on 127.0.0.1 only with its
temp folder private to the session."""

from __future__ import annotations

import io
import ipaddress
import os
import re
import stat
import tarfile
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.executors.base import TrialJob
from sandbox.base import Limits

ray = pytest.importorskip("ray") if os.environ.get("CI", "").lower() not in (
    "1", "true", "yes") else __import__("ray")

CANARY = "sk-canary-4f1d9e"  # the driver's OPENAI_API_KEY while the instance starts
SUMMARY = 'print("---"); print("val_bpb: 1.500000"); print("training_seconds: 0.1")'


@pytest.fixture(scope="module")
def executor():
    from agent.executors.ray_cluster import RayExecutor

    if ray.is_initialized():  # an instance left by another module would be reused, not started
        ray.shutdown()
    saved = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = CANARY  # the raylet and its workers inherit it
    try:
        ex = RayExecutor("local", [Limits(timeout_s=120, memory="2g")], None, None, 0)
    finally:
        if saved is None:
            os.environ.pop("OPENAI_API_KEY")
        else:
            os.environ["OPENAI_API_KEY"] = saved
    yield ex
    ex.close()
    assert not os.path.exists(ex.temp_dir)  # the instance's files go with it


def run_trial(ex, workdir: Path, body: str):
    """One trial whose train.py runs `body` (with `out` its output folder), then prints a
    summary; its result and its folder as the driver got them."""
    code = ("import os\nout = os.environ['AR_OUT_DIR']\n" + textwrap.dedent(body) + SUMMARY
            + "\n").encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("train.py")
        info.size = len(code)
        tar.addfile(info, io.BytesIO(code))
    job = TrialJob(number=1, tree_tar=buf.getvalue(), workdir=str(workdir), data_dir=None,
                   env={}, cache_dir=None, limits=Limits())
    ex.submit(SimpleNamespace(number=1), job)
    [(_, result)] = ex.wait()
    return result


def everything(folder: Path) -> list[Path]:
    return [Path(root) / n for root, dirs, files in os.walk(folder) for n in dirs + files]


def test_links_in_out_bring_nothing_of_their_targets(executor, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root-only-7c2a\n")
    secret.chmod(0o600)
    result = run_trial(executor, tmp_path / "trial", f"""
        os.symlink("/etc/shadow", os.path.join(out, "shadow"))
        os.symlink("/proc/self/environ", os.path.join(out, "environ"))
        os.symlink({str(secret)!r}, os.path.join(out, "secret"))
        os.symlink("/etc", os.path.join(out, "etc"))
        open(os.path.join(out, "kept.txt"), "w").write("the trial's own file")
    """)
    folder = tmp_path / "trial"
    assert result.status == "ok", result.reason
    assert (folder / "out" / "kept.txt").read_text() == "the trial's own file"
    shadow = Path("/etc/shadow").read_bytes() if os.access("/etc/shadow", os.R_OK) else b""
    for path in everything(folder):
        assert not path.is_symlink(), path
        if path.is_file():
            data = path.read_bytes()
            assert CANARY.encode() not in data, path
            assert b"root-only-7c2a" not in data, path
            assert not shadow or shadow not in data, path
    for name in ("shadow", "environ", "secret", "etc"):
        assert not os.path.lexists(folder / "out" / name)


def test_an_unreadable_entry_keeps_the_trials_own_status(executor, tmp_path):
    result = run_trial(executor, tmp_path / "trial", """
        os.symlink("/proc/self/mem", os.path.join(out, "mem"))
        with open(os.path.join(out, "locked"), "w") as f:
            f.write("x")
        os.chmod(os.path.join(out, "locked"), 0)
        os.mkfifo(os.path.join(out, "pipe"))
        os.mkdir(os.path.join(out, "closed"))
        open(os.path.join(out, "closed", "inner"), "w").write("y")
        os.chmod(os.path.join(out, "closed"), 0)
        open(os.path.join(out, "kept.txt"), "w").write("kept")
    """)
    folder = tmp_path / "trial"
    assert (result.status, result.val_bpb) == ("ok", 1.5), result.reason
    assert (folder / "out" / "kept.txt").read_text() == "kept"
    assert "val_bpb" in (folder / "train.log").read_text()
    assert not os.path.lexists(folder / "out" / "mem")
    assert not os.path.lexists(folder / "out" / "pipe")


# -- what the instance exposes: its sockets and its temp folder, read from /proc -------------

def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    except OSError:
        pass
    return inodes


def listening() -> dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """inode -> local address of every listening TCP socket on this host."""
    found = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            raw = bytes.fromhex(fields[1].split(":")[0])  # 32-bit words, host byte order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(raw)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            found[fields[9]] = address
    return found


def ray_processes() -> list[int]:
    """This process (the driver) and what it started: gcs_server, raylet, agents, workers."""
    return [os.getpid(), *descendants(os.getpid())]


def test_the_local_instance_listens_on_127_0_0_1_only(executor):
    table = listening()
    bound = {(pid, str(table[i])) for pid in ray_processes() for i in socket_inodes(pid)
             if i in table}
    assert len({pid for pid, _ in bound}) >= 3, bound  # the driver, gcs_server and raylet
    assert {address for _, address in bound} == {"127.0.0.1"}, bound
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}


def test_the_local_instance_keeps_its_files_in_a_private_folder(executor):
    sessions = set()
    for pid in ray_processes():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        # --session_dir=, --temp_dir=, --object-store-name=...: each lies in ROOT/session_*
        sessions.update(re.findall(r"=(/\S*?)/session_\d", argv))
    assert sessions, "no Ray process names its session folder"
    for root in sessions:  # Ray makes its own folder 0777: the one holding it must be private
        holder = Path(root).parent
        info = holder.stat()
        assert Path(root).resolve() != Path("/tmp/ray").resolve(), root
        assert stat.S_IMODE(info.st_mode) == 0o700, (str(holder), oct(info.st_mode))
        assert info.st_uid == os.geteuid(), str(holder)
        assert str(holder) == executor.temp_dir


@pytest.mark.skipif(os.geteuid() != 0, reason="builds files the trial user cannot read: root")
def test_a_file_the_trial_user_cannot_read_stays_behind(tmp_path):
    """A hard link to a root-only file, put where the trial writes: not sent back; the
    sandbox's own log, in a folder only the session's user can write: sent back."""
    from agent.executors.ray_cluster import collect
    from sandbox.images.host import TRIAL_GID, TRIAL_UID

    secret = tmp_path / "secret"
    secret.write_text("root-only")
    secret.chmod(0o600)
    folder = tmp_path / "trial"
    out = folder / "out"
    out.mkdir(parents=True)
    folder.chmod(0o755)
    os.chown(out, TRIAL_UID, TRIAL_GID)
    (folder / "train.log").write_text("val_bpb: 1.5\n")
    (folder / "train.log").chmod(0o600)
    os.link(secret, out / "linked")
    (out / "mine.txt").write_text("the trial's")
    os.chown(out / "mine.txt", TRIAL_UID, TRIAL_GID)
    assert collect(folder) == {"train.log": b"val_bpb: 1.5\n", "out/mine.txt": b"the trial's"}
