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

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf|infinity)"
_PROGRESS = re.compile(
    rf"^progress:\s+(?P<progress>{_NUM})\s+step\s+(?P<step>\d+)\s+tokens\s+(?P<tokens>\d+)"
    rf"\s+loss\s+(?P<loss>{_NUM})\s+seconds\s+(?P<seconds>{_NUM})\s*$", re.I)
_STEP = re.compile(rf"^step\s+(?P<step>\d+)\s+\((?P<pct>{_NUM})%\)\s*\|\s*loss:?\s+"
                   rf"(?P<loss>{_NUM})\s*(?:\||$)", re.I)
_PREFLIGHT = re.compile(r"^preflight:\s+ok((?:\s+[a-z_]+\s+[-+0-9.eE]+)+)\s*$")
MAX_LINE = 4096  # longer lines are no curve lines: skipped without being kept
MAX_POINTS = 100_000  # curve.jsonl holds at most this many points (2 % steps need 50)
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
        return {"progress": min(max(float(m["progress"]), 0.0), 1.0), "step": int(m["step"]),
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
        self._buffer = b""
        self._skipping = False  # inside an over-long line
        self._file = open(curve_path, "w", encoding="utf-8") if curve_path else None  # noqa: SIM115
        self._saw_progress = False

    def write(self, chunk: bytes) -> None:
        self.sink.write(chunk)
        data = self._buffer + chunk
        parts = re.split(rb"[\r\n]", data)
        self._buffer = parts.pop()
        if len(self._buffer) > MAX_LINE:
            self._buffer, self._skipping = b"", True
        for raw in parts:
            if self._skipping:  # the rest of an over-long line
                self._skipping = False
                continue
            if raw and len(raw) <= MAX_LINE:
                self._line(raw.decode("utf-8", errors="replace"))

    def close(self) -> None:
        if self._buffer and not self._skipping:
            self._line(self._buffer.decode("utf-8", errors="replace"))
        self._buffer = b""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _line(self, line: str) -> None:
        point = parse_progress(line)
        if point is None:
            numbers = parse_preflight(line) if self.preflight is None else None
            if numbers is not None:
                self.preflight = numbers
                if self.watch is not None and self.stopped is None:
                    self._answer(self.watch.preflight(numbers))
            return
        if point["kind"] == "progress" and not self._saw_progress:
            self._saw_progress = True
            self.points = []  # step lines before it were the same run in another format
        elif point["kind"] == "step" and self._saw_progress:
            return
        if len(self.points) >= MAX_POINTS:
            return
        del point["kind"]
        self.points.append(point)
        if self._file is not None:
            self._file.write(json.dumps({**point, "loss": _finite_or_none(point["loss"]),
                                         "seconds": point["seconds"]}) + "\n")
            self._file.flush()
        if self.watch is not None and self.stopped is None:
            self._answer(self.watch.point(point))

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
