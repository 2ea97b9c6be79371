"""A training folder declares how it runs (issue 14): the [run] table, read and checked."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from agent.runspec import RunSpec, RunSpecError, load_runspec


def folder(tmp_path, run_table: str, name: str = "autoresearch.toml") -> Path:
    d = tmp_path / "k"
    d.mkdir(exist_ok=True)
    (d / "train.py").write_text("x = 1\n")
    (d / "prepare.py").write_text("MAX_SEQ_LEN = 2048\nTIME_BUDGET = 300  # seconds\n")
    (d / name).write_text(run_table)
    return d


def test_no_table_is_todays_behaviour(tmp_path):
    d = folder(tmp_path, "[other]\nx = 1\n")
    assert load_runspec(d) == RunSpec()


def test_a_full_table_resolves_paths_and_reads_the_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".cache" / "autoresearch").mkdir(parents=True)
    venv = tmp_path / "k" / ".venv" / "bin"
    venv.mkdir(parents=True)
    os.symlink(sys.executable, venv / "python")
    d = folder(tmp_path, '[run]\npython = ".venv/bin/python"\nprepare = "once"\n'
                         'mounts = ["~/.cache/autoresearch"]\n'
                         'env = { HF_HUB_OFFLINE = "1", WORKERS = 2 }\n'
                         'time_budget = "prepare.py:TIME_BUDGET"\n')
    spec = load_runspec(d)
    assert spec.python == str(venv / "python") and spec.prepare == "once"
    assert spec.mounts == (str(tmp_path / ".cache" / "autoresearch"),)
    assert spec.relative_mounts() == [(str(tmp_path / ".cache" / "autoresearch"),
                                       ".cache/autoresearch")]
    assert spec.env == {"HF_HUB_OFFLINE": "1", "WORKERS": "2"}
    assert spec.time_budget == 300.0


@pytest.mark.parametrize("table, words", [
    ('[run]\nenv = { OPENAI_API_KEY = "x" }\n', "looks like a secret"),
    ('[run]\nenv = { HF_TOKEN = "x" }\n', "looks like a secret"),
    ('[run]\nenv = { AR_SEED = "1" }\n', "cannot be set by a folder"),
    ('[run]\nenv = { PATH = "/x" }\n', "cannot be set by a folder"),
    ('[run]\npython = ".venv/bin/python"\n', "is not an executable file"),
    ('[run]\nmounts = ["~/no-such-cache"]\n', "does not exist"),
    ('[run]\nmounts = ["/etc"]\n', "is outside your home"),
    ('[run]\ntime_budget = "prepare.py:NOPE"\n', "has no `NOPE = <seconds>`"),
    ('[run]\ntime_budget = -5\n', "seconds, or FILE:CONSTANT"),
    ('[run]\npythn = "x"\n', "unknown key 'pythn'"),
])
def test_bad_tables_are_one_line_naming_the_key(tmp_path, monkeypatch, table, words):
    monkeypatch.setenv("HOME", str(tmp_path))
    d = folder(tmp_path, table)
    with pytest.raises(RunSpecError) as e:
        load_runspec(d)
    assert words in str(e.value) and "[run]" in str(e.value)
    assert "\n" not in str(e.value)


def test_two_tables_are_refused(tmp_path):
    d = folder(tmp_path, '[run]\nprepare = "none"\n')
    (d / "search_space.toml").write_text('[run]\nprepare = "once"\n')
    with pytest.raises(RunSpecError, match="keep one"):
        load_runspec(d)
