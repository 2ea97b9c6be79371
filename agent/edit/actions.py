"""The two tools every method acts through (DESIGN.md, "One trial, end to end").

Classical optimizers, LLM-HPO and Centaur only ever return `EditHyperparameters`; the code
agent returns `ApplyDiff` (or an edit). Both become a unified diff against the incumbent
train.py and go through the same patch path (agent/edit/patching.py).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.edit import block
from agent.edit.block import SpaceError, Value, render_block
from agent.edit.space import SearchSpace

TARGET = "train.py"


@dataclass(frozen=True)
class EditHyperparameters:
    """Set some hyperparameters of the block to new values; the rest stay as they are."""

    values: dict[str, Value]
    rationale: str = ""
    proposer: str = ""  # who, inside a method that has several (Centaur: "cmaes" or "llm")
    kind: str = field(default="edit_hyperparameters", init=False)


@dataclass(frozen=True)
class ApplyDiff:
    """A unified diff against the incumbent train.py (and nothing else)."""

    patch: str
    rationale: str = ""
    proposer: str = ""
    kind: str = field(default="apply_diff", init=False)


@dataclass(frozen=True)
class NoAction:
    """An LLM gave no usable answer, even after repair turns: the trial is recorded as
    `rejected` with this reason and nothing runs (no silent fallback to another proposal)."""

    reason: str
    rationale: str = ""
    proposer: str = ""
    kind: str = field(default="none", init=False)


@dataclass(frozen=True)
class Confirm:
    """Not a proposal: trial `of`'s commit run again with another seed, for the acceptance
    gate (`--confirm K`, agent/loop/gate.py). No optimizer asks for it or is told of it."""

    of: int
    seed: int
    rationale: str = ""
    proposer: str = ""
    kind: str = field(default="confirm", init=False)


Action = EditHyperparameters | ApplyDiff | NoAction | Confirm


def action_to_dict(action: Action) -> dict[str, Any]:
    return asdict(action)


def action_from_dict(data: dict[str, Any]) -> Action:
    said = {"rationale": data.get("rationale", ""), "proposer": data.get("proposer", "")}
    if data.get("kind") == "apply_diff":
        return ApplyDiff(data["patch"], **said)
    if data.get("kind") == "none":
        return NoAction(data.get("reason", ""), **said)
    if data.get("kind") == "confirm":
        return Confirm(int(data["of"]), int(data["seed"]), **said)
    return EditHyperparameters(dict(data["values"]), **said)


def edit_to_diff(action: EditHyperparameters, source: str, space: SearchSpace) -> str:
    """Validate the edit against the space and render it as a diff of train.py.

    Raises SpaceError naming the bound for any value outside the space (never clipped)."""
    current = block.values(source, space.names)
    space.validate({**current, **action.values})
    new = render_block(source, action.values)
    if new == source:
        raise SpaceError("these values are the current best's already: change at least one")
    return unified_diff(source, new)


def unified_diff(old: str, new: str, path: str = TARGET) -> str:
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                 fromfile=f"a/{path}", tofile=f"b/{path}")
    # a last line without a newline gets git's marker, or the next line would join it
    return "".join(ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n"
                   for ln in lines)
