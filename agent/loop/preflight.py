"""Failed trials cost seconds, not minutes: a preflight probe before each full run, and OOM
repair (DESIGN.md, "One trial, end to end", step 4).

A new configuration (trial >= 1) first runs with AR_PREFLIGHT_STEPS=N in the same sandbox and
limits: train.py builds model and data, runs N steps at the full DEVICE_BATCH_SIZE and one
evaluation-sized forward, prints `preflight: ok`, its peak memory and seconds per step, and
exits. Then:
- it passed: the full run follows (its compile cache is warm now); from the seconds per step
  the session predicts the steps the time budget allows, flags a configuration that could not
  finish one step of warm-down, and with --min-steps refuses one predicted below it;
- it ran out of memory and --repair-oom is on: DEVICE_BATCH_SIZE is halved (gradient
  accumulation keeps the effective batch) in a new commit whose parent is the failed one,
  and that is preflighted, until it fits or the batch is 1;
- on a CPU with --repair-oom the probe gets AR_PREFLIGHT_FIT_MB (HEADROOM of the host
  limit): it measures two steps at micro-batches of 1, 2, 4, ..., and where its batch would peak
  above that it probes the largest power of two predicted to fit; that batch is committed as
  the repair and trains, with no probe killed on the way;
- any other failure ends the trial with that status and `preflight: true` in its record;
- train.py ignored the variable and trained for real: that run is the trial.
The optimizer is told the outcome for the configuration it proposed.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from agent.config.settings import SessionConfig
from agent.edit.actions import Confirm
from agent.loop.trial import PreparedTrial, Trials
from sandbox.result import TrialResult

MEMORY_FAILURES = ("oom", "cuda_oom")
# A probe's resident peak is a floor: the full run's grew by up to 12 % on the cpu preset
# (allocator growth over many steps, evaluation), enough to be killed where the probe was
# not. A CPU trial whose probe peaks above this share of the host limit counts as an OOM.
HEADROOM = 0.85


class Preflight:
    def __init__(self, config: SessionConfig, trials: Trials, time_budget: float,
                 preset: str, limit_mb: float | None = None):
        self.steps = config.preflight_steps
        self.repair = config.repair_oom if config.repair_oom is not None else preset == "gpu"
        self.min_steps, self.token_budget = config.min_steps, config.token_budget
        self.trials, self.time_budget = trials, time_budget
        # on a CPU trial the probe's peak is host memory: compare it with the host limit
        self.host_limit_mb = None if config.gpus else limit_mb

    def env(self, prepared: PreparedTrial) -> dict[str, str]:
        """The trial's extra environment for its next run."""
        if prepared.stage != "preflight":
            return {}
        env = {"AR_PREFLIGHT_STEPS": str(self.steps)}
        if self.repair and self.host_limit_mb:  # a CPU probe may find the batch that fits
            env["AR_PREFLIGHT_FIT_MB"] = f"{HEADROOM * self.host_limit_mb:.0f}"
        return env

    def first_stage(self, prepared: PreparedTrial) -> PreparedTrial:
        new = prepared.number > 0 and not isinstance(prepared.action, Confirm)
        prepared.stage = "preflight" if self.steps and new else "full"
        return prepared

    def after(self, prepared: PreparedTrial,
              result: TrialResult) -> tuple[PreparedTrial, TrialResult | None]:
        """(the trial, its final result) -- or (the trial to run next, None)."""
        prepared.spent_s += result.wall_s
        if prepared.stage != "preflight":
            return prepared, result
        passed = result.exit_code == 0 and result.metrics.get("preflight") == "ok"
        if passed and self._too_close(result):
            passed, result.status = False, "oom"
            result.reason = (f"preflight peak {result.metrics['peak_memory_mb']:.0f} MB is above "
                             f"{HEADROOM:.0%} of the {self.host_limit_mb:.0f} MB host memory "
                             "limit: the full run would be killed")
        probed = probed_batch(prepared, result)
        prepared.probes.append({"status": "ok" if passed else result.status,
                                "wall_s": result.wall_s, "DEVICE_BATCH_SIZE": probed})
        if passed:
            return self._passed(self._fitted(prepared, result, probed), result)
        if result.ok:  # train.py ignored AR_PREFLIGHT_STEPS and trained: that is the trial
            return prepared, promote(result)
        if result.status in MEMORY_FAILURES and self.repair and probed is not None:
            repaired = self.trials.repair(prepared, f"preflight {result.status} at {probed}",
                                          probed // 2)
            if repaired is not None:
                repaired.stage = "preflight"
                return repaired, None
        result.preflight = True
        return prepared, promote(result)

    def _fitted(self, prepared: PreparedTrial, result: TrialResult,
                fitted: int | None) -> PreparedTrial:
        """A CPU probe that predicted its batch would not fit and passed at a smaller one
        (AR_PREFLIGHT_FIT_MB): that batch, committed as a repair, is what trains."""
        batch = (prepared.config or {}).get("DEVICE_BATCH_SIZE")
        if not self.repair or fitted is None or fitted == batch:
            return prepared
        predicted = result.metrics.get("predicted_peak_mb")
        cause = f"preflight predicts {predicted:.0f} MB at {batch}" \
            if isinstance(predicted, float) else f"preflight fits {fitted}"
        prepared.probes.insert(-1, {"status": "oom", "wall_s": 0.0, "predicted": True,
                                    "DEVICE_BATCH_SIZE": batch})
        return self.trials.repair(prepared, cause, fitted) or prepared

    def _too_close(self, result: TrialResult) -> bool:
        peak = result.metrics.get("peak_memory_mb")
        return bool(self.host_limit_mb and isinstance(peak, float)
                    and peak > HEADROOM * self.host_limit_mb)

    def _passed(self, prepared: PreparedTrial,
                result: TrialResult) -> tuple[PreparedTrial, TrialResult | None]:
        step_s = result.metrics.get("step_seconds")
        config = prepared.config or {}
        predicted = None
        if self.token_budget and config.get("TOTAL_BATCH_SIZE"):
            predicted = math.ceil(self.token_budget / config["TOTAL_BATCH_SIZE"])
        elif isinstance(step_s, float) and step_s > 0:
            predicted = int(self.time_budget / step_s)
        warmdown = config.get("WARMDOWN_RATIO")
        prepared.preflight = {
            "peak_memory_mb": result.metrics.get("peak_memory_mb"), "step_seconds": step_s,
            "wall_s": result.wall_s, "predicted_steps": predicted,
            # not even one step of warm-down fits: the schedule it was given never happens
            "too_few_steps": bool(predicted is not None and isinstance(warmdown, float)
                                  and predicted * warmdown < 1)}
        if self.min_steps and predicted is not None and predicted < self.min_steps:
            return prepared, TrialResult(
                status="rejected", preflight=True, wall_s=0.0,
                reason=f"preflight predicts {predicted} steps in the budget, fewer than "
                       f"--min-steps {self.min_steps}")
        prepared.stage = "full"
        return prepared, None


def probed_batch(prepared: PreparedTrial, result: TrialResult) -> int | None:
    """The DEVICE_BATCH_SIZE the probe ran: its own (AR_PREFLIGHT_FIT_MB may have made it
    smaller than the commit's) or, without that line, the commit's."""
    batch = (prepared.config or {}).get("DEVICE_BATCH_SIZE")
    probed = result.metrics.get("preflight_batch")
    if isinstance(batch, int) and isinstance(probed, float) and probed.is_integer() \
            and 1 <= probed < batch:
        return int(probed)
    return batch if isinstance(batch, int) else None


def promote(result: TrialResult) -> TrialResult:
    """The run that decided the trial was a preflight: its train.log and out/ become the
    trial's own (trials/NNNN/), where every trial's log is read."""
    if not result.log_path:
        return result
    log = Path(result.log_path)
    if not log.parent.name.startswith("preflight-"):
        return result
    trial = log.parent.parent
    for name in ("train.log", "out"):
        source, target = log.parent / name, trial / name
        if source.exists():
            if target.is_dir():
                shutil.rmtree(target)
            shutil.move(str(source), str(target))
    result.log_path = str(trial / "train.log")
    return result
