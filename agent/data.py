"""The trial data: prepared once on the host by the training folder's own prepare.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent.errors import UserError


class DataError(UserError):
    """prepare.py could not prepare the data; the message says what it printed."""


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
