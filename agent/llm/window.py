"""What fits a model's context window: a conservative token count, the window, the room.

No tokenizer is needed: `estimate_tokens` counts text the way a byte-level BPE tokenizer
splits it at worst, piece by piece (a digit is a token, a non-ASCII character one per UTF-8
byte, a word one per 4 letters or 2.5 capitals, a run of punctuation one per 1.5 characters).
Measured on SmolLM2's own tokenizer (the built-in model): at least its count on train.py, this
repository's Python, Markdown and TOML, history lines full of numbers and non-ASCII text, about
1.4 times it on code; API models' tokenizers (GPT-4o's o200k) need fewer tokens still. The
scripted test server (agent/testing/scripted_llm.py) refuses by this same count.

The window: `LLMConfig.context_window` where the session knows it (the built-in server's
n_ctx), else litellm's model list (`max_input_tokens`), else unknown (no limit is applied).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable

# a word (with the space before it), a digit, blanks, a line end, a non-ASCII character, a run
# of ASCII punctuation
_PIECE = re.compile(r" ?[A-Za-z]+|\d|[ \t]+|\n|[^\x00-\x7f]|[!-/:-@\[-`{-~]+|.", re.S)
_LETTERS, _CAPITALS, _PUNCTUATION, _BLANKS = 4, 2.5, 1.5, 16
# the chat template's tokens around each message (llama.cpp's ChatML: about 7 measured)
PER_MESSAGE = 8
# what a prompt leaves free besides the completion: the estimate's own error on text unlike
# the measured kinds, as a share of the window
MARGIN = 0.03
# what the first prompt leaves for one repair turn besides that turn's completion: the answer
# sent back and the repair message quoting lines (prompts/repair.j2)
REPAIR_TOKENS = 300


def estimate_tokens(text: str) -> int:
    """At least as many tokens as SmolLM2's tokenizer makes of `text` (see the module doc)."""
    n = 0
    for piece in _PIECE.findall(text):
        first = piece[0]
        word = piece.strip()
        if word.isascii() and word.isalpha():
            n += math.ceil(len(word) / (_CAPITALS if word.isupper() else _LETTERS))
        elif first in " \t":
            n += math.ceil(len(piece) / _BLANKS)
        elif not first.isascii():
            n += len(piece.encode())
        elif first.isdigit() or first == "\n" or len(piece) == 1:
            n += 1
        else:
            n += math.ceil(len(piece) / _PUNCTUATION)
    return n


def message_tokens(messages: Iterable[dict], tools: list[dict] | None = None) -> int:
    """The estimate for a request's messages (and the tools' schema, when offered)."""
    n = sum(estimate_tokens(str(m.get("content") or "")) + PER_MESSAGE for m in messages)
    return n + (estimate_tokens(json.dumps(tools)) if tools else 0)


def window_tokens(config) -> int | None:
    """The model's context window in tokens: the session's own knowledge (`context_window`),
    else litellm's (`max_input_tokens`), else None (unknown: nothing is cut)."""
    if getattr(config, "context_window", None):
        return int(config.context_window)
    import litellm

    try:
        info = litellm.get_model_info(config.model)
    except Exception:  # a model litellm does not list (a local server, a test's)
        return None
    window = info.get("max_input_tokens") or info.get("max_tokens")
    return int(window) if window else None


def room(llm, repair: bool = False) -> int | None:
    """How many tokens (by `message_tokens`) a request may hold so that its completion still
    fits the window; with `repair`, also one repair turn after it. None: no known window."""
    config = getattr(llm, "config", None)
    window = window_tokens(config) if config is not None else None
    if window is None:
        return None
    completion = int(getattr(config, "max_tokens", 0) or 0)
    left = window - completion - math.ceil(MARGIN * window)
    if repair:
        left -= completion + REPAIR_TOKENS
    return max(0, left)


def is_context_error(error: Exception) -> bool:
    """A server's refusal of a request longer than its window (litellm's own exception, or
    a 400 whose text says so, as llama.cpp's server and vLLM write it)."""
    import litellm

    if isinstance(error, litellm.exceptions.ContextWindowExceededError):
        return True
    text = str(error).lower()
    return any(words in text for words in ("context length", "context_length",
                                           "context window"))
