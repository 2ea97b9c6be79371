"""Centaur: CMA-ES whose state is shared with an LLM (PAPER.md, "Centaur as published").

CMA-ES (the very `cmaes` optimizer of the `cmaes` method, same seed) proposes every trial
except a share `ratio` of those after `warmup`, which the LLM proposes instead. The LLM sees
CMA-ES's mean (in the unit cube AND in real units), step size sigma and covariance C, with a
legend of the unit cube, CMA-ES's own next candidate, the best trials and the recent history
including failures and their status. Its configuration is evaluated and told back to CMA-ES,
which learns from it like from its own samples.

Done better than published: the mean is sent (the published code did not); the share is
honoured as a fraction (trial t after the warm-up is the LLM's when floor((i+1)*r) >
floor(i*r), i = t - warmup - 1: exactly r of them over time, not every round(1/r)-th); and
failures are told to CMA-ES as the worst success plus a margin, not 100.0, which with
OOM-prone LLM proposals had pulled CMA-ES into out-of-memory regions. With ratio 0 Centaur
is trial for trial the `cmaes` method.

An LLM answer that stays invalid after the repair turns makes the trial `rejected` (no
silent fallback to CMA-ES's candidate); CMA-ES is then told nothing for it.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from agent.config.settings import SessionConfig
from agent.edit.actions import Action, EditHyperparameters, NoAction
from agent.edit.block import Value
from agent.edit.space import SearchSpace
from agent.llm.answers import edit_validator
from agent.llm.prompting import EDIT, edit_tool, example_values
from agent.llm.seat import MAX_REPAIRS, LLMSeat, UsesLLM
from agent.optimizers.base import TrialContext, TrialRecord
from agent.optimizers.cmaes import CMAES

# the paper's ablation: a ratio of 0.1-0.2 did best, 0.8 clearly worse; 10 trials of CMA-ES
# alone first, as published (SessionConfig holds the defaults, once)
RATIO = SessionConfig.model_fields["llm_ratio"].default
WARMUP = SessionConfig.model_fields["llm_warmup"].default


class Centaur(UsesLLM):
    name = "centaur"
    failure_policy = CMAES.failure_policy + " LLM proposals are told back the same way."

    def __init__(self, space: SearchSpace, seed: int, baseline: dict[str, Value], llm=None,
                 ratio: float = RATIO, warmup: int = WARMUP, max_repairs: int = MAX_REPAIRS,
                 **cma_options: object):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"--llm-ratio {ratio} must lie in [0, 1]")
        self.space, self.seed = space, seed
        self.cmaes = CMAES(space, seed, baseline, **cma_options)
        self.ratio, self.warmup = ratio, warmup
        self.seat = LLMSeat(llm, max_repairs)

    def is_llm_turn(self, trial: int) -> bool:
        i = trial - self.warmup - 1
        if i < 0 or self.ratio <= 0:
            return False
        return math.floor((i + 1) * self.ratio) > math.floor(i * self.ratio)

    def ask(self, history: list[TrialRecord], pending: list[TrialRecord],
            ctx: TrialContext) -> Action:
        # which of the two proposed is the action's `proposer`; the session names it in the
        # trial's subject ("centaur llm: ...") beside the bare rationale
        if not self.is_llm_turn(ctx.trial):  # the ratio counts trials, whoever runs them
            return replace(self.cmaes.ask(history, pending, ctx), proposer="cmaes")
        if ctx.replay is not None:  # the recorded answer is already the full configuration
            return self.seat.propose("centaur.j2", history, pending, ctx, [], (EDIT,), None)
        state = self.shared_state()
        base = state["candidate"]
        action = self.seat.propose(
            "centaur.j2", history, pending, ctx, [edit_tool(self.space)], (EDIT,),
            edit_validator(self.space, base, pending), space=self.space,
            example=example_values(self.space), **state)
        if isinstance(action, EditHyperparameters):  # full config: what CMA-ES will learn
            action = replace(action, values={**base, **action.values}, proposer="llm")
        return action

    def shared_state(self) -> dict:
        """What the LLM is shown of CMA-ES, exactly as the CMA object holds it now."""
        names = self.cmaes.encoding.names
        legend = [line.split(": ", 1)[1] for line in self.cmaes.encoding.legend()]
        cov = np.asarray(self.cmaes.covariance)
        std = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
        corr = cov / np.outer(std, std)
        pairs = sorted(((names[i], names[j], float(corr[i, j])) for i in range(len(names))
                        for j in range(i + 1, len(names)) if abs(corr[i, j]) >= 0.2),
                       key=lambda p: -abs(p[2]))
        return {"names": names, "legend": legend,
                "mean_unit": list(zip(names, self.cmaes.mean.tolist(), strict=True)),
                "mean_real": self.cmaes.mean_config(), "sigma": self.cmaes.sigma,
                "covariance": cov.tolist(), "candidate": self.cmaes.peek(),
                # the compact prompt's summary of C: each axis's spread, the strongest pairs
                "spread": (self.cmaes.sigma * std).tolist(), "correlations": pairs[:5]}

    def warm_start(self, earlier: list[TrialRecord]) -> None:
        """CMA-ES's warm start (agent/optimizers/cmaes.py); the LLM's prompts show the earlier
        trials as such (ctx.earlier)."""
        self.cmaes.warm_start(earlier)

    def tell(self, action: Action, record: TrialRecord) -> None:
        if isinstance(action, NoAction):
            self.cmaes.memory.remember(record)  # counts for failure values, teaches nothing
            return
        self.cmaes.tell(action, record)
