"""`autoresearch finalize RUN`: on a synthetic run whose best changed two values that matter and
one that does not, branches for the two (and all kept together), not the third; each branch
as a patch applies cleanly to the baseline and trains; FINDINGS.md; a recorded attribution is
used again."""

from __future__ import annotations

import json
import subprocess

from typer.testing import CliRunner

from agent.cli.main import app
from agent.config.settings import SessionConfig
from agent.edit.actions import EditHyperparameters
from agent.loop.session import Session
from agent.testing.synthetic import ScriptedOptimizer
from tests.agent.processes import autoresearch

runner = CliRunner()


def git(*args) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def test_finalize_keeps_the_two_real_changes_not_the_neutral_one(tmp_path, train_dir,
                                                                 monkeypatch):
    # the synthetic val_bpb depends on MATRIX_LR and DEPTH, not on WEIGHT_DECAY
    scripted = ScriptedOptimizer([EditHyperparameters(
        {"MATRIX_LR": 0.04, "DEPTH": 5, "WEIGHT_DECAY": 0.1}, "three changes")])
    monkeypatch.setattr("agent.loop.session.make_optimizer", lambda *a, **k: scripted)
    run = tmp_path / "run"
    Session.create(run, SessionConfig(method="tpe", trials=1, sandbox="local",
                                      train_dir=str(train_dir), time_budget=0.001)).run()
    monkeypatch.undo()
    patches = tmp_path / "patches"
    result = runner.invoke(app, ["finalize", str(run), "--seeds", "2", "--export",
                                 str(patches), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    kept = {c["change"]: c["kept"] for c in summary["changes"]}
    assert kept == {"DEPTH 4 -> 5": True, "MATRIX_LR 0.08 -> 0.04": True,
                    "WEIGHT_DECAY 0.2 -> 0.1": False}
    branches = git("-C", str(run / "repo"), "branch", "--list", "finalize/*").split()
    assert sorted(branches) == ["finalize/1-depth-4-5", "finalize/2-matrix-lr-0.08-0.04",
                                "finalize/all"]
    for b in summary["branches"]:
        message = git("-C", str(run / "repo"), "log", "-1", "--format=%B", b["branch"])
        assert "delta val_bpb -0." in message and "measured with 2 seeds" in message
    all_message = git("-C", str(run / "repo"), "log", "-1", "--format=%B", "finalize/all")
    assert "all kept changes on the baseline: delta val_bpb -0." in all_message
    assert "WEIGHT_DECAY" not in all_message
    assert len(summary["patches"]) == 3
    for patch in summary["patches"]:  # each applies to the baseline alone, and trains
        work = tmp_path / f"apply-{patch[-20:]}"
        git("clone", "-q", str(run / "repo"), str(work))
        git("-C", str(work), "checkout", "-q", "baseline")
        git("-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "am", "-q", patch)
        code, out = autoresearch("sandbox", "try", str(work), "--sandbox", "local",
                                 "--time-budget", "0.001", "--json")
        assert code == 0 and json.loads(out.strip().splitlines()[-1])["status"] == "ok", out
    findings = (run / "FINDINGS.md").read_text()
    assert "| WEIGHT_DECAY 0.2 -> 0.1 |" in findings and "| no |" in findings
    assert findings.count("| yes |") == 2 and "## Reproduce" in findings
    assert "attribution.png" in findings
    assert len(list((run / "attribution").iterdir())) == 1
    result = runner.invoke(app, ["finalize", str(run), "--seeds", "2"])  # measured already
    assert result.exit_code == 0 and "using the attribution" in result.output
    assert len(list((run / "attribution").iterdir())) == 1


def test_finalize_refuses_what_it_cannot_do_in_one_line(tmp_path, train_dir):
    run = tmp_path / "run"
    result = runner.invoke(app, ["finalize", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "not a session folder" in result.output
    Session.create(run, SessionConfig(method="tpe", trials=0, sandbox="local",
                                      train_dir=str(train_dir), time_budget=0.001)).run()
    result = runner.invoke(app, ["finalize", str(run)])
    assert result.exit_code == 2 and "its best is the baseline" in result.output
    result = runner.invoke(app, ["finalize", str(run), "--seeds", "1"])
    assert result.exit_code == 2 and "at least 2" in result.output
