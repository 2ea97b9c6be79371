"""Where the packaged data folders are, from a source tree or an installed wheel."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dir(name: str, marker: str) -> Path:
    """The folder of the data package `name` (baseline_train, prompts) that holds `marker`.

    Both ship as namespace packages, whose importlib.resources readers break under editable
    installs, so the search path is walked directly."""
    spec = importlib.util.find_spec(name)
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / marker).is_file():
            return Path(location)
    raise FileNotFoundError(f"the {name}/ folder of autoresearch-sandbox is missing: reinstall it")


def baseline_dir() -> Path:
    return package_dir("baseline_train", "search_space.toml")


def prompts_dir() -> Path:
    return package_dir("prompts", "README.md")
