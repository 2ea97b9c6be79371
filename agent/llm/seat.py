"""The LLM side every LLM method composes (llm-hpo, centaur, code-agent): the client, one
proposal as a prompt plus repair turns, and the calls of the last ask.

The client is not part of the method's pickle: a restarted local server has a new port, so
the session attaches a fresh one (`attach`) after creating or loading the method, and takes
each ask's calls (`take_calls`) to store them with the trial.
"""

from __future__ import annotations

from agent.config.settings import SessionConfig
from agent.edit.actions import Action
from agent.llm.answers import converse
from agent.llm.prompting import history_view, render
from agent.protocols import LLMClient, TrialContext, TrialRecord

MAX_REPAIRS = SessionConfig.model_fields["max_repairs"].default


class LLMSeat:
    def __init__(self, llm: LLMClient | None = None, max_repairs: int = MAX_REPAIRS):
        self.llm = llm
        self.max_repairs = max_repairs
        self.calls: list[dict] = []

    def attach(self, llm: LLMClient) -> None:
        self.llm = llm

    def take_calls(self) -> list[dict]:
        calls, self.calls = self.calls, []
        return calls

    def propose(self, template: str, history: list[TrialRecord], pending: list[TrialRecord],
                ctx: TrialContext, tools: list[dict], allowed: tuple[str, ...], validate,
                **context) -> Action:
        """Render `template` (with the bounded history, the running trials and `context`) and
        converse with repair turns. On a replay (resume without the optimizer's pickle) the
        recorded answer comes back and no model is called."""
        if ctx.replay is not None:
            return ctx.replay
        if self.llm is None:
            raise RuntimeError("this method needs a model: the session attaches one")
        prompt = render(template, ctx=ctx, tools=self.llm.supports_tools(),
                        hist=history_view(history, self.llm), pending=pending, **context)
        messages = [{"role": "system", "content": render("system.j2")},
                    {"role": "user", "content": prompt}]
        return converse(self.llm, messages, tools, allowed, validate, self.max_repairs,
                        self.calls)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "llm": None, "calls": []}


class UsesLLM:
    """agent.protocols.LLMMethod for a method that proposes through its `seat`: attach and
    take_calls are methods of the class, so `isinstance(method, LLMMethod)` holds by class."""

    seat: LLMSeat

    def attach(self, llm: LLMClient) -> None:
        self.seat.attach(llm)

    def take_calls(self) -> list[dict]:
        return self.seat.take_calls()
