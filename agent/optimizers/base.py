"""The optimizer interface and what optimizers see of past trials.

An optimizer is ask / tell over a fixed search space, seeded, picklable (its pickle is the
state `resume` restores). `ask(history)` returns an Action; `tell(action, record)` reports the
trial's outcome, failures included. Every optimizer states its failure policy in
`failure_policy`; the default for classical methods (DESIGN.md, Failures) is to tell a
failure as the worst value seen so far plus a margin, never a constant far outside the range
of real results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from agent.actions import Action
from agent.hpblock import Value

# A failure before any trial succeeded is told as this: the bits per byte of a model that
# predicts uniform bytes, the worst a trained model can be expected to do.
UNIFORM_BPB = 8.0


@dataclass
class TrialRecord:
    """One finished trial as optimizers see it (the ledger's record, trimmed)."""

    number: int
    status: str  # ok, oom, cuda_oom, timeout, diverged, crash, rejected
    config: dict[str, Value] | None  # the hyperparameters train.py held; None if unknown
    val_bpb: float | None = None
    method: str = ""
    reason: str = ""
    rationale: str = ""
    diff: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.val_bpb is not None


def failure_value(history: list[TrialRecord], margin_frac: float = 0.1,
                  min_margin: float = 0.05) -> float:
    """Worst successful val_bpb seen so far plus a margin (10 % of the spread of successful
    results, at least 0.05); UNIFORM_BPB before any success."""
    values = [t.val_bpb for t in history if t.ok]
    if not values:
        return UNIFORM_BPB
    worst, best = max(values), min(values)
    return worst + max(min_margin, margin_frac * (worst - best))


@dataclass
class TrialContext:
    """What LLM methods are shown about the trial they propose (classical ones ignore it)."""

    trial: int
    incumbent_source: str
    incumbent_config: dict[str, Value]
    device: str  # what the trial really runs on, e.g. "cpu, 2 cores" or "GPU 0"
    memory: str  # the host memory limit, e.g. "8g"
    budget: str  # "60 s of training" or "1000000 training tokens"
    preset: str = ""


class Optimizer(Protocol):
    name: str
    failure_policy: str

    def ask(self, history: list[TrialRecord]) -> Action: ...

    def tell(self, action: Action, record: TrialRecord) -> None: ...

    def ask_batch(self, history: list[TrialRecord], k: int) -> list[Action]: ...
