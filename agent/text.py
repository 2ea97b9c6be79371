"""Untrusted text on its way to a terminal (DESIGN.md, "Trust": text is data).

Rationales, crash lines, code and anything read back from a run folder were written by a
trial, a model or whoever had the folder. Before such text is printed it goes through `clean`
(escape sequences and control characters removed: ANSI CSI, OSC 52 clipboard writes, OSC 8
links, NUL, bidi overrides) and, where rich reads markup, through `markup` (which also escapes
`[...]`, so `[/dim]` cannot end our style and `[batch, seq]` is shown as it is).
"""

from __future__ import annotations

import re

from rich.markup import escape

_SEQUENCES = re.compile(
    r"\x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC (links, titles, clipboard) to BEL/ST
    r"|\x1b[P^_X][^\x1b\x9c]*(?:\x1b\\|\x9c)?"  # DCS, PM, APC, SOS strings
    r"|\x1b\[[0-?]*[ -/]*[@-~]?"  # CSI: colours, cursor moves, clearing
    r"|\x9b[0-?]*[ -/]*[@-~]?"  # 8-bit CSI
    r"|[\x90\x9d-\x9f][^\x07\x1b\x9c]*(?:\x07|\x9c)?"  # 8-bit OSC, DCS, PM, APC
    r"|\x1b[ -/]*[0-~]?")  # any other escape
# C0 but tab and newline, DEL, C1, and the bidi controls that reorder what is shown
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(text: object, one_line: bool = False) -> str:
    """`text` without escape sequences and control characters (tabs and newlines stay, unless
    `one_line`: then every run of white space is one space). Lone surrogates, which no
    terminal or git can encode, become '?'."""
    text = str(text).encode("utf-8", "replace").decode("utf-8")
    text = _CONTROLS.sub("", _SEQUENCES.sub("", text))
    return " ".join(text.split()) if one_line else text


def markup(text: object, limit: int | None = None) -> str:
    """`text` for rich markup and table cells: one clean line, at most `limit` characters
    (cut with '…'), its brackets escaped."""
    line = clean(text, one_line=True)
    if limit is not None and len(line) > limit:
        line = line[: max(limit - 1, 0)] + "…"
    return escape(line)
