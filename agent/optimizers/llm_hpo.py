"""llm-hpo: an LLM restricted to the hyperparameters (the paper's "14-HP LLM agent").

Each trial the LLM sees the search space, the trial's real device and memory limit, the
current best configuration and a bounded history (best 5, last 20, failures with status),
and answers through edit_hyperparameters. Values outside the space are refused (never
clipped) and sent back as a repair turn; after `max_repairs` the trial is `rejected`.

Failure policy: nothing numeric is told; the LLM sees each failure's status and reason in
the history of its next prompt.
"""

from __future__ import annotations

from agent.actions import Action
from agent.hpblock import SearchSpace, Value
from agent.optimizers.base import TrialRecord
from agent.optimizers.llm_common import (
    EDIT,
    converse,
    edit_tool,
    edit_validator,
    example_values,
    history_view,
    render,
)
from agent.optimizers.llm_seat import LLMSeat


class LLMHPO:
    name = "llm-hpo"
    failure_policy = ("Failures are not told as numbers: the next prompt shows each failed "
                      "trial with its status and reason.")

    def __init__(self, space: SearchSpace, seed: int, baseline: dict[str, Value], llm=None,
                 max_repairs: int = 2, **_: object):
        self.space, self.seed, self.baseline = space, seed, baseline
        self.seat = LLMSeat(llm, max_repairs)

    def ask(self, history: list[TrialRecord]) -> Action:
        llm, ctx = self.seat.require()
        tools = llm.supports_tools()
        prompt = render("llm_hpo.j2", space=self.space, ctx=ctx, hist=history_view(history, llm),
                        example=example_values(self.space, ctx.incumbent_config),
                        tools=tools)
        messages = [{"role": "system", "content": render("system.j2")},
                    {"role": "user", "content": prompt}]
        proposal = converse(llm, messages, [edit_tool(self.space)], (EDIT,),
                            edit_validator(self.space, ctx.incumbent_config),
                            self.seat.max_repairs, self.seat.calls)
        self.seat.proposals += 1
        self.seat.valid += proposal.valid
        return proposal.action

    def replay_ask(self, history: list[TrialRecord], recorded: Action) -> Action:
        return recorded

    def ask_batch(self, history: list[TrialRecord], k: int) -> list[Action]:
        return [self.ask(history) for _ in range(k)]

    def tell(self, action: Action, record: TrialRecord) -> None:
        pass  # the history of the next prompt carries the outcome
