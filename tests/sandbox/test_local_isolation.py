"""What a local trial can no longer do (issue 9, point 3): read the session's secrets, read
/etc/shadow, write the run folder or the user's training folder, reach the network, fill the
disk, or outlive a killed session; nor (issue 21, point 7) leave files in /tmp, /var/tmp or
/dev/shm, write there past `--disk`, or create a user namespace. The namespace and user change
need root (CI runs as root); elsewhere those tests skip with the reason, and fail under
CI=true."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from sandbox.local import LocalSandbox
from tests.sandbox.helpers import SUMMARY, limits, make_trial

ROOT = Path(__file__).resolve().parents[2]
# Where programs write without asking TMPDIR: the folders anyone may write on Debian
SCRATCH = tuple(f for f in ("/dev/shm", "/tmp", "/var/tmp", "/run/lock") if os.path.isdir(f))
# unshare(CLONE_NEWUSER) through the two other x86-64 system call entries, whose numbers
# differ from the 64-bit ones: the 32-bit int 0x80 (i386 unshare is 310) and x32 (bit 30 set)
COMPAT_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) {
    long r;
    __asm__ volatile ("int $0x80" : "=a"(r) : "a"(310L), "b"(0x10000000L));
    printf("i386 unshare %s\n", r == 0 ? "CREATED" : "refused");
    r = syscall(0x40000000L + 272, 0x10000000L);
    printf("x32 unshare %s\n", r == 0 ? "CREATED" : "refused");
    return 0;
}
"""


@pytest.fixture
def as_root():
    if os.geteuid() != 0:
        message = "the local backend isolates trials only when the session runs as root"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


def drive(run, lim, env: dict | None = None, isolate: str = "auto") -> subprocess.Popen:
    """A separate session process running one trial, with `env` as its own environment."""
    code = f"""
import json, sys
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
from sandbox.base import Limits, TrialRun
from sandbox.local import LocalSandbox
run = TrialRun(tree=Path({str(run.tree)!r}), workdir=Path({str(run.workdir)!r}),
               env={{"AR_SEED": "1"}})
r = LocalSandbox(isolate={isolate!r}).run(run, Limits(**{lim!r}))
print(json.dumps(r.to_dict()))
"""
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def test_secrets_shadow_run_folder_and_network_are_out_of_reach(as_root, tmp_path):
    ledger = tmp_path / "results.tsv"
    ledger.write_text("commit\tval_bpb\n")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    run = make_trial(tmp_path, f"""
        import os, socket
        def attempt(what, action):
            try:
                action()
                print(what, "DONE")
            except OSError as e:
                print(what, "denied", type(e).__name__)
        attempt("environ", lambda: open(f"/proc/{{os.getppid()}}/environ").read())
        attempt("shadow", lambda: open("/etc/shadow").read())
        attempt("ledger", lambda: open({str(ledger)!r}, "a").write("forged\\tok\\n"))
        attempt("connect", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2))
        print("uid", os.getuid(), "root holds", sorted(os.listdir("/root")))
        {SUMMARY}
    """)
    proc = drive(run, {"timeout_s": 60, "memory": "1g"}, {"OPENAI_API_KEY": "sk-secret-123"})
    stdout, stderr = proc.communicate(timeout=120)
    srv.close()
    assert proc.returncode == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    log = (run.workdir / "train.log").read_text()
    assert result["status"] == "ok", log
    for what in ("environ", "shadow", "ledger", "connect"):
        assert f"{what} denied" in log, log
    assert "DONE" not in log and "sk-secret-123" not in log
    assert "uid 65534" in log
    assert ledger.read_text() == "commit\tval_bpb\n"
    shown = log.split("root holds", 1)[1].splitlines()[0]
    assert ".ssh" not in shown and ".cache" not in shown, shown  # only the interpreter's path


def test_a_trial_cannot_change_the_folder_it_came_from(tmp_path):
    """`sandbox try DIR` and sessions run a private copy: DIR/train.py stays as it was."""
    run = make_trial(tmp_path, f"""
        try:
            open(__file__, "a").write("# tampered\\n")
            print("appended to the copy")
        except OSError as e:
            print("denied", e.errno)
        {SUMMARY}
    """)
    before = (run.tree / "train.py").read_text()
    result = LocalSandbox().run(run, limits())
    assert result.status == "ok"
    assert (run.tree / "train.py").read_text() == before
    assert not list(run.tree.glob("__pycache__"))


@pytest.mark.parametrize("isolate", ["auto", "none"])
def test_the_trial_dies_with_a_killed_session(tmp_path, isolate):
    run = make_trial(tmp_path, """
        import os, time
        open(os.path.join(os.environ["AR_OUT_DIR"], "trial.pid"), "w").write(str(os.getpid()))
        time.sleep(600)
    """)
    proc = drive(run, {"timeout_s": 600, "memory": "1g"}, isolate=isolate)
    pidfile = run.workdir / "out" / "trial.pid"
    deadline = time.monotonic() + 60
    while not pidfile.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while _alive(pid):
        assert time.monotonic() < deadline, f"trial {pid} outlived its killed session"
        time.sleep(0.05)


@pytest.mark.parametrize("backend_name", ["local", "docker"])
def test_writing_past_the_disk_cap_ends_the_trial(tmp_path, backend_name, request):
    if backend_name == "docker":
        request.getfixturevalue("host_image")
        from sandbox.docker import DockerSandbox

        backend = DockerSandbox(client=request.getfixturevalue("docker_client"))
    else:
        backend = LocalSandbox()
    run = make_trial(tmp_path, """
        import os, time
        block = os.urandom(2**20)
        with open(os.path.join(os.environ["AR_OUT_DIR"], "big.bin"), "wb") as f:
            for _ in range(200):  # 200 MiB, at a pace the 1 s check can catch
                f.write(block)
                f.flush()
                time.sleep(0.02)
        print("wrote it all")
    """)
    result = backend.run(run, limits(disk="20m", memory="1g"))
    log = (run.workdir / "train.log").read_text()
    assert result.status == "crash" and "--disk" in result.reason, (result, log)
    assert "wrote it all" not in log
    assert (run.workdir / "out" / "big.bin").stat().st_size < 150 * 2**20


@pytest.fixture
def scratch_name():
    """A name no one else uses; whatever a failing run left under it is removed afterwards."""
    name = f"ar-test-{uuid.uuid4().hex}"
    yield name
    for folder in SCRATCH:
        for path in Path(folder).glob(f"{name}*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def test_temp_folders_are_private_and_gone_with_the_trial(as_root, tmp_path, scratch_name):
    host_file = Path("/tmp") / f"{scratch_name}-host"
    host_file.write_text("the host's own")
    run = make_trial(tmp_path, f"""
        import ctypes, os
        block = b"x" * 2**20
        for folder in {SCRATCH!r}:
            path = os.path.join(folder, {scratch_name!r})
            with open(path, "wb") as f:
                for _ in range(100):  # 100 MiB in each
                    f.write(block)
            print("wrote", folder, os.stat(path).st_blocks // 2048)
        # POSIX shared memory as PyTorch's DataLoader uses it, through glibc's shm_open
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.shm_open(b"/{scratch_name}-shm", os.O_CREAT | os.O_RDWR, 0o600)
        assert fd >= 0, os.strerror(ctypes.get_errno())
        os.write(fd, block)
        print("shm_open ok")
        print("sees the host's /tmp", os.path.exists({str(host_file)!r}))
        {SUMMARY}
    """)
    result = LocalSandbox().run(run, limits(disk="1g"))
    log = (run.workdir / "train.log").read_text()
    assert result.status == "ok", log
    assert "shm_open ok" in log and "sees the host's /tmp False" in log, log
    for folder in SCRATCH:
        assert f"wrote {folder} 100" in log, log
    left = [str(p) for folder in SCRATCH for p in Path(folder).glob(f"{scratch_name}*")]
    assert left == [str(host_file)], left


@pytest.mark.parametrize("folder", SCRATCH)
def test_writing_past_the_disk_cap_into_a_temp_folder_ends_the_trial(as_root, tmp_path,
                                                                      scratch_name, folder):
    run = make_trial(tmp_path, f"""
        import os, time
        block = os.urandom(2**20)
        with open(os.path.join({folder!r}, {scratch_name!r}), "wb") as f:
            for _ in range(100):  # 100 MiB, at a pace the 1 s check can catch
                f.write(block)
                f.flush()
                time.sleep(0.02)
        print("wrote it all")
    """)
    result = LocalSandbox().run(run, limits(disk="20m"))
    log = (run.workdir / "train.log").read_text()
    assert result.status == "crash" and "--disk" in result.reason, (result, log)
    assert "wrote it all" not in log
    assert not (Path(folder) / scratch_name).exists()


@pytest.fixture
def open_tmp_folder():
    """A folder in the host's /tmp that anyone may enter (pytest's own are closed to others,
    which the backend treats as a hidden folder instead)."""
    folder = Path(tempfile.mkdtemp(prefix="ar-test-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_an_interpreter_under_tmp_still_runs_the_trial(as_root, tmp_path, open_tmp_folder):
    """A training folder's venv under /tmp stays reachable once the trial's /tmp is its own."""
    venv = open_tmp_folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    run = make_trial(tmp_path, f"""
        import sys
        print("prefix", sys.prefix)
        {SUMMARY}
    """)
    run = dataclasses.replace(run, python=str(venv / "bin" / "python"))
    result = LocalSandbox().run(run, limits())
    log = (run.workdir / "train.log").read_text()
    assert result.status == "ok", log
    assert f"prefix {venv}" in log, log


def test_a_trial_cannot_create_a_user_namespace(as_root, tmp_path):
    """Every way in: unshare(1), unshare(2), clone(2), clone3(2), and on x86-64 the 32-bit and
    x32 entries; threads and subprocesses still work."""
    run = make_trial(tmp_path, f"""
        import ctypes, os, platform, signal, struct, subprocess, threading
        libc = ctypes.CDLL(None, use_errno=True)
        NEWUSER = 0x10000000
        def report(what, ret):
            if ret == 0:  # the child of a clone that succeeded
                os._exit(0)
            if ret > 0:
                os.waitpid(ret, 0)
            print(what, "CREATED" if ret > 0 else "refused " + os.strerror(ctypes.get_errno()))
        r = subprocess.run(["unshare", "-U", "true"], capture_output=True, text=True)
        print("unshare -U", "CREATED" if r.returncode == 0 else "refused", r.stderr.strip())
        clone = {{"x86_64": 56, "aarch64": 220}}[platform.machine()]
        report("clone(2)", libc.syscall(clone, NEWUSER | signal.SIGCHLD, 0, 0, 0, 0))
        args = struct.pack("=11Q", NEWUSER, 0, 0, 0, signal.SIGCHLD, *[0] * 6)
        report("clone3(2)", libc.syscall(435, ctypes.create_string_buffer(args), len(args)))
        if platform.machine() == "x86_64":
            open("compat.c", "w").write({COMPAT_C!r})
            subprocess.run([os.environ["CC"], "compat.c", "-o", "compat"], check=True)
            print(subprocess.run(["./compat"], capture_output=True, text=True).stdout, end="")
        ran = []
        t = threading.Thread(target=ran.append, args=(1,))
        t.start()
        t.join()
        print("thread ran", ran, "subprocess ran", subprocess.run(["true"]).returncode)
        # last: once inside a user namespace of its own, the calls above would fail for that
        print("unshare(2)", "CREATED" if libc.unshare(NEWUSER) == 0 else "refused")
        {SUMMARY}
    """)
    result = LocalSandbox().run(run, limits())
    log = (run.workdir / "train.log").read_text()
    assert result.status == "ok", log
    assert "CREATED" not in log, log
    for what in ("unshare -U", "unshare(2)", "clone(2)", "clone3(2)"):
        assert f"{what} refused" in log, log
    assert "thread ran [1] subprocess ran 0" in log, log


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
