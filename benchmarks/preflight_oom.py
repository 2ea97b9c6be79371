"""What failures cost with and without the preflight probe and OOM repair (issue 12).

1. Calibration: --samples random configurations of the cpu preset are probed once each
   (AR_PREFLIGHT_STEPS=1, no memory limit) for their peak host memory; the --memory limit of
   the comparison is the quantile of those peaks that leaves --oom-share of them above it.
2. The same cmaes seed runs --trials trials twice under that limit: without preflight and
   repair, then with both. For each: trials, failed share, trials the divergence guard
   stopped early (status pruned: they trained and were judged, so neither failed nor lost;
   their cost apart), cost, share of the cost lost to failed trials (whole failed trials and
   the failed probes of repaired ones), the share spent on probes that passed (a probe inside
   the trial's own process costs nothing), the best val_bpb. Target: at most 2 % lost with
   preflight.

    python benchmarks/preflight_oom.py [--trials 12] [--oom-share 0.25] [--token-budget 32768]
                                       [--time-budget 60] [--memory 2g]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config.settings import SessionConfig  # noqa: E402
from agent.edit.block import apply_preset, render_block  # noqa: E402
from agent.edit.space import load_space  # noqa: E402
from agent.loop.session import Session  # noqa: E402
from agent.optimizers.encoding import Encoding  # noqa: E402
from agent.paths import baseline_dir  # noqa: E402
from agent.record.ledger import Ledger  # noqa: E402
from sandbox import select_sandbox  # noqa: E402
from sandbox.base import Limits, TrialRun  # noqa: E402


def calibrate(root: Path, samples: int, sandbox: str, seed: int) -> list[float]:
    """Peak host memory (MB) of `samples` random cpu-preset configurations, one probe each."""
    from agent.config.data import prepare_default_data

    space = load_space(baseline_dir() / "search_space.toml", "cpu")
    encoding = Encoding(space)
    rng = np.random.default_rng(seed)
    backend, _ = select_sandbox(sandbox)
    source = apply_preset((baseline_dir() / "train.py").read_text(), space)
    data = prepare_default_data(baseline_dir())
    peaks = []
    while len(peaks) < samples:
        config = encoding.decode(rng.random(encoding.dim))
        if space.errors(config):
            continue
        tree = root / f"probe-{len(peaks)}" / "src"
        tree.mkdir(parents=True)
        (tree / "train.py").write_text(render_block(source, config))
        shutil.copy(baseline_dir() / "prepare.py", tree / "prepare.py")
        run = TrialRun(tree, tree.parent / "work", data, {"AR_PREFLIGHT_STEPS": "1",
                                                          "AR_SEED": "0"})
        result = backend.run(run, Limits(timeout_s=300, memory="16g"))
        peak = result.metrics.get("peak_memory_mb")
        if isinstance(peak, float):
            peaks.append(peak)
        print(f"probe {len(peaks)}/{samples}: {result.status} {peak}", file=sys.stderr)
    return peaks


def session(root: Path, name: str, memory: str, args, preflight: bool) -> dict:
    config = SessionConfig(method="cmaes", seed=args.seed, trials=args.trials, preset="cpu",
                           sandbox=args.sandbox,
                           token_budget=None if args.time_budget else args.token_budget,
                           time_budget=args.time_budget,
                           memory=memory, preflight_steps=2 if preflight else 0,
                           repair_oom=preflight)
    Session.create(root / name, config).run()
    notes = [n for n in Ledger(root / name).records() if n.trial > 0]
    cost = sum(n.cost_s for n in notes)
    # a trial the divergence guard stopped early (status pruned) trained and was judged: not
    # a failure, its cost counted apart
    ran = [n for n in notes if n.status in ("ok", "pruned")]
    failed = [n for n in notes if n.status not in ("ok", "pruned")]
    pruned = [n for n in notes if n.status == "pruned"]
    # lost: whole failed trials, and the failed probes of trials that then ran
    lost = sum(n.cost_s for n in failed) + sum(
        p["wall_s"] for n in ran for p in n.probes if p["status"] != "ok")
    probing = sum(p["wall_s"] or 0.0 for n in ran for p in n.probes if p["status"] == "ok")
    return {"run": name, "trials": len(notes), "ok": sum(n.status == "ok" for n in notes),
            "failed_share": len(failed) / len(notes), "pruned": len(pruned),
            "pruned_s": round(sum(n.cost_s for n in pruned), 1),
            "repaired": sum(bool(n.repairs) for n in notes), "cost_s": round(cost, 1),
            "lost_s": round(lost, 1), "lost_share": lost / cost if cost else 0.0,
            "probe_share": probing / cost if cost else 0.0,
            "best": min((n.val_bpb for n in notes if n.status == "ok"), default=None)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--oom-share", type=float, default=0.25)
    parser.add_argument("--token-budget", type=int, default=32768)
    parser.add_argument("--time-budget", type=float,
                        help="seconds of training per trial instead of --token-budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sandbox", default="auto")
    parser.add_argument("--memory", help="skip the calibration: use this limit")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the run folders (printed)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ar-preflight-"))
    peaks = []
    memory = args.memory
    if memory is None:
        peaks = calibrate(root, args.samples, args.sandbox, args.seed)
        memory = f"{int(np.quantile(peaks, 1 - args.oom_share))}m"
    rows = [session(root, "without", memory, args, False),
            session(root, "with", memory, args, True)]
    if args.json:
        print(json.dumps({"memory": memory, "peaks_mb": peaks, "rows": rows}, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        budget = (f"{args.time_budget:g} s" if args.time_budget
                  else f"{args.token_budget} tokens")
        title = (f"cmaes seed {args.seed}, {args.trials} trials of {budget}, cpu preset, "
                 f"--memory {memory}")
        if peaks:
            share = np.mean(np.array(peaks) > int(memory[:-1]))
            title += f" ({100 * share:.0f} % of {len(peaks)} sampled configs above it)"
        table = Table(title=title)
        for col in ("preflight + repair", "trials", "ok", "repaired", "failed", "stopped early",
                    "cost s", "lost s", "cost lost", "passed probes", "best val_bpb"):
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(r["run"], str(r["trials"]), str(r["ok"]), str(r["repaired"]),
                          f"{100 * r['failed_share']:.0f} %",
                          f"{r['pruned']} ({r['pruned_s']:.0f} s)", f"{r['cost_s']:.0f}",
                          f"{r['lost_s']:.0f}", f"{100 * r['lost_share']:.1f} %",
                          f"{100 * r['probe_share']:.1f} %",
                          "-" if r["best"] is None else f"{r['best']:.4f}")
        Console(width=140).print(table)
    if args.keep:
        print(f"run folders: {root}/without, {root}/with", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if rows[1]["lost_share"] <= 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
