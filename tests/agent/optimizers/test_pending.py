"""The optimizer contract with trials in flight (issue 10): every method of METHODS, the LLM
ones on a scripted model behind a real HTTP server, asked while `k` earlier proposals still
run, told in trial order as the session does. Same seed and same k give the same proposals;
no proposal repeats one that is running."""

from __future__ import annotations

import json

import pytest

from agent.edit.actions import EditHyperparameters
from agent.llm.client import LLM, LLMConfig
from agent.optimizers import LLM_METHODS, METHODS, make_optimizer
from agent.optimizers.base import TrialContext, TrialRecord
from agent.testing.scripted_llm import ScriptedLLM
from tests.agent.optimizers.test_contract import objective, space_of

K = 4
TRIALS = 14


def answer(depth: int, lr: float) -> str:
    values = {"DEPTH": depth, "MATRIX_LR": lr}
    return "```json\n" + json.dumps({"tool": "edit_hyperparameters", "values": values,
                                     "rationale": f"depth {depth}"}) + "\n```\n"


# Answer 2 repeats answer 1 while trial 1 still runs: the method must refuse it (a repair
# turn naming trial 1) and take the next answer instead.
SCRIPT = [answer(3, 0.03), answer(3, 0.03)] + [answer(2 + i % 7, 0.01 + 0.01 * i)
                                               for i in range(2, 40)]


def context(space, n: int) -> TrialContext:
    return TrialContext(trial=n, incumbent_source="", incumbent_config=space.defaults(),
                        device="cpu, 2 cores", memory="8g", budget="60 s of training",
                        preset="cpu")


def full(space, action, pending_base) -> dict:
    return {**pending_base, **action.values} if len(action.values) < len(space.names) \
        else dict(action.values)


def drive(method: str, seed: int, k: int, llm=None) -> list[dict]:
    """Ask while fewer than k trials are untold, tell the oldest, as the session orders it."""
    space = space_of("cpu")
    options = {}
    if method in LLM_METHODS:
        options = {"llm": llm, "max_repairs": 2}
        if method == "centaur":
            options.update(ratio=1.0, warmup=0)  # every trial is the model's
    opt = make_optimizer(method, space, seed, space.defaults(), **options)
    baseline = space.defaults()
    opt.tell(EditHyperparameters(baseline, "baseline"), TrialRecord(0, "ok", baseline, 1.6))
    history = [TrialRecord(0, "ok", baseline, 1.6)]
    pending: dict[int, dict] = {}
    proposals = []
    n, told = 1, 1
    while told <= TRIALS:
        while n <= TRIALS and n - told < k:
            running = [TrialRecord(m, "running", c) for m, c in sorted(pending.items())]
            base = opt.cmaes.peek() if method == "centaur" else baseline
            action = opt.ask(list(history), running, context(space, n))
            config = full(space, action, base)
            assert config not in pending.values(), (n, "repeats a running trial")
            assert space.errors(config) == []
            pending[n] = config
            proposals.append(config)
            n += 1
        config = pending.pop(told)
        record = objective(space, config, told)
        opt.tell(EditHyperparameters(config, "told"), record)
        history.append(record)
        told += 1
    return proposals


@pytest.mark.parametrize("method", list(METHODS))
def test_same_seed_and_k_same_proposals_none_repeating_a_running_one(method):
    runs = []
    for _ in range(2):
        if method in LLM_METHODS:
            with ScriptedLLM(SCRIPT) as server:
                runs.append(drive(method, 7, K, LLM(LLMConfig(server.model, server.api_base))))
                repair = [r for r in server.requests
                          if "running this very configuration" in r["messages"][-1]["content"]]
            assert repair and "trial 1" in repair[0]["messages"][-1]["content"]
            assert {"DEPTH": 3, "MATRIX_LR": 0.03}.items() <= runs[-1][0].items()
            assert runs[-1][1]["DEPTH"] != 3  # the repeated answer was refused
        else:
            runs.append(drive(method, 7, K))
    assert runs[0] == runs[1]
    assert len(runs[0]) == TRIALS


@pytest.mark.parametrize("method", [m for m in METHODS if m not in LLM_METHODS])
def test_another_k_or_seed_gives_another_sequence(method):
    assert drive(method, 7, K) != drive(method, 8, K)
    if method != "random":  # random ignores results, so k changes nothing for it
        assert drive(method, 7, K) != drive(method, 7, 1)


def test_llm_prompts_show_the_running_trials():
    space = space_of("cpu")
    with ScriptedLLM(SCRIPT) as server:
        opt = make_optimizer("llm-hpo", space, 0, space.defaults(),
                             llm=LLM(LLMConfig(server.model, server.api_base)))
        running = [TrialRecord(4, "running", {**space.defaults(), "DEPTH": 7})]
        opt.ask([TrialRecord(0, "ok", space.defaults(), 1.6)], running, context(space, 5))
        prompt = server.requests[0]["messages"][-1]["content"]
    assert "Running now" in prompt and "trial 4: DEPTH=7" in prompt
