"""The acceptance gate (`--confirm K`, issues 13 and 23): on the synthetic objective with
seeded noise, a real improvement is promoted after pairs of seeds of it and of the incumbent,
run one pair at a time; a noise-sized one is refused, as soon as a pair shows it; the
confirmation runs are trials of their own (method confirm), told to no optimizer, and a
session stopped in the middle of a confirmation resumes it exactly."""

from __future__ import annotations

import json
import math
import random
import subprocess

import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.config.settings import SessionConfig
from agent.edit.actions import EditHyperparameters
from agent.loop.gate import Gate
from agent.loop.session import Session
from agent.record.note import TrialNote
from agent.testing.synthetic import ScriptedOptimizer, make_train_dir

runner = CliRunner()
SEED = 7


def objective(values: dict, seed: int, noise: float) -> float:
    """What the synthetic train.py prints (agent/testing/synthetic.py)."""
    v = {"MATRIX_LR": 0.08, "DEPTH": 4, "WARMDOWN_RATIO": 0.5, "WINDOW_PATTERN": "SSSL",
         **values}
    val = (2.0 + (math.log10(v["MATRIX_LR"]) + 1.4) ** 2 + 0.1 * (v["DEPTH"] - 5) ** 2
           + (v["WARMDOWN_RATIO"] - 0.6) ** 2 + 0.01 * len(v["WINDOW_PATTERN"].replace("S", "")))
    return val + noise * random.Random(f"{seed} {val:.9f}").gauss(0, 1)


def start(tmp_path, monkeypatch, actions, noise, trials, confirm=3):
    train_dir = make_train_dir(tmp_path, noise=noise)
    scripted = ScriptedOptimizer(actions)
    monkeypatch.setattr("agent.loop.session.make_optimizer", lambda *a, **k: scripted)
    config = SessionConfig(trials=trials, sandbox="local", train_dir=str(train_dir),
                           time_budget=0.001, seed=SEED, preflight_steps=0, confirm=confirm)
    Session.create(tmp_path / "run", config).run()
    return tmp_path / "run", scripted


def notes(run_dir) -> list[dict]:
    rs = [json.loads(x) for x in (run_dir / "trials.jsonl").read_text().splitlines()]
    return sorted(rs, key=lambda r: r["trial"])


def git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


GOOD = {"MATRIX_LR": 10 ** -1.4, "DEPTH": 5}  # 0.19 better than the baseline
WORSE = {"DEPTH": 3}


def test_a_real_improvement_is_promoted_after_its_confirmation(tmp_path, monkeypatch):
    run_dir, scripted = start(tmp_path, monkeypatch, [EditHyperparameters(GOOD, "good"),
                                                      EditHyperparameters(WORSE, "worse")],
                              noise=0.002, trials=6)
    rs = notes(run_dir)
    assert [r["method"] for r in rs] == ["baseline", "tpe", "confirm", "confirm",
                                         "confirm", "confirm", "tpe"]
    # one pair at a time: the candidate's seed 8 and the incumbent's (the baseline's), then 9;
    # with K = 3 the test's only look is at the third seed
    assert [(r["action"]["of"], r["seed"]) for r in rs[2:6]] == [(1, 8), (0, 8), (1, 9), (0, 9)]
    repo = run_dir / "repo"
    assert git(repo, "rev-parse", f"{rs[2]['commit']}^") == rs[1]["commit"]
    assert git(repo, "rev-parse", f"{rs[3]['commit']}^") == rs[0]["commit"]
    assert git(repo, "rev-parse", f"{rs[2]['commit']}^{{tree}}") == git(
        repo, "rev-parse", f"{rs[1]['commit']}^{{tree}}")  # the same train.py, run again
    for r in rs[2:6]:
        expected = objective(GOOD if r["action"]["of"] == 1 else {}, r["seed"], 0.002)
        assert r["val_bpb"] == pytest.approx(expected, abs=2e-6)  # it ran with its own seed
    assert git(repo, "rev-parse", "refs/heads/best") == rs[1]["commit"]
    assert rs[6]["parent"] == rs[1]["commit"]  # the promoted trial is the new incumbent
    assert [r.number for _, r in scripted.told] == [0, 1, 6]  # confirmations told to no one
    assert not rs[1]["is_best"]  # best moved at the decision, not at the first seed


def _lucky_noise_change(noise: float) -> dict:
    """A change worth ~0.0001 that happens to beat the baseline at the session's seed."""
    base = objective({}, SEED, noise)
    for i in range(1, 200):
        values = {"WARMDOWN_RATIO": round(0.5 + 0.0005 * i, 6)}
        if objective(values, SEED, noise) < base:
            return values
    raise AssertionError("no lucky change found")


def test_a_noise_sized_improvement_is_refused(tmp_path, monkeypatch):
    noise = 0.02
    lucky = _lucky_noise_change(noise)
    seeds = [SEED, SEED + 1]
    diffs = [objective(lucky, s, noise) - objective({}, s, noise) for s in seeds]
    assert diffs[0] < 0  # it beat the baseline at the first seed: a candidate
    assert diffs[1] > 0  # and lost at the next: refused there, the third seed never runs
    run_dir, scripted = start(tmp_path, monkeypatch, [EditHyperparameters(lucky, "lucky")] + [
        EditHyperparameters(WORSE, "worse")] * 3, noise=noise, trials=6)
    rs = notes(run_dir)
    assert [r["method"] for r in rs].count("confirm") == 2
    repo = run_dir / "repo"
    assert git(repo, "rev-parse", "refs/heads/best") == rs[0]["commit"]  # still the baseline
    assert rs[4]["parent"] == rs[0]["commit"]
    gate = Gate.replay(3, SEED, {r["trial"]: TrialNote.from_dict(r) for r in rs}, 7, {})
    decision = gate.decisions[0]
    assert not decision.promoted and decision.candidate == 1
    assert (decision.used, decision.k) == (2, 3)
    assert decision.diffs == pytest.approx(diffs, abs=2e-6)
    assert "over 2 of 3 seeds" in decision.line()


@pytest.mark.parametrize("lose_state", [False, True])
def test_a_session_stopped_mid_confirmation_resumes_it(tmp_path, monkeypatch, lose_state):
    actions = [EditHyperparameters(GOOD, "good"), EditHyperparameters(WORSE, "worse")]
    run_dir, scripted = start(tmp_path / "a", monkeypatch, actions, noise=0.002, trials=3)
    assert [r["method"] for r in notes(run_dir)][2:] == ["confirm", "confirm"]
    toml = run_dir / "session.toml"
    toml.write_text(toml.read_text().replace("trials = 3", "trials = 6"))
    if lose_state:  # the optimizer is rebuilt by replaying the notes
        (run_dir / "optimizer" / "state.pkl").unlink()
    monkeypatch.setattr("agent.loop.session.make_optimizer",
                        lambda *a, **k: ScriptedOptimizer(actions if lose_state else []))
    scripted.actions = [EditHyperparameters(WORSE, "worse")]  # what is left to propose
    result = runner.invoke(app, ["resume", str(run_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    rs = notes(run_dir)
    uninterrupted, _ = start(tmp_path / "b", monkeypatch, actions, noise=0.002, trials=6)
    expected = notes(uninterrupted)
    assert [(r["method"], r["seed"], r["val_bpb"]) for r in rs] == [
        (r["method"], r["seed"], r["val_bpb"]) for r in expected]
    assert git(run_dir / "repo", "rev-parse", "refs/heads/best") == rs[1]["commit"]


def test_the_gate_with_two_workers_finishes_and_promotes(tmp_path, monkeypatch):
    train_dir = make_train_dir(tmp_path, noise=0.002)
    actions = [EditHyperparameters(GOOD, "good")] + [
        EditHyperparameters({"DEPTH": d}, "worse") for d in (3, 2, 3, 2, 3)]
    scripted = ScriptedOptimizer(actions)
    monkeypatch.setattr("agent.loop.session.make_optimizer", lambda *a, **k: scripted)
    config = SessionConfig(trials=8, sandbox="local", train_dir=str(train_dir),
                           time_budget=0.001, seed=SEED, preflight_steps=0, confirm=3,
                           workers=2)
    Session.create(tmp_path / "run", config).run()
    rs = notes(tmp_path / "run")
    assert [r["trial"] for r in rs] == list(range(9))
    assert [r["method"] for r in rs].count("confirm") == 4
    assert git(tmp_path / "run" / "repo", "rev-parse", "refs/heads/best") == rs[1]["commit"]


def test_a_rebuild_does_not_run_a_committed_confirmation_again(tmp_path, monkeypatch):
    """Killed while a confirmation run was running (its commit, no note) and the optimizer's
    pickle lost: the rebuilt gate knows that run has its trial number, so the resumed session
    continues with the next one, exactly as an uninterrupted session does."""
    actions = [EditHyperparameters({"MATRIX_LR": 10 ** -1.4, "DEPTH": 5}, "good"),
               EditHyperparameters({"DEPTH": 3}, "worse")]
    run_dir, _ = start(tmp_path / "a", monkeypatch, actions, 0.002, trials=4)
    rs = notes(run_dir)
    assert rs[4]["method"] == "confirm"
    subprocess.run(["git", "-C", str(run_dir / "repo"), "notes", "--ref=refs/notes/results",
                    "remove", rs[4]["commit"]], check=True, capture_output=True)
    (run_dir / "optimizer" / "state.pkl").unlink()
    toml = run_dir / "session.toml"
    toml.write_text(toml.read_text().replace("trials = 4", "trials = 6"))
    monkeypatch.setattr("agent.loop.session.make_optimizer",
                        lambda *a, **k: ScriptedOptimizer(actions))
    result = runner.invoke(app, ["resume", str(run_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    expected, _ = start(tmp_path / "b", monkeypatch, actions, 0.002, trials=6)

    def runs(folder):
        return [(r["method"], r["action"].get("of"), r["seed"]) for r in notes(folder)]

    assert runs(run_dir) == runs(expected)
