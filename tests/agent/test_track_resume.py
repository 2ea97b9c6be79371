"""kill -9 of a tracked session, then `resume` and `track` (issue 26): every tracker holds
each trial exactly once, whatever was being sent when the session died."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.agent.processes import autoresearch
from tests.agent.test_track_mlflow import check_against_ledger, children


def held(tracker: str, run) -> list[int]:
    """The trial numbers the tracker holds for session `run`, one entry per record."""
    if tracker == "mlflow":
        from agent.track.mlflow_tracker import default_uri

        return [int(k.data.tags["trial"]) for k in children(default_uri(run), run)[1]]
    if tracker == "wandb":
        from tests.agent.test_track_wandb import offline_runs

        return [r["config"]["trial"] for r in offline_runs(run).values()]
    from tests.agent.test_track_optuna import study_of

    return [int(t.user_attrs["trial"]) for t in study_of(run, run.name).trials]


@pytest.mark.slow
@pytest.mark.parametrize("tracker", ["mlflow", "wandb", "optuna"])
def test_kill_9_then_resume_and_backfill_duplicate_nothing(tmp_path, train_dir, tracker):
    pytest.importorskip(tracker)
    run = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path)  # no ~/.netrc: W&B offline
    proc = autoresearch("run", "--method", "cmaes", "--seed", "5", "--trials", "5",
                        "--sandbox", "local", "--train-dir", str(train_dir), "--time-budget",
                        "1.5", "--run-dir", str(run), "--track", tracker, "--quiet",
                        wait=False, env=env)
    deadline = time.monotonic() + 120
    while not list((run / "trials" / "0003").rglob("train.log")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    code, out = autoresearch("resume", str(run), "--quiet", env=env)  # session.toml's tracker
    assert code == 0, out
    assert sorted(held(tracker, run)) == list(range(6))
    if tracker == "mlflow":
        from agent.track.mlflow_tracker import default_uri

        check_against_ledger(run, default_uri(run))
    code, out = autoresearch("track", str(run), "--to", tracker, env=env)
    assert code == 0, out
    assert f"6 trials in {tracker}" in out
    assert sorted(held(tracker, run)) == list(range(6))
