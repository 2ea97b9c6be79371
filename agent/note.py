"""`TrialNote`: the one shape of a trial's record. The git note (JSON), the ledger lines,
replay, compare and the optimizers' history all read it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from agent.actions import Action, NoAction, action_from_dict
from agent.protocols import TrialRecord


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
    repairs: list = field(default_factory=list)  # OOM repairs (agent/preflight.py)
    probes: list = field(default_factory=list)  # its preflight runs: status, seconds, batch
    v: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrialNote:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def reason(self) -> str:
        return (self.result or {}).get("reason", "")

    def as_seen(self) -> TrialRecord:
        """What optimizers see of it."""
        return TrialRecord(number=self.trial, status=self.status, config=self.config,
                           val_bpb=self.val_bpb, method=self.method, reason=self.reason,
                           rationale=self.rationale, diff=self.diff)

    def recorded_action(self) -> Action:
        return action_from_dict(self.action) if self.action else NoAction(self.reason)
