"""Configurations <-> points of the unit cube, and what a tell means to a classical optimizer.

`Encoding` gives every hyperparameter one coordinate in [0, 1]:

- floats map linearly between their bounds, in log space when the space says `log`;
- ints get equal-width bins, [low - 0.5, high + 0.5] mapped onto [0, 1], so every integer owns
  the same share of the cube (the end values too); decoding rounds;
- powers of two are ints over their exponent (HEAD_DIM 16..64 is 4, 5, 6), binned the same way;
- a categorical (WINDOW_PATTERN) is ONE coordinate split into k equal bins, in the order the
  toml lists its choices (ordinal encoding).

Why ordinal and not one-hot: one coordinate per hyperparameter keeps the cube, CMA-ES's mean
and covariance, and what Centaur shows an LLM aligned with the 14 names of the space; one-hot
would add k - 1 coordinates that CMA-ES must adapt only to feed an argmax, and would raise its
default population size. The price is an arbitrary neighbourhood (adjacent choices in the toml
look "close"), acceptable for six patterns: sigma0 = 0.2 spans about one bin either way.
Equal bins make a uniform point of the cube a uniform choice, which random search relies on.

`decode` always returns values that pass `Param.check` (each the `Param.nearest` value of its
coordinate); the space's cross-parameter constraints are the optimizers' job.

The second half holds what random, TPE and CMA-ES share about a tell: which configuration it
is about, the value it teaches (failures as worst success + margin), and seeds per ask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from agent.edit.actions import Action, EditHyperparameters
from agent.edit.block import SpaceError, Value
from agent.edit.space import Param, SearchSpace
from agent.optimizers.base import TrialRecord, failure_value

# How many candidates one ask may draw before it gives up on the space's constraints.
MAX_ATTEMPTS = 100


@dataclass(frozen=True)
class _Axis:
    """One coordinate: the transformed range [lo, hi] that maps onto [0, 1]."""

    param: Param
    lo: float
    hi: float

    def to_unit(self, value: Value) -> float:
        p = self.param
        if p.type == "categorical":
            if value not in p.choices:
                raise SpaceError(f"{p.name} = {value!r} is not one of {', '.join(p.choices)}")
            return (p.choices.index(value) + 0.5) / len(p.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpaceError(f"{p.name} = {value!r} is not a number")
        if not math.isfinite(value):
            raise SpaceError(f"{p.name} = {value!r} is not finite")
        t = _transform(p, min(max(float(value), p.low), p.high))
        return 0.5 if self.hi == self.lo else (t - self.lo) / (self.hi - self.lo)

    def from_unit(self, u: float) -> Value:
        p = self.param
        if p.type == "categorical":
            return p.choices[min(int(u * len(p.choices)), len(p.choices) - 1)]
        t = self.lo + u * (self.hi - self.lo)
        if p.power_of_two:
            return p.nearest(2.0**t)[0]
        return p.nearest(math.exp(t) if p.log else t)[0]


def _transform(p: Param, v: float) -> float:
    if p.power_of_two:
        return math.log2(v)
    return math.log(v) if p.log else v


def exponent(power_of_two: int) -> int:
    return int(power_of_two).bit_length() - 1


def _axis(p: Param) -> _Axis:
    if p.type == "categorical":
        return _Axis(p, 0.0, 1.0)
    if p.power_of_two:
        grid = p.grid()
        return _Axis(p, exponent(grid[0]) - 0.5, exponent(grid[-1]) + 0.5)
    if p.type == "int":
        lo, hi = p.low - 0.5, p.high + 0.5
        return _Axis(p, *((math.log(lo), math.log(hi)) if p.log else (lo, hi)))
    return _Axis(p, _transform(p, p.low), _transform(p, p.high))


class Encoding:
    """A search space as the unit cube [0, 1]^d, one coordinate per hyperparameter."""

    def __init__(self, space: SearchSpace):
        self.space = space
        self.names = space.names
        self._axes = [_axis(space.params[n]) for n in self.names]

    @property
    def dim(self) -> int:
        return len(self.names)

    def encode(self, config: dict[str, Value]) -> np.ndarray:
        """The point of `config` (every name of the space). Numbers outside the bounds are
        clipped onto the boundary, so a told config that left the space still says something
        about the edge it crossed; an unknown category or a non-number raises SpaceError."""
        missing = [n for n in self.names if n not in config]
        if missing:
            raise SpaceError("configuration lacks " + ", ".join(missing))
        return np.array([a.to_unit(config[n]) for n, a in zip(self.names, self._axes,
                                                              strict=True)])

    def decode(self, x: np.ndarray) -> dict[str, Value]:
        """The configuration at point `x` (clipped into the cube): every value snapped and
        inside its bounds. Constraints between parameters are not enforced here."""
        x = np.asarray(x, dtype=float)
        if x.shape != (self.dim,) or not np.all(np.isfinite(x)):
            raise ValueError(f"expected {self.dim} finite coordinates, got {x!r}")
        x = np.clip(x, 0.0, 1.0)
        return {n: a.from_unit(float(u)) for n, a, u in zip(self.names, self._axes, x,
                                                             strict=True)}

    def project(self, config: dict[str, Value]) -> dict[str, Value] | None:
        """`config` moved onto the space as `encode` sees it (numbers clipped into their bounds
        and snapped); None if it cannot be encoded (an unknown category, a missing name)."""
        try:
            return self.decode(self.encode(config))
        except SpaceError:
            return None

    def legend(self) -> list[str]:
        """One line per coordinate saying what 0 and 1 mean in real units (for prompts)."""
        lines = []
        for n, a in zip(self.names, self._axes, strict=True):
            p = a.param
            if p.type == "categorical":
                k = len(p.choices)
                lines.append(f"{n}: {k} equal bins, in order " + ", ".join(p.choices))
            elif p.power_of_two:
                lines.append(f"{n}: log2 scale, 0 -> {p.low}, 1 -> {p.high} (powers of two)")
            else:
                scale = "log scale" if p.log else "linear"
                lines.append(f"{n}: {scale}, 0 -> {p.low}, 1 -> {p.high}")
        return lines


# ---------------------------------------------------------------------------
# What a tell means, the same for random, TPE and CMA-ES.

@dataclass(frozen=True)
class Observation:
    """A configuration and the value the optimizer learned for it. `trial` is None for a
    candidate that broke the space's constraints and was told internally, never run."""

    config: dict[str, Value]
    value: float
    status: str
    trial: int | None
    # a pruned trial's last reported loss, {step: loss} (steps: thousandths of the budget)
    intermediate: dict[int, float] | None = None


def config_key(space: SearchSpace, config: dict[str, Value]) -> tuple:
    """A hashable identity of a configuration, to match a tell to the ask it answers."""
    return tuple(config.get(n) for n in space.names)


def told_config(space: SearchSpace, baseline: dict[str, Value], action: Action,
                record: TrialRecord) -> dict[str, Value] | None:
    """The full configuration a tell is about: the action's values when they name every
    hyperparameter (what was asked), else the record's config, else the action's values over
    the baseline; None when nothing says (a diff whose config the session did not read)."""
    names = space.names
    values = action.values if isinstance(action, EditHyperparameters) else {}
    for candidate in (values, record.config or {}):
        if all(n in candidate for n in names):
            return {n: candidate[n] for n in names}
    if values:
        return {n: values.get(n, baseline[n]) for n in names}
    return None


def told_value(record: TrialRecord, seen: list[TrialRecord]) -> float:
    """val_bpb for a successful trial; any failure (or a non-finite value) is told as the
    worst success seen so far plus a margin (`failure_value`), never a far-off constant."""
    if record.ok and math.isfinite(record.val_bpb):
        return float(record.val_bpb)
    return failure_value(seen)


def last_reported(record: TrialRecord) -> dict[int, float] | None:
    """A pruned trial's last finite loss as Optuna's intermediate value {step: loss} (steps
    in thousandths of the budget, the pruner's steps); None when its curve has none."""
    for progress, loss in reversed(record.curve):
        if loss is not None and math.isfinite(loss):
            return {int(round(progress * 1000)): float(loss)}
    return None


def trimmed(record: TrialRecord) -> TrialRecord:
    """What `failure_value` needs of a record, without its diff and log-sized fields (the
    optimizer's pickle is its resume state and should not grow with them)."""
    ok = record.ok and math.isfinite(record.val_bpb)
    return TrialRecord(record.number, record.status, None, record.val_bpb if ok else None)


@dataclass
class Told:
    """What one tell means to a classical optimizer."""

    config: dict[str, Value] | None  # the configuration it is about; None if unknown
    value: float  # val_bpb, or for a failure the worst success so far plus a margin
    asked: bool  # it answers an ask of this optimizer (not a foreign proposal)
    payload: object = None  # what the optimizer kept with that ask (CMA-ES: its x)


class Memory:
    """What random, TPE and CMA-ES remember: the space as a cube, every told record (trimmed,
    for the failure value), the (configuration, value) observations, and the asks not yet
    told (matched to their tell by configuration, not by order)."""

    def __init__(self, space: SearchSpace, baseline: dict[str, Value]):
        self.space, self.baseline = space, dict(baseline)
        self.encoding = Encoding(space)
        self.seen: list[TrialRecord] = []
        self.observations: list[Observation] = []
        self.pending: list[tuple[tuple, dict[str, Value], object]] = []  # key, config, payload

    def asked(self, config: dict[str, Value], payload: object = None) -> None:
        self.pending.append((config_key(self.space, config), config, payload))

    def learn(self, action: Action, record: TrialRecord) -> Told:
        """Remember the record; which configuration it is about, what value it teaches, and
        whether it answers one of our asks (which is then no longer pending)."""
        config = told_config(self.space, self.baseline, action, record)
        value = told_value(record, self.seen)
        self.seen.append(trimmed(record))
        if config is None:
            return Told(None, value, False)
        key = config_key(self.space, config)
        for i, (asked, _, payload) in enumerate(self.pending):
            if asked == key:
                del self.pending[i]
                return Told(config, value, True, payload)
        return Told(config, value, False)

    def remember(self, record: TrialRecord) -> None:
        """A record that teaches nothing but counts for the failure value."""
        self.seen.append(trimmed(record))

    def observe(self, config: dict[str, Value], value: float, status: str,
                trial: int | None, intermediate: dict[int, float] | None = None) -> None:
        self.observations.append(Observation(config, value, status, trial, intermediate))

    def failure_value(self) -> float:
        return failure_value(self.seen)


def unmeetable(method: str, attempts: int, space: SearchSpace) -> SpaceError:
    rules = "; ".join(c.expr for c in space.constraints) or "none"
    return SpaceError(f"{method}: none of {attempts} candidates met the constraints of the "
                        f"{space.preset or 'default'} space ({rules}); check [[constraints]] "
                        "in search_space.toml")


def derive_seed(*parts: int) -> int:
    """A 32-bit seed that depends on all of `parts` (seed, ask index, ...), so each ask's
    randomness is fixed by the seed and how many asks came before it."""
    return int(np.random.SeedSequence([int(p) % 2**64 for p in parts]).generate_state(1)[0])
