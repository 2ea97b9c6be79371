"""The LLM side every LLM method composes (llm-hpo, centaur, code-agent): the client, one
proposal as a prompt plus repair turns, the calls of the last ask, and counts.

The client is not part of the method's pickle: a restarted local server has a new port, so
the session attaches a fresh one (`attach`) after creating or loading the method, and takes
each ask's calls (`take_calls`) to store them with the trial.
"""

from __future__ import annotations

from agent.config.settings import SessionConfig
from agent.edit.actions import Action, NoAction
from agent.llm.prompting import converse, history_view, render
from agent.optimizers.base import TrialContext, TrialRecord

MAX_REPAIRS = SessionConfig.model_fields["max_repairs"].default


class LLMSeat:
    def __init__(self, llm=None, max_repairs: int = MAX_REPAIRS):
        self.llm = llm
        self.max_repairs = max_repairs
        self.calls: list[dict] = []
        self.proposals = 0  # asks answered by the LLM
        self.valid = 0  # of which valid (possibly after repairs)

    @classmethod
    def seat(cls, method, llm=None, max_repairs: int = MAX_REPAIRS) -> LLMSeat:
        """A seat for `method`, whose attach / take_calls (agent.protocols.LLMMethod) it
        serves."""
        seat = cls(llm, max_repairs)
        method.attach, method.take_calls = seat.attach, seat.take_calls
        return seat

    def attach(self, llm) -> None:
        self.llm = llm

    def take_calls(self) -> list[dict]:
        calls, self.calls = self.calls, []
        return calls

    def propose(self, template: str, history: list[TrialRecord], pending: list[TrialRecord],
                ctx: TrialContext, tools: list[dict], allowed: tuple[str, ...], validate,
                **context) -> Action:
        """Render `template` (with the bounded history, the running trials and `context`),
        converse with repair turns, count the outcome. On a replay (resume without the
        optimizer's pickle) the recorded answer comes back and no model is called."""
        if ctx.replay is not None:
            action = ctx.replay
        else:
            if self.llm is None:
                raise RuntimeError("this method needs a model: the session attaches one")
            prompt = render(template, ctx=ctx, tools=self.llm.supports_tools(),
                            hist=history_view(history, self.llm), pending=pending, **context)
            messages = [{"role": "system", "content": render("system.j2")},
                        {"role": "user", "content": prompt}]
            action = converse(self.llm, messages, tools, allowed, validate, self.max_repairs,
                              self.calls).action
        self.proposals += 1
        self.valid += not isinstance(action, NoAction)
        return action

    def __getstate__(self) -> dict:
        return {**self.__dict__, "llm": None, "calls": []}
