"""The trackers' own UIs in a real browser (issue 26): a real cpu session tracked to MLflow
and Optuna, `mlflow ui` and `optuna-dashboard` served on 127.0.0.1, their REST APIs and
the pages headless Chromium renders list the session's trials."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("mlflow")
pytest.importorskip("optuna_dashboard")

from tests.agent.processes import BIN, free_port, serve, stop  # noqa: E402


def browser() -> str:
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(n)), None)
    if exe is None:
        message = "no chromium here: scripts/ensure-chromium.sh installs it (make test does)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return exe


def page_text(url: str, wait_ms: int = 15000) -> str:
    """What headless Chromium shows of `url` once its scripts ran: the text of its DOM."""
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={profile}", "--window-size=1400,900",
             f"--virtual-time-budget={wait_ms}", "--dump-dom", url],
            capture_output=True, text=True, timeout=120).stdout
    dom = re.sub(r"<style.*?</style>|<script.*?</script>", " ", dom, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


def get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> Path:
    """A real cpu session of the packaged baseline (3 trials of 4 steps), tracked to both."""
    browser()
    run = tmp_path_factory.mktemp("ui") / "cpu"
    exe = shutil.which("autoresearch", path=BIN)
    proc = subprocess.run(
        [exe, "run", "--method", "random", "--trials", "2", "--sandbox", "local",
         "--token-budget", "16384", "--eval-tokens", "8192", "--run-dir", str(run),
         "--track", "mlflow", "--track", "optuna", "--quiet"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run


@pytest.mark.slow
def test_mlflow_ui_lists_the_sessions_trials(tracked_run):
    port = free_port()
    ui = serve([f"{BIN}/mlflow", "ui", "--backend-store-uri",
                f"sqlite:///{tracked_run / 'mlflow.db'}", "--host", "127.0.0.1", "--port",
                str(port), "--workers", "1"], port, "/health")
    try:
        base = f"http://127.0.0.1:{port}"
        [exp] = [e for e in get(f"{base}/api/2.0/mlflow/experiments/search",
                                {"max_results": 10})["experiments"]
                 if e["name"] == "autoresearch"]
        runs = get(f"{base}/api/2.0/mlflow/runs/search",
                   {"experiment_ids": [exp["experiment_id"]]})["runs"]
        names = sorted(r["info"]["run_name"] for r in runs)
        assert names == ["cpu", "trial 0000", "trial 0001", "trial 0002"]
        text = page_text(f"{base}/#/experiments/{exp['experiment_id']}/runs")
        assert "4 matching runs" in text and " cpu " in f" {text} ", text[:2000]
    finally:
        stop(ui)


@pytest.mark.slow
def test_optuna_dashboard_lists_the_sessions_trials(tracked_run):
    port = free_port()
    ui = serve([f"{BIN}/optuna-dashboard", str(tracked_run / "optuna.log"), "--host",
                "127.0.0.1", "--port", str(port)], port, "/api/studies")
    try:
        base = f"http://127.0.0.1:{port}"
        [study] = get(f"{base}/api/studies")["study_summaries"]
        assert study["study_name"] == "cpu"
        trials = get(f"{base}/api/studies/{study['study_id']}")["trials"]
        assert len(trials) == 3 and {t["state"] for t in trials} <= {"Complete", "Fail"}
        text = page_text(f"{base}/dashboard/studies/{study['study_id']}/trials")
        assert "3 Trials" in text and "Trial 2" in text, text[:2000]
    finally:
        stop(ui)
