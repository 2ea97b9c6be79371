"""Bring your own testbed (issue 14): a folder that follows karpathy/autoresearch's contract
(tests/fixtures/karpathy_like: data under ~/.cache/NAME, TIME_BUDGET imported from
prepare.py, a module read from a hub cache only with HF_HUB_OFFLINE=1) runs as --train-dir
in both backends, through the [run] table of its search_space.toml."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli.main import app

runner = CliRunner()
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "karpathy_like"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home of the test's own, prepared as its user would: `python prepare.py`, and the
    hub cache holding the kernel module."""
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o755)
    monkeypatch.setenv("HOME", str(home))
    folder = tmp_path / "k"
    shutil.copytree(FIXTURE, folder)
    subprocess.run([sys.executable, "prepare.py"], cwd=folder, check=True,
                   capture_output=True, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    hub = home / ".cache" / "huggingface" / "hub" / "arfixture" / "score"
    hub.mkdir(parents=True)
    (hub / "kernel.py").write_text("def score(n, seq):\n    return 1.0 + 1.0 / (n + seq)\n")
    return folder


@pytest.mark.parametrize("sandbox", ["local", "docker"])
def test_a_karpathy_style_folder_runs_ok(home, tmp_path, sandbox, request):
    if sandbox == "docker":
        request.getfixturevalue("host_image")
    run = tmp_path / "run"
    result = runner.invoke(app, ["run", "--train-dir", str(home), "--method", "random",
                                 "--trials", "2", "--seed", "1", "--sandbox", sandbox,
                                 "--run-dir", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    rs = [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rs] == ["ok"] * 3, [r["result"]["reason"] for r in rs]
    assert rs[0]["result"]["metrics"]["cache_writable"] == "no"  # mounts are read-only
    toml = (run / "session.toml").read_text()
    assert "data_dir" not in toml  # prepare = "once": the folder finds its own data
    limits_timeout = 3 * 2 + 120  # time_budget = "prepare.py:TIME_BUDGET" (2 s)
    assert rs[0]["result"]["wall_s"] < limits_timeout


def test_without_the_offline_variable_the_fixture_fails_loudly(home, tmp_path):
    toml = home / "search_space.toml"
    toml.write_text(toml.read_text().replace('env = { HF_HUB_OFFLINE = "1" }\n', ""))
    run = tmp_path / "run"
    result = runner.invoke(app, ["run", "--train-dir", str(home), "--trials", "0",
                                 "--sandbox", "local", "--run-dir", str(run), "--quiet"])
    rs = [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]
    assert result.exit_code == 0, result.output
    assert rs[0]["status"] == "crash" and "HF_HUB_OFFLINE" in rs[0]["result"]["reason"]


def test_a_secret_in_the_run_table_is_refused_before_anything_starts(home, tmp_path):
    toml = home / "search_space.toml"
    toml.write_text(toml.read_text().replace('env = { HF_HUB_OFFLINE = "1" }',
                                             'env = { HF_TOKEN = "hf_x" }'))
    run = tmp_path / "run"
    result = runner.invoke(app, ["run", "--train-dir", str(home), "--sandbox", "local",
                                 "--run-dir", str(run)])
    assert result.exit_code == 2 and "HF_TOKEN looks like a secret" in result.output
    assert not run.exists()


def test_init_writes_the_config_that_runs_the_folder(home, tmp_path):
    """The fixture without its search_space.toml: `init` finds its constants, caches, hub
    kernel and time budget, and the session it configures runs ok."""
    (home / "search_space.toml").unlink()
    result = runner.invoke(app, ["init", "--train-dir", str(home)])
    assert result.exit_code == 0, result.output
    text = (home / "search_space.toml").read_text()
    assert 'mounts = ["~/.cache/arfixture", "~/.cache/huggingface/hub"]' in text
    assert 'env = { HF_HUB_OFFLINE = "1" }' in text and 'prepare = "once"' in text
    assert 'time_budget = "prepare.py:TIME_BUDGET"' in text
    assert "[params.MATRIX_LR]" in text and "[params.DEPTH]" in text
    assert "[params.HEAD_DIM]" not in text  # not a constant of this train.py
    run = tmp_path / "run"
    result = runner.invoke(app, ["run", "--train-dir", str(home), "--method", "random",
                                 "--trials", "1", "--sandbox", "local", "--run-dir", str(run),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    rs = [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rs] == ["ok", "ok"], [r["result"]["reason"] for r in rs]
    again = runner.invoke(app, ["init", "--train-dir", str(home)])
    assert again.exit_code == 2 and "--force" in again.output


@pytest.mark.parametrize("sandbox", ["local", "docker"])
def test_the_folders_own_venv_runs_its_trials(home, tmp_path, sandbox, request):
    if sandbox == "docker":
        request.getfixturevalue("host_image")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home / ".venv")],
                   check=True)
    toml = home / "search_space.toml"
    toml.write_text(toml.read_text().replace("[run]\n", '[run]\npython = ".venv/bin/python"\n'))
    run = tmp_path / "run"
    result = runner.invoke(app, ["run", "--train-dir", str(home), "--trials", "0",
                                 "--sandbox", sandbox, "--run-dir", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    rs = [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]
    assert rs[0]["status"] == "ok", rs[0]["result"]["reason"]
    assert rs[0]["result"]["metrics"]["python_prefix"] == str(home / ".venv")
