"""CMA-ES specifics: what Centaur reads (mean, sigma, covariance), peek, injected proposals,
generation bookkeeping and constraint-breaking candidates."""

import dataclasses
import pickle

import numpy as np
import pytest

from agent.edit.actions import EditHyperparameters
from agent.edit.space import Constraint
from agent.optimizers.base import TrialRecord, failure_value
from agent.optimizers.cmaes import CMAES
from tests.agent.optimizers.test_contract import drive, space_of, start


@pytest.fixture(params=("cpu", "gpu"))
def space(request):
    return space_of(request.param)


def test_starts_at_the_encoded_baseline(space):
    opt = CMAES(space, 0, space.defaults())
    np.testing.assert_array_equal(opt.mean, opt.encoding.encode(space.defaults()))
    assert opt.mean_config() == space.defaults()
    assert opt.sigma == 0.2
    assert opt.population_size == 11  # 4 + floor(3 ln 14), the library's default
    cov = opt.covariance
    assert cov.shape == (14, 14) and not cov.flags.writeable
    np.testing.assert_array_equal(cov, np.eye(14))


def test_a_generation_is_told_after_population_size_tells(space):
    space = dataclasses.replace(space, constraints=())  # no internal tells to count
    opt, history = start("cmaes", space)
    assert len(opt.solutions) == 1  # the baseline is the generation's first member
    actions = drive(opt, space, history, 10)
    assert actions[0].rationale == "generation 1, candidate 2/11"  # bare: the session
    assert actions[0].proposer == ""  # names the method in the trial's subject
    assert opt.generation == 1 and opt.solutions == [] and opt.memory.pending == []
    assert opt.sigma != 0.2
    assert not np.array_equal(opt.covariance, np.eye(14))
    drive(opt, space, history, 12)
    assert opt.generation == 2
    config = opt.mean_config()
    assert [n for n, v in config.items() if space.params[n].check(v)] == []


def test_peek_changes_nothing(space):
    opt, history = start("cmaes", space, seed=4)
    for _ in range(3):
        drive(opt, space, history, 5)
        before = pickle.dumps(opt)
        peeked = [opt.peek(), opt.peek()]
        assert pickle.dumps(opt) == before
        assert peeked[0] == peeked[1] == opt.ask(history).values
        opt.tell(EditHyperparameters(peeked[0]), TrialRecord(len(history), "ok", peeked[0], 1.3))
        history.append(TrialRecord(len(history), "ok", peeked[0], 1.3))


def test_an_injected_proposal_is_a_member_of_the_generation(space):
    opt, history = start("cmaes", space)
    drive(opt, space, history, 2)
    nxt = opt.peek()
    members = len(opt.solutions)  # baseline, two trials, and any infeasible samples told
    proposal = {**space.defaults(), "MATRIX_LR": 0.0123, "DEPTH": space.params["DEPTH"].high}
    opt.tell(EditHyperparameters(proposal, "llm"), TrialRecord(3, "ok", proposal, 0.9))
    x, value = opt.solutions[-1]
    np.testing.assert_array_equal(x, opt.encoding.encode(proposal))
    assert value == 0.9 and len(opt.solutions) == members + 1
    assert space.errors(nxt) == []  # the candidate it would have run, shown to the LLM


def test_tells_are_matched_by_config_not_order(space):
    opt, history = start("cmaes", space)
    batch = [opt.ask(history) for _ in range(3)]
    xs = [x.copy() for _, _, x in opt.memory.pending]
    for n, i in enumerate((2, 0, 1), start=1):
        opt.tell(batch[i], TrialRecord(n, "ok", batch[i].values, 1.0 + i))
    told = {float(v): x for x, v in opt.solutions[1:]}
    for i in range(3):
        np.testing.assert_array_equal(told[1.0 + i], xs[i])


def test_a_batch_larger_than_the_generation_spills_into_the_next(space):
    space = dataclasses.replace(space, constraints=())
    opt, history = start("cmaes", space)
    batch = [opt.ask(history) for _ in range(12)]  # the baseline was candidate 1 of generation 1
    assert batch[9].rationale == "generation 1, candidate 11/11"
    assert batch[10].rationale == "generation 2, candidate 1/11"
    for n, action in enumerate(reversed(batch), start=1):
        opt.tell(action, TrialRecord(n, "oom" if n % 3 == 0 else "ok", action.values,
                                     None if n % 3 == 0 else 1.0 + n / 100))
    assert opt.generation == 1 and len(opt.solutions) == 2


def test_infeasible_candidates_are_told_as_failures_without_a_trial():
    space = space_of("cpu")
    shallow = dataclasses.replace(space, constraints=(Constraint("DEPTH <= 4", "shallow"),))
    opt, history = start("cmaes", shallow)
    drive(opt, shallow, history, 6)
    internal = [o for o in opt.observations if o.trial is None]
    assert internal and all(o.status == "infeasible" for o in internal)
    assert all(o.config["DEPTH"] > 4 for o in internal)
    assert internal[0].value == pytest.approx(failure_value(history[:1]))
    assert len(opt.observations) == len(history) + len(internal)
