"""`autoresearch report`: a run's best and its baseline scored on the test split no trial read
(issue 25, point 4). One model per commit, trained again at the session's seed with val
hidden; the harness scores it on val and on test with the same code; kept in RUN/test/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from agent.config.settings import SessionConfig
from agent.loop.session import Session

EXE = shutil.which("autoresearch", path=os.path.dirname(sys.executable))


def report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "report", *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.mark.slow
def test_report_scores_the_best_and_the_baseline_on_val_and_test(tmp_path, prepared_data):
    run = tmp_path / "run"
    config = SessionConfig(method="random", trials=2, seed=3, sandbox="local",
                           token_budget=16384, eval_tokens=16384, data_dir=str(prepared_data))
    Session.create(run, config).run()
    notes = [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]

    done = report(str(run), "--json")
    assert done.returncode == 0, done.stderr
    [found] = json.loads(done.stdout)
    assert found["test_split"].startswith("pycode-") and "-test:" in found["test_split"]
    rows = {r["trial"]: r for r in found["rows"]}
    ok = [n for n in notes if n["status"] == "ok"]
    best = min(ok, key=lambda n: (n["val_bpb"], n["trial"]))
    assert set(rows) == {0, best["trial"]}
    assert rows[0]["role"] == ("baseline = best" if best["trial"] == 0 else "baseline")
    assert rows[best["trial"]]["role"] in ("best", "baseline = best")
    if best["trial"]:
        assert rows[best["trial"]]["role"] == "best"
    for trial, row in rows.items():
        assert row["status"] == "ok", row
        recorded = next(n["val_bpb"] for n in notes if n["trial"] == trial)
        assert row["recorded_val_bpb"] == recorded
        # the same commit and seed, scored by the harness in fp32: the same number to 1e-2
        assert abs(row["val_bpb"] - recorded) < 1e-2, row
        assert 1.0 < row["test_bpb"] < 8.0 and row["test_bpb"] != row["val_bpb"]
        assert row["gap"] == pytest.approx(row["test_bpb"] - row["val_bpb"])
    kept = sorted(p.name for p in (run / "test").glob("*.json"))
    assert kept == sorted(f"{t:04d}-seed3.json" for t in rows)

    again = report(str(run), "--json")  # read back, not trained again
    assert again.returncode == 0 and json.loads(again.stdout) == [found]
    assert sorted(p.name for p in (run / "test").glob("*.json")) == kept
    table = report(str(run))
    assert table.returncode == 0 and "test − val" in table.stdout and run.name in table.stdout


def test_report_says_why_a_run_has_no_test_split(tmp_path, train_dir):
    run = tmp_path / "synthetic"
    config = SessionConfig(method="random", trials=1, sandbox="local", time_budget=0.001,
                           train_dir=str(train_dir))
    Session.create(run, config).run()  # its train.py needs no prepared data folder
    done = report(str(run))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "has no prepared data folder" in done.stderr
    missing = report(str(tmp_path / "nothing"))
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
