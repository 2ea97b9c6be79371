"""TPE (Optuna's TPESampler) over the search space, rebuilt from our own observations."""

from __future__ import annotations

import math

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial

from agent.edit.actions import Action, EditHyperparameters
from agent.edit.block import Value
from agent.edit.space import Param, SearchSpace
from agent.optimizers.base import TrialContext, TrialRecord
from agent.optimizers.encoding import (
    MAX_ATTEMPTS,
    Memory,
    derive_seed,
    exponent,
    last_reported,
    unmeetable,
)

N_STARTUP_TRIALS = 10  # Optuna's default: this many completed trials are sampled at random


class TPE:
    """Tree-structured Parzen Estimator, Optuna's `TPESampler` with its defaults
    (n_startup_trials=10, so the told baseline plus nine random draws come before any
    modelling; multivariate for a single objective) and `constant_liar=True`: configurations
    asked but not yet told (trials running on parallel workers) enter the model as RUNNING
    trials, which the liar counts among the worst, so a batch spreads out.

    No Optuna study or storage is kept (they hold locks and do not pickle): the optimizer keeps
    its own (config, value) observations and builds an in-memory study for every sample, with
    a sampler seeded from (seed, number of samples so far). An ask therefore depends only on the
    seed and the tells before it, and the pickle of this object is its whole resume state.

    Distributions: ints are IntDistribution, floats FloatDistribution (log where the space says
    so), powers of two an IntDistribution over the exponent, the categorical a
    CategoricalDistribution. A sample that breaks a constraint of the space (e.g.
    TOTAL_BATCH_SIZE < DEVICE_BATCH_SIZE * SEQ_LEN) is told to the model as a failure and TPE
    samples again, without spending a trial (at most 100 samples per ask, then RuntimeError).

    Failure policy: a failed trial (and an infeasible sample) is told as the worst success seen
    so far plus a margin, so TPE ranks it among the worst without a far-off constant. A pruned
    trial (stopped early, agent/watch.py) is told as Optuna tells one: a PRUNED trial with its
    last reported loss, which TPE ranks after every completed trial, the later-stopped and
    lower-loss ones first.
    """

    name = "tpe"
    failure_policy = ("A failed trial, or a sample that breaks the space's constraints, is told "
                      "as the worst success seen so far plus a margin, so TPE ranks it among "
                      "the worst without a far-off constant. A pruned trial is told as "
                      "Optuna's PRUNED trial with its last reported loss.")
    max_attempts = MAX_ATTEMPTS  # samples per ask before the constraints are called unmeetable

    def __init__(self, space: SearchSpace, seed: int, baseline: dict[str, Value]):
        self.space, self.seed = space, int(seed)
        self.memory = Memory(space, baseline)  # observations, and the asks not yet told
        self.distributions = {n: _distribution(p) for n, p in space.params.items()}
        self.n_asked = 0  # proposals returned
        self.n_samples = 0  # samples drawn, infeasible ones included; seeds the next one

    @property
    def observations(self):
        return self.memory.observations

    # -- the study, rebuilt ------------------------------------------------------------------

    def study(self) -> optuna.Study:
        """A fresh in-memory study holding every observation (COMPLETE) and every pending
        ask (RUNNING), with the sampler the next sample will use."""
        sampler = optuna.samplers.TPESampler(seed=derive_seed(self.seed, self.n_samples),
                                             constant_liar=True)
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one "study created" per sample
        try:
            study = optuna.create_study(direction="minimize", sampler=sampler)
        finally:
            optuna.logging.set_verbosity(verbosity)
        for obs in self.observations:
            if obs.status == "pruned":  # as Optuna's own pruned trial: ranked by its last
                study.add_trial(create_trial(  # reported loss, after every completed one
                    state=TrialState.PRUNED, params=self._params(obs.config),
                    distributions=self.distributions,
                    intermediate_values=getattr(obs, "intermediate", None) or {}))
                continue
            study.add_trial(create_trial(params=self._params(obs.config),
                                         distributions=self.distributions, value=obs.value))
        for _, config, _ in self.memory.pending:
            study.add_trial(create_trial(state=TrialState.RUNNING, params=self._params(config),
                                         distributions=self.distributions))
        return study

    def _sample(self) -> dict[str, Value]:
        trial = self.study().ask(self.distributions)
        self.n_samples += 1
        return self._config(trial.params)

    # -- the protocol ------------------------------------------------------------------------

    def ask(self, history: list[TrialRecord], pending: list[TrialRecord] = (),
            ctx: TrialContext | None = None) -> Action:
        for _ in range(self.max_attempts):
            startup = len(self.observations) < N_STARTUP_TRIALS
            config = self._sample()
            if not self.space.errors(config):
                self.memory.asked(config)
                self.n_asked += 1
                note = " (random start-up)" if startup else ""
                return EditHyperparameters(config, f"sample {self.n_asked}{note}")
            self.memory.observe(config, self.memory.failure_value(), "infeasible", None)
        raise unmeetable(self.name, self.max_attempts, self.space)

    def warm_start(self, earlier: list[TrialRecord]) -> None:
        """The earlier trials join the observations as if told (each with the failure
        policy), so the model starts from them: past N_STARTUP_TRIALS, with no random
        start-up."""
        for record in earlier:
            self.tell(EditHyperparameters(record.config, "earlier"), record)

    def tell(self, action: Action, record: TrialRecord) -> None:
        told = self.memory.learn(action, record)
        if told.config is None:
            return
        config = self.memory.encoding.project(told.config)  # a foreign one may lie outside
        if config is not None:
            self.memory.observe(config, told.value, record.status, record.number,
                                last_reported(record) if record.status == "pruned" else None)

    # -- configs <-> Optuna params -----------------------------------------------------------

    def _params(self, config: dict[str, Value]) -> dict[str, Value]:
        """Optuna's view of a configuration in the space (exponents for powers of two)."""
        return {n: exponent(config[n]) if p.power_of_two else config[n]
                for n, p in self.space.params.items()}

    def _config(self, params: dict[str, Value]) -> dict[str, Value]:
        return {n: params[n] if p.type == "categorical"
                else p.nearest(2 ** int(params[n]) if p.power_of_two else params[n])[0]
                for n, p in self.space.params.items()}


def _distribution(p: Param) -> BaseDistribution:
    if p.type == "categorical":
        return CategoricalDistribution(p.choices)
    if p.power_of_two:
        grid = p.grid()
        return IntDistribution(exponent(grid[0]), exponent(grid[-1]))
    if p.type == "int":
        return IntDistribution(math.ceil(p.low), math.floor(p.high), log=p.log)
    return FloatDistribution(float(p.low), float(p.high), log=p.log)
