"""`--executor ray` against a real Ray instance on this machine (issue 10): the driver keeps
git, the ledger and the optimizer; trials run as Ray tasks. The same seed and worker count
propose what the local pool proposes: the session never knows where its trials run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config.settings import SessionConfig
from agent.loop.session import Session
from sandbox.base import SandboxError

ray = pytest.importorskip("ray") if os.environ.get("CI", "").lower() not in (
    "1", "true", "yes") else __import__("ray")


def configs(run: Path) -> list[dict]:
    rs = [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]
    return [r["config"] for r in sorted(rs, key=lambda r: r["trial"])]


def settings(train_dir, **kw) -> SessionConfig:
    return SessionConfig(**{"method": "tpe", "seed": 2, "trials": 7, "sandbox": "local",
                            "train_dir": str(train_dir), "time_budget": 0.2, "workers": 3,
                            **kw})


@pytest.fixture
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def test_ray_trials_match_the_local_pool(tmp_path, train_dir, local_ray):
    Session.create(tmp_path / "ray", settings(train_dir, executor="ray")).run()
    Session.create(tmp_path / "pool", settings(train_dir, executor="pool")).run()
    assert configs(tmp_path / "ray") == configs(tmp_path / "pool")
    rs = [json.loads(x) for x in (tmp_path / "ray" / "trials.jsonl").read_text().splitlines()]
    assert sorted(r["trial"] for r in rs) == list(range(8))
    assert all(r["status"] in ("ok", "oom", "diverged") for r in rs)
    log = (tmp_path / "ray" / "trials" / "0003" / "train.log").read_text()
    assert "val_bpb" in log  # the node's files came back into the run folder


def test_a_node_without_the_data_is_named(tmp_path, train_dir, local_ray):
    session = Session.create(tmp_path / "run", settings(train_dir, executor="ray",
                                                        data_dir=str(tmp_path / "absent")))
    with pytest.raises(SandboxError, match=r"node .*: no prepared data at .*absent"):
        session.run()


def test_without_ray_the_error_says_how_to_install(tmp_path, train_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    session = Session.create(tmp_path / "run", settings(train_dir, executor="ray"))
    with pytest.raises(SandboxError, match=r"autoresearch-sandbox\[ray\]"):
        session.run()


@pytest.mark.slow
def test_a_ray_cluster_started_apart_by_address(tmp_path, train_dir):
    """`ray start --head` as a user would (a separate cluster process), then the CLI with
    --ray-address."""
    bin_dir = os.path.dirname(sys.executable)
    ray_cli = shutil.which("ray", path=bin_dir)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    start = subprocess.run([ray_cli, "start", "--head", "--num-cpus", "4",
                            "--node-ip-address", "127.0.0.1", "--port", "0",
                            "--include-dashboard", "false", "--disable-usage-stats"],
                           capture_output=True, text=True, timeout=120, env=env)
    try:
        assert start.returncode == 0, start.stderr[-2000:]
        address = next(ln.split("'")[1] for ln in start.stdout.splitlines()
                       if "ray.init(address=" in ln or "--address=" in ln) \
            if "--address='" in start.stdout else "auto"
        exe = shutil.which("autoresearch", path=bin_dir)
        run = tmp_path / "run"
        done = subprocess.run([exe, "run", "--method", "random", "--trials", "4", "--workers",
                               "2", "--executor", "ray", "--ray-address", address,
                               "--sandbox", "local", "--train-dir", str(train_dir),
                               "--time-budget", "0.1", "--run-dir", str(run), "--quiet"],
                              capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert len((run / "trials.jsonl").read_text().splitlines()) == 5
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120, env=env)
