"""What an LLM call costs: the per-token prices a session uses, chosen once at its start and
kept in RUN/pricing.json, so every dollar figure can be checked later from the recorded
tokens (a price list changes; the run's figures must not).

Where the prices come from, first that applies: `--llm-usd-per-mtok IN,OUT`; a model on this
machine (an api_base on loopback, the built-in models) costs nothing; litellm's bundled price
list (LITELLM_LOCAL_MODEL_COST_MAP: no network); else nothing, and the snapshot says so.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Pricing:
    model: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    source: str  # where the prices come from, in words
    gpu_usd_per_hour: float | None = None  # --gpu-usd-per-hour: per hour a trial's slot is held

    def call_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_usd_per_mtok
                + completion_tokens * self.output_usd_per_mtok) / 1e6

    def trial_usd(self, cost_s: float) -> float:
        """The sandbox share of a trial's cost: its slot held for `cost_s` seconds."""
        return (self.gpu_usd_per_hour or 0.0) * cost_s / 3600


def pricing_for(model: str | None, local: bool, override: list[float] | None,
                gpu_usd_per_hour: float | None) -> Pricing:
    """The prices of `model` (None: no LLM); `local`: it is served on this machine."""
    name = model or "-"
    if override:
        return Pricing(name, override[0], override[1], "--llm-usd-per-mtok", gpu_usd_per_hour)
    if model is None or local:
        why = "no LLM" if model is None else "a model on this machine: free"
        return Pricing(name, 0.0, 0.0, why, gpu_usd_per_hour)
    import litellm

    from agent.llm import client  # noqa: F401  (sets LITELLM_LOCAL_MODEL_COST_MAP first)

    try:
        info = litellm.get_model_info(model)
        prices = (1e6 * float(info.get("input_cost_per_token") or 0.0),
                  1e6 * float(info.get("output_cost_per_token") or 0.0))
    except Exception:  # not in the list: say so rather than guess
        return Pricing(name, 0.0, 0.0, "unknown to litellm's price list: counted as free "
                       "(pass --llm-usd-per-mtok IN,OUT)", gpu_usd_per_hour)
    from importlib.metadata import version

    return Pricing(name, prices[0], prices[1],
                   f"litellm {version('litellm')}'s bundled price list", gpu_usd_per_hour)


def save_snapshot(path: Path, pricing: Pricing, from_trial: int) -> None:
    """Append `pricing` to the snapshots in `path` when it differs from the last one (a
    resume may switch the model): each says from which trial on it applies."""
    snapshots = load_snapshots(path)
    entry = asdict(pricing)
    if snapshots and {k: v for k, v in snapshots[-1].items()
                      if k not in ("from_trial", "at")} == entry:
        return
    snapshots.append({**entry, "from_trial": from_trial,
                      "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    path.write_text(json.dumps({"snapshots": snapshots}, indent=1) + "\n")


def load_snapshots(path: Path) -> list[dict]:
    """The snapshots in `path` ([] when missing or unreadable: it is informational)."""
    try:
        data = json.loads(path.read_text())
        snapshots = data["snapshots"]
        return [s for s in snapshots if isinstance(s, dict)] if isinstance(snapshots,
                                                                           list) else []
    except (OSError, ValueError, KeyError, TypeError):
        return []


def cut_usd(path: Path) -> float:
    """What the LLM calls in `path` cost: those of asks the money cap cut short, which no
    trial records (optimizer/cut-calls.jsonl; 0 when none)."""
    total = 0.0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return 0.0
    for line in lines:
        try:
            cost = json.loads(line).get("cost_usd")
        except (ValueError, AttributeError):
            continue
        if isinstance(cost, (int, float)) and cost >= 0:
            total += cost
    return total


def gpu_rate(path: Path) -> float:
    """The --gpu-usd-per-hour of the run's last snapshot (0 when none)."""
    snapshots = load_snapshots(path)
    rate = snapshots[-1].get("gpu_usd_per_hour") if snapshots else None
    return float(rate) if isinstance(rate, (int, float)) and rate >= 0 else 0.0
