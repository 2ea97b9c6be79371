"""Where a demo trial's seconds go (issue 28, point 2): start-up, probe, training, evaluation.

Runs the packaged baseline_train/train.py as a session's trial 1 runs it (TIME_BUDGET, the
in-process probe: AR_PREFLIGHT_STEPS=2, AR_PREFLIGHT_CONTINUE=1) for two configurations of
`make demo`: the baseline's block and the 5 M-parameter point CMA-ES proposed first in a
measured demo (DEPTH 6, ASPECT_RATIO 36, HEAD_DIM 64, DEVICE_BATCH_SIZE 64, TOTAL_BATCH_SIZE
16384: ~10 s a step on 2 cores). Each line of the trial's output is timestamped as it comes,
and the probe's line is judged by the session's own rule (agent.watch.probe_verdict with
--min-steps): a refused trial is killed there, as the session's watch kills it. Prints, per
trial, seconds of start-up (process start to the budget line: imports, data, model), probe
(to the `preflight:` line), training (to the last step line), evaluation (to the `---`
block) and the whole.

    python benchmarks/demo_trial.py [--time-budget 30] [--min-steps 10] [--eval-tokens N]

`--min-steps 0` and `--eval-tokens 262144` give the trial as it ran before the demo was
sized (no refusal, the 60-s evaluation). On a shared machine the figures move with its load.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.watch import probe_verdict  # noqa: E402

BIG = {"DEPTH": 6, "ASPECT_RATIO": 36, "HEAD_DIM": 64, "DEVICE_BATCH_SIZE": 64,
       "TOTAL_BATCH_SIZE": 16384}
PROBE = re.compile(r"preflight: ok peak_memory_mb (\S+) step_seconds (\S+)")


def tree_with(values: dict, folder: Path) -> Path:
    """A copy of baseline_train whose block holds `values`."""
    shutil.copytree(ROOT / "baseline_train", folder)
    path = folder / "train.py"
    text = path.read_text()
    for name, value in values.items():
        text, n = re.subn(rf"^{name} = \S+", f"{name} = {value!r}", text, count=1, flags=re.M)
        assert n == 1, name
    path.write_text(text)
    return folder


def run_trial(tree: Path, env: dict[str, str], spec: dict, timeout: float) -> dict:
    """The trial's marks (seconds from its start) and how it ended."""
    t0 = time.time()
    marks: dict[str, float] = {}
    proc = subprocess.Popen([sys.executable, "train.py"], cwd=tree, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    ended, metrics = "ok", {}
    for line in proc.stdout:
        now = time.time() - t0
        if line.startswith("budget:"):
            marks["start-up"] = now
        elif (m := PROBE.match(line)) and "probe" not in marks:
            marks["probe"] = now
            stop = probe_verdict({"peak_memory_mb": float(m[1]), "step_seconds": float(m[2])},
                                 spec)
            if stop is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                ended = f"{stop.status}: {stop.reason}"
                break
        elif line.startswith("step ") and "probe" in marks:  # the probe's steps are its own
            marks["training"] = now
        elif line.startswith("---"):
            marks["evaluation"] = now
        elif ": " in line and "evaluation" in marks:
            key, _, value = line.partition(": ")
            metrics[key] = value.strip()
        if now > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            ended = "timeout"
            break
    proc.wait()
    marks["whole"] = time.time() - t0
    return {"marks": marks, "ended": ended, "metrics": metrics}


def split(marks: dict[str, float]) -> dict[str, float | None]:
    """Seconds of each phase: the time from the previous mark that exists."""
    out, last = {}, 0.0
    for name in ("start-up", "probe", "training", "evaluation"):
        if name in marks:
            out[name], last = marks[name] - last, marks[name]
        else:
            out[name] = None
    out["whole"] = marks["whole"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-budget", type=float, default=30.0)
    parser.add_argument("--min-steps", type=int, default=10, help="0: no refusal")
    parser.add_argument("--eval-tokens", type=int, default=None,
                        help="AR_EVAL_TOKENS (default: prepare.py's for the budget)")
    parser.add_argument("--configs", default="baseline,big")
    args = parser.parse_args()

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TIME_BUDGET": f"{args.time_budget:g}",
           "AR_SEED": "0", "AR_PREFLIGHT_STEPS": "2", "AR_PREFLIGHT_CONTINUE": "1",
           "HOME": os.environ.get("HOME", "/tmp"),
           "PYTHONUNBUFFERED": "1"}  # each line as it is printed: the marks are on time
    if args.eval_tokens:
        env["AR_EVAL_TOKENS"] = str(args.eval_tokens)
    spec = {"min_steps": args.min_steps, "time_budget": args.time_budget}
    configs = {"baseline": {}, "big": BIG}
    print(f"TIME_BUDGET {args.time_budget:g} s, --min-steps {args.min_steps}, AR_EVAL_TOKENS "
          f"{args.eval_tokens or 'default'}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'trial':<9}{'start-up':>9}{'probe':>8}{'training':>9}{'eval':>7}{'whole':>8}"
          "  ended")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            tree = tree_with(configs[name], Path(tmp) / name)
            got = run_trial(tree, env, spec, timeout=3 * args.time_budget + 300)
            s = split(got["marks"])
            cells = "".join(f"{'-' if s[k] is None else f'{s[k]:.1f}':>{w}}"
                            for k, w in (("start-up", 9), ("probe", 8), ("training", 9),
                                         ("evaluation", 7), ("whole", 8)))
            steps = got["metrics"].get("num_steps", "-")
            bpb = got["metrics"].get("val_bpb", "-")
            print(f"{name:<9}{cells}  {got['ended']} (steps {steps}, val_bpb {bpb})")


if __name__ == "__main__":
    main()
