"""A session.toml may come from someone else (issue 21, point 3): the data folder it names is
given to every trial read-only, so it may not be the home folder, a system folder, a
credential store or a folder holding a credential file; a prepared folder is accepted."""

from __future__ import annotations

import pytest

from agent.config.settings import ConfigError, SessionConfig


@pytest.mark.parametrize("where, words", [
    ("HOME", "is your home folder or holds it"),
    ("/", "is your home folder or holds it"),
    ("/etc", "is a system folder"),
    ("HOME/.ssh", "~/.ssh holds credentials"),
    ("HOME/cache", "a credential file"),
])
def test_a_data_folder_that_exposes_secrets_is_refused(tmp_path, monkeypatch, where, words):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / "cache" / "hub").mkdir(parents=True)
    (home / "cache" / "token").write_text("hf_x")
    monkeypatch.setenv("HOME", str(home))
    toml = tmp_path / "session.toml"
    toml.write_text(f'method = "random"\ndata_dir = "{where.replace("HOME", str(home))}"\n')
    with pytest.raises(ConfigError) as e:
        SessionConfig.load(toml)
    assert words in str(e.value) and "delete the line" in str(e.value), str(e.value)


def test_a_prepared_data_folder_is_accepted(tmp_path, monkeypatch, prepared_data):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    toml = tmp_path / "session.toml"
    toml.write_text(f'method = "random"\ndata_dir = "{prepared_data}"\n')
    assert SessionConfig.load(toml).data_dir == str(prepared_data)
