"""Optimizer quality on the surrogate, in process (issue 25, point 3): every optimizer asked
and told exactly as a session does, the surrogate's prediction (with its seeded noise and
failures) standing in for the trial. Thousands of trials a second, so a regression of an
optimizer's tell shows up over many seeds in a unit test (tests/test_optimizer_quality.py);
a bench through the real session (`autoresearch bench --train-dir
benchmarks/surrogate/folder`) is the end-to-end version.

    python benchmarks/surrogate/quality.py [--methods random,tpe,cmaes] [--seeds 10]
        [--trials 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fit import FOLDER, runtime  # noqa: E402  the code trials run, imported from its file


def best_of(method: str, seed: int, trials: int, model: dict, rt, space) -> float:
    """The best val_bpb `method` reaches in `trials` trials after the baseline (trial 0),
    every trial scored by the surrogate at the session's seed."""
    from agent.edit.actions import EditHyperparameters
    from agent.optimizers import make_optimizer
    from agent.optimizers.base import TrialRecord

    opt = make_optimizer(method, space, seed, space.defaults())
    history: list[TrialRecord] = []
    best = float("inf")
    for n in range(trials + 1):
        action = EditHyperparameters(space.defaults(), "baseline") if n == 0 \
            else opt.ask(history, [])
        config = {**space.defaults(), **action.values}
        status, value = rt.predict({**config, **space.fixed}, model, seed)
        record = TrialRecord(n, status, config, value)
        opt.tell(action, record)
        history.append(record)
        if value is not None:
            best = min(best, value)
    return best


def compare(methods: list[str], seeds: int, trials: int, model: dict | None = None) -> dict:
    sys.path.insert(0, str(HERE.parents[1]))
    from agent.edit.space import load_space

    rt = runtime()
    model = model or rt.load()
    space = load_space(FOLDER / "search_space.toml", "cpu")
    return {m: [best_of(m, s, trials, model, rt, space) for s in range(seeds)]
            for m in methods}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="random,tpe,cmaes")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    from scipy.stats import mannwhitneyu

    bests = compare([m.strip() for m in args.methods.split(",")], args.seeds, args.trials)
    ref = bests.get("random")
    for method, values in bests.items():
        p = "" if ref is None or method == "random" else \
            f"  p(better than random) {mannwhitneyu(values, ref, alternative='less').pvalue:.4f}"
        print(f"{method:8} best after {args.trials} trials: mean {statistics.fmean(values):.4f}"
              f" ± {statistics.stdev(values):.4f} over {len(values)} seeds{p}")
    print(json.dumps(bests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
