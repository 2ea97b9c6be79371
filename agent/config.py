"""session.toml: everything needed to resume a session (DESIGN.md, "The run folder")."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class SessionConfig(BaseModel):
    """One session's settings. Defaults live here, once; the CLI only overrides them."""

    method: str = "tpe"
    seed: int = 0
    trials: int | None = None  # trials after the baseline; None with budget_s means "until"
    budget_s: float | None = None  # wall clock of the whole session, everything counted
    preset: str | None = None  # None: the search space's default preset, train.py as it is
    train_dir: str = ""  # where the baseline came from (informational once the repo exists)
    model: str | None = None
    api_base: str | None = None
    sandbox: str = "auto"
    time_budget: float | None = None  # TIME_BUDGET of each trial; None: the preset's
    token_budget: int | None = None  # AR_TOKEN_BUDGET instead of a time budget
    trial_timeout: float | None = None  # hard limit per trial; None: 3 * time budget + 120
    memory: str | None = None  # host memory per trial; None: the preset's, else Limits'
    gpus: list[int] = Field(default_factory=list)
    gpu_mem_fraction: float | None = None
    workers: int = 1
    data_dir: str | None = None  # the prepared data, filled in at session start
    eval_tokens: int | None = None  # AR_EVAL_TOKENS for every trial (None: prepare.py's)
    llm_ratio: float = 0.2  # centaur: share of post-warm-up trials the LLM proposes
    llm_warmup: int = 10  # centaur: trials CMA-ES proposes alone first
    max_repairs: int = 2  # LLM methods: repair turns after an invalid answer
    temperature: float = 0.7

    @field_validator("trials")
    @classmethod
    def _trials(cls, v):
        if v is not None and v < 0:
            raise ValueError("trials must be 0 or more")
        return v

    def save(self, path: Path) -> None:
        lines = ["# autoresearch session: `autoresearch resume` reads this file"]
        for key, value in self.model_dump().items():
            if value is not None:
                lines.append(f"{key} = {_toml(value)}")
        path.write_text("\n".join(lines) + "\n")

    @classmethod
    def load(cls, path: Path) -> SessionConfig:
        return cls(**tomllib.loads(path.read_text()))


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms]?)")


def parse_duration(text: str) -> float:
    """'2h', '90m', '1h30m', '45s', '3600' -> seconds."""
    text = text.strip().lower()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos or not m.group(0):
            break
        total += float(m.group(1)) * {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text or total <= 0:
        raise ValueError(f"budget {text!r} is not a duration like 2h, 90m, 1h30m or 3600")
    return total
