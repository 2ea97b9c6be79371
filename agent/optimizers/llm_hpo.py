"""llm-hpo: an LLM restricted to the hyperparameters (the paper's "14-HP LLM agent").

Each trial the LLM sees the search space, the trial's real device and memory limit, the
current best configuration and a bounded history (best 5, last 20, failures with status),
and answers through edit_hyperparameters. Values outside the space are refused (never
clipped) and sent back as a repair turn; after `max_repairs` the trial is `rejected`.

Failure policy: nothing numeric is told; the LLM sees each failure's status and reason in
the history of its next prompt.
"""

from __future__ import annotations

from agent.edit.actions import Action
from agent.edit.block import Value
from agent.edit.space import SearchSpace
from agent.llm.answers import edit_validator
from agent.llm.prompting import EDIT, edit_tool, example_values
from agent.llm.seat import MAX_REPAIRS, LLMSeat, UsesLLM
from agent.optimizers.base import TrialContext, TrialRecord


class LLMHPO(UsesLLM):
    name = "llm-hpo"
    failure_policy = ("Failures are not told as numbers: the next prompt shows each failed "
                      "trial with its status and reason.")

    def __init__(self, space: SearchSpace, seed: int, baseline: dict[str, Value], llm=None,
                 max_repairs: int = MAX_REPAIRS, **_: object):
        self.space, self.seed = space, seed
        self.seat = LLMSeat(llm, max_repairs)

    def ask(self, history: list[TrialRecord], pending: list[TrialRecord],
            ctx: TrialContext) -> Action:
        base = ctx.incumbent_config
        return self.seat.propose("llm_hpo.j2", history, pending, ctx, [edit_tool(self.space)],
                                 (EDIT,), edit_validator(self.space, base, pending),
                                 space=self.space, example=example_values(self.space))

    def warm_start(self, earlier: list[TrialRecord]) -> None:
        """Nothing to set: every prompt shows the earlier trials as such (ctx.earlier)."""

    def tell(self, action: Action, record: TrialRecord) -> None:
        pass  # the history of the next prompt carries the outcome
