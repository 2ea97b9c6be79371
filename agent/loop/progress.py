"""Who is told about a running session: the live terminal lines, the progress plot, nobody.

Each is a `agent.protocols.Reporter`; `Reporters` fans the same calls out to several."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from agent.plots import can_plot
from agent.text import Hanging, markup

STATUS_STYLE = {"ok": "green", "rejected": "magenta", "timeout": "yellow", "oom": "red",
                "cuda_oom": "red", "diverged": "yellow", "crash": "red", "pruned": "cyan"}


class RichReporter:
    """One line per finished trial above a progress bar (trial, ETA, best so far)."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            TextColumn("{task.fields[best]}"), console=self.console, transient=True)
        self.task = None
        self.headed = False  # the labels above the first trial line are printed

    def start(self, done: int, total: int | None) -> None:
        self.progress.start()
        self.task = self.progress.add_task("trials", total=None if total is None else total + 1,
                                           completed=done, best="")

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{markup(text)}[/dim]")

    def running(self, n: int, action) -> None:
        self.progress.update(self.task, description=f"trial {n}")

    def finished(self, note) -> None:
        # 80 columns hold a line's fixed part (47) and a short description (CMA-ES's 28): the
        # labels are said once, above the first line, rather than on every line
        if not self.headed:
            self.console.print(f"[dim]{'trial':>10}  {'status':9}{'val_bpb':8} "
                               f"{'(best so far)':15}  what was tried[/dim]")
            self.headed = True
        style = STATUS_STYLE.get(note.status, "white")
        status = markup(note.status) + " " * max(9 - len(note.status), 1)
        val = f"{note.val_bpb:.6f}" if note.val_bpb is not None else "-"
        best = f"{note.best_val_bpb:.6f}" if note.best_val_bpb is not None else "-"
        best_part = "[bold green]new best[/bold green]" + " " * 7 if note.is_best else \
            f"(best {best:>8})"
        # the reason is shortened at a word; the description is kept whole: what was tried
        extra = f" [dim]— {markup(note.reason, 160)}[/dim]" if note.status != "ok" and \
            note.reason else ""
        # under the trial's status, not at the margin, where a line runs past the width
        self.console.print(Hanging(
            f"trial {note.trial:>4}  ", f"[{style}]{status}[/{style}]{val:<8} {best_part}  "
            f"[dim]{markup(note.description)}[/dim]{extra}"))
        self.progress.update(self.task, advance=1, best=f"best {best}")

    def stop(self) -> None:
        self.progress.stop()


NO_PLOT = "no progress.png: matplotlib is not installed here (pip install matplotlib)"


class ProgressPlot:
    """Keeps runs/NAME/progress.png up to date: every trial a point, the incumbent a line, and
    beside them the trials' learning curves once any has one (agent/plots.py says how pruned
    and failed trials are drawn); drawn at most every `every_s` seconds while the session
    runs, and when it stops. Without matplotlib (`enabled` False) it draws nothing: the
    session says so once (NO_PLOT) and runs on."""

    def __init__(self, path: Path, title: str, every_s: float = 10.0):
        self.path, self.title, self.every_s = path, title, every_s
        self.notes: dict[int, object] = {}
        self.drawn = 0.0
        self.enabled = can_plot()

    def start(self, done: int, total: int | None) -> None: ...

    def note(self, text: str) -> None: ...

    def running(self, n: int, action) -> None: ...

    def seed(self, notes) -> None:
        """The notes a resumed session already holds."""
        self.notes.update({n.trial: n for n in notes})

    def finished(self, note) -> None:
        self.notes[note.trial] = note
        if time.monotonic() - self.drawn >= self.every_s:
            self.draw()

    def stop(self) -> None:
        if self.notes:
            self.draw()

    def draw(self) -> None:
        if not self.enabled:
            return
        from agent.plots import progress_figure, save

        save(progress_figure(list(self.notes.values()), self.title), self.path)
        self.drawn = time.monotonic()


class Reporters:
    """Several reporters as one: each call goes to all of them, in order."""

    def __init__(self, *reporters):
        self.reporters = reporters

    def start(self, done: int, total: int | None) -> None:
        for r in self.reporters:
            r.start(done, total)

    def note(self, text: str) -> None:
        for r in self.reporters:
            r.note(text)

    def running(self, n: int, action) -> None:
        for r in self.reporters:
            r.running(n, action)

    def finished(self, note) -> None:
        for r in self.reporters:
            r.finished(note)

    def stop(self) -> None:
        for r in self.reporters:
            r.stop()


class QuietReporter:
    """Reports nothing: for tests and --quiet."""

    def start(self, done: int, total: int | None) -> None: ...
    def note(self, text: str) -> None: ...
    def running(self, n: int, action) -> None: ...
    def finished(self, note) -> None: ...
    def stop(self) -> None: ...
