"""Stop rules (--stop-after-failures, --stop-on-plateau): a session that is stuck or failing
stops by itself, says which rule and why, and a resume with a raised limit continues exactly
where a session run with that limit from the start would be."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.config.settings import SessionConfig, parse_plateau
from agent.loop.session import Session
from agent.loop.standing import StopRules
from agent.record.note import TrialNote

runner = CliRunner()
BASE_LR = 0.08  # the packaged cpu preset's MATRIX_LR: every random draw differs from it


def crashing(train_dir):
    """Every trial whose MATRIX_LR is not the baseline's crashes."""
    path = train_dir / "train.py"
    marker = "# --- end hyperparameters ---\n"
    path.write_text(path.read_text().replace(marker, marker + (
        f"if MATRIX_LR != {BASE_LR}:\n    raise RuntimeError('synthetic: always crashes')\n")))
    return train_dir


def never_better(train_dir):
    """Every trial but the baseline scores worse than the baseline."""
    path = train_dir / "train.py"
    text = path.read_text()
    old = 'print(f"val_bpb: {val:.6f}")'
    assert old in text
    path.write_text(text.replace(old, f'print(f"val_bpb: {{(1.0 if MATRIX_LR == {BASE_LR} '
                                      f'else 9.0 + val):.6f}}")'))
    return train_dir


def session(tmp_path, train_dir, name, **kw) -> Session:
    config = SessionConfig(**{"method": "random", "trials": 40, "seed": 5, "sandbox": "local",
                              "train_dir": str(train_dir), "time_budget": 0.001, **kw})
    return Session.create(tmp_path / name, config)


def raise_limit(run, **changes) -> Session:
    """What `autoresearch resume RUN --stop-... M` does to session.toml."""
    path = run / "session.toml"
    SessionConfig(**{**SessionConfig.load(path).model_dump(), **changes}).save(path)
    return Session.open(run)


def configs(run) -> list[dict]:
    return [json.loads(x)["config"] for x in (run / "trials.jsonl").read_text().splitlines()]


def test_every_proposal_crashes_stops_after_n_and_a_raised_limit_continues_exactly(
        tmp_path, train_dir):
    crashing(train_dir)
    outcome = session(tmp_path, train_dir, "parts", stop_after_failures=3).run()
    assert (outcome.stopped_by, outcome.trials_run) == ("failures", 3)
    assert "3 failed trials in a row (trials 1-3: crash 3)" in outcome.why
    assert "--stop-after-failures 6" in outcome.why
    again = Session.open(tmp_path / "parts").run()  # the same limit: stops at once
    assert (again.stopped_by, again.trials_run) == ("failures", 3)
    resumed = raise_limit(tmp_path / "parts", stop_after_failures=7).run()
    assert (resumed.stopped_by, resumed.trials_run) == ("failures", 7)
    whole = session(tmp_path, train_dir, "whole", stop_after_failures=7).run()
    assert (whole.stopped_by, whole.trials_run) == ("failures", 7)
    assert configs(tmp_path / "parts") == configs(tmp_path / "whole")
    statuses = [json.loads(x)["status"] for x in
                (tmp_path / "parts" / "trials.jsonl").read_text().splitlines()]
    assert statuses == ["ok"] + ["crash"] * 7


def test_no_new_best_stops_on_plateau_and_a_raised_limit_continues_exactly(tmp_path,
                                                                          train_dir):
    never_better(train_dir)
    outcome = session(tmp_path, train_dir, "parts", plateau_trials=4,
                      stop_after_failures=0).run()
    assert (outcome.stopped_by, outcome.trials_run) == ("plateau", 4)
    assert "no new best in 4 trials since trial 0 (val_bpb 1.0)" in outcome.why
    resumed = raise_limit(tmp_path / "parts", plateau_trials=9).run()
    assert (resumed.stopped_by, resumed.trials_run) == ("plateau", 9)
    whole = session(tmp_path, train_dir, "whole", plateau_trials=9,
                    stop_after_failures=0).run()
    assert (whole.stopped_by, whole.trials_run) == ("plateau", 9)
    assert configs(tmp_path / "parts") == configs(tmp_path / "whole")


def test_a_new_best_restarts_the_plateau_and_an_ok_trial_the_failures(tmp_path):
    def note(n, status="ok", val=2.0, wall=10.0):
        return TrialNote(trial=n, commit=f"{n:040x}", status=status, val_bpb=val, wall_s=wall)

    rules = StopRules(failures=2, plateau_trials=None, plateau_s=40.0)
    notes = [note(0, val=3.0), note(1, "crash", None), note(2, val=2.5), note(3, "oom", None),
             note(4, "pruned", None), note(5, val=2.9)]
    for n in notes:
        rules.told(n)
    assert rules.since(2) == (3, 30.0)
    assert rules.check(notes[2], slots=1, run="r") is None  # 30 s < 40; no failure in a row
    rules.plateau_s = 20.0
    stop = rules.check(notes[2], slots=1, run="r")
    assert stop.rule == "plateau" and "0.01 h of trial time since trial 2" in stop.why
    assert rules.check(notes[2], slots=2, run="r") is None  # 15 s per slot
    rules.told(note(6, "rejected", None))
    rules.told(note(7, "timeout", None))
    stop = rules.check(notes[2], slots=2, run="r")
    assert stop.rule == "failures" and "(trials 6-7: rejected 1, timeout 1)" in stop.why


def test_cli_options_reach_the_session_and_bad_values_are_one_line(tmp_path, train_dir):
    never_better(train_dir)
    run = tmp_path / "r"
    args = ["run", "--method", "random", "--trials", "30", "--sandbox", "local",
            "--train-dir", str(train_dir), "--time-budget", "0.001", "--run-dir", str(run),
            "--quiet"]
    result = runner.invoke(app, [*args, "--stop-on-plateau", "3"])
    assert result.exit_code == 0, result.output
    assert "stopped: no new best in 3 trials" in " ".join(result.output.split())
    assert "resume" in result.output
    result = runner.invoke(app, ["resume", str(run), "--stop-on-plateau", "5", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "done: 5 trials (stopped by plateau)" in " ".join(result.output.split())
    assert SessionConfig.load(run / "session.toml").plateau_trials == 5
    for bad in ("0", "-3", "soon"):
        result = runner.invoke(app, [*args[:-3], "--run-dir", str(tmp_path / bad),
                                     "--stop-on-plateau", bad])
        assert result.exit_code == 2 and "--stop-on-plateau" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, [*args[:-3], "--run-dir", str(tmp_path / "n"),
                                 "--stop-after-failures", "-1"])
    assert result.exit_code == 2 and "--stop-after-failures" in result.output


@pytest.mark.parametrize("text,expected", [
    ("30", {"plateau_trials": 30, "plateau_s": None}),
    ("2h", {"plateau_trials": None, "plateau_s": 7200.0}),
    ("1h30m", {"plateau_trials": None, "plateau_s": 5400.0})])
def test_plateau_is_trials_or_a_duration(text, expected):
    assert parse_plateau(text) == expected
