"""The acceptance gate (`--confirm K`): a new best must be more than seed noise.

Without the gate a trial that beats the incumbent becomes `best` at once. With it, a trial
whose val_bpb (at the session's seed) beats the incumbent's becomes a *candidate*: its commit
runs again with the next K-1 seeds, and so does the incumbent's (once: those runs are kept
for the next candidate). Each run is a trial of its own kind (`method: confirm`, action
`Confirm`), with a number, a commit (empty, on top of the commit it repeats), a note and a
cost; no optimizer proposes it or is told of it. With all 2K values in, the per-seed
differences d = candidate - incumbent decide: the candidate is promoted when
mean(d) + 2 std(d) / sqrt(K) < 0 (it beats the incumbent by more than twice the standard error
of the paired difference), else refused. Candidates are confirmed one at a time, in trial
order; one that no longer beats a newly promoted incumbent is dropped.

The gate's state is a function of the notes told so far, in trial order: the session feeds it
at each tell, and a resumed session rebuilds it from the notes (`Gate.replay`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from agent.edit.actions import Confirm, action_from_dict
from agent.record.note import TrialNote
from agent.stats import paired_differences


@dataclass
class Decision:
    candidate: int
    incumbent: int
    promoted: bool
    diffs: list[float | None]
    mean: float | None = None
    noise: float | None = None

    def line(self) -> str:
        if self.mean is None:
            return (f"gate: trial {self.candidate} refused, a confirmation run failed "
                    f"(incumbent stays trial {self.incumbent})")
        verdict = "promoted to best" if self.promoted else "refused"
        return (f"gate: trial {self.candidate} {verdict}: mean difference {self.mean:+.5f} "
                f"against trial {self.incumbent} over {len(self.diffs)} seeds, noise "
                f"+-{self.noise:.5f}")


@dataclass
class Gate:
    k: int
    seed: int
    incumbent: int = 0  # trial number of the confirmed best (0: the baseline)
    values: dict[tuple[int, int], float | None] = field(default_factory=dict)
    waiting: list[int] = field(default_factory=list)  # candidates; the first is in progress
    queue: list[Confirm] = field(default_factory=list)  # runs without a trial number yet
    taken: set[tuple[int, int]] = field(default_factory=set)  # runs with a trial number
    decisions: list[Decision] = field(default_factory=list)

    @property
    def on(self) -> bool:
        return self.k > 1

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.k)]

    @classmethod
    def replay(cls, k: int, seed: int, notes: dict[int, TrialNote], told: int,
               actions: dict[int, dict]) -> Gate:
        """The gate after trials 0 .. told-1, with the runs already given a number (a note,
        or an in-flight action in `actions`) out of its queue."""
        gate = cls(k, seed)
        gate.numbered(notes, actions)
        for n in range(told):
            gate.observe(notes[n])
        return gate

    def numbered(self, notes: dict[int, TrialNote], actions: dict[int, dict]) -> None:
        """The confirmation runs that already have a trial number (a note, or an in-flight
        action) are not queued again."""
        for n in list(notes) + list(actions):
            data = notes[n].action if n in notes else actions[n]
            if data.get("kind") == "confirm":
                self.taken.add((int(data["of"]), int(data["seed"])))
        # a rebuild tells the gate as it goes, so it may have queued one of them already
        self.queue = [q for q in self.queue if (q.of, q.seed) not in self.taken]

    def next(self) -> Confirm | None:
        """The next confirmation run, to be trial `asked`; None when none is due."""
        if not self.queue:
            return None
        run = self.queue.pop(0)
        self.taken.add((run.of, run.seed))
        return run

    def observe(self, note: TrialNote) -> Decision | None:
        """Trial `note` was told (in trial order); a decision when it completes one."""
        if not self.on:
            return None
        if note.method == "confirm":
            run = action_from_dict(note.action)
            self.values[(run.of, run.seed)] = note.val_bpb if note.status == "ok" else None
        elif note.status == "ok" and note.val_bpb is not None:
            self.values[(note.trial, self.seed)] = note.val_bpb
            if note.trial > 0 and self._beats(note.trial):
                self.waiting.append(note.trial)
                if len(self.waiting) == 1:
                    self._ask(note.trial)
        return self._decide()

    def _beats(self, trial: int) -> bool:
        mine, theirs = self.values.get((trial, self.seed)), self.values.get(
            (self.incumbent, self.seed))
        return mine is not None and (theirs is None or mine < theirs)

    def _ask(self, candidate: int) -> None:
        for trial in (candidate, self.incumbent):
            for s in self.seeds[1:]:
                if (trial, s) in self.values or (trial, s) in self.taken or any(
                        (q.of, q.seed) == (trial, s) for q in self.queue):
                    continue
                self.queue.append(Confirm(trial, s, f"trial {candidate} against "
                                                    f"trial {self.incumbent}: seed {s}"))

    def _decide(self) -> Decision | None:
        if not self.waiting:
            return None
        candidate, incumbent = self.waiting[0], self.incumbent
        runs = [(t, s) for t in (candidate, incumbent) for s in self.seeds]
        if any(r not in self.values for r in runs):
            return None
        ours = [self.values[(candidate, s)] for s in self.seeds]
        theirs = [self.values[(incumbent, s)] for s in self.seeds]
        diffs = [None if a is None or b is None else a - b
                 for a, b in zip(ours, theirs, strict=True)]
        decision = Decision(candidate, incumbent, False, diffs)
        if None not in diffs:  # a failed confirmation run refuses the candidate
            decision.mean, std = paired_differences(ours, theirs)
            decision.noise = 2 * std / math.sqrt(self.k)
            decision.promoted = decision.mean + decision.noise < 0
        self.decisions.append(decision)
        self.waiting.pop(0)
        if decision.promoted:
            self.incumbent = candidate
        self.waiting = [t for t in self.waiting if self._beats(t)]
        if self.waiting:
            self._ask(self.waiting[0])
        return decision

