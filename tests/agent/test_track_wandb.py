"""`--track wandb` (issue 26) in offline mode: a W&B run per trial, grouped by session, read
back from the offline run files with wandb's own record classes (tests/agent/wandb_records.py);
a backfill adds nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("wandb", reason="pip install 'autoresearch-sandbox[wandb]'")

from tests.agent.wandb_records import records  # noqa: E402


def autoresearch(*args, env=None):
    exe = shutil.which("autoresearch", path=os.path.dirname(sys.executable))
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=300, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def offline_env(tmp_path: Path) -> dict:
    """No key anywhere: no WANDB_API_KEY, a HOME without ~/.netrc."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    (tmp_path / "home").mkdir(exist_ok=True)
    return {**env, "HOME": str(tmp_path / "home")}


def offline_runs(home: Path) -> dict[str, dict]:
    """run id -> what its offline file holds: config, group, job type, tags, summary, files,
    exit code."""
    runs = {}
    for path in sorted(home.glob("wandb/offline-run-*/run-*.wandb")):
        got = {"summary": {}, "files": set(), "exit": None}
        for r in records(path):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                got.update(id=r.run.run_id, group=r.run.run_group, job=r.run.job_type,
                           tags=list(r.run.tags),
                           config={u.key: json.loads(u.value_json)
                                   for u in r.run.config.update if u.key != "_wandb"})
            elif kind == "summary":
                got["summary"].update({u.key: json.loads(u.value_json)
                                       for u in r.summary.update if u.key})
            elif kind == "files":
                got["files"] |= {f.path for f in r.files.files}
            elif kind == "exit":
                got["exit"] = r.exit.exit_code
        runs[got["id"]] = got
    return runs


@pytest.mark.slow
def test_a_session_tracked_to_wandb_offline_is_its_ledger(tmp_path, train_dir):
    run = tmp_path / "r"
    env = offline_env(tmp_path)
    code, out = autoresearch("run", "--method", "random", "--trials", "3", "--sandbox",
                             "local", "--train-dir", str(train_dir), "--time-budget", "0.01",
                             "--run-dir", str(run), "--track", "wandb", "--quiet", env=env)
    assert code == 0, out
    records_ = {r["trial"]: r for r in map(json.loads,
                                            (run / "trials.jsonl").read_text().splitlines())}
    runs = offline_runs(run)
    assert sorted(r["config"]["trial"] for r in runs.values()) == sorted(records_)
    for got in runs.values():
        rec = records_[got["config"]["trial"]]
        assert {k: v for k, v in got["config"].items() if k not in ("trial", "session")} == \
            rec["config"]
        assert got["group"] == "r" and got["job"] == "random"
        assert got["summary"]["tag.status"] == rec["status"] and rec["status"] in got["tags"]
        assert got["summary"]["tag.commit"] == rec["commit"]
        assert got["summary"].get("val_bpb") == rec["val_bpb"]
        assert (got["exit"] == 0) == (rec["status"] == "ok")
        if rec["trial"] > 0:
            assert {"diff_vs_parent.diff", "diff_vs_baseline.diff"} <= got["files"]
            saved = next(run.glob(f"wandb/offline-run-*-{got['id']}/files/diff_vs_parent.diff"))
            assert saved.read_text() == rec["diff"]
    assert "best" in next(r for r in runs.values() if r["config"]["trial"] == 0)["tags"]
    code, out = autoresearch("track", str(run), "--to", "wandb", env=env)
    assert code == 0, out
    assert len(offline_runs(run)) == len(records_)
