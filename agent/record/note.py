"""`TrialNote`: the one shape of a trial's record. The git note (JSON), the ledger lines,
replay, compare and the optimizers' history all read it."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

from agent.curves import finite
from agent.edit.actions import Action, NoAction, action_from_dict
from agent.errors import UserError
from agent.protocols import TrialRecord

OBJECT_ID = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # sha1 or sha256, full length

_NUM, _NONE = (int, float), type(None)
# What each field of a record may hold: a ledger line or a note comes from a folder, which
# may come from someone else, so its shape is checked before anything reads it.
SCHEMA: dict[str, tuple[type, ...]] = {
    "trial": (int,), "commit": (str,), "parent": (str, _NONE), "method": (str,),
    "seed": (int,), "action": (dict, _NONE), "rationale": (str,), "config": (dict, _NONE),
    "diff": (str,), "status": (str,), "val_bpb": (*_NUM, _NONE), "result": (dict, _NONE),
    "is_best": (bool,), "best_val_bpb": (*_NUM, _NONE), "tokens": (dict, _NONE),
    "cost_usd": _NUM, "llm_calls": (int,), "llm_valid": (bool, _NONE), "started_at": (str,),
    "wall_s": _NUM, "cost_s": _NUM, "preflight": (dict, _NONE), "repairs": (list,),
    "probes": (list,), "v": (int,)}
# The parts of `result` and `tokens` that the ledger, replay and compare read.
RESULT_SCHEMA: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("val_bpb", "peak_memory_mb", "host_peak_mb", "wall_s", "training_s",
                     "overhead_s", "printed_val_bpb"), (*_NUM, _NONE)),
    **dict.fromkeys(("status", "reason", "backend", "image", "score"), (str,)),
    "log_path": (str, _NONE), "curve": (list,), "stopped_at": (*_NUM, _NONE)}
TOKENS_SCHEMA = dict.fromkeys(("prompt", "completion"), (int,))


class NoteError(UserError, ValueError):
    """A trial record of the wrong shape (a ValueError too: a broken ledger line)."""


@dataclass
class TrialNote:
    """A trial's record. Older notes lacking a field read with its default."""

    trial: int
    commit: str
    parent: str | None = None
    method: str = ""
    seed: int = 0
    action: dict = field(default_factory=dict)
    rationale: str = ""
    config: dict | None = None
    diff: str = ""
    status: str = "rejected"
    val_bpb: float | None = None
    result: dict = field(default_factory=dict)
    is_best: bool = False
    best_val_bpb: float | None = None
    tokens: dict = field(default_factory=lambda: {"prompt": 0, "completion": 0})
    cost_usd: float = 0.0
    llm_calls: int = 0
    llm_valid: bool | None = None
    started_at: str = ""
    wall_s: float = 0.0
    cost_s: float = 0.0  # what the trial cost: sandbox seconds (all its runs) + LLM seconds
    preflight: dict | None = None  # its passed preflight: peak memory, step time, prediction
    repairs: list = field(default_factory=list)  # OOM repairs (agent/loop/preflight.py)
    probes: list = field(default_factory=list)  # its preflight runs: status, seconds, batch
    v: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrialNote:
        """The record `data` holds; NoteError (one line, naming the field) when a field has
        the wrong type or a commit is not a full hex id."""
        check_record(data)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def reason(self) -> str:
        return (self.result or {}).get("reason", "")

    @property
    def description(self) -> str:
        """What users read for it (the live line, replay): its rationale, after who proposed
        it where a method has several proposers (Centaur: "llm: ..."), the action's kind
        where a model gave none (an echoed placeholder); loop/trial.subject_of's rule."""
        action = self.action or {}
        text = self.rationale or action.get("kind", "")
        who = action.get("proposer")
        return f"{who}: {text}" if who else text

    def as_seen(self) -> TrialRecord:
        """What optimizers see of it."""
        return TrialRecord(number=self.trial, status=self.status, config=self.config,
                           val_bpb=self.val_bpb, method=self.method, reason=self.reason,
                           rationale=self.rationale, diff=self.diff, curve=self.curve())

    def curve(self) -> tuple[tuple[float, float | None], ...]:
        """Its learning curve, (progress, loss) pairs (loss None where it was not finite),
        as the note keeps it (sandbox/curve.py: thinned to 64 points)."""
        points = (self.result or {}).get("curve") or []
        return tuple((p, loss) for p, loss in (_pair(q) for q in points) if p is not None)

    def recorded_action(self) -> Action:
        return action_from_dict(self.action) if self.action else NoAction(self.reason)


def _pair(point) -> tuple[float | None, float | None]:
    """(progress, loss) of a curve point in a note: progress in 0..1 or None (skipped); loss
    None where it was not finite."""
    if not isinstance(point, (list, tuple)) or len(point) != 2:
        return None, None
    progress = finite(point[0])
    if progress is None or not 0 <= progress <= 1:
        return None, None
    return progress, finite(point[1])


def check_record(data) -> dict:
    """`data` when it has the shape of a trial record; NoteError saying what is wrong."""
    if not isinstance(data, dict):
        raise NoteError(f"a trial record is a JSON object, not {_shown(data)}")
    for name in ("trial", "commit"):
        if name not in data:
            raise NoteError(f"the trial record has no {name!r}")
    _check_fields(data, SCHEMA, "")
    if data["trial"] < 0:
        raise NoteError(f"'trial' is {data['trial']}, not a trial number")
    for name in ("commit", "parent"):
        value = data.get(name)
        if value is not None and not OBJECT_ID.fullmatch(value):
            raise NoteError(f"{name!r} is {_shown(value)}, not a commit id (40 hex digits)")
    _check_fields(data.get("result") or {}, RESULT_SCHEMA, "result.")
    _check_fields(data.get("tokens") or {}, TOKENS_SCHEMA, "tokens.")
    return data


def _check_fields(data: dict, schema: dict[str, tuple[type, ...]], prefix: str) -> None:
    for name, allowed in schema.items():
        if name not in data:
            continue
        value = data[name]
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
            kinds = " or ".join("null" if t is _NONE else t.__name__ for t in allowed)
            raise NoteError(f"{prefix + name!r} is {_shown(value)}, not {kinds}")


def _shown(value) -> str:
    """A value named in an error: its type and a short, escaped excerpt."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"
