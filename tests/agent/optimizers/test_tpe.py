"""TPE specifics: the rebuilt study, constant liar, start-up and distributions."""

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from agent.optimizers.tpe import TPE
from tests.agent.optimizers.test_contract import drive, space_of, start


def test_the_study_holds_the_told_baseline():
    space = space_of("gpu")
    opt, _ = start("tpe", space, baseline_value=0.991)
    trials = opt.study().trials
    assert len(trials) == 1 and trials[0].state == TrialState.COMPLETE
    assert trials[0].value == 0.991
    assert trials[0].params == {**space.defaults(), "HEAD_DIM": 7, "DEVICE_BATCH_SIZE": 7,
                                "TOTAL_BATCH_SIZE": 19}


def test_distributions_follow_the_space():
    opt = TPE(space_of("cpu"), 0, space_of("cpu").defaults())
    assert opt.distributions["DEPTH"] == IntDistribution(2, 8)
    assert opt.distributions["HEAD_DIM"] == IntDistribution(4, 6)  # 16..64 by exponent
    assert opt.distributions["MATRIX_LR"] == FloatDistribution(0.005, 0.2, log=True)
    assert opt.distributions["WEIGHT_DECAY"] == FloatDistribution(0.0, 0.5)
    assert isinstance(opt.distributions["WINDOW_PATTERN"], CategoricalDistribution)


def test_asked_but_untold_configs_are_running_trials_for_the_liar():
    space = space_of("cpu")
    opt, history = start("tpe", space)
    drive(opt, space, history, 12)
    batch = [opt.ask(history) for _ in range(3)]
    study = opt.study()
    running = [t for t in study.trials if t.state == TrialState.RUNNING]
    assert len(running) == 3
    opt.tell(batch[1], history[-1].__class__(len(history), "cuda_oom", batch[1].values))
    assert len(opt.memory.pending) == 2
    assert [c for _, c, _ in opt.memory.pending] == [batch[0].values, batch[2].values]


def test_start_up_is_random_then_tpe():
    space = space_of("cpu")
    opt, history = start("tpe", space)
    actions = drive(opt, space, history, 14)
    assert actions[0].rationale == "sample 1 (random start-up)"
    assert actions[-1].rationale == "sample 14"


def test_asking_leaves_optuna_logging_as_it_was():
    optuna.logging.set_verbosity(optuna.logging.INFO)
    space = space_of("cpu")
    opt, history = start("tpe", space)
    drive(opt, space, history, 2)
    assert optuna.logging.get_verbosity() == optuna.logging.INFO
