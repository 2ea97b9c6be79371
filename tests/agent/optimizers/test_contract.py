"""One contract, every optimizer of METHODS (after Optuna's sampler tests): determinism,
valid proposals in both presets, failures survived and told as worst + margin, resume by
pickle, batches with out-of-order tells, and learning from a told baseline."""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest

from agent.edit.actions import ApplyDiff, EditHyperparameters
from agent.edit.space import Constraint, load_space
from agent.optimizers import LLM_METHODS, METHODS, make_optimizer
from agent.optimizers.base import TrialRecord, failure_value
from agent.optimizers.encoding import Encoding
from agent.paths import baseline_dir

# LLM methods need a model; tests/agent/test_llm_methods.py runs them on a scripted one
CLASSICAL = [m for m in METHODS if m not in LLM_METHODS]

SPACE_FILE = baseline_dir() / "search_space.toml"
PRESETS = ("cpu", "gpu")


def space_of(preset: str):
    return load_space(SPACE_FILE, preset)


def objective(space, config, number):
    """A quadratic bowl in the unit cube, an out-of-memory corner (deep and wide batches),
    and one crash and one rejected patch at fixed trial numbers."""
    if number == 5:
        return TrialRecord(number, "crash", config, reason="scripted crash")
    if number == 9:
        return TrialRecord(number, "rejected", config, reason="scripted rejection")
    x = dict(zip(space.names, Encoding(space).encode(config), strict=True))
    if x["DEPTH"] + x["DEVICE_BATCH_SIZE"] > 1.0:
        return TrialRecord(number, "oom", config, reason="scripted OOM")
    value = 1.0 + sum((v - 0.3) ** 2 for v in x.values())
    return TrialRecord(number, "ok", config, round(value, 6))


def start(method, space, seed=0, baseline_value=1.6):
    """An optimizer that has been told trial 0, the baseline, as the session does."""
    opt = make_optimizer(method, space, seed, space.defaults())
    baseline = space.defaults()
    record = TrialRecord(0, "ok", baseline, baseline_value)
    opt.tell(EditHyperparameters(baseline, "baseline"), record)
    return opt, [record]


def drive(opt, space, history, trials):
    """Ask, run the synthetic objective, tell; returns the actions asked."""
    actions = []
    for _ in range(trials):
        action = opt.ask(list(history))
        record = objective(space, action.values, len(history))
        opt.tell(action, record)
        history.append(record)
        actions.append(action)
    return actions


def proposals(actions):
    return [(a.values, a.rationale) for a in actions]


@pytest.fixture(params=CLASSICAL)
def method(request):
    return request.param


@pytest.fixture(params=PRESETS)
def space(request):
    return space_of(request.param)


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ValueError, match="random, tpe, cmaes"):
        make_optimizer("hyperband", space_of("cpu"), 0, space_of("cpu").defaults())


def test_states_its_failure_policy(method):
    cls = METHODS[method]
    assert cls.name == method
    assert isinstance(cls.failure_policy, str) and cls.failure_policy.endswith(".")
    assert "Failure policy" in cls.__doc__


def test_same_seed_same_proposals(method, space):
    runs = []
    for _ in range(2):
        opt, history = start(method, space, seed=7)
        runs.append(proposals(drive(opt, space, history, 16)))
    assert runs[0] == runs[1]


def test_different_seeds_differ(method, space):
    runs = []
    for seed in (1, 2):
        opt, history = start(method, space, seed=seed)
        runs.append([v for v, _ in proposals(drive(opt, space, history, 6))])
    assert runs[0] != runs[1]
    assert runs[0][0] != runs[1][0]


def test_every_proposal_is_a_full_snapped_config_in_the_space(method, space):
    opt, history = start(method, space, seed=3)
    for action in drive(opt, space, history, 20):
        assert isinstance(action, EditHyperparameters)
        assert list(action.values) == space.names
        assert space.errors(action.values) == []
        for name, value in action.values.items():
            p = space.params[name]
            assert p.nearest(value) == [value]
            assert type(value) is {"int": int, "float": float, "categorical": str}[p.type]
        # bare: the session writes `<method>: <rationale>` as the subject (loop/trial.py)
        assert action.rationale and "\n" not in action.rationale
        assert not action.rationale.startswith((f"{method}:", f"{method} "))


def test_failures_are_survived_and_told_as_worst_success_plus_margin(method, space):
    opt, history = start(method, space, seed=11)
    drive(opt, space, history, 22)
    statuses = {r.status for r in history}
    assert {"ok", "crash", "rejected", "oom"} <= statuses, statuses
    told = 0  # the records told before each observation
    for obs in opt.observations:
        if obs.trial is not None:
            record = history[told]
            assert obs.trial == record.number and obs.status == record.status
        if obs.status == "ok":
            assert obs.value == history[told].val_bpb
        else:
            assert obs.value == pytest.approx(failure_value(history[:told]))
            assert obs.value < 100.0
            if told:  # after the baseline succeeded, a failure sits just above the worst
                worst = max(r.val_bpb for r in history[:told] if r.ok)
                assert worst < obs.value <= worst + 0.5
        told += obs.trial is not None
    assert told == len(history)


def test_first_failure_before_any_success_is_uniform_bpb(method):
    space = space_of("cpu")
    opt = make_optimizer(method, space, 0, space.defaults())
    baseline = space.defaults()
    opt.tell(EditHyperparameters(baseline), TrialRecord(0, "timeout", baseline))
    assert opt.observations[0].value == failure_value([])
    assert space.errors(opt.ask([]).values) == []


def test_pickle_mid_run_continues_identically(method, space):
    opt, history = start(method, space, seed=5)
    uninterrupted = proposals(drive(opt, space, history, 18))

    opt, history = start(method, space, seed=5)
    first = proposals(drive(opt, space, history, 8))
    resumed = pickle.loads(pickle.dumps(opt))
    rest = proposals(drive(resumed, space, history, 10))
    assert first + rest == uninterrupted


def test_ask_batch_gives_k_valid_distinct_proposals_told_out_of_order(method, space):
    opt, history = start(method, space, seed=2)
    for _ in range(3):
        batch = [opt.ask(list(history)) for _ in range(6)]
        assert len(batch) == 6
        for action in batch:
            assert space.errors(action.values) == []
        assert len({tuple(a.values.values()) for a in batch}) == 6
        numbered = list(enumerate(batch, start=len(history)))
        records = {n: objective(space, a.values, n) for n, a in numbered}
        for n, action in reversed(numbered):
            opt.tell(action, records[n])
        history += [records[n] for n, _ in numbered]
    assert len([o for o in opt.observations if o.trial is not None]) == len(history)
    assert space.errors(opt.ask(list(history)).values) == []


def test_the_told_baseline_is_learned(method, space):
    opt, history = start(method, space, baseline_value=1.234)
    first = opt.observations[0]
    assert first.config == space.defaults() and first.value == 1.234 and first.trial == 0


def test_a_config_it_did_not_ask_for_is_learned(method):
    space = space_of("cpu")
    opt, history = start(method, space)
    drive(opt, space, history, 3)
    foreign = {**space.defaults(), "DEPTH": 6, "MATRIX_LR": 0.02, "WINDOW_PATTERN": "LLLL"}
    opt.tell(EditHyperparameters(foreign, "llm"), TrialRecord(4, "ok", foreign, 1.1))
    assert opt.observations[-1].config == foreign and opt.observations[-1].value == 1.1
    # a partial edit is completed from the record, a diff without a config is skipped
    opt.tell(EditHyperparameters({"DEPTH": 3}), TrialRecord(5, "ok", {**foreign, "DEPTH": 3}, 1.2))
    assert opt.observations[-1].config == {**foreign, "DEPTH": 3}
    count = len(opt.observations)
    opt.tell(ApplyDiff("--- a/train.py\n"), TrialRecord(6, "crash", None))
    assert len(opt.observations) == count
    assert space.errors(opt.ask(history).values) == []


def test_a_told_config_outside_the_space_is_survived(method):
    space = space_of("cpu")
    opt, history = start(method, space)
    wild = {**space.defaults(), "DEPTH": 99, "EMBEDDING_LR": 50.0}
    opt.tell(EditHyperparameters(wild), TrialRecord(1, "rejected", wild, reason="DEPTH"))
    odd = {**space.defaults(), "WINDOW_PATTERN": "XXXX"}
    opt.tell(EditHyperparameters(odd), TrialRecord(2, "rejected", odd, reason="pattern"))
    assert space.errors(opt.ask(history).values) == []


def test_a_space_no_candidate_can_meet_raises_a_clear_error(method):
    space = space_of("cpu")
    never = dataclasses.replace(space, constraints=(Constraint("DEPTH > 100", "never"),))
    opt = make_optimizer(method, never, 0, space.defaults())
    opt.max_attempts = 10
    with pytest.raises(RuntimeError, match="none of 10 candidates met .*DEPTH > 100"):
        opt.ask([])


def test_failures_are_told_as_a_finite_value_even_for_nan(method):
    space = space_of("cpu")
    opt, history = start(method, space)
    action = opt.ask(history)
    opt.tell(action, TrialRecord(1, "ok", action.values, math.nan))
    assert np.isfinite(opt.observations[-1].value)
    assert opt.observations[-1].value == pytest.approx(failure_value(history))
