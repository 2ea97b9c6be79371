"""A training folder declares how it runs (issue 14): the [run] table, read and checked."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from agent.config.runspec import RunSpec, RunSpecError, load_runspec


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


# Issue 21, point 4: mounts never expose the home folder or credentials, the env filter
# refuses credential-like names and values and loader paths (each accepted on main).
@pytest.mark.parametrize("table, words", [
    ('[run]\nmounts = ["~"]\n', "is your home folder or holds it"),
    ('[run]\nmounts = ["~/.cache/.."]\n', "is your home folder or holds it"),
    ('[run]\nmounts = ["~/.aws"]\n', "~/.aws holds credentials"),
    ('[run]\nmounts = ["~/.config"]\n', "~/.config/gcloud holds credentials"),
    ('[run]\nmounts = ["~/.cache/huggingface"]\n', "a credential file"),
    ('[run]\nmounts = ["~/etc-link"]\n', "is outside your home"),
    # issue 25: this tool's own cache holds the held-out val and test text and the test split
    ('[run]\nmounts = ["~/.cache/autoresearch-sandbox/data"]\n', "this tool's own cache"),
    ('[run]\nmounts = ["~/.cache/autoresearch-sandbox"]\n', "this tool's own cache"),
    ('[run]\nenv = { DATABASE_URL = "postgres://me:hunter2@db/x" }\n', "URL with a user name"),
    ('[run]\nenv = { MYSQL_PWD = "x" }\n', "looks like a secret"),
    ('[run]\nenv = { GH_PAT = "x" }\n', "looks like a secret"),
    ('[run]\nenv = { GOOGLE_APPLICATION_CREDENTIALS = "/x" }\n', "looks like a secret"),
    ('[run]\nenv = { LD_LIBRARY_PATH = "/x" }\n', "changes which code"),
    ('[run]\nenv = { LD_PRELOAD = "/x.so" }\n', "changes which code"),
    ('[run]\nenv = { PYTHONHOME = "/x" }\n', "changes which code"),
    ('[run]\nenv = { PYTHONPATH = "/x" }\n', "changes which code"),
])
def test_credentials_and_the_home_folder_never_reach_a_trial(tmp_path, monkeypatch, table,
                                                              words):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    (tmp_path / ".cache" / "autoresearch-sandbox" / "data").mkdir(parents=True)
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\n")
    (tmp_path / ".config" / "gcloud").mkdir(parents=True)
    (tmp_path / ".cache" / "huggingface" / "hub").mkdir(parents=True)
    (tmp_path / ".cache" / "huggingface" / "token").write_text("hf_x")
    os.symlink("/etc", tmp_path / "etc-link")
    d = folder(tmp_path, table)
    with pytest.raises(RunSpecError) as e:
        load_runspec(d)
    assert words in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_the_hub_cache_itself_and_plain_values_are_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".cache" / "huggingface" / "hub").mkdir(parents=True)
    (tmp_path / ".cache" / "huggingface" / "token").write_text("hf_x")
    d = folder(tmp_path, '[run]\nmounts = ["~/.cache/huggingface/hub"]\n'
                         'env = { HF_HUB_OFFLINE = "1", DATA_URL = "https://host/x.parquet",'
                         ' CUDA_PATH_HINT = "x" }\n')
    spec = load_runspec(d)
    assert spec.mounts == (str(tmp_path / ".cache" / "huggingface" / "hub"),)
    assert spec.env["DATA_URL"] == "https://host/x.parquet"


def test_the_interpreter_is_never_run_to_find_its_folders(tmp_path):
    """On main the local backend ran `[run] python` on the host (as root) to ask where it
    lives; its folders are now read from the file system."""
    from sandbox.images.host import interpreter_roots

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    base = Path(sys.executable).resolve()
    (venv / "pyvenv.cfg").write_text(f"home = {base.parent}\n")
    marker = tmp_path / "ran"
    python = venv / "bin" / "python"
    python.write_text(f"#!/bin/sh\ntouch {marker}\nexec {base} \"$@\"\n")
    python.chmod(0o755)
    roots = interpreter_roots(str(python))
    assert not marker.exists()
    assert str(venv) in roots and str(base.parent.parent) in roots


def test_init_never_proposes_the_home_folder(tmp_path, monkeypatch):
    from agent.config.init_folder import init_folder

    monkeypatch.setenv("HOME", str(tmp_path))
    d = tmp_path / "k"
    d.mkdir()
    (d / "train.py").write_text("MATRIX_LR = 0.04\nDEPTH = 8\nmodel = from_pretrained('x')\n")
    (d / "prepare.py").write_text('CACHE = "~/.cache/../"\nURL = "download it"\n'
                                  'DATA = os.path.join(os.path.expanduser("~"), ".cache", "..")\n')
    path, text, found = init_folder(d)
    assert "~/.cache/.." not in text and '"~"' not in text, text
    assert "~/.cache/huggingface/hub" in text


def test_init_reads_train_py_for_its_own_caches_and_the_hub(tmp_path, monkeypatch):
    """A cache that train.py (not prepare.py) names, and a train.py that requires
    HF_HUB_OFFLINE without loading through get_kernel/from_pretrained (issue 28)."""
    from agent.config.init_folder import init_folder

    monkeypatch.setenv("HOME", str(tmp_path))
    d = tmp_path / "k"
    d.mkdir()
    (d / "train.py").write_text(
        'import os\nMATRIX_LR = 0.04\nDEPTH = 8\n'
        'TOKENIZER = os.path.join(os.path.expanduser("~"), ".cache", "mytok")\n'
        'assert os.environ["HF_HUB_OFFLINE"] == "1"\n')
    path, text, found = init_folder(d)
    assert '"~/.cache/mytok"' in text and "~/.cache/huggingface/hub" in text, text
    assert 'HF_HUB_OFFLINE = "1"' in text
    assert 'prepare = "once"' not in text  # no prepare.py: nothing to run once
