"""A synthetic training folder: the real search space, a train.py that trains nothing.

Its val_bpb is a smooth function of the hyperparameters (so optimizers have something to
find), it prints the same summary block as the real one, and it fails the way real trials
fail: a MemoryError for oversized batches, FAIL for absurd learning rates. It sleeps
TIME_BUDGET seconds, so tests pass a tiny budget and benchmarks a realistic one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.edit.block import render_block
from agent.edit.space import load_space
from agent.paths import baseline_dir

BODY = '''
import math
import os
import sys
import time

time.sleep(float(os.environ.get("TIME_BUDGET", "0")))  # tests pass a tiny budget
if DEVICE_BATCH_SIZE * DEPTH >= 512:
    raise MemoryError("synthetic: batch too large for this machine")
if MATRIX_LR > 0.15:
    print("FAIL: loss exploded")
    sys.exit(1)
val = (2.0 + (math.log10(MATRIX_LR) + 1.4) ** 2 + 0.1 * (DEPTH - 5) ** 2
       + (WARMDOWN_RATIO - 0.6) ** 2 + 0.01 * len(WINDOW_PATTERN.replace("S", "")))
if __NOISE__:  # seeded noise, independent across seeds and configurations
    import random
    val += __NOISE__ * random.Random(f"{os.environ.get('AR_SEED')} {val:.9f}").gauss(0, 1)
print("step 1 loss 3.0")
print("---")
print(f"val_bpb: {val:.6f}")
print("training_seconds: 0.1")
print("peak_memory_mb: 100.0")
print(f"num_steps: 1")
print(f"seed: {os.environ.get('AR_SEED')}")
'''


def make_train_dir(root: Path, noise: float = 0.0) -> Path:
    """A training folder with the packaged search space and the synthetic train.py; `noise`
    is the standard deviation of the seeded noise added to its val_bpb."""
    space = load_space(baseline_dir() / "search_space.toml", "cpu")
    d = root / "synthetic_train"
    d.mkdir(parents=True)
    shutil.copy(baseline_dir() / "search_space.toml", d / "search_space.toml")
    names = space.names + list(space.fixed)
    block = "".join(f"{n} = 0  # {space.params[n].help if n in space.params else 'fixed'}\n"
                    for n in names)
    body = BODY.replace("__NOISE__", repr(float(noise)))
    text = "# --- hyperparameters ---\n" + block + "# --- end hyperparameters ---\n" + body
    text = render_block(text, {**space.defaults(), **space.fixed})
    (d / "train.py").write_text(text)
    return d


# A learning curve before the summary: 50 `progress:` lines (one per 2 % of the budget), the
# loss falling from 5.5 towards the configuration's final value, TIME_BUDGET / 50 seconds
# apart (at least 0.02 s, so a watch's kill lands mid-curve). MATRIX_LR >= 0.12 makes the
# loss NaN from the first line (a diverging run), MATRIX_LR <= 0.005 keeps it flat at 5.5 (a
# model that learns nothing); every run leaves a line in out/runs.txt (how many processes a
# trial started), and an in-process preflight (AR_PREFLIGHT_STEPS + AR_PREFLIGHT_CONTINUE)
# its line after step 2.
CURVE = '''import math as _m, os as _os, sys as _sys, time as _t
with open(_os.path.join(_os.environ.get("AR_OUT_DIR", "."), "runs.txt"), "a") as _runs:
    _runs.write(("preflight" if _os.environ.get("AR_PREFLIGHT_STEPS") else "full") + "\\n")
if DEVICE_BATCH_SIZE * DEPTH >= 256:
    raise MemoryError("synthetic: batch too large")
_final = 2.0 + (_m.log10(MATRIX_LR) + 1.4) ** 2 + 0.1 * (DEPTH - 5) ** 2
_probe = int(_os.environ.get("AR_PREFLIGHT_STEPS") or 0)
_go_on = _os.environ.get("AR_PREFLIGHT_CONTINUE") == "1"
for _i in range(1, 51):
    _loss = float("nan") if MATRIX_LR >= 0.12 else 5.5 if MATRIX_LR <= 0.005 else \\
        _final + (5.5 - _final) * _m.exp(-6 * _i / 50)
    print(f"progress: {_i / 50:.3f} step {_i} tokens {_i * 4096} loss {_loss:.4f} "
          f"seconds {_i * 0.1:.1f}", flush=True)
    if not _m.isfinite(_loss):
        print(f"FAIL: training loss {_loss} at step {_i}", flush=True)
        _sys.exit(1)
    if _probe and _i == _probe:
        if not _go_on:
            print("---\\npreflight: ok\\npeak_memory_mb: 100.0\\nstep_seconds: 0.01", flush=True)
            _sys.exit(0)
        print("preflight: ok peak_memory_mb 100.0 step_seconds 0.01 "
              f"preflight_batch {DEVICE_BATCH_SIZE}", flush=True)
    _t.sleep(max(0.02, float(_os.environ.get("TIME_BUDGET", "0")) / 50))
'''


def add_after_block(train_dir: Path, code: str) -> Path:
    """Put `code` right after the hyperparameter block of train_dir/train.py."""
    marker = "# --- end hyperparameters ---\n"
    path = train_dir / "train.py"
    path.write_text(path.read_text().replace(marker, marker + code))
    return train_dir


class ScriptedOptimizer:
    """Returns the actions it was given, in order; keeps each (action, record) it is told.
    Tests put it in place of a method: monkeypatch agent.loop.session.make_optimizer."""

    name = "scripted"
    failure_policy = "told nothing"

    def __init__(self, actions):
        self.actions, self.told = list(actions), []

    def ask(self, history, pending, ctx):
        return self.actions.pop(0)

    def warm_start(self, earlier):
        self.earlier = list(earlier)

    def tell(self, action, record):
        self.told.append((action, record))
