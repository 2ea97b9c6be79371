"""`autoresearch run --estimate`: how many trials, hours and dollars the given options will
come to, without starting the session.

What a trial takes is measured: the baseline run once, exactly as a session runs it (a
throwaway session of no trials in a temporary folder: data, sandbox, preflight, record), or
read from a previous run (`--estimate-from RUN`: its median trial cost, LLM seconds included,
and its tokens per LLM call). Then the session's own stopping rules are applied to those
figures: `--trials`, the wall-clock `--budget` (one more trial is proposed while the clock
plus a typical trial fits), the summed `--cost`, and `--max-usd`.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.config.settings import SessionConfig
from agent.errors import UserError
from agent.llm.pricing import Pricing
from agent.record.note import TrialNote

# tokens of one LLM call when no previous run says: a typical prompt of the history methods
# on a remote model and an answer of a rationale and a JSON edit (prompts/README.md)
ASSUMED_TOKENS = (3000, 250)


@dataclass
class Measured:
    start_s: float  # session start-up: data, sandbox check, model server
    trial_s: float  # the clock one trial takes (sandbox, preflight, LLM, recording)
    basis: str  # where the figures come from, in words
    tokens: tuple[float, float] = ASSUMED_TOKENS  # prompt, answer tokens per LLM call
    tokens_measured: bool = False


@dataclass
class Estimate:
    trials: int  # after the baseline
    limited_by: str
    hours: float
    llm_calls: float
    llm_usd: float
    sandbox_usd: float
    measured: Measured

    def to_dict(self) -> dict:
        return {"trials": self.trials, "limited_by": self.limited_by,
                "hours": round(self.hours, 4), "llm_calls": round(self.llm_calls, 1),
                "llm_usd": round(self.llm_usd, 4), "sandbox_usd": round(self.sandbox_usd, 4),
                "usd": round(self.llm_usd + self.sandbox_usd, 4),
                "start_s": round(self.measured.start_s, 3),
                "trial_s": round(self.measured.trial_s, 3), "basis": self.measured.basis,
                "tokens_per_call": list(self.measured.tokens)}


def measure_baseline(config: SessionConfig) -> Measured:
    """The baseline once, as a session runs it, in a folder removed afterwards."""
    from agent.loop.session import Session

    probe = config.model_copy(update={"method": "random", "trials": 0, "budget_s": None,
                                      "cost_s": None, "track": [], "max_usd": None})
    with tempfile.TemporaryDirectory(prefix="autoresearch-estimate-") as tmp:
        session = Session.create(Path(tmp) / "run", probe)
        session.run()
        note = session.notes[0]
        clock = json.loads((Path(tmp) / "run" / "optimizer" / "clock.json").read_text())
    if note.status != "ok":
        raise UserError(f"the baseline failed ({note.status}) while it was measured: check it "
                        "with `autoresearch sandbox try`")
    trial_s = max(note.cost_s, note.wall_s, 1e-3)
    return Measured(max(clock["elapsed_s"] - trial_s, 0.0), trial_s,
                    f"the baseline, run just now ({note.wall_s:.1f} s)")


def measure_run(notes: list[TrialNote], elapsed_s: float | None, name: str) -> Measured:
    """The trials of a previous run: its median trial cost, its tokens per LLM call."""
    ran = [n for n in notes if n.status != "rejected"]
    if not ran:
        raise UserError(f"{name} has no trial that ran: estimate from the baseline instead")
    trial_s = statistics.median(n.cost_s or n.wall_s for n in ran)
    # what its clock shows beyond its trials (start-up, recording; 0 when they overlapped)
    start_s = max((elapsed_s or 0.0) - sum(n.cost_s or n.wall_s for n in ran), 0.0)
    calls = sum(n.llm_calls for n in notes)
    measured = Measured(start_s, trial_s, f"{len(ran)} trials of {name}")
    if calls:
        measured.tokens = (sum((n.tokens or {}).get("prompt", 0) for n in notes) / calls,
                           sum((n.tokens or {}).get("completion", 0) for n in notes) / calls)
        measured.tokens_measured = True
    return measured


def llm_calls(config: SessionConfig, trials: int) -> float:
    """The LLM calls `trials` trials of the method make (repair turns not counted)."""
    from agent.optimizers import LLM_METHODS

    if config.method not in LLM_METHODS:
        return 0.0
    if config.method == "centaur":
        return max(trials - config.llm_warmup, 0) * config.llm_ratio
    return float(trials)


def estimate(config: SessionConfig, measured: Measured, pricing: Pricing) -> Estimate:
    """The trials the options allow on `measured` figures, and their time and dollars."""
    per_call = pricing.call_usd(*measured.tokens)
    slots = max(config.workers, 1)
    t = measured.trial_s
    limits: list[tuple[int, str]] = []
    if config.trials is not None:
        limits.append((config.trials, f"--trials {config.trials}"))
    if config.budget_s is not None:  # trial k+1 starts while clock + a trial fits
        fit = (config.budget_s - measured.start_s - t) * slots / t
        limits.append((max(math.floor(fit), 0), f"--budget {config.budget_s:g} s"))
    if config.cost_s is not None:
        limits.append((max(math.ceil(config.cost_s / t) - 1, 0), f"--cost {config.cost_s:g} s"))
    if config.max_usd is not None:
        n = 0
        while n < 100_000 and (n + 2) * pricing.trial_usd(t) + llm_calls(config, n + 1) \
                * per_call <= config.max_usd:
            n += 1
        limits.append((n, f"--max-usd {config.max_usd:g}"))
    trials, why = min(limits) if limits else (0, "nothing")
    calls = llm_calls(config, trials)
    return Estimate(trials, why, (measured.start_s + (trials + 1) * t / slots) / 3600, calls,
                    calls * per_call, (trials + 1) * pricing.trial_usd(t), measured)
