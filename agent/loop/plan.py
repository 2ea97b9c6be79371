"""What a session's settings mean for its trials, derived once: the training budget, the
limits of each trial, the environment it gets, and how its device is described to a model."""

from __future__ import annotations

import os
from pathlib import Path

from agent.config.data import Preparation
from agent.config.runspec import RunSpec
from agent.config.settings import FALLBACK_TIME_BUDGET, SessionConfig
from agent.edit.space import SearchSpace
from agent.executors import TrialJob, make_executor, slot_limits
from agent.optimizers import LLM_METHODS
from sandbox.base import Limits


class TrialPlan:
    def __init__(self, config: SessionConfig, space: SearchSpace, spec: RunSpec | None = None):
        self.config, self.space, self.spec = config, space, spec or RunSpec()

    @property
    def time_budget(self) -> float:
        """--time-budget, else what the folder's [run] table says train.py trains for, else
        the preset's."""
        return (self.config.time_budget or self.spec.time_budget or self.space.time_budget
                or FALLBACK_TIME_BUDGET)

    @property
    def memory(self) -> str:
        return self.config.memory or self.space.memory or Limits.memory

    def limits(self) -> Limits:
        c = self.config
        return Limits(timeout_s=c.trial_timeout or 3 * self.time_budget + 120,
                      memory=self.memory, disk=c.disk, gpus=tuple(c.gpus),
                      gpu_mem_fraction=c.gpu_mem_fraction)

    def preparation(self, workdir: Path) -> Preparation:
        """Where the folder's data preparation runs: the session's sandbox, the network only
        if the user passed --prepare-network to this command, its trials' memory and disk."""
        limits = self.limits()
        c = self.config
        return Preparation(c.sandbox, Path(workdir), c.prepare_network, limits.memory,
                           limits.disk, c.isolation)

    def env(self) -> dict[str, str]:
        env = {"TIME_BUDGET": f"{self.time_budget:g}", "AR_SEED": str(self.config.seed)}
        if self.config.token_budget:
            env["AR_TOKEN_BUDGET"] = str(self.config.token_budget)
        if self.config.eval_tokens:
            env["AR_EVAL_TOKENS"] = str(self.config.eval_tokens)
        return env

    def budget_spent(self, spend, spent: float) -> bool:
        """The wall-clock budget cannot fit one more typical trial, or the cost is spent
        (`spend`: agent/loop/standing.Spend, kept as trials are recorded)."""
        config = self.config
        if config.cost_s is not None and spend.cost_s >= config.cost_s:
            return True
        if config.budget_s is None:
            return False
        return spent + spend.typical_wall_s > config.budget_s

    def executor(self, scratch: Path):
        """Where this session's trials run: its executor with one slot per share of the host
        (agent/executors/)."""
        c = self.config
        slots = slot_limits(self.limits(), c.workers, c.gpus, c.gpus_per_trial, c.cpus)
        return make_executor(c.executor, c.sandbox, slots, scratch, c.ray_address, c.data_dir,
                             c.gpus_per_trial or 0, c.isolation)

    def job(self, number: int, tree_tar: bytes, workdir: Path, env: dict[str, str],
            cache: Path, watch: dict | None = None, test_data: Path | None = None) -> TrialJob:
        """Trial `number` as an executor runs it: its tree, where its log goes, the session's
        data, limits, scoring and the folder's [run] table; `env` from `env()` (and a seed);
        `test_data`: a folder a harness-scored model is also scored on (the test split)."""
        c = self.config
        return TrialJob(number, tree_tar, str(workdir), c.data_dir, env, str(cache),
                        self.limits(), c.scoring, self.space.fixed.get("SEQ_LEN"),
                        self.spec.job(), watch, str(test_data) if test_data else None)

    def device(self) -> str:
        gpus, share = self.config.gpus_per_trial or 1, self.config.gpu_mem_fraction
        if not self.config.gpus:
            cores = self.config.cpus or os.cpu_count()
            return f"cpu, {cores:g} cores"
        text = f"{gpus} GPU{'s' if gpus > 1 else ''}"
        return text + (f" (capped at {share:.0%} of its memory)" if share else "")

    def budget(self) -> str:
        if self.config.token_budget:
            return f"{self.config.token_budget} training tokens"
        return f"{self.time_budget:g} s of training"

    def method_options(self, llm) -> dict:
        if self.config.method not in LLM_METHODS:
            return {}
        options = {"llm": llm, "max_repairs": self.config.max_repairs}
        if self.config.method == "centaur":
            options.update(ratio=self.config.llm_ratio, warmup=self.config.llm_warmup)
        return options
