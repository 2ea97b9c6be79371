"""A trial's learning curve, read from its output while it runs (DESIGN.md, "Learning curves").

The fixed side of train.py (prepare.py's kit) prints, at least every 2 % of the budget,

    progress: 0.250 step 120 tokens 491520 loss 3.4512 seconds 75.1

and karpathy-style scripts print `step 00012 (12.3%) | loss: 3.456789 | ...` (with `\\r`
between them); either is a point of the curve. A run that prints any `progress:` line is
curved from those alone. Each point goes to `curve.jsonl` beside train.log as it comes, so
the head+tail cap of the log never drops one, and to a `watch` that may stop the trial:
the session's early-stopping rule, its divergence guard and its in-process preflight check.

What a trial prints is data: a line is parsed by fixed patterns, a point is bounded in count
and size, and nothing it says reaches anything but numbers.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

# numbers of bounded size: what a trial prints is data, and a curve point is a few bytes
_NUM = (r"[-+]?(?:\d{1,18}(?:\.\d{0,18})?|\.\d{1,18})(?:[eE][-+]?\d{1,3})?"
        r"|[-+]?(?:nan|inf|infinity)")
_INT = r"\d{1,18}"
_PROGRESS = re.compile(
    rf"^progress:\s+(?P<progress>{_NUM})\s+step\s+(?P<step>{_INT})\s+tokens\s+(?P<tokens>{_INT})"
    rf"\s+loss\s+(?P<loss>{_NUM})\s+seconds\s+(?P<seconds>{_NUM})\s*$", re.I)
_STEP = re.compile(rf"^step\s+(?P<step>{_INT})\s+\((?P<pct>{_NUM})%\)\s*\|\s*loss:?\s+"
                   rf"(?P<loss>{_NUM})\s*(?:\||$)", re.I)
_PREFLIGHT = re.compile(r"^preflight:\s+ok((?:\s+[a-z_]+\s+[-+0-9.eE]+)+)\s*$")
MAX_LINE = 512  # longer lines are no curve lines: not parsed (the log keeps them)
MAX_POINTS = 10_000  # kept and written at most (2 % steps need 50; per-step lines of a
# 300-s GPU trial about 3,000); later points still reach the watch
NOTE_POINTS = 64  # the curve a note keeps


@dataclass(frozen=True)
class Stop:
    """Why a watch ended a trial: its status (`pruned`, `diverged`, `oom`, `rejected`,
    `preflight`) and one line of reason."""

    status: str
    reason: str


def parse_progress(line: str) -> dict | None:
    """A curve point from one line of output, or None."""
    line = line.strip()
    m = _PROGRESS.match(line)
    if m:
        progress = float(m["progress"])
        if not math.isfinite(progress):
            return None
        return {"progress": min(max(progress, 0.0), 1.0), "step": int(m["step"]),
                "tokens": int(m["tokens"]), "loss": float(m["loss"]),
                "seconds": float(m["seconds"]), "kind": "progress"}
    m = _STEP.match(line)
    if m:
        pct = float(m["pct"])
        if not math.isfinite(pct):
            return None
        return {"progress": min(max(pct / 100, 0.0), 1.0), "step": int(m["step"]),
                "tokens": None, "loss": float(m["loss"]), "seconds": None, "kind": "step"}
    return None


def parse_preflight(line: str) -> dict[str, float] | None:
    """The in-process probe's verdict: `preflight: ok peak_memory_mb 812.5 step_seconds
    0.12 preflight_batch 16` -> its numbers, or None."""
    m = _PREFLIGHT.match(line.strip())
    if not m:
        return None
    words = m.group(1).split()
    try:
        return {k: float(v) for k, v in zip(words[::2], words[1::2], strict=True)}
    except ValueError:
        return None


def thin(points: list[list[float]], limit: int = NOTE_POINTS) -> list[list[float]]:
    """At most `limit` of `points`, evenly spread, the first and the last kept."""
    if len(points) <= limit:
        return [list(p) for p in points]
    step = (len(points) - 1) / (limit - 1)
    return [list(points[round(i * step)]) for i in range(limit)]


def read_curve(path: Path | str) -> list[dict]:
    """The points of a curve.jsonl (unreadable lines skipped)."""
    points = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    point = json.loads(line)
                except ValueError:
                    continue
                if isinstance(point, dict) and isinstance(point.get("progress"), (int, float)):
                    points.append(point)
    except OSError:
        return []
    return points


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class Stream:
    """Between a trial's output and its LogSink: splits lines, keeps the curve (memory and
    `curve.jsonl`), and asks `watch` about each point (`watch.point(point)`) and about the
    in-process probe (`watch.preflight(numbers)`); the first Stop it answers is kept in
    `stopped` and `on_stop` is called once (the backend kills the trial there)."""

    def __init__(self, sink, curve_path: Path | None = None, watch=None, on_stop=None):
        self.sink, self.watch, self.on_stop = sink, watch, on_stop
        self.points: list[dict] = []
        self.preflight: dict[str, float] | None = None
        self.stopped: Stop | None = None
        self.last: dict | None = None  # the last point seen (kept or not)
        self.error: str | None = None  # what the watch raised, if it did (it then stops)
        self._buffer = b""
        self._skipping = False  # inside an over-long line
        self._file = open(curve_path, "w", encoding="utf-8") if curve_path else None  # noqa: SIM115
        self._saw_progress = self._closed = False

    def write(self, chunk: bytes) -> None:
        if self._closed:  # a reader still draining after the trial was recorded
            return
        self.sink.write(chunk)
        parts = re.split(rb"[\r\n]", self._buffer + chunk)
        tail = parts.pop()  # the line not yet ended
        for raw in parts:
            skip, self._skipping = self._skipping, False  # the end of an over-long line
            if raw and not skip and len(raw) <= MAX_LINE:
                self._line(raw.decode("utf-8", errors="replace"))
        if len(tail) > MAX_LINE:
            tail, self._skipping = b"", True
        self._buffer = tail

    def close(self) -> None:
        if self._buffer and not self._skipping:
            self._line(self._buffer.decode("utf-8", errors="replace"))
        self._buffer, self._closed = b"", True
        if self._file is not None:
            self._file.close()
            self._file = None

    def _line(self, line: str) -> None:
        if self.stopped is not None:  # being killed: what it prints now is not its curve
            return
        point = parse_progress(line)
        if point is None:
            numbers = parse_preflight(line) if self.preflight is None else None
            if numbers is not None:
                self.preflight = numbers
                if self.watch is not None:
                    self._ask(self.watch.preflight, numbers)
            return
        if point["kind"] == "progress" and not self._saw_progress:
            self._saw_progress = True
            self.points = []  # step lines before it were the same run in another format
        elif point["kind"] == "step" and self._saw_progress:
            return
        del point["kind"]
        self.last = point
        if len(self.points) < MAX_POINTS:
            self.points.append(point)
            if self._file is not None:
                seconds = point["seconds"]
                try:
                    self._file.write(json.dumps({
                        **point, "loss": _finite_or_none(point["loss"]),
                        "seconds": None if seconds is None else _finite_or_none(seconds)})
                        + "\n")
                    self._file.flush()
                except OSError:  # a full disk: the note still gets the curve
                    self._file = None
        if self.watch is not None:
            self._ask(self.watch.point, point)

    def _ask(self, check, *args) -> None:
        """The watch's answer; one that raises stops the trial (a check that cannot run
        must not leave the trial blocked on a full pipe, nor let it run unchecked)."""
        try:
            stop = check(*args)
        except Exception as e:  # noqa: BLE001 - any failure of the check is reported
            self.error = f"{type(e).__name__}: {e}"[:300]
            stop = Stop("crash", f"the session's check of this trial failed: {self.error}")
        self._answer(stop)

    def _answer(self, stop: Stop | None) -> None:
        if stop is None or self.stopped is not None:
            return
        self.stopped = stop
        if self.on_stop is not None:
            self.on_stop()

    def pairs(self) -> list[list[float]]:
        """The curve as [progress, loss] pairs for a note: thinned, a non-finite loss kept
        as None (JSON has no NaN)."""
        return thin([[round(p["progress"], 4), _finite_or_none(p["loss"])]
                     for p in self.points])
