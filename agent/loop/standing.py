"""Where a session stands, kept as trials come in: the optimizer's progress, who is best, what
has been spent. Each question is answered here once and updated per trial, never by rescanning
every note on every turn of the loop (a 10,000-trial session stays linear).

`StopRules` says when the session should stop by itself (--stop-after-failures,
--stop-on-plateau), from the trials told so far, in trial order.

`Progress` is the optimizer's pickle (optimizer/state.pkl), saved after every proposal (once
its commit exists) and after every tell.
"""

from __future__ import annotations

import bisect
import importlib
import pickle
from collections import Counter
from dataclasses import dataclass, field

from agent.loop.gate import Decision, Gate
from agent.protocols import TrialRecord
from agent.record.ledger import atomic_write
from agent.record.note import TrialNote
from agent.text import clean

STATE_VERSION = 2

# Modules the layout of issue 22 moved: a state.pkl written before it names the old ones.
MOVED = {
    "agent.hpblock": ("agent.edit.space", "agent.edit.block"),
    "agent.actions": ("agent.edit.actions",),
    "agent.optimizers.llm_seat": ("agent.llm.seat",),
    "agent.optimizers.llm_common": ("agent.llm.prompting", "agent.llm.answers"),
    "agent.llm": ("agent.llm.client",),
    "agent.local_llm": ("agent.llm.local",),
    "agent.config": ("agent.config.settings",),
}
# What an optimizer's state is made of, and all a state.pkl may name: a run folder may come
# from someone else (DESIGN.md, Trust), and a pickle that names anything else (os.system, a
# class whose constructor runs a program) is refused before it runs: the session then
# rebuilds the optimizer from the trial notes, as for any unreadable pickle.
STATE_CLASSES = ("agent.optimizers.", "agent.edit.", "agent.llm.seat", "agent.protocols",
                 "agent.testing.", "cmaes.", "optuna.distributions")
STATE_NAMES = {
    ("builtins", n) for n in ("set", "frozenset", "complex", "slice", "range", "bytearray")} | {
    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("collections", "deque"),
    ("copyreg", "_reconstructor"), ("random", "Random"), ("numpy", "ndarray"),
    ("numpy", "dtype"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"), ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._pcg64", "PCG64")}


class StateUnpickler(pickle.Unpickler):
    """Loads an optimizer's state and nothing else (STATE_CLASSES, STATE_NAMES), finding a
    class the layout moved under its new module."""

    def find_class(self, module, name):
        for new in MOVED.get(module, ()):
            found = getattr(importlib.import_module(new), name, None)
            if isinstance(found, type):
                module = found.__module__
                break
        if (module, name) in STATE_NAMES:
            return super().find_class(module, name)
        if "." not in name and (module + ".").startswith(STATE_CLASSES):
            found = super().find_class(module, name)
            if isinstance(found, type) and found.__module__ == module:
                return found
        raise pickle.UnpicklingError(f"a state.pkl may not name {module}.{name}")


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
        with open(path, "rb") as f:
            state = StateUnpickler(f).load()
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


# Outcome.stopped_by of the stop rules, --max-usd and `autoresearch stop`
STOPPED = ("failures", "plateau", "money", "stop")
NOT_FAILED = ("ok", "pruned")  # a pruned trial was stopped on purpose


@dataclass
class Stop:
    rule: str  # one of STOPPED
    why: str  # one line: what happened and how to go on


class StopRules:
    """The evidence of the stop rules, kept in trial order as trials are told (the order is
    fixed by the seed and slot count, so a resumed session stops where a whole one would):
    the failed trials in a row, and every told trial's summed trial time, so the trials and
    seconds since the incumbent are one subtraction."""

    def __init__(self, failures: int, plateau_trials: int | None, plateau_s: float | None):
        self.failures, self.plateau_trials, self.plateau_s = (failures, plateau_trials,
                                                             plateau_s)
        self.failing: Counter = Counter()  # the statuses of the failed trials in a row
        self.first_failing = 0
        self._walls = [0.0]  # _walls[n]: the summed wall_s of trials 0 .. n - 1

    def told(self, note: TrialNote) -> None:
        self._walls.append(self._walls[-1] + (note.wall_s or 0.0))
        if note.status in NOT_FAILED:
            self.failing.clear()
        else:
            if not self.failing:
                self.first_failing = note.trial
            self.failing[note.status] += 1

    def since(self, trial: int) -> tuple[int, float]:
        """The trials told after trial `trial`, and their summed wall time."""
        told = len(self._walls) - 1
        return told - 1 - trial, self._walls[-1] - self._walls[min(trial + 1, told)]

    def check(self, incumbent: TrialNote | None, slots: int, run: str) -> Stop | None:
        """The rule that stops the session now (`incumbent`: the best told trial, under the
        gate the one it promoted; `run`: the run folder, for the resume command)."""
        failed = sum(self.failing.values())
        if self.failures and failed >= self.failures:
            counts = ", ".join(f"{clean(s, True)[:20]} {k}" for s, k in self.failing.items())
            return Stop("failures", f"{failed} failed trials in a row (trials "
                        f"{self.first_failing}-{self.first_failing + failed - 1}: {counts}); "
                        f"see `autoresearch replay {run} --trial {self.first_failing}`, then "
                        f"`autoresearch resume {run} --stop-after-failures "
                        f"{2 * self.failures}` goes on")
        if incumbent is None or not (self.plateau_trials or self.plateau_s):
            return None
        trials, seconds = self.since(incumbent.trial)
        seconds /= max(slots, 1)
        if self.plateau_trials and trials >= self.plateau_trials:
            held = f"{trials} trials"
        elif self.plateau_s and seconds >= self.plateau_s:
            held = f"{seconds / 3600:.2f} h of trial time"
        else:
            return None
        return Stop("plateau", f"no new best in {held} since trial {incumbent.trial} "
                    f"(val_bpb {incumbent.val_bpb}); `autoresearch resume {run} "
                    "--stop-on-plateau LONGER` goes on")
