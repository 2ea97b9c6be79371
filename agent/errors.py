"""Errors a user can cause: one line that says what to do, and a non-zero exit.

Every such error derives from `UserError`, so the command line catches one class and prints
its message; anything else is our bug and keeps its traceback.
"""

from __future__ import annotations

from agent.text import clean
from sandbox.base import UserError

__all__ = ["UserError", "fail"]


def fail(message: str, code: int = 1):
    """Print `error: message` on stderr, as one line, and return the exit to raise. Messages
    quote paths, names and lines from folders someone else may have written: cleaned, so an
    escape in one (a clipboard write, a link) never reaches the terminal."""
    import typer

    typer.echo(f"error: {clean(message, one_line=True)}", err=True)
    return typer.Exit(code)
