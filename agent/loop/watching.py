"""The checks a trial runs under (agent/watch.py), written from the notes the session holds.

Only trials told before trial n was proposed count: numbers 0 .. n - slots (the session
proposes n once those are told, whatever else finished since), so the spec, and with it every
decision, is the same in a resumed session as in an uninterrupted one. Confirmation runs of
the gate are repeats, not proposals: they count only for the baseline's seed spread.
"""

from __future__ import annotations

import math
import statistics

from agent.config.settings import SessionConfig
from agent.record.note import TrialNote
from agent.watch import Told, WatchSpec, finite_at, parse_rule

SPREAD_GRID = [round(0.05 * i, 2) for i in range(1, 21)]


def decision_points(config: SessionConfig, trial_config: dict | None) -> list[float]:
    """--prune-at, less those at or after the start of this trial's warm-down (where a
    schedule that anneals sooner would look better than it is)."""
    warmdown = (trial_config or {}).get("WARMDOWN_RATIO")
    points = sorted(config.prune_at)
    if isinstance(warmdown, (int, float)) and 0 < warmdown <= 1:
        points = [p for p in points if p < 1 - warmdown]
    return points


def watch_spec(config: SessionConfig, notes: dict[int, TrialNote], n: int,
               trial_config: dict | None, slots: int, preflight: dict | None = None,
               repeat: bool = False) -> WatchSpec | None:
    """What trial n (its hyperparameters `trial_config`) is checked against while it runs;
    None: nothing. A `repeat` (the gate's confirmation run of a configuration that already
    trained to the end) is never stopped: stopping it would refuse its candidate."""
    if repeat:
        return None
    before = [notes[i] for i in sorted(notes) if i <= n - slots]
    proposals = [note for note in before if note.method != "confirm"]
    rule = config.prune if n > 0 else "none"
    points = decision_points(config, trial_config) if parse_rule(rule)[0] != "none" else []
    if not points:
        rule = "none"
    guard = config.guard and n > 0
    if rule == "none" and not guard and not preflight:
        return None
    history = [told(note, points) for note in proposals] if rule != "none" else []
    return WatchSpec(number=n, rule=rule, points=points, min_trials=config.prune_min_trials,
                     history=history, guard=guard, guard_until=guard_until(trial_config),
                     incumbent=_incumbent_curve(proposals) if guard else [],
                     spread=_baseline_spread(before) if guard else [], preflight=preflight)


def guard_until(trial_config: dict | None) -> float:
    """The guard acts before the trial's warm-down starts (its loss falls fastest there, and
    by then most of the budget is spent), at most up to 90 % of the budget."""
    warmdown = (trial_config or {}).get("WARMDOWN_RATIO")
    if isinstance(warmdown, (int, float)) and 0 <= warmdown <= 1:
        return min(1 - warmdown, 0.9)
    return 0.5


def told(note: TrialNote, points: list[float]) -> Told:
    """A told trial as the pruner's study holds it."""
    curve = curve_of(note)
    values = [finite_at(curve, p) for p in points]
    if note.status == "ok" and note.val_bpb is not None:
        return Told(values, "complete", note.val_bpb)
    return Told(values, "pruned" if note.status == "pruned" else "fail")


def curve_of(note: TrialNote) -> list:
    return [list(p) for p in note.curve()]


def _incumbent_curve(proposals: list[TrialNote]) -> list:
    ok = [n for n in proposals if n.status == "ok" and n.val_bpb is not None and curve_of(n)]
    return curve_of(min(ok, key=lambda n: (n.val_bpb, n.trial))) if ok else []


def _baseline_spread(before: list[TrialNote]) -> list[list[float]]:
    """[progress, std] of the baseline's loss over its seeds (trial 0 and the gate's
    confirmation runs of it), where at least two have a curve."""
    runs = [curve_of(n) for n in before if n.status == "ok" and (
        n.trial == 0 or (n.method == "confirm" and (n.action or {}).get("of") == 0))]
    runs = [c for c in runs if c]
    if len(runs) < 2:
        return []
    spread = []
    for p in SPREAD_GRID:
        values = [v for v in (finite_at(c, p) for c in runs) if v is not None]
        if len(values) >= 2 and all(math.isfinite(v) for v in values):
            spread.append([p, statistics.stdev(values)])
    return spread
