"""kill -9 of a session mid-trial, then `autoresearch resume` (issue 4's acceptance)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sandbox.base import LABEL


def autoresearch(*args, **kw):
    exe = shutil.which("autoresearch", path=os.path.dirname(sys.executable))
    return subprocess.Popen([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kw)


def configs(run: Path) -> list[dict]:
    return [json.loads(x)["config"] for x in (run / "trials.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("sandbox", ["local", "docker"])
def test_kill_9_mid_trial_then_resume_loses_and_duplicates_nothing(tmp_path, train_dir, sandbox,
                                                                    request):
    if sandbox == "docker":
        client = request.getfixturevalue("docker_client")
        request.getfixturevalue("host_image")
    common = ["--method", "cmaes", "--seed", "5", "--trials", "5", "--sandbox", sandbox,
              "--train-dir", str(train_dir), "--quiet"]
    # the reference: the same session, never interrupted
    ref = autoresearch("run", *common, "--time-budget", "0.001", "--run-dir",
                       str(tmp_path / "ref"))
    assert ref.wait(timeout=300) == 0, ref.stdout.read()

    run = tmp_path / "killed"
    proc = autoresearch("run", *common, "--time-budget", "1.5", "--run-dir", str(run))
    deadline = time.monotonic() + 120
    while not list((run / "trials" / "0003").rglob("train.log")):  # trial 3 is running
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if sandbox == "docker":  # the session's watcher removes the container it left running
        from sandbox.docker import OWNER_LABEL

        owner = f"{OWNER_LABEL}={socket.gethostname()}:{proc.pid}"
        left = {"label": [f"{LABEL}=trial", owner]}  # its own, not a session beside it
        deadline = time.monotonic() + 15
        while client.containers.list(all=True, filters=left):
            assert time.monotonic() < deadline, "the killed session's container is still there"
            time.sleep(0.2)
    assert not list(Path(tempfile.gettempdir()).glob(f"ar-local-{proc.pid}-*")) or \
        sandbox == "local"  # a local stage of the killed session is removed by the next one
    recorded = len((run / "trials.jsonl").read_text().splitlines())
    assert recorded == 3  # baseline + trials 1, 2; trial 3 was cut

    resumed = autoresearch("resume", str(run), "--quiet")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    records = [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]
    assert [r["trial"] for r in records] == list(range(6))
    assert configs(run) == configs(tmp_path / "ref")  # the optimizer continued its sequence
    refs = subprocess.run(["git", "-C", str(run / "repo"), "for-each-ref", "--format=%(refname)"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert [r for r in refs if r.startswith("refs/trials/")] == [
        f"refs/trials/{n:04d}" for n in range(1, 6)]
    assert not [r for r in refs if r.startswith("refs/interrupted/")]  # commit 3 was reused
    if sandbox == "docker":
        assert client.containers.list(all=True, filters=left) == []
    assert not list(Path(tempfile.gettempdir()).glob(f"ar-local-{proc.pid}-*"))
    assert not list((run / "tmp").glob("*"))  # trial trees of the killed session are gone


@pytest.mark.slow
@pytest.mark.parametrize("sandbox", ["local", "docker"])
def test_sigterm_ends_a_session_like_ctrl_c(tmp_path, train_dir, sandbox, request):
    """SIGTERM (what a scheduler or `kill` sends): the running trial is stopped and removed,
    the process exits 143 with the resume hint, and resume finishes the session."""
    if sandbox == "docker":
        client = request.getfixturevalue("docker_client")
        request.getfixturevalue("host_image")
    run = tmp_path / "run"
    proc = autoresearch("run", "--method", "random", "--trials", "3", "--sandbox", sandbox,
                        "--train-dir", str(train_dir), "--time-budget", "30", "--run-dir",
                        str(run), "--quiet")
    deadline = time.monotonic() + 120
    while not (run / "trials" / "0000" / "train.log").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert "terminated" in proc.stdout.read()
    if sandbox == "docker":
        from sandbox.docker import OWNER_LABEL

        owner = f"{OWNER_LABEL}={socket.gethostname()}:{proc.pid}"
        assert client.containers.list(all=True, filters={"label": [owner]}) == []
    assert not list(Path(tempfile.gettempdir()).glob(f"ar-local-{proc.pid}-*"))
    assert not list((run / "tmp").glob("*"))
    out = subprocess.run(["pgrep", "-f", f"ar-local-{proc.pid}-"], capture_output=True,
                         text=True)
    assert out.stdout.strip() == ""  # no trial process of it is left
    (run / "session.toml").write_text((run / "session.toml").read_text().replace(
        "time_budget = 30.0", "time_budget = 0.001"))
    resumed = autoresearch("resume", str(run), "--quiet")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    assert len((run / "trials.jsonl").read_text().splitlines()) == 4
