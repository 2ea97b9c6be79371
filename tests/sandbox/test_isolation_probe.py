"""Can this machine isolate a local trial? (issue 24) A root session finds out once, by
running a trial that only prints, before any trial of the night: where isolation cannot be
had (simulated here as a container without CAP_SYS_ADMIN is: a seccomp filter that refuses
unshare) it refuses in one line unless given --isolation none; `sandbox check` reports what
a trial gets from inside one; a venv under a folder the trial user cannot enter still runs;
/dev/nvidia-uvm is made as root before the first unprivileged CUDA init."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys

import pytest

from agent.testing.synthetic import make_train_dir
from sandbox.gpus import ensure_uvm
from sandbox.images.host import TRIAL_UID
from sandbox.local import LocalSandbox
from sandbox.probe import host_devices, machine_report
from tests.sandbox.helpers import SUMMARY, limits, make_trial

EXE = shutil.which("autoresearch", path=os.path.dirname(sys.executable))
# Installs a seccomp filter under which unshare(2) fails with EPERM (what Docker's default
# profile and a missing CAP_SYS_ADMIN do), then execs its arguments: inherited by all.
NO_UNSHARE = r"""
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
ops = [(0x20, 0, 0, 4), (0x15, 1, 0, 0xC000003E), (0x06, 0, 0, 0x7FFF0000),
       (0x20, 0, 0, 0), (0x15, 0, 1, 272), (0x06, 0, 0, 0x00050001), (0x06, 0, 0, 0x7FFF0000)]
code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *op) for op in ops))
prog = struct.pack("=HxxxxxxQ", len(ops), ctypes.addressof(code))
if libc.prctl(22, 2, ctypes.create_string_buffer(prog), 0, 0) != 0:
    sys.exit("seccomp: " + os.strerror(ctypes.get_errno()))
os.execv(sys.argv[1], sys.argv[1:])
"""


@pytest.fixture
def as_root():
    if os.geteuid() != 0 or platform.machine() != "x86_64":
        message = "isolation needs a root session (and the filter here an x86-64 machine)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


def without_unshare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_UNSHARE, EXE, *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})


def test_a_machine_without_unshare_is_reported_and_a_session_refuses(as_root, tmp_path):
    check = without_unshare("sandbox", "check", "--json")
    assert check.returncode == 0, check.stderr
    local = json.loads(check.stdout)["local"]
    assert local["isolation"] == "none: trials run as root"
    assert "unshare: Operation not permitted" in local["problems"][0]
    assert local["session"].startswith("refuses to start")
    assert local["trial"]["uid"] == 0  # the probe ran anyway, without isolation

    train_dir = make_train_dir(tmp_path)
    run = tmp_path / "run"
    args = ["run", "--method", "random", "--trials", "1", "--sandbox", "local", "--train-dir",
            str(train_dir), "--time-budget", "0.001", "--quiet", "--run-dir", str(run)]
    refused = without_unshare(*args)
    assert refused.returncode != 0
    line = refused.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, refused.stderr
    assert "local trials cannot be isolated here" in line and "--isolation none" in line
    assert "unshare: Operation not permitted" in line
    assert not (run / "trials.jsonl").exists() or not (run / "trials.jsonl").read_text()

    allowed = without_unshare(*args[:-1], str(tmp_path / "run2"), "--isolation", "none")
    assert allowed.returncode == 0, allowed.stderr
    rows = (tmp_path / "run2" / "trials.jsonl").read_text().splitlines()
    assert [json.loads(r)["status"] for r in rows] == ["ok", "ok"]
    # the choice is this command's alone: a run folder cannot carry it to the next one
    assert "isolation" not in (tmp_path / "run2" / "session.toml").read_text()


def test_the_report_from_inside_a_trial_here(as_root):
    report = machine_report()
    assert report["root"] and report["problems"] == [], report
    assert report["isolation"] == f"uid {TRIAL_UID} in mount and network namespaces of its own"
    assert report["trial"]["uid"] == TRIAL_UID
    assert sorted(report["trial"]["devices"]) == host_devices()  # the nodes a GPU host has
    assert report["trial"]["compiler"]  # torch.compile's C compiler is on the trial's PATH
    assert report["memory_guard"] in ("cgroup v1", "cgroup v2", "watchdog")
    assert report["session"].startswith(f"runs trials with uid {TRIAL_UID}")
    none = machine_report(isolation="none")
    assert none["isolation"] == "none: trials run as root" and none["trial"]["uid"] == 0


def test_a_venv_under_a_closed_folder_runs_as_the_trial_user(as_root, tmp_path):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    venv = closed / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    sandbox = LocalSandbox(python=python)  # the probe ran with this interpreter: no refusal
    assert sandbox.isolated and sandbox.isolation_problem() is None
    run = make_trial(tmp_path, f"""
        import os, sys
        print("uid", os.getuid(), "prefix", sys.prefix)
        {SUMMARY}
    """)
    result = sandbox.run(run, limits())
    log = (run.workdir / "train.log").read_text()
    assert result.status == "ok", log
    assert f"uid {TRIAL_UID} prefix {venv}" in log


def test_uvm_is_made_by_the_sessions_interpreter_never_a_folders(as_root, tmp_path,
                                                                   monkeypatch):
    """A training folder's [run] python is someone else's program: it never runs as root
    (a GPU trial of an isolated session makes /dev/nvidia-uvm with the session's own)."""
    import sandbox.local as local

    called = []
    monkeypatch.setattr(local, "ensure_uvm", lambda python: called.append(python))
    run = make_trial(tmp_path, SUMMARY)
    sandbox = LocalSandbox()
    theirs = os.path.realpath(sys.executable)  # another path to an interpreter that runs
    assert theirs != sandbox.python
    result = sandbox.run(dataclasses.replace(run, python=theirs), limits(gpus=(0,)))
    assert result.status == "ok", (run.workdir / "train.log").read_text()
    assert called == [sandbox.python] and theirs not in called


def test_uvm_is_made_as_root_once_and_only_where_a_driver_is(tmp_path):
    calls = tmp_path / "calls"
    fake = tmp_path / "python"  # stands for an interpreter whose CUDA init makes the node
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\ntouch {tmp_path}/dev/nvidia-uvm\n")
    fake.chmod(0o755)
    (tmp_path / "dev").mkdir()
    assert ensure_uvm(str(fake), root=str(tmp_path)) is False  # no driver: nothing run
    assert not calls.exists()
    (tmp_path / "dev" / "nvidiactl").touch()
    assert ensure_uvm(str(fake), root=str(tmp_path), modprobe="/bin/false") is True
    assert calls.read_text() == "-I -c import torch; torch.cuda.init()\n"  # after the helper
    assert ensure_uvm(str(fake), root=str(tmp_path)) is True
    assert calls.read_text().count("\n") == 1  # the node exists: nothing run again
    other = tmp_path / "other"
    (other / "dev").mkdir(parents=True)
    (other / "dev" / "nvidiactl").touch()  # a host where nothing makes the node
    assert ensure_uvm("/bin/true", root=str(other), modprobe="/bin/true") is False
    assert ensure_uvm(str(fake), root=str(other)) is False  # tried once: not again
    assert calls.read_text().count("\n") == 1
