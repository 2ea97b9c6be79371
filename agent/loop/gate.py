"""The acceptance gate (`--confirm K`): a new best must be more than seed noise.

Without the gate a trial that beats the incumbent becomes `best` at once. With it, a trial
whose val_bpb (at the session's seed) beats the incumbent's becomes a *candidate*: its commit
runs again with the next seeds, one at a time, and so does the incumbent's (once: those runs
are kept for the next candidate). Each run is a trial of its own kind (`method: confirm`,
action `Confirm`), with a number, a commit (empty, on top of the commit it repeats), a note and
a cost; no optimizer proposes it or is told of it. Candidates are confirmed one at a time, in
trial order; one that no longer beats a newly promoted incumbent is dropped.

The rule: a truncated group-sequential one-sided paired t-test, `agent.stats.
sequential_paired_test`. Seeds s_1 = the session's, s_2, ..., s_K; only the pair at the next
seed (candidate and incumbent) is queued. After m complete pairs, with d_i = candidate -
incumbent at s_i, mean d and standard deviation s:
  - promote when mean + t_(1 - alpha/L, m-1) s / sqrt(m) < 0 at a look, m = 3 .. K (m = 2
    when K = 2: a look at two seeds, one degree of freedom, needs t above 60 and would spend
    alpha on a promotion that hardly ever comes), L looks, the error rate alpha = ALPHA split
    evenly over them (Bonferroni spending);
  - else refuse at m = K (the full-K decision), or earlier when the differences after the
    first (the unselected seeds) do not favour the candidate: mean(d_2 .. d_m) >= 0;
  - else queue the pair at s_(m+1).
A confirmation run that failed refuses the candidate at once.

Assumptions: the d_i are independent and normal with one mean and spread (the seed noise of
one training setup; an outlier mostly makes s larger, the test more cautious).
Error rate: a candidate no better than the incumbent is promoted with probability at most
ALPHA = 0.5 % (Bonferroni over the looks; the early refusal only removes promotions). The
first difference made the trial a candidate (it was below 0, an event of probability 1/2 when
the two are equal), so given that, at most 2 ALPHA = 1 %; simulated: 1.0 % at K = 2 and 3,
0.8 % at K = 5, 0.6 % at K = 10, less for a worse candidate.
Power, K = 5, for an improvement of 2 / 3 / 4 / 6.7 times the standard deviation of a
difference (6.7: 0.19 at the cpu preset's 0.02 per seed): 33 / 68 / 91 / 100 %, on 4.7 /
4.6 / 4.3 / 3.7 seeds on average; K = 10: 90 / 99.8 / 100 / 100 %; K = 3: 12 / 24 / 39 /
74 % (three seeds give two degrees of freedom: only a gain of many noise widths gets through).
A no-better candidate uses 3.2 of 5 seeds, 4.3 of 10. (The all-at-once rule this replaces,
mean + 2 s / sqrt(K) < 0 on all K seeds, promoted 11 % of no-better candidates at K = 5 and
19 % at K = 3.)

The gate's state is a function of the notes told so far, in trial order: the session feeds it
at each tell, and a resumed session rebuilds it from the notes (`Gate.replay`). A run that
already has a trial number is never queued again; one that is no longer needed (numbered for a
candidate decided since, or under the all-at-once rule of an older run folder) still runs,
and its value is kept like any other: a later pair at that seed does not run it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.edit.actions import Confirm, action_from_dict
from agent.record.note import TrialNote
from agent.stats import sequential_paired_test

ALPHA = 0.005  # the test's error rate for a no-better candidate (the module docstring)


@dataclass
class Decision:
    candidate: int
    incumbent: int
    promoted: bool
    diffs: list[float | None]  # per seed used, the session's first; None: a run failed
    mean: float | None = None
    noise: float | None = None  # the margin the mean had to clear (None: no look there)
    used: int = 0  # seeds the decision used, the session's included
    k: int = 0  # seeds it could have used

    def line(self) -> str:
        seeds = f"over {self.used} of {self.k} seeds"
        if self.mean is None:
            return (f"gate: trial {self.candidate} refused, a confirmation run failed "
                    f"{seeds} (incumbent stays trial {self.incumbent})")
        verdict = "promoted to best" if self.promoted else "refused"
        text = (f"gate: trial {self.candidate} {verdict}: mean difference {self.mean:+.5f} "
                f"against trial {self.incumbent} {seeds}")
        if self.noise is not None:
            text += f", noise +-{self.noise:.5f}"
        if not self.promoted and self.used < self.k:
            text += ", no better on the seeds after the first"
        return text


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
        return self._decide()

    def _beats(self, trial: int) -> bool:
        mine, theirs = self.values.get((trial, self.seed)), self.values.get(
            (self.incumbent, self.seed))
        return mine is not None and (theirs is None or mine < theirs)

    def _decide(self) -> Decision | None:
        """The first candidate's decision when its pairs so far settle it; else its next
        pair is queued (at most one decision per tell: the next candidate is looked at again
        at the next one)."""
        if not self.waiting:
            return None
        decision, due = self._look(self.waiting[0])
        if decision is None:
            self._ask(self.waiting[0], due)
            return None
        self.decisions.append(decision)
        self.waiting.pop(0)
        if decision.promoted:
            self.incumbent = decision.candidate
        self.waiting = [t for t in self.waiting if self._beats(t)]
        self.queue = []  # what the decided candidate still had queued is not needed now
        if self.waiting:
            following, due = self._look(self.waiting[0])
            if following is None:
                self._ask(self.waiting[0], due)
        return decision

    def _look(self, candidate: int) -> tuple[Decision | None, int]:
        """The test over `candidate`'s complete pairs, in seed order: its decision, or None
        and the seed whose pair is due."""
        diffs: list[float | None] = []
        for s in self.seeds:
            ours, theirs = (candidate, s), (self.incumbent, s)
            if self.values.get(ours, 0.0) is None or self.values.get(theirs, 0.0) is None:
                diffs.append(None)  # a failed run refuses
                return Decision(candidate, self.incumbent, False, diffs, used=len(diffs),
                                k=self.k), s
            if ours not in self.values or theirs not in self.values:
                return None, s
            diffs.append(self.values[ours] - self.values[theirs])
            verdict, mean, noise = sequential_paired_test(diffs, self.k, ALPHA)
            if verdict is not None:
                return Decision(candidate, self.incumbent, verdict, diffs, mean, noise,
                                len(diffs), self.k), s
        raise AssertionError("the test decides at the k-th seed")

    def _ask(self, candidate: int, s: int) -> None:
        """Queue the runs of the pair at seed `s` that have no value and no number yet (the
        session's own seed is the trials themselves)."""
        if s == self.seed:
            return
        for trial in (candidate, self.incumbent):
            if (trial, s) in self.values or (trial, s) in self.taken or any(
                    (q.of, q.seed) == (trial, s) for q in self.queue):
                continue
            self.queue.append(Confirm(trial, s, f"trial {candidate} against "
                                                f"trial {self.incumbent}: seed {s}"))
