"""The one place that calls `litellm.completion` (DESIGN.md, "LLM access").

Retries transient errors (connection, timeout, rate limit, 5xx) with backoff, never errors
that cannot heal (authentication, bad request, unknown model), and raises LLMError with a
one-line message saying what to do. Every call's tokens, latency and cost are recorded;
local models (an api_base on this machine) cost 0, known or not; a session gives its prices
(agent/llm/pricing.py) and a meter that may refuse a call before it is made (--max-usd).
A refusal of a prompt longer than the model's context window is PromptTooLong: the methods
turn it into a rejected trial (agent/llm/answers.py), the session goes on.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlparse

from agent.config.settings import TEMPERATURE
from agent.errors import UserError
from agent.llm.window import is_context_error
from agent.protocols import Meter

# litellm fetches a price list from the network at import unless told otherwise.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


class LLMError(UserError):
    """The model cannot be reached or refused the request; the message says what to do."""


class PromptTooLong(LLMError):
    """The server refused the request as longer than the model's context window: the
    proposal fails (its trial is rejected with this reason), the session goes on."""


@dataclass
class LLMConfig:
    model: str
    api_base: str | None = None
    api_key: str | None = None
    temperature: float = TEMPERATURE
    max_tokens: int = 1024
    timeout_s: float = 180.0
    retries: int = 3
    backoff_s: float = 1.0
    tools: bool | None = None  # offer function-calling tools; None: ask litellm
    compact: bool = False  # shorter prompts (less history) for small local models
    structured: bool = False  # constrain answers to the tool's JSON schema (llama.cpp grammar)
    # the model's context window in tokens (prompt and completion together) where the session
    # knows it (the built-in server's n_ctx); None: litellm's model list, else unknown
    context_window: int | None = None
    # USD per million prompt and completion tokens (agent/llm/pricing.py); None: litellm's
    # own reckoning
    prices: tuple[float, float] | None = None

    @property
    def local(self) -> bool:
        return is_local(self.api_base)


def is_local(api_base: str | None) -> bool:
    """An api_base on this machine (loopback)."""
    host = urlparse(api_base).hostname if api_base else None
    return host in ("127.0.0.1", "localhost", "::1") or (host or "").startswith("127.")


@dataclass
class Call:
    """One completion: what was sent, what came back, what it cost."""

    messages: list[dict]
    text: str = ""
    tool_calls: list[dict] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    model: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class LLM:
    def __init__(self, config: LLMConfig, meter: Meter | None = None):
        self.config = config
        self.meter = meter  # told before and after every call (agent/loop/money.py)

    def supports_tools(self) -> bool:
        if self.config.tools is not None:
            return self.config.tools
        import litellm

        try:
            return bool(litellm.supports_function_calling(model=self.config.model))
        except Exception:  # unknown to litellm's model list: ask for JSON in the prompt
            return False

    def complete(self, messages: list[dict], tools: list[dict] | None = None,
                 schema: dict | None = None) -> Call:
        """One completion. `schema` (used only where `structured` is set and no tools are
        offered) asks the server to constrain the answer to that JSON schema."""
        import litellm

        litellm.suppress_debug_info = True
        cfg = self.config
        kwargs = dict(model=cfg.model, messages=messages, temperature=cfg.temperature,
                      max_tokens=cfg.max_tokens, timeout=cfg.timeout_s, num_retries=0)
        if cfg.api_base:
            kwargs["api_base"] = cfg.api_base
            # a local OpenAI-compatible server needs some key; never a real one by default
            kwargs["api_key"] = cfg.api_key or ("sk-local" if cfg.local else None)
        elif cfg.api_key:
            kwargs["api_key"] = cfg.api_key
        if tools:
            kwargs["tools"] = tools
        elif schema is not None and cfg.structured:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        transient = (litellm.exceptions.APIConnectionError, litellm.exceptions.Timeout,
                     litellm.exceptions.RateLimitError,
                     litellm.exceptions.ServiceUnavailableError,
                     litellm.exceptions.InternalServerError)
        permanent = (litellm.exceptions.AuthenticationError, litellm.exceptions.BadRequestError,
                     litellm.exceptions.NotFoundError,
                     litellm.exceptions.PermissionDeniedError)
        if self.meter is not None:  # may raise: a call that would cross the money cap
            self.meter.before(messages, cfg.max_tokens)
        last: Exception | None = None
        for attempt in range(cfg.retries + 1):
            start = time.monotonic()
            try:
                response = litellm.completion(**kwargs)
            except permanent as e:
                self._too_long(e)
                raise LLMError(f"model {cfg.model} refused the request: {_brief(e)}") from None
            except transient as e:
                last = e
                if attempt < cfg.retries:
                    time.sleep(cfg.backoff_s * 2 ** attempt)
                continue
            except Exception as e:  # anything else litellm raises: not worth retrying
                self._too_long(e)
                raise LLMError(f"model {cfg.model} failed: {_brief(e)}") from None
            call = self._call(messages, response, time.monotonic() - start)
            if self.meter is not None:
                self.meter.after(call.cost_usd)
            return call
        where = f" at {cfg.api_base}" if cfg.api_base else ""
        raise LLMError(f"cannot reach model {cfg.model}{where} after {cfg.retries + 1} tries "
                       f"({_brief(last)}): check the server or --api-base, then resume")

    def _too_long(self, error: Exception) -> None:
        if is_context_error(error):
            raise PromptTooLong(f"model {self.config.model} refused the prompt as longer than "
                                f"its context window: {_brief(error)}") from None

    def _call(self, messages: list[dict], response, latency: float) -> Call:
        choice = response.choices[0].message
        tool_calls = [{"name": tc.function.name, "arguments": tc.function.arguments}
                      for tc in (getattr(choice, "tool_calls", None) or [])]
        usage = getattr(response, "usage", None)
        return Call(messages=messages, text=choice.content or "", tool_calls=tool_calls,
                    prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                    completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                    latency_s=round(latency, 3), cost_usd=self._cost(response),
                    model=self.config.model)

    def _cost(self, response) -> float:
        if self.config.prices is not None:
            usage = getattr(response, "usage", None)
            return (self.config.prices[0] * (getattr(usage, "prompt_tokens", 0) or 0)
                    + self.config.prices[1] * (getattr(usage, "completion_tokens", 0) or 0)
                    ) / 1e6
        if self.config.local:
            return 0.0
        import litellm

        try:
            return float(litellm.completion_cost(completion_response=response) or 0.0)
        except Exception:  # a model without a known price: say 0 rather than guess
            return 0.0


def _brief(error: Exception | None) -> str:
    text = " ".join(str(error).split()) if error else "no answer"
    return text[:300]
