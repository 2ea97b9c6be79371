"""What every optimizer shares: the records it sees (agent/protocols.py) and the failure value.

An optimizer is ask / tell over a fixed search space, seeded, picklable (its pickle is the
state `resume` restores); the interface is `agent.protocols.Optimizer`. Every optimizer states
its failure policy in `failure_policy`; the default for classical methods (DESIGN.md,
Failures) is to tell a failure as the worst value seen so far plus a margin, never a constant
far outside the range of real results.
"""

from __future__ import annotations

from agent.protocols import Optimizer, TrialContext, TrialRecord

__all__ = ["UNIFORM_BPB", "Optimizer", "TrialContext", "TrialRecord", "failure_value"]

# A failure before any trial succeeded is told as this: the bits per byte of a model that
# predicts uniform bytes, the worst a trained model can be expected to do.
UNIFORM_BPB = 8.0


def failure_value(history: list[TrialRecord], margin_frac: float = 0.1,
                  min_margin: float = 0.05) -> float:
    """Worst successful val_bpb seen so far plus a margin (10 % of the spread of successful
    results, at least 0.05); UNIFORM_BPB before any success."""
    values = [t.val_bpb for t in history if t.ok]
    if not values:
        return UNIFORM_BPB
    worst, best = max(values), min(values)
    return worst + max(min_margin, margin_frac * (worst - best))
