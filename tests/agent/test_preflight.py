"""Failed trials cost seconds (issue 12): a preflight probe before each full run, OOM repair
by halving DEVICE_BATCH_SIZE in a new commit, the prediction of steps, cost accounting."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agent.actions import EditHyperparameters
from agent.config import SessionConfig
from agent.session import Session

# Honours AR_PREFLIGHT_STEPS; memory grows with DEVICE_BATCH_SIZE * DEPTH, and past 256 the
# host runs out of it (a MemoryError: status oom). Every run leaves a line in out/runs.txt.
PROBE = '''import os as _os
_runs = open(_os.path.join(_os.environ["AR_OUT_DIR"], "runs.txt"), "a")
_runs.write(("preflight" if _os.environ.get("AR_PREFLIGHT_STEPS") else "full") + "\\n")
_runs.close()
if DEVICE_BATCH_SIZE * DEPTH >= 256:
    raise MemoryError("synthetic: batch too large")
if _os.environ.get("AR_PREFLIGHT_STEPS"):
    print("---")
    print("preflight: ok")
    print(f"peak_memory_mb: {DEVICE_BATCH_SIZE * DEPTH * 10.0}")
    print(f"step_seconds: {float(_os.environ.get('STEP', '0.01'))}")
    raise SystemExit(0)
'''


@pytest.fixture
def probing(train_dir) -> Path:
    text = (train_dir / "train.py").read_text()
    marker = "# --- end hyperparameters ---\n"
    (train_dir / "train.py").write_text(text.replace(marker, marker + PROBE))
    return train_dir


class Scripted:
    name = "scripted"
    failure_policy = "told nothing"

    def __init__(self, actions):
        self.actions, self.told = list(actions), []

    def ask(self, history, pending, ctx):
        return self.actions.pop(0)

    def tell(self, action, record):
        self.told.append((action, record.status, record.config))


def run(tmp_path, train_dir, actions, monkeypatch, **kw) -> tuple[Path, Scripted]:
    scripted = Scripted(actions)
    monkeypatch.setattr("agent.restore.make_optimizer", lambda *a, **k: scripted)
    config = SessionConfig(**{"trials": len(actions), "sandbox": "local",
                              "train_dir": str(train_dir), "time_budget": 0.001, **kw})
    Session.create(tmp_path / "run", config).run()
    return tmp_path / "run", scripted


def notes(run_dir: Path) -> list[dict]:
    rs = [json.loads(x) for x in (run_dir / "trials.jsonl").read_text().splitlines()]
    return sorted(rs, key=lambda r: r["trial"])


def runs_of(run_dir: Path, n: int) -> list[str]:
    """What ran for trial n: its preflight folders in order, then the trial's own."""
    trial = run_dir / "trials" / f"{n:04d}"
    folders = sorted(trial.glob("preflight-*"), key=lambda p: int(p.name.split("-")[1]))
    out = []
    for folder in [*folders, trial]:
        path = folder / "out" / "runs.txt"
        out += path.read_text().split() if path.exists() else []
    return out


def git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_an_oom_is_repaired_in_new_commits_and_told_as_proposed(tmp_path, probing,
                                                                 monkeypatch):
    big = {"DEVICE_BATCH_SIZE": 64, "DEPTH": 8, "TOTAL_BATCH_SIZE": 16384}
    run_dir, scripted = run(tmp_path, probing, [EditHyperparameters(big, "big batch")],
                            monkeypatch, repair_oom=True)
    trial = notes(run_dir)[1]
    assert trial["status"] == "ok", trial["result"]["reason"]
    assert trial["repairs"] == [
        "repair: DEVICE_BATCH_SIZE 64 -> 32 (preflight oom at 64)",
        "repair: DEVICE_BATCH_SIZE 32 -> 16 (preflight oom at 32)"]
    assert trial["config"]["DEVICE_BATCH_SIZE"] == 16
    assert trial["config"]["TOTAL_BATCH_SIZE"] == 16384  # the effective batch stays
    repo = run_dir / "repo"
    final = git(repo, "rev-parse", "refs/trials/0001")
    assert final == trial["commit"]
    first_repair = git(repo, "rev-parse", f"{final}^")
    proposal = git(repo, "rev-parse", f"{final}^^")
    assert "DEVICE_BATCH_SIZE = 64" in git(repo, "show", f"{proposal}:train.py")
    assert "repair: DEVICE_BATCH_SIZE 64 -> 32" in git(repo, "log", "-1", "--format=%s",
                                                       first_repair)
    assert git(repo, "rev-parse", f"{proposal}^") == trial["parent"]  # the incumbent
    # the optimizer learns about the point it proposed, not the repaired one
    action, status, config = scripted.told[1]
    assert action.values == big and status == "ok"
    # three preflights (64, 32, 16), one full run
    assert runs_of(run_dir, 1) == ["preflight"] * 3 + ["full"]
    assert trial["cost_s"] >= trial["result"]["wall_s"]


def test_without_repair_an_oom_ends_in_preflight(tmp_path, probing, monkeypatch):
    big = {"DEVICE_BATCH_SIZE": 64, "DEPTH": 8, "TOTAL_BATCH_SIZE": 16384}
    run_dir, scripted = run(tmp_path, probing, [EditHyperparameters(big, "big")],
                            monkeypatch)  # the cpu preset: no repair by default
    trial = notes(run_dir)[1]
    assert trial["status"] == "oom" and trial["result"]["preflight"] is True
    assert runs_of(run_dir, 1) == ["preflight"]  # the full run never started
    assert scripted.told[1][1] == "oom"


def test_a_train_py_that_ignores_the_probe_runs_once(tmp_path, train_dir, monkeypatch):
    edit = {"DEPTH": 3}
    text = (train_dir / "train.py").read_text()
    marker = "# --- end hyperparameters ---\n"
    counter = PROBE.split("if DEVICE_BATCH_SIZE")[0]  # it counts runs, nothing else
    (train_dir / "train.py").write_text(text.replace(marker, marker + counter))
    run_dir, _ = run(tmp_path, train_dir, [EditHyperparameters(edit, "x")], monkeypatch)
    trial = notes(run_dir)[1]
    assert trial["status"] == "ok" and trial["preflight"] is None
    assert runs_of(run_dir, 1) == ["preflight"]  # it trained in that one run


def test_predicted_steps_flag_and_min_steps(tmp_path, probing, monkeypatch):
    short = {"WARMDOWN_RATIO": 0.1}
    run_dir, _ = run(tmp_path / "a", probing, [EditHyperparameters(short, "short warmdown")],
                     monkeypatch, time_budget=0.05)
    flagged = notes(run_dir)[1]
    assert flagged["status"] == "ok"
    assert flagged["preflight"]["predicted_steps"] == 5  # 0.05 s / 0.01 s per step
    assert flagged["preflight"]["too_few_steps"] is True  # 5 * 0.1 < 1 warm-down step
    assert notes(run_dir)[0]["preflight"] is None  # the baseline is not probed
    run_dir, _ = run(tmp_path / "b", probing, [EditHyperparameters({"DEPTH": 3}, "x")],
                     monkeypatch, time_budget=0.05, min_steps=10)
    refused = notes(run_dir)[1]
    assert refused["status"] == "rejected" and refused["result"]["preflight"] is True
    assert "predicts 5 steps" in refused["result"]["reason"]
    assert "--min-steps 10" in refused["result"]["reason"]
    assert runs_of(run_dir, 1) == ["preflight"]
