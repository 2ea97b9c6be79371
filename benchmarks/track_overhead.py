"""What `--track` costs a session, per trial (issue 26: <= 0.1 s with MLflow).

The same 21-trial synthetic session (agent/testing/synthetic.py, TPE, local sandbox, a 0.01-s
budget: trials that cost almost nothing, so the tracker's cost is not hidden behind
training) runs with and without `--track TRACKER`, alternated so that load on the machine
hits both alike; each run is the whole `autoresearch run` command, from start to exit (the
end of a tracked session waits for its tracker). Prints the medians and the difference per
trial.

    python benchmarks/track_overhead.py [--tracker mlflow] [--repeat 5] [--trials 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.testing.synthetic import make_train_dir  # noqa: E402


def session(exe: str, train: Path, run: Path, trials: int, track: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run([exe, "run", "--method", "tpe", "--trials", str(trials), "--sandbox", "local",
                    "--train-dir", str(train), "--time-budget", "0.01", "--run-dir", str(run),
                    "--quiet", *track], check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracker", default="mlflow")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    exe = shutil.which("autoresearch", path=os.path.dirname(sys.executable))
    root = Path(tempfile.mkdtemp(prefix="ar-track-"))
    train = make_train_dir(root)
    n = args.trials + 1
    times: dict[str, list[float]] = {"plain": [], "tracked": []}
    for i in range(args.repeat + 1):  # round 0 warms caches and is not counted
        plain = session(exe, train, root / f"plain-{i}", args.trials, [])
        tracked = session(exe, train, root / f"tracked-{i}", args.trials,
                          ["--track", args.tracker])
        if i:
            times["plain"].append(plain)
            times["tracked"].append(tracked)
        print(f"round {i}{' (warm-up)' if not i else ''}: plain {plain:.2f} s, "
              f"--track {args.tracker} {tracked:.2f} s", flush=True)
    plain, tracked = (statistics.median(times[k]) for k in ("plain", "tracked"))
    per = (tracked - plain) / n
    print(f"{n}-trial session, median of {args.repeat}: plain {plain:.2f} s "
          f"({plain / n:.3f} s/trial), --track {args.tracker} {tracked:.2f} s "
          f"({tracked / n:.3f} s/trial): {per:+.3f} s per trial "
          f"(target <= 0.100: {'met' if per <= 0.1 else 'NOT met'})")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
