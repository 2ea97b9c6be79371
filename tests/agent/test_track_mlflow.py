"""`--track mlflow` (issue 26): a session as a parent run, each trial a child run, read back
with MLflow's own client; kill -9 + resume and a backfill send nothing twice; a tracking
server that does not answer costs a warning, not the session."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("mlflow", reason="pip install 'autoresearch-sandbox[mlflow]'")

from mlflow.tracking import MlflowClient  # noqa: E402

from agent.track.mlflow_tracker import default_uri  # noqa: E402
from tests.agent.processes import BIN, autoresearch, free_port, serve, stop  # noqa: E402


def ledger(run: Path) -> dict[int, dict]:
    return {r["trial"]: r for r in map(json.loads, (run / "trials.jsonl").read_text().split(
        "\n")[:-1])}


def children(uri: str, run: Path) -> tuple[MlflowClient, list]:
    """The child runs of session `run`'s parent run."""
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("autoresearch")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    [parent] = [r.info.run_id for r in runs
                if r.data.tags.get("autoresearch.run_dir") == str(run.resolve())]
    return client, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]


def check_against_ledger(run: Path, uri: str) -> None:
    """One child per trial, whose params, val_bpb, status and diffs are the ledger's."""
    client, kids = children(uri, run)
    trials = ledger(run)
    assert sorted(int(k.data.tags["trial"]) for k in kids) == sorted(trials)
    for kid in kids:
        rec = trials[int(kid.data.tags["trial"])]
        assert kid.data.params == {k: str(v) for k, v in rec["config"].items()}
        assert kid.data.tags["status"] == rec["status"]
        assert kid.data.tags["commit"] == rec["commit"]
        assert kid.data.metrics.get("val_bpb") == rec["val_bpb"]
        names = {a.path for a in client.list_artifacts(kid.info.run_id)}
        if rec["trial"] > 0:
            assert {"diff_vs_parent.diff", "diff_vs_baseline.diff"} <= names
            got = client.download_artifacts(kid.info.run_id, "diff_vs_parent.diff",
                                            str(run / "dl"))
            assert Path(got).read_text() == rec["diff"]
    best = [k for k in kids if k.data.tags.get("best") == "true"]
    head = subprocess.run(["git", "-C", str(run / "repo"), "rev-parse", "best"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert [k.data.tags["commit"] for k in best] == [head]


@pytest.mark.slow
def test_a_session_tracked_to_mlflow_is_its_ledger(tmp_path, train_dir):
    run = tmp_path / "r"
    code, out = autoresearch("run", "--method", "tpe", "--trials", "3", "--sandbox", "local",
                             "--train-dir", str(train_dir), "--time-budget", "0.01",
                             "--run-dir", str(run), "--track", "mlflow", "--quiet")
    assert code == 0, out
    assert "tracking" not in out and "INFO" not in out
    check_against_ledger(run, default_uri(run))
    assert 'track = ["mlflow"]' in (run / "session.toml").read_text()


@pytest.mark.slow
def test_a_backfill_of_an_untracked_run_and_of_a_half_sent_trial(tmp_path, train_dir):
    run = tmp_path / "r"
    code, out = autoresearch("run", "--method", "random", "--trials", "2", "--sandbox",
                             "local", "--train-dir", str(train_dir), "--time-budget", "0.01",
                             "--run-dir", str(run), "--quiet")
    assert code == 0, out
    assert not (run / "mlflow.db").exists()
    code, out = autoresearch("track", str(run), "--to", "mlflow")
    assert code == 0, out
    uri = default_uri(run)
    check_against_ledger(run, uri)
    # a child the process was killed while sending (its run not ended) is sent again
    client, kids = children(uri, run)
    two = next(k for k in kids if k.data.tags["trial"] == "2")
    client.update_run(two.info.run_id, status="RUNNING")
    code, out = autoresearch("track", str(run), "--to", "mlflow")
    assert code == 0, out
    client, kids = children(uri, run)
    assert sorted(k.data.tags["trial"] for k in kids) == ["0", "1", "2"]
    assert two.info.run_id not in {k.info.run_id for k in kids}
    check_against_ledger(run, uri)


@pytest.mark.slow
def test_a_tracking_server_that_is_down_warns_and_the_session_finishes(tmp_path, train_dir):
    """A real MLflow server on 127.0.0.1 takes a session; stopped, the next session warns
    once and finishes with every trial in its ledger; `track` sends them once it is up."""
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    cmd = [f"{BIN}/mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers",
           "1", "--backend-store-uri", f"sqlite:///{store / 'db.sqlite'}",
           "--default-artifact-root", str(store / "art")]

    def start():
        return serve(cmd, port, "/health")

    uri = f"http://127.0.0.1:{port}"
    server = start()
    try:
        code, out = autoresearch("run", "--method", "random", "--trials", "1", "--sandbox",
                                 "local", "--train-dir", str(train_dir), "--time-budget",
                                 "0.01", "--run-dir", str(tmp_path / "up"), "--track",
                                 f"mlflow:{uri}", "--quiet")
        assert code == 0, out
        check_against_ledger(tmp_path / "up", uri)
    finally:
        stop(server)
    run = tmp_path / "down"
    t0 = time.monotonic()
    code, out = autoresearch("run", "--method", "random", "--trials", "3", "--sandbox", "local",
                             "--train-dir", str(train_dir), "--time-budget", "0.01",
                             "--run-dir", str(run), "--track", f"mlflow:{uri}")
    assert code == 0, out
    assert out.count("tracking to mlflow failed") == 1, out
    assert f"autoresearch track {run} --to mlflow" in " ".join(out.split())
    assert sorted(ledger(run)) == [0, 1, 2, 3]
    assert time.monotonic() - t0 < 120, time.monotonic() - t0
    # the folder's session.toml names the server: resume does not send there unasked
    code, out = autoresearch("resume", str(run), "--trials", "4")
    assert code == 0, out
    assert f"session.toml asks to track to mlflow:{uri}: not done" in " ".join(out.split())
    assert "tracking to mlflow failed" not in out
    server = start()
    try:
        code, out = autoresearch("track", str(run), "--to", f"mlflow:{uri}")
        assert code == 0, out
        check_against_ledger(run, uri)
        check_against_ledger(tmp_path / "up", uri)
    finally:
        stop(server)


def test_a_folder_cannot_send_its_trials_off_this_machine(tmp_path):
    """session.toml and bench.toml are data: a tracker with its own URI, project or storage
    in them is dropped (the session says so), a bare name (its store in the folder) kept."""
    from agent.config.settings import SessionConfig

    path = tmp_path / "session.toml"
    path.write_text('method = "tpe"\ntrack = ["mlflow:http://203.0.113.9:5000", "optuna", '
                    '"wandb:someone/else"]\n')
    config = SessionConfig.load(path)
    assert config.track == ["optuna"]
    assert config.track_dropped == ["mlflow:http://203.0.113.9:5000", "wandb:someone/else"]
    config.save(path)
    assert "203.0.113.9" not in path.read_text() and "track_dropped" not in path.read_text()


def test_an_unknown_tracker_or_a_missing_library_is_one_line(monkeypatch):
    import importlib.util

    from typer.testing import CliRunner

    from agent.cli.main import app

    runner = CliRunner()
    got = runner.invoke(app, ["run", "--track", "tensorboard", "--trials", "1"])
    assert got.exit_code == 2 and "use mlflow[:URI], wandb[:PROJECT] or optuna" in got.output
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    got = runner.invoke(app, ["run", "--track", "wandb", "--trials", "1"])
    assert got.exit_code == 2
    assert "pip install 'autoresearch-sandbox[wandb]'" in got.output


@pytest.mark.slow
def test_a_bench_is_one_experiment_with_a_parent_run_per_session(tmp_path, train_dir):
    bench = tmp_path / "bench-x"
    code, out = autoresearch("bench", "--methods", "random,tpe", "--seeds", "1", "--trials",
                             "1", "--sandbox", "local", "--train-dir", str(train_dir),
                             "--time-budget", "0.01", "--run-dir", str(bench), "--track",
                             "mlflow", "--quiet")
    assert code == 0, out
    assert not (bench / "random-s0" / "mlflow.db").exists()  # the bench's store, not its own
    client = MlflowClient(tracking_uri=default_uri(bench))
    exp = client.get_experiment_by_name("autoresearch/bench-x")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = {r.info.run_id: r.info.run_name for r in runs
               if "mlflow.parentRunId" not in r.data.tags}
    assert sorted(parents.values()) == ["random-s0", "tpe-s0"]
    for pid in parents:
        assert len([r for r in runs if r.data.tags.get("mlflow.parentRunId") == pid]) == 2
