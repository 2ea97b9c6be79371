"""`autoresearch compare | noise | bench`: is a method better, by how much, with what confidence."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from agent.cli.common import (
    EVAL_TOKENS,
    GPUS,
    GUARD,
    ISOLATION,
    PRESET,
    PRUNE,
    PRUNE_AT,
    PRUNE_MIN_TRIALS,
    QUIET,
    SANDBOX,
    TIME_BUDGET,
    TOKEN_BUDGET,
    TRACK,
    TRAIN_DIR,
    WIDE,
    Terminated,
    config_or_fail,
    default,
    failing,
    fractions,
    gpu_ids,
    sigterm_as_ctrl_c,
    trackers_or_fail,
)
from agent.errors import fail
from agent.text import clean, markup


def compare(
    run_dirs: list[Path] = typer.Argument(..., help="Session folders (a bench's: its runs)."),
    as_json: bool = typer.Option(False, "--json", help="Stable JSON rows (see README)."),
    plot: Path | None = typer.Option(None, "--plot", help="Write the comparison as a PNG."),
    ref: str | None = typer.Option(None, "--ref", help="Reference method (default: tpe, else "
                                                       "random, else the first)."),
    target: float | None = typer.Option(None, "--target", help="val_bpb for cost-to-target."),
    wide: bool = WIDE,
) -> None:
    """One row per run, one per method over its seeds (mean ± std, tests against --ref)."""
    from agent.analysis.comparison import compare_runs, dumps
    from agent.analysis.report import compare_table, fitting_console, methods_table

    comparison = compare_runs(run_dirs, ref, target)
    if ref is not None and ref not in comparison.stats:
        raise fail(f"--ref {ref}: no run of that method among {', '.join(comparison.stats)}", 2)
    if plot is not None:
        from agent.plots import can_plot, compare_figure, save

        if not can_plot():
            raise fail("--plot needs matplotlib, which is not installed here: "
                       "pip install matplotlib, or leave --plot out", 2)

        save(compare_figure(comparison.groups, comparison.ref), plot)
    if as_json:
        typer.echo(dumps(comparison))
        return
    console = fitting_console(wide)
    width = None if wide else console.width
    console.print(compare_table(comparison.rows, width))
    if any(len(s["seeds"]) > 1 for s in comparison.stats.values()) or len(comparison.stats) > 1:
        console.print(methods_table(comparison.stats, comparison.ref, width))
        if ref is None and comparison.ref not in (None, "tpe"):
            console.print(f"[dim]reference: {markup(comparison.ref)} (no tpe run among them; "
                          "--ref METHOD picks another)[/dim]")
        if comparison.target is not None:
            console.print(f"[dim]cost to target: summed trial cost until a trial reached "
                          f"val_bpb {comparison.target:.4f} (median over seeds)[/dim]")
    if plot is not None:
        console.print(f"[dim]plot: {markup(plot)}[/dim]")


def noise(
    seeds: int = typer.Option(5, "--seeds", help="How many seeds (0 .. K-1)."),
    train_dir: Path | None = TRAIN_DIR,
    preset: str | None = PRESET,
    time_budget: float | None = TIME_BUDGET,
    token_budget: int | None = TOKEN_BUDGET,
    eval_tokens: int | None = EVAL_TOKENS,
    sandbox: str = SANDBOX,
    isolation: str = ISOLATION,
    workers: int = typer.Option(default("workers"), "--workers", help="Runs at once."),
    memory: str | None = typer.Option(None, "--memory", help="Host memory per run."),
    gpus: str = GPUS,
    out: Path | None = typer.Option(None, "--out", help="Default runs/noise-TIME."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """The baseline once per seed: how far val_bpb moves by the seed alone."""
    from agent.analysis.repeats import noise as measure
    from agent.paths import baseline_dir

    if seeds < 2:
        raise fail(f"--seeds {seeds}: need at least 2 to measure a spread", 2)
    config = config_or_fail(method="random", trials=0, preset=preset, sandbox=sandbox,
                            time_budget=time_budget, token_budget=token_budget,
                            eval_tokens=eval_tokens, memory=memory, gpus=gpu_ids(gpus),
                            workers=workers, isolation=isolation)
    folder = train_dir or baseline_dir()
    if not (folder / "train.py").is_file():
        raise fail(f"{folder} has no train.py: --train-dir takes the folder that holds it", 2)
    out = out or Path("runs") / f"noise-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and any(out.iterdir()):
        raise fail(f"--out {out} exists and is not empty: pick another", 2)
    summary = measure(folder, out, list(range(seeds)), config)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
        return
    table = Table(title=markup(f"noise: {folder} ({summary['preset']} preset, "
                               f"{summary['budget']})"))
    for col in ("seed", "status", "val_bpb", "steps", "train s", "wall s"):
        table.add_column(col, justify="right")
    for r in summary["runs"]:
        table.add_row(str(r["seed"]), markup(r["status"]),
                      "-" if r["val_bpb"] is None else f"{r['val_bpb']:.6f}",
                      "-" if r["num_steps"] is None else f"{r['num_steps']:.0f}",
                      "-" if r["training_s"] is None else f"{r['training_s']:.1f}",
                      f"{r['wall_s']:.1f}")
    console = Console()
    console.print(table)
    if summary["ok"] >= 2:
        console.print(f"val_bpb over {summary['ok']} seeds: mean {summary['mean']:.6f}, std "
                      f"{summary['std']:.6f}, range {summary['min']:.6f} .. "
                      f"{summary['max']:.6f} ({summary['max'] - summary['min']:.6f}); "
                      f"kept in {markup(out)}/noise.json")


def bench(
    methods: str = typer.Option("random,tpe,cmaes", "--methods", help="Comma-separated."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per method (0 .. K-1)."),
    trials: int | None = typer.Option(None, "--trials", help="Trials per run."),
    cost: str | None = typer.Option(None, "--cost", help="Equal cost per run, e.g. 2h."),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Default runs/bench-TIME."),
    workers: int = typer.Option(default("workers"), "--workers",
                                help="Trials at once in each run."),
    sandbox: str = SANDBOX,
    preset: str | None = PRESET,
    train_dir: Path | None = TRAIN_DIR,
    time_budget: float | None = TIME_BUDGET,
    token_budget: int | None = TOKEN_BUDGET,
    eval_tokens: int | None = EVAL_TOKENS,
    model: str | None = typer.Option(None, "--model", help="litellm model (LLM methods)."),
    api_base: str | None = typer.Option(None, "--api-base"),
    llm_warmup: int | None = typer.Option(None, "--llm-warmup", help="centaur: CMA-ES first."),
    llm_ratio: float | None = typer.Option(None, "--llm-ratio", help="centaur: LLM share."),
    memory: str | None = typer.Option(None, "--memory", help="Host memory per trial."),
    preflight_steps: int | None = typer.Option(None, "--preflight-steps",
                                               help="Probe steps per trial (0: none)."),
    prune: str = PRUNE,
    prune_points: str = PRUNE_AT,
    prune_min_trials: int = PRUNE_MIN_TRIALS,
    guard: bool = GUARD,
    isolation: str = ISOLATION,
    track: list[str] = TRACK,
    quiet: bool = QUIET,
) -> None:
    """Every method x every seed under one folder at equal cost; a report when done."""
    from agent.analysis import bench as benching
    from agent.analysis.report import fitting_console, methods_table
    from agent.config.settings import parse_duration
    from agent.loop.progress import QuietReporter, RichReporter
    from agent.optimizers import METHODS

    names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise fail(f"--methods {methods!r}: use names from {', '.join(METHODS)}", 2)
    if seeds < 1:
        raise fail(f"--seeds {seeds}: at least 1", 2)
    folder = run_dir or Path("runs") / f"bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    resuming = (folder / "bench.toml").exists()
    if not resuming and trials is None and cost is None:
        raise fail("say when each run stops: --trials N or --cost 2h (equal cost)", 2)
    try:
        cost_s = parse_duration(cost) if cost else None
    except ValueError as e:
        raise fail(str(e), 2) from None
    extra = {k: v for k, v in (("llm_warmup", llm_warmup), ("llm_ratio", llm_ratio),
                               ("preflight_steps", preflight_steps)) if v is not None}
    template = config_or_fail(
        trials=trials, cost_s=cost_s, workers=workers, sandbox=sandbox, preset=preset,
        train_dir=str(train_dir) if train_dir else "", time_budget=time_budget,
        token_budget=token_budget, eval_tokens=eval_tokens, model=model, api_base=api_base,
        memory=memory, prune=prune, prune_at=fractions(prune_points, "--prune-at"),
        prune_min_trials=prune_min_trials, guard=guard, isolation=isolation,
        track=trackers_or_fail(track), stop_after_failures=0, **extra)
    console = fitting_console()
    say = (lambda text: None) if quiet else \
        (lambda text: console.print(f"[bold]{markup(text)}[/bold]"))
    if resuming:
        say(f"resuming the bench in {folder} (its bench.toml holds its plan)")
    try:
        with sigterm_as_ctrl_c(), failing(1, "finished runs are kept: run the same command "
                                             "again to resume"):
            comparison = benching.run(
                folder, names, seeds, template,
                lambda name: QuietReporter() if quiet else RichReporter(), say)
    except KeyboardInterrupt as e:
        why, code = ("terminated", 143) if isinstance(e, Terminated) else ("interrupted", 130)
        raise fail(f"{why}: run the same command again to resume {folder}", code) from None
    console.print(methods_table(comparison.stats, comparison.ref, console.width))
    console.print(f"report: {markup(folder)}/report.html, {markup(folder)}/compare.png")


def prune_check(
    run_dirs: list[Path] = typer.Argument(..., help="Session folders with learning curves."),
    rule_list: str = typer.Option("median", "--prune",
                              help="Rules to replay, comma-separated: median, percentile[:P], "
                                   "hyperband, threshold:X."),
    prune_points: str = PRUNE_AT,
    prune_min_trials: int = PRUNE_MIN_TRIALS,
    guard: bool = GUARD,
    as_json: bool = typer.Option(False, "--json", help="One object per run and rule."),
) -> None:
    """What a stopping rule would have cut in recorded runs, and whether it would have cut
    their best (replayed over the recorded curves, as a session asks it)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from agent.analysis.prunecheck import check_runs
    from agent.watch import parse_rule

    rules = [r.strip() for r in rule_list.split(",") if r.strip()]
    for rule in rules:
        try:
            parse_rule(rule)
        except ValueError as e:
            raise fail(str(e), 2) from None
    checks = check_runs(run_dirs, rules, fractions(prune_points, "--prune-at"), prune_min_trials,
                        guard)
    if as_json:
        typer.echo(json.dumps([c.to_dict() for c in checks], indent=1, sort_keys=True))
        return
    console = Console()
    table = Table(title="what the rule would have stopped (replayed over recorded curves)")
    for col in ("rule", "run", "trials", "stopped (trial@progress)", "cost saved",
                "best stopped", "top 3 stopped"):
        table.add_column(col, justify="left" if col in ("rule", "run") else "right")
    for c in checks:
        d = c.to_dict()
        stopped = ", ".join(f"{s['trial']}@{s['at']:.2f}" for s in c.stopped) or "-"
        table.add_row(markup(c.rule), markup(Path(c.run).name), str(c.checked), stopped,
                      f"{c.saved_s:,.0f} s ({100 * d['saved_share']:.1f} %)",
                      "yes" if c.stopped_best else "no", str(c.stopped_top3))
    console.print(table)
    summary = Table(title="per rule, over all runs")
    for col in ("rule", "runs", "stopped", "cost saved", "best stopped in", "top-3 stopped"):
        summary.add_column(col, justify="left" if col == "rule" else "right")
    for rule in rules:
        mine = [c for c in checks if c.rule == rule]
        cost, saved = sum(c.cost_s for c in mine), sum(c.saved_s for c in mine)
        summary.add_row(markup(rule), str(len(mine)), str(sum(len(c.stopped) for c in mine)),
                        f"{100 * saved / cost if cost else 0:.1f} %",
                        f"{sum(c.stopped_best for c in mine)} of {len(mine)} runs",
                        str(sum(c.stopped_top3 for c in mine)))
    console.print(summary)


def track(
    run_dirs: list[Path] = typer.Argument(..., help="Session folders, or a bench folder."),
    to: str = typer.Option(..., "--to", help="mlflow[:URI], wandb[:PROJECT] or "
                           "optuna[:STORAGE]."),
) -> None:
    """Send finished or stopped sessions to a tracker, as --track would have (trials the
    tracker holds already are skipped)."""
    from rich.progress import Progress

    from agent.record.rundir import sessions_in
    from agent.track.backfill import backfill

    [spec] = trackers_or_fail([to])
    runs = sessions_in(run_dirs)
    console = Console()
    say = lambda text: console.print(f"[yellow]{markup(text)}[/yellow]")  # noqa: E731
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"to {markup(spec)}", total=None)
        sent = [backfill(r, spec, say, lambda: progress.advance(task)) for r in runs]
    for run, n in zip(runs, sent, strict=True):
        typer.echo(clean(f"{run}: {n} trials in {spec}"))
