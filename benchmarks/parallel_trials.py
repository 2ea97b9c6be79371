"""Trials per hour with K workers: the local pool (K = 1, 2, 4) and a Ray instance (K = 4).

The trials are the synthetic train.py (agent/testing/synthetic.py: the real search space, a
summary computed from the hyperparameters) sleeping --seconds each, so the figure is what the
executor and the sandbox make of K slots, not what the CPU makes of K trainings. Each row is
one session of --trials trials after the baseline (a multiple of every K, so no slot idles at
the end), in the local backend; the table gives trials per hour and the speed-up over K = 1.
Target (issue 10): K = 4 at least 3.6 x K = 1.

    python benchmarks/parallel_trials.py [--seconds 5] [--trials 11] [--no-ray] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config.settings import SessionConfig  # noqa: E402
from agent.loop.session import Session  # noqa: E402
from agent.testing.synthetic import make_train_dir  # noqa: E402


def one(root: Path, train_dir: Path, executor: str, k: int, args) -> dict:
    run = root / f"{executor}-{k}"
    config = SessionConfig(method="random", seed=0, trials=args.trials, sandbox=args.sandbox,
                           train_dir=str(train_dir), time_budget=args.seconds, workers=k,
                           executor=executor)
    session = Session.create(run, config)
    started = time.monotonic()
    session.run()
    elapsed = time.monotonic() - started
    done = len((run / "trials.jsonl").read_text().splitlines())
    return {"executor": executor, "workers": k, "trials": done, "seconds": round(elapsed, 2),
            "trials_per_hour": round(done / elapsed * 3600, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="sleep of each trial")
    parser.add_argument("--trials", type=int, default=11, help="after the baseline")
    parser.add_argument("--sandbox", default="local")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ar-parallel-"))
    train_dir = make_train_dir(root)
    rows = [one(root, train_dir, "pool", k, args) for k in (1, 2, 4)]
    if not args.no_ray:
        import ray

        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        try:
            rows.append(one(root, train_dir, "ray", 4, args))
        finally:
            ray.shutdown()
    base = rows[0]["trials_per_hour"]
    for row in rows:
        row["speedup"] = round(row["trials_per_hour"] / base, 2)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{args.trials + 1} synthetic trials of {args.seconds:g} s, "
                            f"{args.sandbox} sandbox")
        for col in ("executor", "workers", "trials", "seconds", "trials/hour", "x K=1"):
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(r["executor"], str(r["workers"]), str(r["trials"]),
                          f"{r['seconds']:.1f}", f"{r['trials_per_hour']:,.0f}",
                          f"{r['speedup']:.2f}")
        Console().print(table)
    four = next(r for r in rows if r["executor"] == "pool" and r["workers"] == 4)
    return 0 if four["speedup"] >= 3.6 else 1


if __name__ == "__main__":
    sys.exit(main())
