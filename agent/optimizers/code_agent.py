"""code-agent: a free-form LLM that edits train.py through a diff (or a hyperparameter edit).

Hill-climb semantics as karpathy/autoresearch: each attempt is made on top of the incumbent
and kept as the new incumbent only if it beats it; unlike there, every attempt stays in git
(the session commits it and never resets). The LLM sees the incumbent train.py, the bounded
history, and the diffs of recent attempts with their outcome; where the model's context window
cannot hold all of it, the history is cut and train.py shown in part (agent/edit/excerpt.py:
the hyperparameter block and the code most likely edited in full, the rest as marker lines a
diff may not cross). A diff is dry-run against the
incumbent inside `ask`, so a diff that does not apply goes back to the model quoting the
lines that did not match (the repair turn) before any trial is spent.

Failure policy: nothing numeric is told; the next prompt shows each failed attempt with its
status, reason and diff.
"""

from __future__ import annotations

from agent.edit.actions import Action
from agent.edit.block import SpaceError, Value
from agent.edit.excerpt import Excerpt, excerpt
from agent.edit.patching import PatchError, apply_patch
from agent.edit.space import SearchSpace
from agent.llm.answers import AnswerError, diff_action, edit_validator
from agent.llm.prompting import DIFF, EDIT, diff_tool, edit_tool, example_values, texts
from agent.llm.seat import MAX_REPAIRS, LLMSeat, UsesLLM
from agent.llm.window import estimate_tokens
from agent.optimizers.base import TrialContext, TrialRecord

RECENT_DIFFS = 5


class CodeAgent(UsesLLM):
    name = "code-agent"
    failure_policy = ("Failures are not told as numbers: the next prompt shows each failed "
                      "attempt with its status, reason and diff.")

    def __init__(self, space: SearchSpace, seed: int, baseline: dict[str, Value], llm=None,
                 max_repairs: int = MAX_REPAIRS, **_: object):
        self.space, self.seed = space, seed
        self.seat = LLMSeat(llm, max_repairs)

    def ask(self, history: list[TrialRecord], pending: list[TrialRecord],
            ctx: TrialContext) -> Action:
        best = min((t for t in history if t.ok), key=lambda t: t.val_bpb, default=None)
        edit = edit_validator(self.space, ctx.incumbent_config, pending)
        attempts = [t for t in history if t.diff][-RECENT_DIFFS:]
        source = ctx.incumbent_source
        shown = [Excerpt(source)]  # what the prompt shows of train.py, once it is made
        marker = texts("excerpt.j2").marker
        keep = [*self.space.names, *self.space.fixed]
        touched = [line[1:] for t in attempts for line in t.diff.splitlines()
                   if line[:1] in "+-" and not line.startswith(("+++", "---"))]

        def show(room: int | None) -> Excerpt | None:
            part = Excerpt(source) if room is None else excerpt(
                source, room, estimate_tokens, lambda a, b: str(marker(a, b)), keep, touched)
            shown[0] = part or shown[0]
            return part

        def validate(answer: dict) -> Action:
            if answer["tool"] == EDIT:
                return edit(answer)
            action = diff_action(answer)
            try:  # the same checks the session will make, so failures get a repair turn
                self.space.check_source(apply_patch(source, action.patch,
                                                    elided=shown[0].markers))
            except (PatchError, SpaceError) as e:
                raise AnswerError(str(e)) from None
            return action

        return self.seat.propose(
            "code_agent.j2", history, pending, ctx, [diff_tool(), edit_tool(self.space)],
            (DIFF, EDIT), validate, show=show, space=self.space,
            example=example_values(self.space), attempts=attempts,
            best_trial=best.number if best else 0)

    def warm_start(self, earlier: list[TrialRecord]) -> None:
        """Nothing to set: every prompt shows the earlier trials as such (ctx.earlier)."""

    def tell(self, action: Action, record: TrialRecord) -> None:
        pass  # the next prompt carries the outcome
