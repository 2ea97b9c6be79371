"""CMA-ES (the `cmaes` library's CMA) in the unit cube of the search space."""

from __future__ import annotations

import copy

import numpy as np
from cmaes import CMA, get_warm_start_mgd

from agent.edit.actions import Action, EditHyperparameters
from agent.edit.block import SpaceError, Value
from agent.edit.space import SearchSpace
from agent.optimizers.base import TrialContext, TrialRecord
from agent.optimizers.encoding import MAX_ATTEMPTS, Memory, unmeetable

# Initial step size in the unit cube: one standard deviation is a fifth of every range (a
# fifth of each log range for learning rates), so the first generation explores around the
# baseline without most samples landing on the cube's walls.
SIGMA0 = 0.2


class CMAES:
    """CMA-ES from `cmaes.CMA` over the unit cube of `Encoding`, bounds [0, 1]^d, mean at the
    encoded baseline, sigma0 = 0.2, the library's default population size (4 + 3 ln d, 11 for
    the 14 hyperparameters) and seed = seed.

    Asks are one solution at a time; the x of each is kept until its tell arrives, matched by
    configuration (not by order), and once a generation's worth (population_size) of (x, value)
    pairs is collected they go to `CMA.tell`. A told configuration that was not asked (the
    baseline; Centaur's LLM proposals) is encoded and counted as a member of the generation.
    Asks made while earlier ones still run (parallel workers) are further members of the
    current generation; beyond its size they are counted into the next one.
    A candidate that breaks a constraint of the space is told as a failure at once and
    CMA-ES samples again, without spending a trial (at most 100 samples, then RuntimeError).

    Centaur reads `mean_config()`, `sigma` and `covariance`, injects proposals through `tell`,
    and sees CMA-ES's own next candidate through `peek()`, which changes nothing.

    Failure policy: a failed trial (and an infeasible candidate) is told as the worst success
    seen so far plus a margin, so it ranks last in its generation without the far-off constant
    (100.0) that dragged the published CMA-ES into out-of-memory regions. A pruned trial
    (stopped early, agent/watch.py) is never told its early loss as a value (a train loss at
    25 % of the budget is not a val_bpb, and would rank it among the finished ones): it is
    told as a failure, ranked last in its generation. CMA-ES uses only ranks, and a trial the
    pruner stopped was worse than the completed trials at the same point, so the bottom of its
    generation is what the evidence says; dropping it instead would leave CMA-ES to learn only
    from the survivors and refill the generation elsewhere.
    """

    name = "cmaes"
    failure_policy = ("A failed trial, or a candidate that breaks the space's constraints, is "
                      "told as the worst success seen so far plus a margin, so it ranks last in "
                      "its generation without a far-off constant that distorts the update. A "
                      "pruned trial is told the same way: ranked last, never its early loss.")
    max_attempts = MAX_ATTEMPTS  # samples per ask before the constraints are called unmeetable

    def __init__(self, space: SearchSpace, seed: int, baseline: dict[str, Value],
                 sigma0: float = SIGMA0, population_size: int | None = None):
        self.space = space
        self.seed = int(seed)
        self.memory = Memory(space, baseline)  # observations, and the asks not yet told
        self.encoding = self.memory.encoding
        d = self.encoding.dim
        # RandomState takes seeds in [0, 2**32); every usual seed passes through unchanged.
        self.cma = CMA(mean=self.encoding.encode(baseline), sigma=sigma0,
                       bounds=np.tile([0.0, 1.0], (d, 1)), seed=self.seed % 2**32,
                       population_size=population_size)
        self.n_asked = 0
        self.solutions: list[tuple[np.ndarray, float]] = []  # this generation's told members

    @property
    def observations(self):
        return self.memory.observations

    # -- what Centaur shows an LLM -----------------------------------------------------------

    @property
    def mean(self) -> np.ndarray:
        """The distribution's mean in the unit cube (a copy)."""
        return self.cma.mean.copy()

    def mean_config(self) -> dict[str, Value]:
        """The mean in real units: every value in its bounds; constraints not guaranteed."""
        return self.encoding.decode(self.cma.mean)

    @property
    def sigma(self) -> float:
        """The step size, in unit-cube coordinates."""
        return float(self.cma._sigma)

    @property
    def covariance(self) -> np.ndarray:
        """C, d x d in unit-cube coordinates (the sampling covariance is sigma**2 * C);
        a read-only copy."""
        c = np.array(self.cma._C, copy=True)
        c.flags.writeable = False
        return c

    @property
    def population_size(self) -> int:
        return self.cma.population_size

    @property
    def generation(self) -> int:
        """Generations completed (CMA.tell calls)."""
        return self.cma.generation

    def peek(self) -> dict[str, Value]:
        """The configuration the next `ask` will return, without changing this optimizer."""
        return copy.deepcopy(self).ask([]).values

    # -- the protocol ------------------------------------------------------------------------

    def ask(self, history: list[TrialRecord], pending: list[TrialRecord] = (),
            ctx: TrialContext | None = None) -> Action:
        for _ in range(self.max_attempts):
            x = self.cma.ask()
            config = self.encoding.decode(x)
            if not self.space.errors(config):
                slot = len(self.solutions) + len(self.memory.pending)
                generation = self.cma.generation + slot // self.population_size + 1
                candidate = slot % self.population_size + 1
                self.memory.asked(config, x)
                self.n_asked += 1
                return EditHyperparameters(config, f"generation {generation}, candidate "
                                                   f"{candidate}/{self.population_size}")
            self._learn(x, config, self.memory.failure_value(), "infeasible", None)
        raise unmeetable(self.name, self.max_attempts, self.space)

    def warm_start(self, earlier: list[TrialRecord]) -> None:
        """The cmaes library's warm start (WS-CMA-ES, Nomura et al., AAAI 2021): the mean,
        step size and covariance of a Gaussian fitted to the best earlier solutions (the top
        share `gamma`, at least 3 of them), in place of the baseline-centred start. Every
        earlier trial counts for the failure value; fewer than 2 successes change nothing."""
        source = []
        for record in earlier:
            self.memory.remember(record)
            if record.ok:
                try:
                    source.append((self.encoding.encode(record.config), record.val_bpb))
                except SpaceError:
                    continue
        if len(source) < 2:
            return
        mean, sigma, cov = get_warm_start_mgd(source, gamma=min(1.0, max(0.1, 3 / len(source))),
                                              alpha=0.1)
        d = self.encoding.dim
        self.cma = CMA(mean=np.clip(mean, 0.0, 1.0), sigma=sigma, cov=cov,
                       bounds=np.tile([0.0, 1.0], (d, 1)), seed=self.seed % 2**32,
                       population_size=self.cma.population_size)

    def tell(self, action: Action, record: TrialRecord) -> None:
        told = self.memory.learn(action, record)
        if told.config is None:
            return
        x = told.payload  # the point asked for it, or the told config placed in the cube
        if not told.asked:
            try:
                x = self.encoding.encode(told.config)
            except SpaceError:
                return  # an unknown category: nothing CMA-ES can place in its cube
        self._learn(x, told.config, told.value, record.status, record.number)

    def _learn(self, x: np.ndarray, config: dict[str, Value], value: float, status: str,
               trial: int | None) -> None:
        self.memory.observe(config, value, status, trial)
        self.solutions.append((x, value))
        if len(self.solutions) >= self.population_size:
            self.cma.tell(self.solutions[: self.population_size])
            self.solutions = self.solutions[self.population_size:]

    # -- resume ------------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        # cmaes pickles CMA without its random generator and with C re-symmetrised from one
        # triangle, so a resumed run would sample differently; keep its attributes exactly.
        state = self.__dict__.copy()
        state["cma"] = dict(self.cma.__dict__)
        return state

    def __setstate__(self, state: dict) -> None:
        cma = CMA.__new__(CMA)
        cma.__dict__.update(state.pop("cma"))
        self.__dict__.update(state, cma=cma)
