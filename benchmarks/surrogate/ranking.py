"""Does the paper's ranking hold on the surrogate, and from which trial count (issue 25)?

Reads a bench folder (`autoresearch bench --train-dir benchmarks/surrogate/folder ...`): for
each method, each seed's best val_bpb after the first N trials (N = --at, the baseline
counted as trial 0), its mean and standard deviation over seeds, and one-sided Wilcoxon
signed-rank tests paired by seed (the same seed: the same baseline and the same noise) for
each step of the paper's order in its 24-h runs, Centaur <= CMA-ES <= TPE <= random, of
each method against random, and of TPE against CMA-ES (the step that reverses here).

    python benchmarks/surrogate/ranking.py BENCH... [--at 10,20,30,45,60] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.record.rundir import RunDir  # noqa: E402
from agent.stats import best_so_far, paired_wilcoxon  # noqa: E402

PAPER = ["centaur", "cmaes", "tpe", "random"]  # best first, as the paper's 24-h runs ranked


def bests(folders: list[Path], at: list[int]) -> dict[str, dict[int, dict[int, float]]]:
    """method -> N -> seed -> best val_bpb within trials 0..N, over the runs of the bench
    folders (one bench, or benches of the same settings run apart: a slow method's own)."""
    out: dict[str, dict[int, dict[int, float]]] = {}
    runs = [p for f in folders for p in f.iterdir() if (p / "session.toml").is_file()]
    for run in sorted(runs):
        method, _, seed = run.name.rpartition("-s")
        curve = best_so_far(RunDir(run).notes())
        for n in at:
            if n < len(curve) and curve[n] is not None:
                out.setdefault(method, {}).setdefault(n, {})[int(seed)] = curve[n]
    return out


def table(data: dict, at: list[int]) -> list[dict]:
    rows = []
    for n in at:
        row = {"trials": n}
        for m, by_n in data.items():
            values = list(by_n.get(n, {}).values())
            if len(values) > 1:
                row[m] = {"mean": statistics.fmean(values), "std": statistics.stdev(values),
                          "seeds": len(values)}
        # the paper's steps, each method against random, and the one step found reversed
        steps = list(zip(PAPER, PAPER[1:], strict=False)) + \
            [(m, "random") for m in PAPER[:2] if m in data] + [("tpe", "cmaes")]
        for a, b in steps:
            if a in data and b in data:
                row[f"{a}<{b}"] = paired_wilcoxon(data[a].get(n, {}), data[b].get(n, {}))[
                    "p_value"]
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--at", default="10,20,30,45,60")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    at = [int(x) for x in args.at.split(",")]
    rows = table(bests(args.folders, at), at)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    methods = [m for m in PAPER if any(m in r for r in rows)]
    tests = [k for k in rows[0] if "<" in k]
    print("| trials | " + " | ".join(methods) + " | " +
          " | ".join(f"p({k.replace('<', ' < ')})" for k in tests) + " |")
    print("|---" * (1 + len(methods) + len(tests)) + "|")
    for r in rows:
        cells = [f"{r[m]['mean']:.4f} ± {r[m]['std']:.4f}" if m in r else "-" for m in methods]
        ps = ["-" if r.get(k) is None else f"{r[k]:.3g}" for k in tests]
        print(f"| {r['trials']} | " + " | ".join(cells) + " | " + " | ".join(ps) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
