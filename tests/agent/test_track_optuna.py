"""`--track optuna` (issue 26): every trial of every method as a trial of an Optuna study in a
journal file, loaded back with Optuna itself; states, distributions and idempotency."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from agent.protocols import TrackedSession, TrackedTrial
from agent.track.optuna_tracker import OptunaTracker
from tests.agent.processes import autoresearch


def study_of(home: Path, name: str) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(home / "optuna.log")))
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.slow
def test_a_cmaes_session_is_an_optuna_study_and_a_backfill_adds_nothing(tmp_path, train_dir):
    run = tmp_path / "r"
    code, out = autoresearch("run", "--method", "cmaes", "--trials", "3", "--sandbox", "local",
                             "--train-dir", str(train_dir), "--time-budget", "0.01",
                             "--run-dir", str(run), "--track", "optuna", "--quiet")
    assert code == 0, out
    records = [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]
    study = study_of(run, "r")
    trials = sorted(study.trials, key=lambda t: int(t.user_attrs["trial"]))
    assert [int(t.user_attrs["trial"]) for t in trials] == [r["trial"] for r in records]
    for t, r in zip(trials, records, strict=True):
        assert t.user_attrs["status"] == r["status"]
        assert t.user_attrs["commit"] == r["commit"]
        assert t.params == r["config"]
        if r["status"] == "ok":
            assert t.state == TrialState.COMPLETE and t.value == r["val_bpb"]
    assert set(trials[0].distributions) == set(records[0]["config"])
    assert study.best_trial.value == min(r["val_bpb"] for r in records if r["val_bpb"])
    code, out = autoresearch("track", str(run), "--to", "optuna")
    assert code == 0, out
    assert len(study_of(run, "r").trials) == len(records)


def test_failures_refusals_and_pruned_trials_keep_their_state(tmp_path):
    space = {"LR": {"type": "float", "low": 0.001, "high": 0.1, "log": True, "choices": [],
                    "power_of_two": False},
             "DEPTH": {"type": "int", "low": 2, "high": 8, "log": False, "choices": [],
                       "power_of_two": False},
             "WINDOW": {"type": "categorical", "low": None, "high": None, "log": False,
                        "choices": ["SL", "LL"], "power_of_two": False}}
    session = TrackedSession(key=str(tmp_path), name="s", group="", params={"method": "x"},
                             tags={}, space=space)

    def trial(n, status, val, params, curve=()):
        return TrackedTrial(number=n, status=status, val_bpb=val, params=params,
                            metrics={"cost_s": 1.5}, curve=list(curve),
                            tags={"status": status}, artifacts={}, start_ms=0, end_ms=0)

    tracker = OptunaTracker(None, tmp_path)
    tracker.open(session)
    tracker.trial(trial(0, "ok", 2.5, {"LR": 0.01, "DEPTH": 4, "WINDOW": "SL"}))
    tracker.trial(trial(1, "oom", None, {"LR": 0.02, "DEPTH": 8, "WINDOW": "LL"}))
    tracker.trial(trial(2, "pruned", None, {"LR": 0.05, "DEPTH": 3, "WINDOW": "SL"},
                        [(100, 4.0), (250, 3.9)]))
    # a code agent's value outside the space: kept, as a user attribute
    tracker.trial(trial(3, "ok", 2.4, {"LR": 0.5, "DEPTH": 4, "WINDOW": "SSSL"}))
    tracker.trial(trial(3, "ok", 2.4, {"LR": 0.5, "DEPTH": 4, "WINDOW": "SSSL"}))  # again
    tracker.best(3)
    tracker.close(True)
    again = OptunaTracker(None, tmp_path)  # a resume: what the journal holds is known
    again.open(session)
    again.trial(trial(1, "oom", None, {"LR": 0.02, "DEPTH": 8, "WINDOW": "LL"}))
    study = study_of(tmp_path, "s")
    states = {int(t.user_attrs["trial"]): t for t in study.trials}
    assert sorted(states) == [0, 1, 2, 3]
    assert states[0].state == TrialState.COMPLETE and states[0].value == 2.5
    assert states[1].state == TrialState.FAIL and states[1].user_attrs["status"] == "oom"
    assert states[2].state == TrialState.PRUNED
    assert states[2].intermediate_values == {100: 4.0, 250: 3.9}
    assert states[3].params == {"DEPTH": 4}
    assert states[3].user_attrs["outside_space"] == {"LR": 0.5, "WINDOW": "SSSL"}
    assert study.user_attrs["best_trial"] == 3
    assert study.best_trial.value == 2.4
