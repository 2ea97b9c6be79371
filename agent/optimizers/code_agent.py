"""code-agent: a free-form LLM that edits train.py through a diff (or a hyperparameter edit).

Hill-climb semantics as karpathy/autoresearch: each attempt is made on top of the incumbent
and kept as the new incumbent only if it beats it; unlike there, every attempt stays in git
(the session commits it and never resets). The LLM sees the incumbent train.py, the bounded
history, and the diffs of recent attempts with their outcome. A diff is dry-run against the
incumbent inside `ask`, so a diff that does not apply goes back to the model quoting the
lines that did not match (the repair turn) before any trial is spent.

Failure policy: nothing numeric is told; the next prompt shows each failed attempt with its
status, reason and diff.
"""

from __future__ import annotations

from agent.actions import Action, ApplyDiff
from agent.hpblock import SearchSpace, SpaceError, Value, read_block
from agent.optimizers.base import TrialRecord
from agent.optimizers.llm_common import (
    DIFF,
    EDIT,
    AnswerError,
    converse,
    diff_action,
    diff_tool,
    edit_tool,
    edit_validator,
    example_values,
    history_view,
    render,
)
from agent.optimizers.llm_seat import LLMSeat
from agent.patching import PatchError, apply_patch

RECENT_DIFFS = 5


class CodeAgent:
    name = "code-agent"
    failure_policy = ("Failures are not told as numbers: the next prompt shows each failed "
                      "attempt with its status, reason and diff.")

    def __init__(self, space: SearchSpace, seed: int, baseline: dict[str, Value], llm=None,
                 max_repairs: int = 2, **_: object):
        self.space, self.seed, self.baseline = space, seed, baseline
        self.seat = LLMSeat(llm, max_repairs)

    def ask(self, history: list[TrialRecord]) -> Action:
        llm, ctx = self.seat.require()
        tools = llm.supports_tools()
        best = min((t for t in history if t.ok), key=lambda t: t.val_bpb, default=None)
        attempts = [t for t in history if t.diff][-RECENT_DIFFS:]
        prompt = render("code_agent.j2", space=self.space, ctx=ctx, hist=history_view(history, llm),
                        example=example_values(self.space, ctx.incumbent_config),
                        tools=tools, attempts=attempts,
                        best_trial=best.number if best else 0)
        messages = [{"role": "system", "content": render("system.j2")},
                    {"role": "user", "content": prompt}]
        edit = edit_validator(self.space, ctx.incumbent_config)

        def validate(answer: dict) -> Action:
            if answer["tool"] == EDIT:
                return edit(answer)
            action = diff_action(answer)
            try:  # the same dry run the session will do, so failures get a repair turn
                new = apply_patch(ctx.incumbent_source, action.patch)
                present = read_block(new)
                self.space.validate({n: present[n].value for n in self.space.names
                                     if n in present})
            except (PatchError, SpaceError) as e:
                raise AnswerError(str(e)) from None
            return ApplyDiff(action.patch, action.rationale)

        proposal = converse(llm, messages, [diff_tool(), edit_tool(self.space)], (DIFF, EDIT),
                            validate, self.seat.max_repairs, self.seat.calls)
        self.seat.proposals += 1
        self.seat.valid += proposal.valid
        return proposal.action

    def replay_ask(self, history: list[TrialRecord], recorded: Action) -> Action:
        return recorded

    def ask_batch(self, history: list[TrialRecord], k: int) -> list[Action]:
        return [self.ask(history) for _ in range(k)]

    def tell(self, action: Action, record: TrialRecord) -> None:
        pass  # the next prompt carries the outcome
