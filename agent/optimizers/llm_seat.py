"""The LLM side of a method: the client, the trial's context, and the calls of the last ask.

Composed into each LLM method (llm-hpo, centaur, code-agent) as `method.seat`; the session
sets `seat.ctx` before each ask, reads `seat.consume()` after it, and sets `seat.llm` on
resume. The client is not part of the method's pickle: a restarted local server has a new
port, so `resume` attaches a fresh one.
"""

from __future__ import annotations

from agent.optimizers.base import TrialContext


class LLMSeat:
    def __init__(self, llm=None, max_repairs: int = 2):
        self.llm = llm
        self.max_repairs = max_repairs
        self.ctx: TrialContext | None = None
        self.calls: list[dict] = []
        self.proposals = 0  # asks answered by the LLM
        self.valid = 0  # of which valid (possibly after repairs)

    def require(self):
        if self.llm is None:
            raise RuntimeError("this method needs a model: the session attaches one")
        if self.ctx is None:
            raise RuntimeError("prepare(ctx) must come before ask")
        return self.llm, self.ctx

    def consume(self) -> list[dict]:
        calls, self.calls = self.calls, []
        return calls

    def __getstate__(self) -> dict:
        return {**self.__dict__, "llm": None, "calls": []}
