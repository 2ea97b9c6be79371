"""Many trials at once (issue 10): the pool executor under a session, results recorded as they
finish and told in trial order, so a seed and a worker count give the same proposals however
the trials' durations fall; kill -9 with trials in flight, then resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.config.settings import SessionConfig
from agent.loop.session import Session
from agent.testing.scripted_llm import ScriptedLLM
from agent.testing.synthetic import add_after_block

runner = CliRunner()

# Durations drawn from the OS's randomness: finish order differs from run to run.
JITTER = '''import os as _os, time as _time
_start = _time.time()
_time.sleep(0.15 + int.from_bytes(_os.urandom(1), "big") / 255 * 0.6)
print(f"ran {_start:.3f} {_time.time():.3f}")
'''


@pytest.fixture
def jittery(train_dir) -> Path:
    return add_after_block(train_dir, JITTER)


def records(run: Path) -> list[dict]:
    """The ledger in trial order (it is written in the order trials finish)."""
    rs = [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]
    return sorted(rs, key=lambda r: r["trial"])


def check_invariants(run: Path, trials: int) -> list[dict]:
    """One note per trial, numbers contiguous, best = the min of the ok trials."""
    rs = sorted(records(run), key=lambda r: r["trial"])
    assert [r["trial"] for r in rs] == list(range(trials + 1))
    repo = run / "repo"
    notes = subprocess.run(["git", "-C", str(repo), "notes", "--ref=results", "list"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(notes) == trials + 1
    ok = [r for r in rs if r["status"] == "ok"]
    best = min(ok, key=lambda r: (r["val_bpb"], r["trial"]))
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "best"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert head == best["commit"]
    assert len((run / "results.tsv").read_text().splitlines()) == trials + 2
    return rs


def config(train_dir, **kw) -> SessionConfig:
    return SessionConfig(**{"method": "cmaes", "seed": 4, "trials": 9, "sandbox": "local",
                            "train_dir": str(train_dir), "time_budget": 0.001, "workers": 3,
                            **kw})


def test_workers_run_trials_at_once_and_reproduce_their_proposals(tmp_path, jittery):
    runs = []
    for name in ("a", "b"):
        Session.create(tmp_path / name, config(jittery)).run()
        runs.append(check_invariants(tmp_path / name, 9))
    assert [r["config"] for r in runs[0]] == [r["config"] for r in runs[1]]
    spans = []
    for n in range(10):
        log = (tmp_path / "a" / "trials" / f"{n:04d}" / "train.log").read_text()
        start, end = map(float, next(ln for ln in log.splitlines()
                                     if ln.startswith("ran ")).split()[1:])
        spans.append((start, end))
    overlaps = sum(1 for i, (s1, e1) in enumerate(spans) for s2, e2 in spans[i + 1:]
                   if s1 < e2 and s2 < e1)
    assert overlaps >= 3, spans  # trials did run at the same time
    serial = tmp_path / "serial"
    Session.create(serial, config(jittery, workers=1)).run()
    assert [r["config"] for r in records(serial)] != [r["config"] for r in runs[0]]


@pytest.mark.parametrize("workers", [2, 3])
def test_kill_9_with_trials_in_flight_then_resume(tmp_path, jittery, workers):
    reference = tmp_path / "reference"
    Session.create(reference, config(jittery, workers=workers)).run()
    exe = shutil.which("autoresearch", path=os.path.dirname(sys.executable))
    run = tmp_path / "killed"
    proc = subprocess.Popen([exe, "run", "--method", "cmaes", "--seed", "4", "--trials", "9",
                             "--sandbox", "local", "--train-dir", str(jittery),
                             "--time-budget", "0.001", "--workers", str(workers),
                             "--run-dir", str(run),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not list((run / "trials" / "0004").rglob("train.log")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r["trial"] for r in records(run)}
    assert len(before) < 10
    resumed = subprocess.run([exe, "resume", str(run), "--quiet"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    rs = check_invariants(run, 9)
    assert [r["config"] for r in rs] == [r["config"] for r in records(reference)]
    refs = subprocess.run(["git", "-C", str(run / "repo"), "for-each-ref",
                           "--format=%(refname)", "refs/interrupted/"], capture_output=True,
                          text=True, check=True).stdout.split()
    assert refs == []  # the trials in flight ran again on their own commits


def test_an_llm_method_sees_the_trials_running_beside_it(tmp_path, train_dir):
    answers = [("```json\n" + json.dumps({"tool": "edit_hyperparameters",
                                           "values": {"DEPTH": d}, "rationale": "x"}) + "\n```")
               for d in (3, 5, 6, 7)]
    with ScriptedLLM(answers) as llm:
        cfg = config(train_dir, method="llm-hpo", trials=3, workers=2, model=llm.model,
                     api_base=llm.api_base)
        Session.create(tmp_path / "run", cfg).run()
        prompts = [r["messages"][-1]["content"] for r in llm.requests]
    running = [p.split("Running now", 1)[1] if "Running now" in p else "" for p in prompts]
    assert "- trial 0: " in running[0]  # the baseline was still running for trial 1's prompt
    assert "- trial 1: DEPTH=3" in running[1] and "- trial 0" not in running[1]
    check_invariants(tmp_path / "run", 3)


def test_more_workers_than_gpus_is_one_line(tmp_path, train_dir):
    result = runner.invoke(app, ["run", "--train-dir", str(train_dir), "--gpus", "0,1",
                                 "--workers", "3", "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and "need 3 GPUs, --gpus names 2" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_real_training_on_two_docker_workers(tmp_path, docker_client, host_image):
    """The cpu preset's real train.py, two containers at once, one core each."""
    run = tmp_path / "run"
    result = runner.invoke(app, ["run", "--method", "random", "--trials", "3", "--seed", "1",
                                 "--sandbox", "docker", "--workers", "2", "--cpus", "1",
                                 "--token-budget", "16384", "--eval-tokens", "16384",
                                 "--run-dir", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    rs = check_invariants(run, 3)
    assert all(r["status"] in ("ok", "oom", "crash", "diverged") for r in rs)
    assert sum(r["status"] == "ok" for r in rs) >= 2
