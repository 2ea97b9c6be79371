"""Where a session stands, kept as trials come in: the optimizer's progress, who is best, what
has been spent. Each question is answered here once and updated per trial, never by rescanning
every note on every turn of the loop (a 10,000-trial session stays linear).

`Progress` is the optimizer's pickle (optimizer/state.pkl), saved after every proposal (once
its commit exists) and after every tell.
"""

from __future__ import annotations

import bisect
import pickle
from dataclasses import dataclass, field

from agent.loop.gate import Decision, Gate
from agent.protocols import TrialRecord
from agent.record.ledger import atomic_write
from agent.record.note import TrialNote

STATE_VERSION = 2


@dataclass
class Progress:
    optimizer: object
    asked: int = 1  # trials prepared: the next proposal is trial `asked` (0 is the baseline)
    told: int = 0  # trials 0 .. told - 1 were told to the optimizer, in trial order
    inflight: dict[int, dict] = field(default_factory=dict)  # prepared, not told: the action

    def save(self, path) -> None:
        atomic_write(path, pickle.dumps({"v": STATE_VERSION, **self.__dict__}))

    @classmethod
    def load(cls, path) -> Progress:
        """The pickle at `path`; ValueError (or what unpickling raises) when unreadable."""
        state = pickle.loads(path.read_bytes())
        if state.pop("v", 1) != STATE_VERSION:
            raise ValueError("written by an older version")
        return cls(**state)

    def tell(self, note: TrialNote) -> TrialRecord | None:
        """Tell the optimizer trial `told` (its recorded action and outcome); what it saw, or
        None for a confirmation run (the gate's, not the optimizer's)."""
        seen = None
        if note.method != "confirm":
            seen = note.as_seen()
            self.optimizer.tell(note.recorded_action(), seen)
        self.inflight.pop(note.trial, None)
        self.told += 1
        return seen

    def pending(self, known, n_params: int) -> list[TrialRecord]:
        """The proposals in flight (asked, not told) as an optimizer sees them: their full
        configuration where `known(n)` (its note or its running trial) has it, else the action's
        values when they name every parameter; confirmation runs are left out."""
        views = []
        for n, action in sorted(self.inflight.items()):
            if n < self.told or action.get("kind") == "confirm":
                continue
            values = action.get("values") or {}
            seen = known(n)
            config = seen.config if seen is not None else (
                values if len(values) == n_params else None)
            views.append(TrialRecord(n, "running", config, rationale=action.get("rationale", "")))
        return views


def better(note: TrialNote, than: TrialNote | None) -> bool:
    """`note` beats `than`: an ok trial with a lower val_bpb (the first of equals stays)."""
    if note.status != "ok" or note.val_bpb is None:
        return False
    return than is None or (note.val_bpb, note.trial) < (than.val_bpb, than.trial)


class Best:
    """Who is best -- decided here and nowhere else. Without the gate: the best ok trial (the
    first of equals), among all recorded trials (`current`, what branch `best` and the ledger's
    is_best follow) and among the trials told so far (`incumbent`, the parent of the next
    proposal, whatever order results came in). With the gate (`--confirm K`) both are the
    trial it promoted last (agent/loop/gate.py)."""

    def __init__(self, gate: Gate, notes: dict[int, TrialNote]):
        self.gate, self.notes = gate, notes  # `notes`: the session's, read by trial number
        self._recorded: TrialNote | None = None
        self._told: TrialNote | None = None

    def is_new(self, number: int, ok: bool, val_bpb: float | None) -> bool:
        """A result about to be recorded is a new best: at once without the gate (the
        baseline also under it: it is the gate's first incumbent)."""
        if not ok or val_bpb is None or (self.gate.on and number > 0):
            return False
        now = self.current
        return now is None or val_bpb < now.val_bpb

    def recorded(self, note: TrialNote) -> None:
        if better(note, self._recorded):
            self._recorded = note

    def told(self, note: TrialNote) -> Decision | None:
        """Trial `note` was told (in trial order): the gate's decision when it completes one."""
        if better(note, self._told):
            self._told = note
        return self.gate.observe(note) if self.gate.on else None

    @property
    def current(self) -> TrialNote | None:
        if self.gate.on:  # None while the baseline, its first incumbent, is not recorded
            return self.notes.get(self.gate.incumbent)
        return self._recorded

    @property
    def incumbent(self) -> TrialNote | None:
        if self.gate.on:
            return self.notes.get(self.gate.incumbent)
        return self._told


class Spend:
    """What the trials cost, summed as they are recorded: the cost, and the median wall time
    of a trial that ran (what one more is expected to take)."""

    def __init__(self):
        self.cost_s = 0.0
        self._walls: list[float] = []

    def add(self, note: TrialNote) -> None:
        self.cost_s += note.cost_s or 0.0
        if note.status != "rejected":
            bisect.insort(self._walls, note.wall_s or 0.0)

    @property
    def typical_wall_s(self) -> float:
        return self._walls[len(self._walls) // 2] if self._walls else 0.0
