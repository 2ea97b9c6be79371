"""`autoresearch rerun | attribute | finalize | report`: is a result reproducible, which change
carried it, the kept changes as branches to merge, and what it scores on the test split no trial
read."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from agent.cli.common import ISOLATION, PREPARE, SANDBOX_HELP
from agent.errors import fail
from agent.text import markup


def _num(value, digits: int = 6, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def rerun(
    run_dir: Path = typer.Argument(..., help="Session folder."),
    trial: int = typer.Argument(..., help="Trial number."),
    seeds: int = typer.Option(1, "--seeds", help="Seeds: the trial's own, then the next."),
    sandbox: str | None = typer.Option(None, "--sandbox", help=SANDBOX_HELP),
    prepare_network: bool = PREPARE,
    isolation: str = ISOLATION,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run trial N again from its commit, seed and limits; recorded and new val_bpb side by side."""
    from agent.analysis.reruns import rerun as run_again

    summary = run_again(run_dir, trial, seeds, sandbox, prepare_network, isolation)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
        return
    recorded = summary["recorded"]
    table = Table(title=markup(f"rerun of trial {trial} ({summary['commit'][:10]}) of {run_dir}"))
    for col in ("seed", "status", "recorded val_bpb", "rerun val_bpb", "difference", "wall s"):
        table.add_column(col, justify="right")
    for r in summary["runs"]:
        same = r["same_seed"] and recorded["val_bpb"] is not None and r["val_bpb"] is not None
        table.add_row(str(r["seed"]) + (" (the trial's)" if r["same_seed"] else ""),
                      markup(r["status"]), _num(recorded["val_bpb"]) if r["same_seed"] else "",
                      _num(r["val_bpb"]),
                      _num(r["val_bpb"] - recorded["val_bpb"], 6, True) if same else "",
                      f"{r['wall_s']:.1f}")
    console = Console()
    console.print(table)
    if summary["std"] is not None:
        console.print(f"over {len(summary['runs'])} seeds: mean {summary['mean']:.6f}, std "
                      f"{summary['std']:.6f}")
    for what in summary["changed"]:
        console.print(f"[yellow]the {markup(what)} differs from the trial's: "
                      f"{markup(str(recorded[what])[:19])} then, "
                      f"{markup(str(summary['runs'][0][what])[:19])} now[/yellow]")
    console.print(f"[dim]logs: {markup(summary['folder'])}[/dim]")


def attribute(
    run_dir: Path = typer.Argument(..., help="Session folder."),
    start: str = typer.Option("baseline", "--from", help="baseline, best or a trial number."),
    end: str = typer.Option("best", "--to", help="baseline, best or a trial number."),
    seeds: int = typer.Option(2, "--seeds", help="Seeds per variant."),
    sandbox: str | None = typer.Option(None, "--sandbox", help=SANDBOX_HELP),
    prepare_network: bool = PREPARE,
    isolation: str = ISOLATION,
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON."),
) -> None:
    """Each change from --from to --to measured by leave-one-out and add-one, K seeds each."""
    from agent.analysis.attribution import attribute as measure
    from agent.analysis.report import wide_console

    console = Console(stderr=True) if as_json else wide_console()
    table = measure(run_dir, start, end, seeds, sandbox,
                    progress=lambda text: console.print(f"[dim]{markup(text)}[/dim]"),
                    prepare_network=prepare_network, isolation=isolation)
    if as_json:
        typer.echo(json.dumps(table, sort_keys=True))
        return
    mean = lambda xs: (sum(x for x in xs if x is not None) /  # noqa: E731
                       max(1, sum(x is not None for x in xs)))
    out = Table(title=markup(f"what helped, {start} ({mean(table['from_val_bpb']):.4f}) -> {end} "
                             f"({mean(table['to_val_bpb']):.4f}), {len(table['seeds'])} seeds; "
                             "Δ in val_bpb"))
    out.add_column("change")
    for col in ("Δ leave-one-out (to − it)", "± std", "Δ add-one (from + it)", "± std"):
        out.add_column(col, justify="right")
    notes = []
    for r in table["changes"]:
        cells = []
        for variant, key in (("without", "leave_one_out"), ("only", "add_one")):
            why = r["unappliable"].get(variant)
            if why:
                notes.append(f"({len(notes) + 1}) {r['change']}, {variant} it: {why}")
                cells += [f"unappliable ({len(notes)})", ""]
            else:
                cells += [_num(r[key], 4, True), _num(r[f"{key}_std"], 4)]
        out.add_row(markup(r["change"]), *cells)
    console.print(out)
    for line in notes:  # the reasons quote the code
        console.print(f"[dim]{markup(line)}[/dim]")
    console.print("[dim]leave-one-out > 0: removing the change hurts (it helped); add-one < 0: "
                  "the change helps on its own. Unappliable variants name why.[/dim]")
    console.print(f"[dim]cost {table['cost_s']:.0f} s; plot {markup(table['plot'])}; runs and "
                  f"commits in {markup(table['folder'])} and refs/attribution/[/dim]")


def finalize(
    run_dir: Path = typer.Argument(..., help="Session folder."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per measured variant."),
    export: Path | None = typer.Option(None, "--export", help="Write the branches as patch "
                                                              "files into this folder."),
    sandbox: str | None = typer.Option(None, "--sandbox", help=SANDBOX_HELP),
    prepare_network: bool = PREPARE,
    isolation: str = ISOLATION,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """The changes that helped beyond their noise, as branches on the baseline (finalize/*)."""
    from agent.analysis.finalize import finalize as run_finalize
    from agent.analysis.report import wide_console

    if seeds < 2:
        raise fail(f"--seeds {seeds}: at least 2, so each change's noise can be measured", 2)
    console = Console(stderr=True) if as_json else wide_console()
    summary = run_finalize(run_dir, seeds, export, sandbox,
                           lambda text: console.print(f"[dim]{markup(text)}[/dim]"),
                           prepare_network, isolation)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
        return
    out = Table(title=markup(f"finalize {run_dir}: {len(summary['seeds'])} seeds"))
    for col in ("change", "add-one Δ", "leave-one-out Δ", "kept", "why"):
        out.add_column(col, justify="right" if "Δ" in col else "left")
    for c in summary["changes"]:
        out.add_row(markup(c["change"]), _num(c["add_one"], 4, True),
                    _num(c["leave_one_out"], 4, True), "yes" if c["kept"] else "no",
                    markup(c["why"]))
    console.print(out)
    for b in summary["branches"]:
        console.print(f"branch {markup(b['branch'])}: {markup(b['change'])}")
    if not summary["branches"]:
        console.print("no change helped beyond its noise: no branch written")
    for path in summary["patches"]:
        console.print(f"patch {markup(path)}")
    console.print(f"findings: {markup(summary['findings'])}")


def report(
    run_dirs: list[Path] = typer.Argument(..., help="Session folders (a bench's runs too)."),
    sandbox: str | None = typer.Option(None, "--sandbox", help=SANDBOX_HELP),
    again: bool = typer.Option(False, "--again", help="Score again; else results kept in "
                               "RUN/test/ are read back."),
    prepare_network: bool = PREPARE,
    isolation: str = ISOLATION,
    as_json: bool = typer.Option(False, "--json", help="One object per run."),
) -> None:
    """Each run's best and its baseline scored on the test split that no trial read: trained
    again at the session's seed, the harness scores one model on val and on test."""
    from agent.analysis.report import wide_console
    from agent.analysis.testsplit import report as score

    console = Console(stderr=True) if as_json else wide_console()
    from agent.record.rundir import sessions_in

    found = []
    for run_dir in sessions_in(run_dirs):
        console.print(f"[dim]{markup(run_dir)}: its baseline and best on the test split "
                      "(trained again unless kept in RUN/test/) ...[/dim]")
        found.append(score(run_dir, sandbox, again, prepare_network, isolation))
    if as_json:
        typer.echo(json.dumps(found, sort_keys=True))
        return
    table = Table(title=markup(f"val and test, scored by the harness on one model each "
                               f"(test split {found[0]['test_split']})"))
    for col in ("run", "method", "trial", "recorded val_bpb", "val_bpb", "test_bpb",
                "test − val", "status"):
        table.add_column(col, justify="right" if col not in ("run", "method") else "left")
    for run in found:
        for row in run["rows"]:
            table.add_row(markup(Path(run["run"]).name), markup(run["method"]),
                          f"{row['trial']} ({row['role']})", _num(row["recorded_val_bpb"], 4),
                          _num(row["val_bpb"], 4), _num(row["test_bpb"], 4),
                          _num(row.get("gap"), 4, True),
                          markup(row["status"] if row["status"] == "ok"
                                 else f"{row['status']}: {row['reason'][:60]}"))
    console.print(table)
