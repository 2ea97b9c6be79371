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


def shorten(text: object, limit: int) -> str:
    """`text` as one clean line of at most `limit` characters: where it is longer, cut after
    the last whole word that fits, then '…' (a first word longer than that is cut: it is all
    there is to show)."""
    line = clean(text, one_line=True)
    if len(line) <= limit:
        return line
    head = line[: max(limit - 1, 0)]
    if line[len(head)] != " " and " " in head:  # a word would be cut: end before it
        head = head[: head.rindex(" ")]
    return head.rstrip() + "…"


def markup(text: object, limit: int | None = None) -> str:
    """`text` for rich markup and table cells: one clean line, at most `limit` characters
    (shortened at a word: `shorten`), its brackets escaped."""
    return escape(clean(text, one_line=True) if limit is None else shorten(text, limit))


def reason(exc: BaseException) -> str:
    """What went wrong, as one clean line: the exception's message, or its type's name where
    the message is empty (a bare `DockerException()` or `TimeoutError()` says nothing)."""
    return clean(exc, one_line=True) or type(exc).__name__


def wrap(text: str, width: int | None, indent: int = 2) -> str:
    """`text` as one clean line, or, wider than `width` columns, as lines broken between words
    with `indent` spaces before each after the first. A word longer than a line stays whole on
    its own line: a path or a number cut in two reads as two wrong ones. `width` None: one
    line however long (--wide)."""
    import textwrap

    line = clean(text, one_line=True)
    if width is None or len(line) <= width:
        return line
    return "\n".join(textwrap.wrap(line, width, subsequent_indent=" " * indent,
                                   break_long_words=False, break_on_hyphens=False))


class Hanging:
    """Rich markup `head` then `body` as one renderable whose lines break between words at
    the console's width (a pipe's: 80), each line after the first indented under the body's
    start, so a live trial line or the closing line stays readable in any terminal. A word
    longer than the room is folded onto the next line, never left out."""

    def __init__(self, head: str, body: str):
        self.head, self.body = head, body

    def __rich_console__(self, console, options):
        from rich.text import Text

        first = Text.from_markup(self.head)
        room = max(options.max_width - first.cell_len, 20)
        for i, line in enumerate(Text.from_markup(self.body).wrap(console, room,
                                                                  overflow="fold")):
            line.rstrip()  # no trailing blanks in a pipe
            yield (first if i == 0 else Text(" " * first.cell_len)) + line
