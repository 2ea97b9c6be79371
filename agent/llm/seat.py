"""The LLM side every LLM method composes (llm-hpo, centaur, code-agent): the client, one
proposal as a prompt plus repair turns, and the calls of the last ask.

Every prompt fits the model's context window (agent/llm/window.py) with room for its
completion and, where it can, one repair turn: where the whole does not fit, the history is
cut, then the train.py a code agent is shown (agent/edit/excerpt.py); a prompt that still
does not fit is no proposal (NoAction: the trial is rejected with the reason), and so is a
server's refusal.

The client is not part of the method's pickle: a restarted local server has a new port, so
the session attaches a fresh one (`attach`) after creating or loading the method, and takes
each ask's calls (`take_calls`) to store them with the trial.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.config.settings import SessionConfig
from agent.edit.actions import Action, NoAction
from agent.edit.excerpt import Excerpt
from agent.llm.answers import converse, say
from agent.llm.prompting import history_view, render
from agent.llm.window import message_tokens, room
from agent.protocols import LLMClient, TrialContext, TrialRecord

MAX_REPAIRS = SessionConfig.model_fields["max_repairs"].default
# how many trials the history lists, step by step, where the prompt must fit a small window
KEEP = (None, 12, 6, 3, 0)
# the share of the room train.py gets before it is cut (the code agent): the history is cut
# first, down to FEWEST trials; to none only where the hyperparameter block needs it
SOURCE_SHARE, FEWEST = 0.6, 3


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
                show: Callable[[int | None], Excerpt | None] | None = None,
                **context) -> Action:
        """Render `template` (with the bounded history, the running trials and `context`) and
        converse with repair turns. On a replay (resume without the optimizer's pickle) the
        recorded answer comes back and no model is called. `show(room)`: the train.py the
        prompt shows in `room` tokens (None: the whole file), for a template that shows it."""
        if ctx.replay is not None:
            return ctx.replay
        if self.llm is None:
            raise RuntimeError("this method needs a model: the session attaches one")
        use_tools = self.llm.supports_tools()
        # a server that holds answers to a JSON schema (the built-in models) is asked for JSON
        # even where several tools are offered: the prompt then says so (code_agent.j2)
        structured = not use_tools and bool(getattr(self.llm.config, "structured", False))

        def messages(keep: int | None, shown: Excerpt | None) -> list[dict]:
            source = {} if show is None else {"source": shown.text if shown else "",
                                              "elided": bool(shown and shown.markers)}
            prompt = render(template, ctx=ctx, tools=use_tools, keep=keep, pending=pending,
                            structured=structured, hist=history_view(history, self.llm, keep),
                            **source, **context)
            return [{"role": "system", "content": render("system.j2")},
                    {"role": "user", "content": prompt}]

        offered = tools if use_tools else None
        fitted = _fit(messages, show, room(self.llm, repair=self.max_repairs > 0), offered)
        if isinstance(fitted, NoAction) and self.max_repairs > 0:
            # better a prompt without room for a repair turn than none (answers.py cuts the
            # repair turns that do not fit)
            fitted = _fit(messages, show, room(self.llm), offered)
        if isinstance(fitted, NoAction):
            return fitted
        return converse(self.llm, fitted, tools, allowed, validate, self.max_repairs,
                        self.calls)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "llm": None, "calls": []}


def _fit(messages: Callable[[int | None, Excerpt | None], list[dict]],
         show: Callable[[int | None], Excerpt | None] | None, limit: int | None,
         tools: list[dict] | None) -> list[dict] | NoAction:
    """The fullest prompt within `limit` tokens: the history cut step by step (KEEP) until
    train.py has SOURCE_SHARE of the room or all it needs (or FEWEST trials are left), then
    train.py cut to the rest (agent/edit/excerpt.py). NoAction when nothing fits (the trial
    is rejected)."""
    whole = show(None) if show is not None else None
    if limit is None:
        return messages(None, whole)
    smallest = 1 << 62  # the smallest prompt tried, for the reason
    for keep in KEEP:
        full = messages(keep, whole)
        tokens = message_tokens(full, tools)
        if tokens <= limit:
            if show is not None:
                show(None)  # what the prompt shows is the whole file again
            return full
        smallest = min(smallest, tokens)
        if show is None:
            continue
        # what train.py may take: the rest, the note that it is shown in part counted
        spare = limit - message_tokens(messages(keep, Excerpt("", ("",))), tools)
        if spare < SOURCE_SHARE * limit and (keep is None or keep > FEWEST):
            continue  # the history gives way first, down to its FEWEST latest trials
        shown = show(spare)
        if shown is None:
            continue
        fitted = messages(keep, shown)
        tokens = message_tokens(fitted, tools)
        if tokens <= limit:
            return fitted
        smallest = min(smallest, tokens)
    return NoAction(say("does_not_fit", smallest, limit), say("too_long"))


class UsesLLM:
    """agent.protocols.LLMMethod for a method that proposes through its `seat`: attach and
    take_calls are methods of the class, so `isinstance(method, LLMMethod)` holds by class."""

    seat: LLMSeat

    def attach(self, llm: LLMClient) -> None:
        self.seat.attach(llm)

    def take_calls(self) -> list[dict]:
        return self.seat.take_calls()
