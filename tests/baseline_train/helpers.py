"""Running baseline_train/train.py as a trial runs it: a subprocess on a copy of the tree,
a token budget (results independent of the machine's speed), a small AR_EVAL_TOKENS."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

BASELINE = Path(__file__).resolve().parents[2] / "baseline_train"
STEP_TOKENS = 4096  # TOTAL_BATCH_SIZE of the packaged cpu preset
BUDGET = 4 * STEP_TOKENS  # four optimizer steps
EVAL_TOKENS = 16384


def load_prepare():
    spec = importlib.util.spec_from_file_location("baseline_prepare", BASELINE / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_tree(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("train.py", "prepare.py"):
        shutil.copy(BASELINE / name, folder / name)
    return folder


def set_param(tree: Path, name: str, value) -> None:
    """Rewrite the `NAME = value  # comment` line of tree/train.py."""
    path = tree / "train.py"
    pattern = re.compile(rf"^({name} = )[^#\n]*?(\s*#.*)?$", re.M)
    text, count = pattern.subn(lambda m: f"{m.group(1)}{value!r}{m.group(2) or ''}",
                               path.read_text(), count=1)
    assert count == 1, f"no line for {name} in train.py"
    path.write_text(text)


def run_train(tree: Path, data_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """train.py of tree on a CPU, BUDGET tokens unless env says otherwise (an empty value
    is unset for the kit: AR_TOKEN_BUDGET="" trains for TIME_BUDGET seconds)."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("AR_") and k != "TIME_BUDGET"}
    full_env = {**clean, "AR_DATA_DIR": str(data_dir), "AR_DEVICE": "cpu",
                "AR_TOKEN_BUDGET": str(BUDGET), "AR_EVAL_TOKENS": str(EVAL_TOKENS),
                "PYTHONDONTWRITEBYTECODE": "1", **env}
    return subprocess.run([sys.executable, str(tree / "train.py")], cwd=tree, env=full_env,
                          capture_output=True, text=True, timeout=300)


def summary(proc: subprocess.CompletedProcess) -> dict:
    """The `key: value` lines after the last `---` line, numbers as floats."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "---" in lines, proc.stdout[-3000:]
    start = len(lines) - 1 - lines[::-1].index("---")
    result = {}
    for line in lines[start + 1:]:
        key, _, value = line.partition(":")
        try:
            result[key.strip()] = float(value)
        except ValueError:
            result[key.strip()] = value.strip()
    return result


NUM = r"(?:\d+\.\d+|nan|inf)"
PROGRESS = re.compile(rf"progress: (\d\.\d{{3}}) step (\d+) tokens (\d+) loss ({NUM}) "
                      rf"seconds (\d+\.\d)")
TINY_STEP = 128  # tokens of one step of tiny_tree: 2 micro-batches of 2 x 32


def tiny_tree(folder: Path) -> Path:
    """The packaged train.py at a size where a hundred steps take a second or two."""
    tree = make_tree(folder)
    for name, value in (("DEPTH", 1), ("SEQ_LEN", 32), ("DEVICE_BATCH_SIZE", 2),
                        ("TOTAL_BATCH_SIZE", TINY_STEP)):
        set_param(tree, name, value)
    return tree


def progress(stdout: str) -> list[tuple[float, int, int, float, float]]:
    """(fraction, step, tokens, loss, seconds) of every progress line; each must parse."""
    lines = [line for line in stdout.splitlines() if line.startswith("progress:")]
    points = []
    for line in lines:
        m = PROGRESS.fullmatch(line)
        assert m, f"unparsable: {line!r}"
        points.append((float(m[1]), int(m[2]), int(m[3]), float(m[4]), float(m[5])))
    return points
