"""Random search: every configuration drawn independently of every result."""

from __future__ import annotations

import numpy as np

from agent.edit.actions import Action, EditHyperparameters
from agent.edit.block import Value
from agent.edit.space import SearchSpace
from agent.optimizers.base import TrialContext, TrialRecord
from agent.optimizers.encoding import MAX_ATTEMPTS, Memory, derive_seed, unmeetable


class RandomSearch:
    """Uniform draws from the space: a uniform point of the unit cube, decoded (so log
    parameters are log-uniform, powers of two uniform over their exponent, ints and the
    categorical uniform over their values). A draw that breaks a constraint of the space is
    drawn again, without spending a trial (at most 100 draws per ask, then RuntimeError).
    Each ask's generator is seeded from (seed, number of asks so far), so the sequence is fixed
    by the seed alone and a pickle resumes it exactly.

    Failure policy: random search ignores outcomes; a failure is recorded as the worst success
    seen so far plus a margin only so that its observations read like every other optimizer's.
    """

    name = "random"
    failure_policy = ("Random search ignores outcomes; a failure is recorded as the worst "
                      "success seen so far plus a margin only so its observations read like "
                      "every other optimizer's.")
    max_attempts = MAX_ATTEMPTS  # samples per ask before the constraints are called unmeetable

    def __init__(self, space: SearchSpace, seed: int, baseline: dict[str, Value]):
        self.space, self.seed, self.memory = space, int(seed), Memory(space, baseline)
        self.n_asked = 0

    @property
    def observations(self):
        return self.memory.observations

    def ask(self, history: list[TrialRecord], pending: list[TrialRecord] = (),
            ctx: TrialContext | None = None) -> Action:
        rng = np.random.default_rng(derive_seed(self.seed, self.n_asked))
        encoding = self.memory.encoding
        for _ in range(self.max_attempts):
            config = encoding.decode(rng.random(encoding.dim))
            if not self.space.errors(config):
                self.n_asked += 1
                return EditHyperparameters(config, f"sample {self.n_asked}")
        raise unmeetable(self.name, self.max_attempts, self.space)

    def warm_start(self, earlier: list[TrialRecord]) -> None:
        """Nothing: random search draws as it would whatever came before."""

    def tell(self, action: Action, record: TrialRecord) -> None:
        told = self.memory.learn(action, record)
        if told.config is not None:
            self.memory.observe(told.config, told.value, record.status, record.number)
