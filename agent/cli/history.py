"""`autoresearch replay | diff`: what a session tried, and the code between two of its trials."""

from __future__ import annotations

from pathlib import Path

import typer

from agent.cli.common import WIDE, cost_line, records
from agent.errors import fail
from agent.text import clean, markup


def replay(
    run_dir: Path = typer.Argument(..., help="The session folder."),
    trial: int | None = typer.Option(None, "--trial", help="Show one trial."),
    show_diff: bool = typer.Option(False, "--diff", help="With --trial: its diff and log."),
    curve: bool = typer.Option(False, "--curve", help="With --trial: its learning curve."),
    as_json: bool = typer.Option(False, "--json", help="Stable JSON rows (see README)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the ledger from git."),
    wide: bool = WIDE,
) -> None:
    """The session's trials, from the ledger (or from git with --rebuild)."""
    import json

    from rich.syntax import Syntax

    from agent.analysis.report import fitting_console, replay_rows, replay_table, replay_text
    from agent.llm.pricing import cut_usd, gpu_rate
    from agent.record.rundir import RunDir

    if curve and trial is None:
        raise fail("--curve shows one trial's learning curve: add --trial N", 2)
    notes = records(run_dir, rebuild)
    rows = replay_rows(notes)
    if trial is not None:
        picked = [r for r in notes if r.trial == trial]
        if not picked:
            raise fail(f"{run_dir} has no trial {trial} (it has 0..{len(notes) - 1})", 2)
        if curve:
            show_curve(RunDir(run_dir), picked[0], as_json)
            return
        if as_json:
            typer.echo(json.dumps(picked[0].to_dict(), sort_keys=True))
            return
        console = fitting_console(wide)
        width = None if wide else console.width
        console.print(replay_table(replay_rows(picked), f"{run_dir} trial {trial}", width))
        if show_diff:
            # wrapped, not cropped at the width: a pipe's 80 columns would cut code lines
            console.print(Syntax(clean(picked[0].diff or "(no diff: the baseline)"), "diff",
                                 word_wrap=True))
            log = RunDir(run_dir).trial_log(trial, picked[0].result)  # inside the folder
            if log is not None:
                tail = log.read_text(errors="replace").splitlines()[-25:]
                console.print("[bold]train.log (last 25 lines)[/bold]")
                console.print(clean("\n".join(tail)), markup=False, highlight=False)
        return
    if as_json:
        typer.echo(json.dumps(rows, sort_keys=True))
        return
    console = fitting_console(wide)
    width = None if wide else console.width
    rd = RunDir(run_dir)
    spent = cost_line(notes, gpu_rate(rd.pricing_json), cut_usd(rd.cut_calls))
    title = f"{run_dir}: {len(rows)} trials; {spent}"
    if len(rows) > 200:  # a rich Table is too slow for thousands of rows
        import sys

        sys.stdout.write(replay_text(rows, title + " (* = new best)", width))
        return
    console.print(replay_table(rows, title, width))


def show_curve(rd, note, as_json: bool) -> None:
    """`replay --trial N --curve`: a header line and the curve thinned to a table, all of it
    as JSON, or one line saying there is none."""
    import json

    from rich.console import Console

    from agent.analysis.report import curve_header, curve_points, curve_table

    path = rd.trial(note.trial) / "curve.jsonl"
    points, source = curve_points(note, path if rd.holds(path) and path.is_file() else None)
    if as_json:
        typer.echo(json.dumps(points))
        return
    if not points:
        typer.echo(clean(f"trial {note.trial} ({note.status}) has no learning curve: its "
                         "train.py printed no progress lines, or it ran before curves were "
                         "recorded", one_line=True))
        return
    console = Console()
    console.print(markup(curve_header(note, len(points), source)), soft_wrap=True)  # one line
    console.print(curve_table(points))


def diff(
    run_dir: Path = typer.Argument(..., help="The session folder."),
    a: str = typer.Argument("baseline", help="From: a trial number, baseline, best or a rev."),
    b: str = typer.Argument("best", help="To: a trial number, baseline, best or a rev."),
) -> None:
    """The code change between two trials (default: baseline .. best)."""
    from rich.console import Console
    from rich.syntax import Syntax

    from agent.record.workspace import Workspace, WorkspaceError

    ws = Workspace(run_dir / "repo")
    revs = []
    for name in (a, b):
        sha = ws.trial_commit(int(name)) if name.isdigit() else ws.rev(name)
        if sha is None:
            raise WorkspaceError(f"{run_dir} has no trial {name}")
        revs.append(sha)
    text = clean(ws.diff(*revs))  # code a model wrote: no escape reaches the terminal
    console = Console()
    if console.is_terminal:
        console.print(Syntax(text or "(no change)", "diff"))
    else:
        typer.echo(text)
