"""--max-usd: what a session has spent in dollars, and the cap it must not cross.

Spend = every LLM call's cost (counted as each call returns; at a resume, from the trial
notes) + --gpu-usd-per-hour times each trial's cost_s (its slot held: sandbox and LLM
seconds). The purse is the LLM client's meter (agent/protocols.py, Meter): before each call
it estimates the call's most expensive outcome (the prompt's characters / 4 as tokens, plus
every token the answer may take) and refuses a call that could cross the cap (CapReached);
before each trial it refuses one whose typical sandbox cost no longer fits. It says once when
the spend passes 50 % and 80 % of the cap.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.llm.pricing import Pricing

WARN_AT = (0.5, 0.8)


class CapReached(Exception):  # noqa: N818 (a stop, not an error: the session ends cleanly)
    """The next LLM call could cross --max-usd: the proposal is not made."""


class Purse:
    def __init__(self, cap: float | None, pricing: Pricing, say: Callable[[str], None]):
        self.cap, self.pricing, self.say = cap, pricing, say
        self.llm_usd = self.gpu_usd = 0.0
        self._warned = 0  # how many of WARN_AT were said

    @property
    def spent(self) -> float:
        return self.llm_usd + self.gpu_usd

    def restore(self, notes, cut_usd: float = 0.0) -> None:
        """The spend of the recorded trials and of the asks the cap cut short (a resume);
        the warnings passed stay said."""
        self.llm_usd = sum(n.cost_usd or 0.0 for n in notes) + cut_usd
        self.gpu_usd = sum(self.pricing.trial_usd(n.cost_s or 0.0) for n in notes)
        self._warn(say=False)
        if self.cap and self.spent:
            self.say(f"spent ${self.spent:.4f} of --max-usd ${self.cap:g} so far")

    def recorded(self, note) -> None:
        """A trial was recorded: its sandbox share (its LLM calls were counted as made)."""
        self.gpu_usd += self.pricing.trial_usd(note.cost_s or 0.0)
        self._warn()

    # the LLM client's meter ------------------------------------------------------------------
    def before(self, messages: list[dict], max_tokens: int) -> None:
        if not self.cap:
            return
        chars = sum(len(str(m.get("content") or "")) for m in messages)
        worst = self.pricing.call_usd(chars // 4 + 1, max_tokens)
        if self.spent + worst > self.cap:
            raise CapReached(f"spent ${self.spent:.4f} of --max-usd ${self.cap:g}; the next LLM "
                             f"call could cost up to ${worst:.4f} ({chars // 4 + 1} prompt + "
                             f"{max_tokens} answer tokens at {self.pricing.input_usd_per_mtok:g}"
                             f"/{self.pricing.output_usd_per_mtok:g} $/Mtok)")

    def after(self, cost_usd: float) -> None:
        self.llm_usd += cost_usd
        self._warn()

    # -----------------------------------------------------------------------------------------
    def room_for_trial(self, typical_cost_s: float) -> str | None:
        """Why one more trial does not fit under the cap (its typical sandbox cost), or None."""
        if not self.cap:
            return None
        worst = self.pricing.trial_usd(typical_cost_s)
        if self.spent + worst > self.cap or self.spent >= self.cap:
            return (f"spent ${self.spent:.4f} of --max-usd ${self.cap:g}; a typical trial "
                    f"costs ${worst:.4f} at ${self.pricing.gpu_usd_per_hour or 0:g}/h")
        return None

    def _warn(self, say: bool = True) -> None:
        """Say each threshold of WARN_AT the spend has passed, once (`say` False: only mark
        them said)."""
        while self.cap and self._warned < len(WARN_AT) and \
                self.spent >= WARN_AT[self._warned] * self.cap:
            if say:
                self.say(f"spent ${self.spent:.4f}: {WARN_AT[self._warned]:.0%} of --max-usd "
                         f"${self.cap:g}")
            self._warned += 1
