"""A trial's learning curve in a few numbers: what a prompt shows of how a trial trained.

A curve is the `(progress, loss)` pairs of `TrialRecord.curve`: progress the fraction of the
budget (0..1), loss the smoothed train loss there (None or NaN where it was not finite), at
most 64 points, the last one where the trial ended (a pruned trial's curve ends where it
was stopped). `summary` writes one line of it, `10% 6.12, 25% 4.51, 50% 3.80, 75% 3.52, 100%
3.41`, with `; diverged at 30%` where the loss turned non-finite or rose sharply: 2 decimals,
a line of five points is about 40 tokens.

Pure functions over plain pairs, no other agent module: any layer may use them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Curve = Sequence[Sequence[float | None]]

POINTS = (0.1, 0.25, 0.5, 0.75)  # where a summary reads the loss, before the last point
# "rising sharply": the smoothed loss more than this factor above the lowest one before it
# (a bias-corrected EMA moves little from one progress line to the next, so a 20 % rise is
# no noise but a loss spike or a run away)
RISE = 1.2
NEAR = 0.05  # a point this close past one of POINTS is written as that point


def finite(value) -> float | None:
    """`value` as a float when it is a finite number (not a bool, not an int past float's
    range), else None: how a number from a note, a ledger line or a curve file is read."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _loss(point: Sequence[float | None]) -> float:
    loss = point[1]
    return float("nan") if loss is None else float(loss)


def value_at(curve: Curve, progress: float) -> float | None:
    """The loss of the first point at or past `progress` (NaN where it was not finite), or
    None when the curve ended before it."""
    for point in curve:
        if point[0] >= progress:
            return _loss(point)
    return None


def diverged_at(curve: Curve) -> float | None:
    """The progress of the first point whose loss is not finite or more than `RISE` times
    the lowest loss before it; None when the curve has none."""
    lowest = math.inf
    for point in curve:
        loss = _loss(point)
        if not math.isfinite(loss) or loss > RISE * lowest:
            return float(point[0])
        lowest = min(lowest, loss)
    return None


def ended_at(curve: Curve) -> float | None:
    """Where the trial ended (its last point's progress), None without a curve."""
    return float(curve[-1][0]) if curve else None


def percent(progress: float) -> str:
    return f"{progress * 100:.0f}%"


def summary(curve: Curve) -> str:
    """One line: the loss at each of `POINTS` the trial reached and at its last point, then
    where it diverged, if it did; "" without a curve. A point is labelled with the progress
    asked for when it lies within `NEAR` of it (so that lines of different trials compare
    column by column), else with its own, and the last point always with its own; a point
    that answers two of `POINTS` (a sparse curve) is written once."""
    if not curve:
        return ""
    last = len(curve) - 1
    labels: dict[int, float] = {}
    for p in POINTS:
        i = next((i for i, point in enumerate(curve) if point[0] >= p), None)
        if i is not None and i != last and i not in labels:
            labels[i] = p if curve[i][0] - p <= NEAR else float(curve[i][0])
    labels[last] = float(curve[last][0])
    line = ", ".join(f"{percent(p)} {_number(_loss(curve[i]))}" for i, p in labels.items())
    diverged = diverged_at(curve)
    return line if diverged is None else f"{line}; diverged at {percent(diverged)}"


def _number(loss: float) -> str:
    return f"{loss:.2f}" if math.isfinite(loss) else str(loss)
