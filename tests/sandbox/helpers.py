"""Small trial scripts and a runner shared by the sandbox tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

from sandbox.base import Limits, TrialRun

SUMMARY = 'print("---"); print("val_bpb: 1.500000"); print("training_seconds: 0.1")'


def make_trial(tmp_path: Path, script: str, name: str = "t") -> TrialRun:
    tree = tmp_path / name / "tree"
    tree.mkdir(parents=True)
    (tree / "train.py").write_text(textwrap.dedent(script))
    tree.chmod(0o755)
    return TrialRun(tree=tree, workdir=tmp_path / name / "work", env={"AR_SEED": "1"})


def limits(**kw) -> Limits:
    return Limits(**{"timeout_s": 60, "memory": "1g", **kw})
