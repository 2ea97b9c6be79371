"""What a local trial can no longer do (issue 9, point 3): read the session's secrets, read
/etc/shadow, write the run folder or the user's training folder, reach the network, fill the
disk, or outlive a killed session. The namespace and user change need root (CI runs as root);
elsewhere those tests skip with the reason, and fail under CI=true."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.local import LocalSandbox
from tests.sandbox.helpers import SUMMARY, limits, make_trial

ROOT = Path(__file__).resolve().parents[2]


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


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
