"""Sessions end to end: real git, real processes (local backend), the synthetic train.py."""

from __future__ import annotations

import json
import subprocess

import pytest

from agent.config.settings import SessionConfig
from agent.edit.actions import ApplyDiff, EditHyperparameters
from agent.edit.space import load_space
from agent.loop.session import Session, SessionError
from agent.testing.synthetic import ScriptedOptimizer


def git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout


def start(tmp_path, train_dir, **kw) -> Session:
    config = SessionConfig(**{"method": "tpe", "trials": 6, "sandbox": "local",
                              "train_dir": str(train_dir), "time_budget": 0.001, **kw})
    return Session.create(tmp_path / "run", config)


@pytest.mark.parametrize("method", ["random", "tpe", "cmaes"])
def test_a_session_leaves_every_trial_in_git_and_the_ledger(tmp_path, train_dir, method):
    session = start(tmp_path, train_dir, method=method)
    outcome = session.run()
    repo = tmp_path / "run" / "repo"
    assert outcome.trials_run == 6
    assert git(repo, "tag").split() == ["baseline"]
    assert git(repo, "branch", "--format=%(refname:short)").split() == ["best"]
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/trials/").split()
    assert refs == [f"refs/trials/{n:04d}" for n in range(1, 7)]
    noted = {line.split()[1] for line in git(repo, "notes", "--ref=results", "list").splitlines()}
    commits = {git(repo, "rev-parse", r).strip() for r in refs + ["baseline"]}
    assert noted == commits  # a note on each trial and on the baseline
    rows = (tmp_path / "run" / "results.tsv").read_text().splitlines()
    assert len(rows) == 1 + 7 and rows[0].startswith("commit\tval_bpb\tmemory_gb\tstatus\t")
    records = [json.loads(x) for x in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    assert [r["trial"] for r in records] == list(range(7))
    # each trial's parent is the incumbent at the time; best is the minimum of ok trials
    ok = [r for r in records if r["status"] == "ok"]
    best = min(ok, key=lambda r: r["val_bpb"])
    assert git(repo, "rev-parse", "best").strip() == best["commit"]
    assert outcome.best_val_bpb == best["val_bpb"]
    for r in records[1:]:
        assert git(repo, "rev-parse", f"{r['commit']}^").strip() == r["parent"]
    # only hyperparameter lines differ between baseline and best
    space = load_space(train_dir / "search_space.toml", "cpu")
    changed = [ln for ln in git(repo, "diff", "baseline", "best").splitlines()
               if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert all(ln[1:].split(" = ")[0] in space.names for ln in changed), changed
    if best["trial"] > 0:
        assert changed
    # the checked-out work tree is the best train.py
    assert (repo / "train.py").read_text() == git(repo, "show", "best:train.py")
    # trial 0 is the baseline configuration
    assert records[0]["config"] == {**space.defaults()}
    assert records[0]["method"] == "baseline"


def test_same_seed_same_proposals_different_seed_different(tmp_path, train_dir):
    def configs(name, seed):
        config = SessionConfig(method="cmaes", trials=4, seed=seed, sandbox="local",
                               train_dir=str(train_dir), time_budget=0.001)
        Session.create(tmp_path / name, config).run()
        lines = (tmp_path / name / "trials.jsonl").read_text().splitlines()
        return [json.loads(x)["config"] for x in lines]

    assert configs("a", 1) == configs("b", 1)
    assert configs("a2", 2) != configs("b2", 1)
    # the optimizer's rationale names its method already: the subject says it once
    subject = git(tmp_path / "a" / "repo", "log", "-1", "--format=%s", "refs/trials/0001")
    assert subject.startswith("cmaes: generation 1, candidate "), subject


def test_bad_edits_are_rejected_with_a_reason_and_nothing_runs(tmp_path, train_dir,
                                                               monkeypatch):
    source = (train_dir / "train.py").read_text()
    good_line = next(ln for ln in source.splitlines() if ln.startswith("DEPTH = "))
    actions = [
        ApplyDiff("--- a/prepare.py\n+++ b/prepare.py\n@@ -1 +1 @@\n-x\n+y\n", "edit prepare"),
        ApplyDiff("--- a/../train.py\n+++ b/../train.py\n@@ -1 +1 @@\n-x\n+y\n", "escape"),
        ApplyDiff("--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-NOT_THERE = 1\n+X = 2\n",
                  "does not apply"),
        EditHyperparameters({"DEPTH": 99}, "too deep"),
        EditHyperparameters({"DEPTH": int(good_line.split("=")[1].split("#")[0])}, "no-op"),
        ApplyDiff(f"--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-{good_line}\n+DEPTH = 3\n",
                  "a good diff"),
    ]
    scripted = ScriptedOptimizer(actions)
    monkeypatch.setattr("agent.loop.session.make_optimizer", lambda *a, **k: scripted)
    start(tmp_path, train_dir, trials=6).run()
    records = [json.loads(x) for x in (tmp_path / "run" / "trials.jsonl").read_text().splitlines()]
    statuses = [r["status"] for r in records]
    assert statuses == ["ok"] + ["rejected"] * 5 + ["ok"]
    reasons = [r["result"]["reason"] for r in records[1:6]]
    assert "prepare.py" in reasons[0]
    assert ".." in reasons[1]
    assert "NOT_THERE" in reasons[2]
    assert "DEPTH = 99 is above the upper bound 8" in reasons[3]
    assert "the current best's already: change at least one" in reasons[4]
    for n in range(1, 6):  # nothing ran: no log; but the attempt is a commit with its reason
        assert not (tmp_path / "run" / "trials" / f"{n:04d}" / "train.log").exists()
        msg = git(tmp_path / "run" / "repo", "log", "-1", "--format=%B", f"refs/trials/{n:04d}")
        assert "Status: rejected" in msg and f"Trial: {n}" in msg
    assert records[6]["config"]["DEPTH"] == 3
    assert [r.status for _, r in scripted.told] == statuses  # failures are told too
    tsv = (tmp_path / "run" / "results.tsv").read_text()
    assert tsv.count("\trejected\t") == 5


def test_failures_are_classified_and_told(tmp_path, train_dir, monkeypatch):
    scripted = ScriptedOptimizer([
        EditHyperparameters({"DEVICE_BATCH_SIZE": 64, "DEPTH": 8, "TOTAL_BATCH_SIZE": 16384},
                            "huge"),
        EditHyperparameters({"MATRIX_LR": 0.19}, "hot")])
    monkeypatch.setattr("agent.loop.session.make_optimizer", lambda *a, **k: scripted)
    start(tmp_path, train_dir, trials=2).run()
    assert [r.status for _, r in scripted.told] == ["ok", "oom", "diverged"]


def test_budget_stops_the_session(tmp_path, train_dir):
    session = start(tmp_path, train_dir, trials=None, budget_s=3.0)
    outcome = session.run()
    assert outcome.stopped_by == "budget"
    assert 1 <= outcome.trials_run < 100


def test_existing_or_missing_folders_are_refused(tmp_path, train_dir):
    start(tmp_path, train_dir, trials=0).run()
    with pytest.raises(SessionError, match="already holds a session"):
        start(tmp_path, train_dir)
    with pytest.raises(SessionError, match="not a session folder"):
        Session.open(tmp_path / "nowhere")
    with pytest.raises(SessionError, match="has no train.py"):
        Session.create(tmp_path / "x", SessionConfig(train_dir=str(tmp_path)))


def test_resume_after_a_clean_stop_continues_the_sequence(tmp_path, train_dir):
    """3 trials, then resume to 6, proposes exactly what one 6-trial run proposes."""
    def run_configs(name, stages):
        config = SessionConfig(method="tpe", trials=stages[0], seed=3, sandbox="local",
                               train_dir=str(train_dir), time_budget=0.001)
        Session.create(tmp_path / name, config).run()
        for trials in stages[1:]:
            path = tmp_path / name / "session.toml"
            path.write_text(path.read_text().replace(f"trials = {stages[0]}",
                                                     f"trials = {trials}"))
            Session.open(tmp_path / name).run()
        return [json.loads(x)["config"] for x in
                (tmp_path / name / "trials.jsonl").read_text().splitlines()]

    assert run_configs("whole", [6]) == run_configs("parts", [3, 6])
