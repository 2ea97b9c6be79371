"""Failed trials cost seconds, not minutes, and a probe that passes costs nothing: the
preflight, and OOM repair (DESIGN.md, "One trial, end to end", step 4, and "in-process
preflight").

A new configuration (trial >= 1) runs first as a probe, with AR_PREFLIGHT_STEPS=N and
AR_PREFLIGHT_CONTINUE=1 in the same sandbox and limits: its first N training steps (at the
full DEVICE_BATCH_SIZE) are the probe, it prints `preflight: ok peak_memory_mb ...
step_seconds ...` and trains on in the same process, the whole trial. The watch
(agent/watch.probe_verdict) reads that line as it comes: a peak too close to a CPU trial's
host limit stops the trial as an OOM, fewer predicted steps than --min-steps as `rejected`.
Then:
- it passed and trained on: that run is the trial; the probe cost no second start;
- it ran out of memory in its probe, or was stopped for its peak, and --repair-oom is on:
  DEVICE_BATCH_SIZE is halved (gradient accumulation keeps the effective batch) in a new
  commit whose parent is the failed one, and that is probed, until it fits or the batch is 1;
- on a CPU with --repair-oom the probe gets AR_PREFLIGHT_FIT_MB (HEADROOM of the host limit):
  it measures two steps at micro-batches of 1, 2, 4, ..., and where its batch would peak
  above that it probes the largest power of two predicted to fit and exits; that batch is
  committed as the repair and trains (a second process), with no probe killed on the way;
- a train.py that honours AR_PREFLIGHT_STEPS but not AR_PREFLIGHT_CONTINUE (a separate probe:
  it exits after its `---` block with `preflight: ok`) gets the full run after it, as before;
- any other failure in the probe ends the trial with that status and `preflight: true`;
- train.py ignored both and trained for real: that run is the trial.
Every run writes into trials/NNNN/; one that did not end the trial is set aside into
trials/NNNN/preflight-K/ before the next starts. The optimizer is told the outcome for the
configuration it proposed.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from agent.config.settings import SessionConfig
from agent.edit.actions import Confirm
from agent.loop.trial import PreparedTrial, Trials
from agent.watch import HEADROOM, predicted_steps, probe_verdict
from sandbox.result import TrialResult

MEMORY_FAILURES = ("oom", "cuda_oom")
RUN_FILES = ("train.log", "curve.jsonl", "out", "eval")  # what one run writes into its folder


class Preflight:
    def __init__(self, config: SessionConfig, trials: Trials, time_budget: float,
                 preset: str, limit_mb: float | None = None):
        self.steps = config.preflight_steps
        self.repair = config.repair_oom if config.repair_oom is not None else preset == "gpu"
        self.min_steps, self.token_budget = config.steps_floor, config.token_budget
        self.trials, self.time_budget = trials, time_budget
        # on a CPU trial the probe's peak is host memory: compare it with the host limit
        self.host_limit_mb = None if config.gpus else limit_mb

    def env(self, prepared: PreparedTrial) -> dict[str, str]:
        """The trial's extra environment for its next run."""
        if prepared.stage != "preflight":
            return {}
        env = {"AR_PREFLIGHT_STEPS": str(self.steps), "AR_PREFLIGHT_CONTINUE": "1"}
        if self.repair and self.host_limit_mb:  # a CPU probe may find the batch that fits
            env["AR_PREFLIGHT_FIT_MB"] = f"{HEADROOM * self.host_limit_mb:.0f}"
        return env

    def watch(self, prepared: PreparedTrial) -> dict | None:
        """What the watch checks the in-process probe's line against (agent/watch.py)."""
        if prepared.stage != "preflight":
            return None
        return {"limit_mb": self.host_limit_mb, "min_steps": self.min_steps,
                "time_budget": self.time_budget, "token_steps": self._token_steps(prepared)}

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
        probed = probed_batch(prepared, result)
        if result.probe is not None:  # in-process: the probe's line came, the run went on
            return self._in_process(prepared, result, probed)
        passed = result.exit_code == 0 and result.metrics.get("preflight") == "ok"
        close = probe_verdict(result.metrics, {"limit_mb": self.host_limit_mb}) \
            if passed else None  # the in-process probe's peak check, on a separate one
        if close is not None:
            passed, result.status, result.reason = False, close.status, close.reason
        prepared.probes.append({"status": "ok" if passed else result.status,
                                "wall_s": result.wall_s, "DEVICE_BATCH_SIZE": probed})
        if result.ok and not passed:  # train.py ignored the probe and trained: the trial
            return prepared, result
        if passed:
            set_aside(prepared, result)
            return self._passed(self._fitted(prepared, result, probed), result.metrics,
                                result.wall_s)
        return self._failed(prepared, result, probed)

    def _in_process(self, prepared: PreparedTrial, result: TrialResult,
                    probed: int | None) -> tuple[PreparedTrial, TrialResult | None]:
        """The probe passed in the trial's own process (its line is `result.probe`): that
        run is the trial, unless the watch stopped it for the probe's peak (repaired like
        an OOM) or its predicted steps (rejected)."""
        stopped_by_probe = result.stopped_at is not None and result.status in (
            "oom", "rejected") and self._probe_stop(result)
        prepared.probes.append({"status": result.status if stopped_by_probe else "ok",
                                "wall_s": 0.0, "in_process": True,
                                "DEVICE_BATCH_SIZE": probed})
        if stopped_by_probe:
            return self._failed(prepared, result, probed)
        measured, _ = self._passed(prepared, result.probe, 0.0)
        measured.preflight["in_process"] = True
        return measured, result

    @staticmethod
    def _probe_stop(result: TrialResult) -> bool:
        return result.reason.startswith("preflight ")

    def _failed(self, prepared: PreparedTrial, result: TrialResult,
                probed: int | None) -> tuple[PreparedTrial, TrialResult | None]:
        if result.status in MEMORY_FAILURES and self.repair and probed is not None:
            repaired = self.trials.repair(prepared, f"preflight {result.status} at {probed}",
                                          probed // 2)
            if repaired is not None:
                set_aside(prepared, result)
                repaired.stage = "preflight"
                return repaired, None
        result.preflight = True
        return prepared, result

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

    def _token_steps(self, prepared: PreparedTrial) -> int | None:
        total = (prepared.config or {}).get("TOTAL_BATCH_SIZE")
        if self.token_budget and isinstance(total, int) and total > 0:
            return math.ceil(self.token_budget / total)
        return None

    def _passed(self, prepared: PreparedTrial, metrics: dict,
                wall_s: float) -> tuple[PreparedTrial, TrialResult | None]:
        step_s = metrics.get("step_seconds")
        config = prepared.config or {}
        predicted = predicted_steps(step_s, {"time_budget": self.time_budget,
                                             "token_steps": self._token_steps(prepared)})
        warmdown = config.get("WARMDOWN_RATIO")
        prepared.preflight = {
            "peak_memory_mb": metrics.get("peak_memory_mb"), "step_seconds": step_s,
            "wall_s": wall_s, "predicted_steps": predicted,
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


def set_aside(prepared: PreparedTrial, result: TrialResult) -> None:
    """A run that did not end the trial (a probe, a run repaired after it): what it wrote
    into trials/NNNN/ moves to trials/NNNN/preflight-K/ (K: its probe's number), so the next
    run starts in an empty folder and every probe keeps its own log."""
    if not result.log_path:
        return
    log = Path(result.log_path)
    trial = log.parent
    if trial.name.startswith("preflight-"):
        return
    k = max(len(prepared.probes), 1)
    while (trial / f"preflight-{k}").exists():  # a resumed trial's probes count from 1 again
        k += 1
    aside = trial / f"preflight-{k}"
    aside.mkdir(parents=True)
    for name in RUN_FILES:
        source = trial / name
        if source.exists():
            shutil.move(str(source), str(aside / name))
    result.log_path = str(aside / "train.log")
