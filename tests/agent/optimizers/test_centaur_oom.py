"""Centaur's published failure mode, tested (issue 25, PAPER.md): an LLM that keeps proposing
configurations that run out of memory dragged the published CMA-ES into the out-of-memory
region (74-77 % failed trials on some seeds). Here every LLM proposal is such a configuration
(a scripted model behind a real HTTP server, asked half of the trials after the warm-up) on
an objective whose optimum presses against the memory wall, as bigger models and batches do.
What CMA-ES is told for a failed LLM proposal is what it is told for its own failures: the
worst success so far plus a margin, ranked last in its generation (never a value that could
rank it among the good ones). Its own trials must then fail no more often than without the
LLM; a policy that takes a failed proposal for a good result (the control) is caught."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from agent.edit.actions import EditHyperparameters
from agent.edit.space import load_space
from agent.llm.client import LLM, LLMConfig
from agent.optimizers.base import TrialContext, TrialRecord
from agent.optimizers.centaur import Centaur
from agent.paths import baseline_dir
from agent.testing.scripted_llm import ScriptedLLM

TRIALS, SEEDS, WARMUP, RATIO = 48, 6, 5, 0.5
OOM = {"DEPTH": 8, "DEVICE_BATCH_SIZE": 64, "TOTAL_BATCH_SIZE": 16384}  # the LLM always says


def out_of_memory(c: dict) -> bool:
    return c["DEPTH"] * c["DEVICE_BATCH_SIZE"] >= 256


def objective(c: dict) -> float:
    """Lower with depth and batch up to the memory wall (the best configurations sit next to
    it), a learning-rate valley, a little from the schedule."""
    return (2.0 + (math.log10(c["MATRIX_LR"]) + 1.4) ** 2 + 0.05 * (8 - c["DEPTH"])
            + 0.002 * (64 - c["DEVICE_BATCH_SIZE"]) + (c["WARMDOWN_RATIO"] - 0.6) ** 2)


class Credulous(Centaur):
    """The control: a failed LLM proposal told to CMA-ES as the best value so far (a policy
    that takes the LLM's word for it)."""

    def tell(self, action, record):
        if getattr(action, "proposer", "") == "llm" and record.status != "ok":
            told = [o.value for o in self.cmaes.observations if o.status == "ok"]
            record = TrialRecord(record.number, "ok", record.config, min(told, default=2.0))
        super().tell(action, record)


def cmaes_failure_share(kind, space, llm: ScriptedLLM | None, seed: int) -> float:
    client = LLM(LLMConfig(llm.model, llm.api_base)) if llm else None
    opt = kind(space, seed, space.defaults(), llm=client, ratio=RATIO if llm else 0.0,
               warmup=WARMUP)
    history: list[TrialRecord] = []
    own = []
    for n in range(TRIALS):
        ctx = TrialContext(trial=n, incumbent_source="", incumbent_config=space.defaults(),
                           device="cpu", memory="8g", budget="60 s", preset="cpu")
        action = EditHyperparameters(space.defaults(), "baseline") if n == 0 else \
            opt.ask(history, [], ctx)
        config = {**space.defaults(), **action.values}
        failed = out_of_memory(config)
        record = TrialRecord(n, "oom" if failed else "ok", config,
                             None if failed else objective(config))
        opt.tell(action, record)
        history.append(record)
        if n > WARMUP and action.proposer == "cmaes":
            own.append(failed)
    return sum(own) / len(own)


@pytest.fixture(scope="module")
def shares():
    space = load_space(baseline_dir() / "search_space.toml", "cpu")
    reply = "```json\n" + json.dumps({"tool": "edit_hyperparameters", "values": OOM,
                                      "rationale": "bigger is better"}) + "\n```"
    found = {}
    with ScriptedLLM(default=reply) as llm:
        for name, kind, script in (("cmaes alone", Centaur, None), ("centaur", Centaur, llm),
                                   ("credulous control", Credulous, llm)):
            found[name] = [cmaes_failure_share(kind, space, script, s) for s in range(SEEDS)]
        asked = len(llm.requests)
    for name, values in found.items():
        print(f"{name:18} CMA-ES's own trials failed {statistics.fmean(values):.0%} "
              f"(seeds: {', '.join(f'{v:.0%}' for v in values)})")
    return found, asked


def test_an_llm_proposing_oom_configs_does_not_drag_cmaes_into_them(shares):
    found, asked = shares
    assert asked >= SEEDS * 2 * (TRIALS - WARMUP - 1) * RATIO * 0.9  # the LLM was asked
    alone, centaur = statistics.fmean(found["cmaes alone"]), statistics.fmean(found["centaur"])
    assert centaur <= alone + 0.05, found
    assert max(found["centaur"]) < 0.5, found  # nowhere near the published 74-77 %


def test_the_measure_catches_a_policy_that_believes_the_llm(shares):
    found, _ = shares
    alone = statistics.fmean(found["cmaes alone"])
    assert statistics.fmean(found["credulous control"]) >= alone + 0.15, found
