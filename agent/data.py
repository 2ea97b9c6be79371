"""The trial data: prepared once on the host by the training folder's own prepare.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent.errors import UserError


class DataError(UserError):
    """prepare.py could not prepare the data; the message says what it printed."""


def prepare_data(spec, repo: Path, train_dir: Path) -> Path | None:
    """The data folder of a session, as its training folder's [run] table says: `auto` runs
    prepare.py (it prints the folder); `none` and `once` leave it to train.py (the user ran
    the preparation); anything else is a command, run in the training folder, whose last line
    may name the folder."""
    if spec.prepare == "auto":
        return prepare_default_data(repo)
    if spec.prepare in ("none", "once"):
        return None
    env = {"PATH": os.pathsep.join(
        [os.path.dirname(spec.python or sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": os.path.expanduser("~"), "LANG": "C.UTF-8", **spec.env}
    out = subprocess.run(["/bin/sh", "-c", spec.prepare], cwd=train_dir, capture_output=True,
                         text=True, timeout=6 * 3600, env=env)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or lines or ["no output"])[-1]
        raise DataError(f"[run] prepare = {spec.prepare!r} failed (exit {out.returncode}): "
                        f"{tail}")
    return Path(lines[-1]) if lines and Path(lines[-1]).is_dir() else None


def prepare_default_data(train_dir: Path) -> Path | None:
    """Run `train_dir/prepare.py` (no arguments: its default corpus, cached) and return the
    folder it printed last; None if the folder has no prepare.py."""
    prepare = Path(train_dir) / "prepare.py"
    if not prepare.is_file():
        return None
    out = subprocess.run([sys.executable, str(prepare)], capture_output=True, text=True,
                         timeout=1800)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines or not Path(lines[-1]).is_dir():
        tail = (out.stderr.strip().splitlines() or out.stdout.strip().splitlines()
                or ["no output"])[-1]
        raise DataError(f"{prepare} could not prepare its data: {tail}")
    return Path(lines[-1])
