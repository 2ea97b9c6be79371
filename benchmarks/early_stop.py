"""Early stopping at equal cost (issue 23): the same methods and seeds with and without pruning.

Two `autoresearch bench` runs on the cpu preset with --time-budget seconds of training per
trial, each into its own folder under --out: `prune-none` (no pruner, no divergence guard)
and `prune-RULE` (--prune RULE, the guard on); every run stops at the same summed cost
(--cost). Per arm and method the table gives:

- trials per hour of cost: trials that ran (the baseline included) / summed cost in hours;
- the best val_bpb of each seed, mean ± std;
- the share of the cost spent on trials that ended worse than the incumbent they were
  compared with (not ok, or val_bpb above the best before them; the baseline is not counted);
- pruned trials and their cost; passed probes as a share of the cost (a separate probe run's
  seconds; a probe inside the trial's own process costs nothing);
- trials per hour against the plain arm's, same methods.

False prunes: a sample of the pruned trials (--false-prune-sample, drawn with a fixed seed) is
run to the end with `autoresearch rerun RUN N` at the session's own seed; a false prune is one
whose full run would have beaten the best val_bpb its run reached.
Targets: at least 1.5x the trials per hour, the mean best not worse than the plain arm's by
more than the seed std, passed probes at most 1 % of the cost; exit 1 when one is missed.

Rerunning the same command resumes: a finished arm (its compare.json) is skipped, a cut one
resumes (bench does that), reruns already done are read back from RUN/reruns/. Writes
early_stop.json (every figure) and early_stop.png (best val_bpb so far against cost, both
arms, one line per seed) under --out.

    python benchmarks/early_stop.py [--methods tpe,random] [--seeds 2] [--cost 20m]
        [--time-budget 60] [--prune median] [--out runs/early-stop] [--skip-run]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.record.rundir import RunDir  # noqa: E402
from agent.stats import best_so_far  # noqa: E402

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TARGET_RATIO, TARGET_PROBES = 1.5, 0.01
PLAIN = "prune-none"
GUARD = "divergence guard"  # how the guard's stops begin their reason (agent/watch.py)


def autoresearch() -> str:
    here = Path(sys.executable).with_name("autoresearch")
    found = str(here) if here.exists() else shutil.which("autoresearch")
    if not found:
        sys.exit("no `autoresearch` command: activate the venv (`. .venv/bin/activate`)")
    return found


def arm_name(rule: str) -> str:
    return "prune-" + rule.replace(":", "-")


def bench(folder: Path, rule: str, args) -> None:
    """The arm's bench, unless it finished; a cut one resumes from its bench.toml."""
    plan = folder / "bench.toml"
    if plan.exists():
        stored = tomllib.loads(plan.read_text())
        if stored["methods"] != args.methods or stored["seeds"] != args.seeds:
            sys.exit(f"{folder} holds a bench of {','.join(stored['methods'])} x "
                     f"{stored['seeds']} seeds, not {','.join(args.methods)} x {args.seeds}: "
                     "pass another --out")
        if (folder / "compare.json").exists():
            print(f"{folder}: finished, skipped", file=sys.stderr)
            return
    cmd = [autoresearch(), "bench", "--methods", ",".join(args.methods),
           "--seeds", str(args.seeds), "--cost", args.cost, "--run-dir", str(folder),
           "--preset", "cpu", "--time-budget", f"{args.time_budget:g}",
           "--workers", str(args.workers), "--sandbox", args.sandbox, "--prune", rule,
           "--guard" if rule != "none" else "--no-guard"]
    if rule != "none":
        cmd += ["--prune-min-trials", str(args.prune_min_trials)]
        cmd += ["--prune-at", args.prune_at] if args.prune_at else []
    cmd += ["--train-dir", str(args.train_dir)] if args.train_dir else []
    cmd += ["--quiet"] if args.quiet else []
    print("$ autoresearch " + " ".join(cmd[1:]), file=sys.stderr)
    if subprocess.run(cmd).returncode:
        sys.exit(f"the bench of {folder} stopped: run this command again to resume it")


# -- one run, one arm -----------------------------------------------------------------------

def run_figures(path: Path) -> dict:
    """Everything the table and the picture need of one session folder."""
    notes = RunDir(path).notes()
    ran = [n for n in notes if n.status != "rejected"]
    cost = sum(n.cost_s or 0.0 for n in notes)
    worse = [n for n in ran if n.trial > 0 and (
        n.status != "ok" or (n.val_bpb is not None and n.best_val_bpb is not None
                             and n.val_bpb > n.best_val_bpb))]
    pruned = [n for n in notes if n.status == "pruned"]
    probes = [p for n in notes for p in n.probes]
    passed = [p for p in probes if p.get("status") == "ok"]
    bests = best_so_far(notes)
    spent, line = 0.0, []
    for n, best in zip(notes, bests, strict=True):
        spent += n.cost_s or 0.0
        line.append({"trial": n.trial, "cost_s": round(spent, 3), "best": best,
                     "status": n.status})
    return {
        "run": str(path), "name": path.name, "method": path.name.rsplit("-s", 1)[0],
        "seed": notes[0].seed if notes else None, "trials": len(ran),
        "failed": sum(n.status not in ("ok", "pruned") for n in ran),
        "cost_s": round(cost, 3),
        "trials_per_hour": len(ran) / cost * 3600 if cost else None,
        "best_val_bpb": bests[-1] if bests else None,
        "worse_cost_s": round(sum(n.cost_s or 0.0 for n in worse), 3),
        "pruned": len(pruned), "pruned_cost_s": round(sum(n.cost_s or 0.0 for n in pruned), 3),
        "pruned_by_guard": sum(n.reason.startswith(GUARD) for n in pruned),
        "pruned_trials": [{"trial": n.trial, "stopped_at": (n.result or {}).get("stopped_at"),
                           "reason": (n.result or {}).get("reason", ""),
                           "best_before": n.best_val_bpb} for n in pruned],
        "probes": len(probes), "probes_in_process": sum(bool(p.get("in_process"))
                                                        for p in probes),
        "probes_passed_s": round(sum(p.get("wall_s") or 0.0 for p in passed), 3),
        "best_so_far": line}


def aggregate(runs: list[dict]) -> dict:
    """Sums over runs (trials per hour: all trials over all cost), the best over seeds."""
    cost = sum(r["cost_s"] for r in runs)
    trials = sum(r["trials"] for r in runs)
    bests = [r["best_val_bpb"] for r in runs if r["best_val_bpb"] is not None]

    def share(key: str) -> float | None:
        return sum(r[key] for r in runs) / cost if cost else None

    return {"runs": len(runs), "trials": trials, "failed": sum(r["failed"] for r in runs),
            "cost_s": round(cost, 3), "trials_per_hour": trials / cost * 3600 if cost else None,
            "best_mean": statistics.fmean(bests) if bests else None,
            "best_std": statistics.stdev(bests) if len(bests) > 1 else None,
            "bests": [r["best_val_bpb"] for r in runs],
            "worse_share": share("worse_cost_s"), "pruned": sum(r["pruned"] for r in runs),
            "pruned_cost_s": round(sum(r["pruned_cost_s"] for r in runs), 3),
            "pruned_by_guard": sum(r["pruned_by_guard"] for r in runs),
            "probes": sum(r["probes"] for r in runs),
            "probes_in_process": sum(r["probes_in_process"] for r in runs),
            "probes_passed_s": round(sum(r["probes_passed_s"] for r in runs), 3),
            "probe_share": share("probes_passed_s")}


def arm_figures(folder: Path, methods: list[str], seeds: int) -> dict:
    plan = tomllib.loads((folder / "bench.toml").read_text())
    runs = []
    for seed in range(seeds):
        for method in methods:
            path = folder / f"{method}-s{seed}"
            if RunDir(path).exists():
                runs.append(run_figures(path))
            else:
                print(f"{path}: no session there (the bench was cut before it): left out",
                      file=sys.stderr)
    by = {m: aggregate([r for r in runs if r["name"].startswith(f"{m}-s")]) for m in methods}
    return {"folder": str(folder), "finished": (folder / "compare.json").exists(),
            "session": plan.get("session", {}), "runs": runs, "methods": by,
            "all": aggregate(runs)}


# -- false prunes ---------------------------------------------------------------------------

def rerun(run: Path, trial: int, seed: int) -> dict:
    """`autoresearch rerun RUN N` at the session's seed; a rerun done before is read back."""
    for old in sorted((run / "reruns").glob(f"{trial:04d}-*/rerun.json"), reverse=True):
        summary = json.loads(old.read_text())
        rows = summary.get("runs") or []
        if rows and rows[0].get("seed") == seed and rows[0].get("status"):
            return summary
    print(f"$ autoresearch rerun {run} {trial} --seeds 1 --json", file=sys.stderr)
    done = subprocess.run([autoresearch(), "rerun", str(run), str(trial), "--seeds", "1",
                           "--json"], capture_output=True, text=True)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout)


def false_prunes(arm: dict, sample: int) -> dict:
    """Rerun `sample` pruned trials (a fixed draw) to the end: would they have been best?"""
    pool = [(r, p) for r in arm["runs"] for p in r["pruned_trials"]]
    drawn = sorted(random.Random(0).sample(range(len(pool)), min(sample, len(pool))))
    rows = []
    for i in drawn:
        run, pruned = pool[i]
        summary = rerun(Path(run["run"]), pruned["trial"], run["seed"])
        first = (summary.get("runs") or [{}])[0]
        value = first.get("val_bpb") if first.get("status") == "ok" else None
        best = run["best_val_bpb"]
        rows.append({"run": run["name"], "trial": pruned["trial"],
                     "stopped_at": pruned["stopped_at"], "reason": pruned["reason"],
                     "rerun_status": first.get("status") or "error",
                     "rerun_error": summary.get("error"), "rerun_val_bpb": value,
                     "rerun_folder": summary.get("folder"), "run_best": best,
                     "best_before": pruned["best_before"],
                     "would_be_best": value is not None and best is not None and value < best,
                     "beats_best_before": value is not None and (
                         pruned["best_before"] is None or value < pruned["best_before"])})
    return {"pruned": len(pool), "sampled": len(rows), "rows": rows,
            "false": sum(r["would_be_best"] for r in rows),
            "beat_incumbent": sum(r["beats_best_before"] for r in rows)}


# -- what is printed, written and drawn -----------------------------------------------------

def targets(plain: dict, pruned: dict) -> dict:
    """The issue's three targets. The best is compared per method (seeds of one method are
    the noise; methods differ by more): met when no method's mean best is worse than the
    plain arm's by more than the larger seed std of the two arms."""
    ratio = (pruned["all"]["trials_per_hour"] / plain["all"]["trials_per_hour"]
             if pruned["all"]["trials_per_hour"] and plain["all"]["trials_per_hour"] else None)
    best = {}
    for method, a in plain["methods"].items():
        b = pruned["methods"][method]
        delta = (b["best_mean"] - a["best_mean"]
                 if a["best_mean"] is not None and b["best_mean"] is not None else None)
        noise = [s for s in (a["best_std"], b["best_std"]) if s is not None]
        best[method] = {"delta": delta, "seed_std": max(noise) if noise else None,
                        # one seed has no spread to compare with: not decided
                        "ok": None if delta is None or not noise else delta <= max(noise)}
    verdicts = [b["ok"] for b in best.values()]
    probes = pruned["all"]["probe_share"]
    return {
        "trials_per_hour_ratio": ratio,
        "trials_per_hour_ok": ratio is not None and ratio >= TARGET_RATIO,
        "best": best,
        "best_ok": False if False in verdicts else None if None in verdicts else True,
        "probe_share": probes, "probe_ok": probes is not None and probes <= TARGET_PROBES}


def num(value, fmt: str = ".4f", none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def percent(share, fmt: str) -> str:
    return "-" if share is None else f"{100 * share:{fmt}} %"


def print_tables(result: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 200))
    table = Table(title=title)
    for col in ("arm", "method", "seeds", "trials", "failed", "cost min", "trials/h",
                "x plain", "best val_bpb mean ± std", "cost on worse", "pruned (cost, guard)",
                "passed probes", "in-process"):
        table.add_column(col, justify="right", no_wrap=True)
    plain = result["arms"][PLAIN]
    for name, arm in result["arms"].items():
        groups = list(arm["methods"].items()) + ([("all", arm["all"])]
                                                 if len(arm["methods"]) > 1 else [])
        for method, g in groups:
            base = plain["all"] if method == "all" else plain["methods"][method]
            ratio = (g["trials_per_hour"] / base["trials_per_hour"]
                     if g["trials_per_hour"] and base["trials_per_hour"] else None)
            table.add_row(name, method, str(g["runs"]), str(g["trials"]), str(g["failed"]),
                          f"{g['cost_s'] / 60:.1f}", num(g["trials_per_hour"], ",.0f"),
                          num(ratio, ".2f"),
                          # over methods the spread is the methods', not the seeds': left out
                          "-" if method == "all" else
                          f"{num(g['best_mean'])} ± {num(g['best_std'])}",
                          percent(g["worse_share"], ".1f"),
                          f"{g['pruned']} ({g['pruned_cost_s']:,.0f} s, "
                          f"{g['pruned_by_guard']})" if g["pruned"] else "-",
                          percent(g["probe_share"], ".2f"),
                          f"{g['probes_in_process']}/{g['probes']}")
    console.print(table)
    fp = result["false_prunes"]
    if fp["rows"]:
        table = Table(title=f"false prunes: {fp['sampled']} of {fp['pruned']} pruned trials "
                            f"rerun to the end at their session's seed")
        for col in ("run", "trial", "stopped by", "at", "rerun", "rerun val_bpb",
                    "best before it", "run's best", "would have been best"):
            table.add_column(col, justify="right")
        for r in fp["rows"]:
            by = "guard" if r["reason"].startswith(GUARD) else "rule"
            table.add_row(r["run"], str(r["trial"]), by, num(r["stopped_at"], ".2f"),
                          r["rerun_error"] or r["rerun_status"], num(r["rerun_val_bpb"]),
                          num(r["best_before"]), num(r["run_best"]),
                          "yes" if r["would_be_best"] else "no")
        console.print(table)
    console.print(f"false prunes: {fp['false']} of {fp['sampled']} sampled pruned trials would "
                  f"have beaten their run's best ({fp['beat_incumbent']} the incumbent of "
                  f"their time); {fp['pruned']} pruned in all")
    t = result["targets"]
    mark = {True: "[green]met[/green]", False: "[red]missed[/red]", None: "[dim]undecided[/dim]"}
    deltas = ", ".join(f"{m} {num(b['delta'], '+.4f')} (std {num(b['seed_std'])})"
                       for m, b in t["best"].items())
    console.print(f"targets: trials/h x{num(t['trials_per_hour_ratio'], '.2f')} "
                  f"(>= {TARGET_RATIO}) {mark[t['trials_per_hour_ok']]}; best val_bpb, "
                  f"pruned - plain: {deltas} {mark[t['best_ok']]}; passed probes "
                  f"{percent(t['probe_share'], '.2f')} (<= 1 %) "
                  f"{mark[t['probe_ok']]}")


def figure(result: dict, methods: list[str], path: Path) -> Path:
    """Best val_bpb so far against cost, one panel per method, one line per (arm, seed);
    pruned trials as triangles where they ended."""
    from matplotlib.figure import Figure

    from agent.plots import save

    fig = Figure(figsize=(5.5 * len(methods), 4.2))
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    styles = ["-", "--", ":", "-."]
    for i, method in enumerate(methods):
        ax = fig.add_subplot(1, len(methods), i + 1)
        for (name, arm), colour in zip(result["arms"].items(), colours, strict=False):
            for run in (r for r in arm["runs"] if r["name"].startswith(f"{method}-s")):
                points = [p for p in run["best_so_far"] if p["best"] is not None]
                if not points:
                    continue
                xs = [p["cost_s"] / 60 for p in points]
                ys = [p["best"] for p in points]
                ax.step(xs, ys, where="post", color=colour,
                        linestyle=styles[run["seed"] % len(styles)],
                        label=f"{name} seed {run['seed']}")
                cut = [p for p in points if p["status"] == "pruned"]
                ax.plot([p["cost_s"] / 60 for p in cut], [p["best"] for p in cut], "v",
                        color=colour, markersize=4, alpha=0.7)
        cost = next(iter(result["arms"].values()))["session"].get("cost_s")
        if cost:
            ax.axvline(cost / 60, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(f"{method}: best val_bpb so far (v: a pruned trial; dotted: --cost)",
                     fontsize=10)
        ax.set_xlabel("summed cost, min")
        ax.set_ylabel("val_bpb")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="tpe,random", help="comma-separated")
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0 .. K-1 per method")
    parser.add_argument("--cost", default="20m", help="equal cost per run, e.g. 20m")
    parser.add_argument("--time-budget", type=float, default=60.0,
                        help="training seconds per trial")
    parser.add_argument("--prune", default="median",
                        help="the rule of the pruned arm: median, percentile[:P], hyperband, "
                             "threshold:X")
    parser.add_argument("--prune-at", help="progress points (bench's default: 0.25,0.45)")
    parser.add_argument("--prune-min-trials", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/early-stop"))
    parser.add_argument("--skip-run", action="store_true", help="only analyse existing arms")
    parser.add_argument("--false-prune-sample", type=int, default=3,
                        help="pruned trials to rerun to the end (0: none)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sandbox", default="auto")
    parser.add_argument("--train-dir", type=Path, help="a training folder instead of the "
                        "packaged one (e.g. the synthetic one of agent/testing/synthetic.py)")
    parser.add_argument("--quiet", action="store_true", help="no live progress of the benches")
    parser.add_argument("--json", action="store_true", help="print the JSON, not the tables")
    args = parser.parse_args()
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.prune == "none":
        parser.error("--prune none is the plain arm already: name a rule")
    rules = {PLAIN: "none", arm_name(args.prune): args.prune}
    for name, rule in rules.items():
        folder = args.out / name
        if args.skip_run:
            if not (folder / "bench.toml").exists():
                sys.exit(f"{folder} holds no bench: run without --skip-run first")
        else:
            bench(folder, rule, args)
    arms = {name: arm_figures(args.out / name, args.methods, args.seeds) for name in rules}
    pruned = arms[arm_name(args.prune)]
    result = {"methods": args.methods, "seeds": args.seeds, "cost": args.cost,
              "time_budget": args.time_budget, "prune": args.prune, "arms": arms,
              "false_prunes": false_prunes(pruned, args.false_prune_sample),
              "targets": targets(arms[PLAIN], pruned),
              "png": str(args.out / "early_stop.png")}
    figure(result, args.methods, args.out / "early_stop.png")
    (args.out / "early_stop.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_tables(result, f"{','.join(args.methods)} x {args.seeds} seeds, cpu preset, "
                             f"{args.time_budget:g} s trials, --cost {args.cost} per run: "
                             f"no pruning vs --prune {args.prune}")
        print(f"written: {args.out / 'early_stop.json'}, {args.out / 'early_stop.png'}")
    t = result["targets"]
    return 0 if t["trials_per_hour_ok"] and t["probe_ok"] and t["best_ok"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
