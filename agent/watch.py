"""What a running trial is checked against as its curve comes in (DESIGN.md, "Learning
curves, early stopping, in-process preflight"): the early-stopping rule, the divergence
guard and the in-process preflight.

The session writes the checks as plain data (`WatchSpec.to_dict`, shipped with the job, so a
Ray node builds the same `Watch`); the sandbox feeds each curve point and the probe's line to
it (sandbox/curve.py), and kills the trial on the first `Stop`.

**Early stopping** is Optuna's: the spec holds the trials told before this one was proposed
(trials 0 .. n - slots, the same set however long each trial took, so a resumed session
decides exactly as an uninterrupted one), each as the loss it had at each decision point, its
state (complete, pruned, failed) and val_bpb. The watch replays them into an in-memory study
in trial order, each reporting its decision points and asking the pruner as it did while it
ran, then told as it ended; the running trial then reports each decision point it reaches and
is stopped when the pruner says so. Steps are progress in thousandths (0.25 -> 250), so every
trial's step means the same share of its budget. Median and percentile pruners compare a value
only with completed trials at the same step; none decides before `min_trials` trials
completed. Rules: `median`, `percentile[:P]` (keep the best P %, default 25), `hyperband`
(rungs from the first decision point, reduction factor 3), `threshold:X` (loss above X).

**The divergence guard** (on unless --prune none --no-guard): a non-finite loss stops the
trial at once (status `diverged`); from 25 % of the budget on, a loss above the incumbent's at
the same progress by a margin stops it (status `pruned`). The margin is the larger of half
the incumbent's loss there and ten times the seed spread of the baseline's loss
there (its runs at several seeds, where the gate made them).

**In-process preflight**: the probe's line (`preflight: ok peak_memory_mb ...`) is checked as a
separate probe's summary is (agent/loop/preflight.py): a peak too close to the host limit
stops it as `oom` (then the repair path runs), a predicted step count below --min-steps as
`rejected`; otherwise it trains on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from agent.curves import value_at
from sandbox.curve import Stop

RULES = ("none", "median", "percentile", "hyperband", "threshold")
DEFAULT_POINTS = (0.25, 0.45)
# The far-worse check starts at a quarter of the budget, with the pruner's first point: on
# 60-s cpu trials a bigger model or a smaller batch is still near 5.5 at 5-8 % while the
# baseline is at 4.4 (`benchmarks/preflight_oom.py`: 5 of 8 trials stopped there at 5 %),
# which says nothing about where it ends.
GUARD_FROM = 0.25
GUARD_SHARE = 0.5  # margin: this share of the incumbent's loss at the point ...
GUARD_SIGMAS = 10.0  # ... or this many seed spreads of the baseline's loss there
STUDY_NAME = "autoresearch-prune"  # Hyperband's brackets hash it with each trial's number
_QUIET = False  # Optuna's "study created" / "trial finished" lines, once turned off


def _quiet_optuna() -> None:
    """Optuna logs a line per study and per trial: the watch makes thousands. Turned down to
    warnings once, for the process (not saved and restored around each replay, which
    several reader threads would race on)."""
    global _QUIET
    if not _QUIET:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        _QUIET = True
# A probe whose peak is above this share of the host limit counts as an OOM (the full run's
# peak grew by up to 12 % over the probe's on the cpu preset; agent/loop/preflight.py)
HEADROOM = 0.85


def step_of(progress: float) -> int:
    """Optuna's step for a progress fraction: thousandths of the budget."""
    return int(round(progress * 1000))


def finite_at(curve, progress: float) -> float | None:
    """The loss of the first [progress, loss] pair at or after `progress` (agent/curves.py);
    None where the curve ends before it or its loss there was not finite."""
    value = value_at(curve, progress)
    return value if value is not None and math.isfinite(value) else None


def parse_rule(text: str) -> tuple[str, float | None]:
    """`median`, `percentile:30`, `threshold:4.5`, ... -> (name, parameter); ValueError with
    what to write."""
    name, _, arg = (text or "none").strip().lower().partition(":")
    if name not in RULES:
        raise ValueError(f"--prune {text!r}: use one of {', '.join(RULES)} "
                         "(percentile:P and threshold:X take a number)")
    if name == "threshold" and not arg:
        raise ValueError("--prune threshold needs its loss bound: --prune threshold:4.5")
    if name not in ("percentile", "threshold") and arg:
        raise ValueError(f"--prune {name} takes no parameter")
    value = None
    if arg:
        try:
            value = float(arg)
        except ValueError:
            raise ValueError(f"--prune {text!r}: {arg!r} is not a number") from None
        if not math.isfinite(value) or (name == "percentile" and not 0 < value < 100):
            raise ValueError(f"--prune {text!r}: the percentile must be between 0 and 100")
    return name, value


def make_pruner(rule: str, points: list[float], min_trials: int):
    """The Optuna pruner for a rule (None for `none`)."""
    import optuna

    name, arg = parse_rule(rule)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=min_trials,
                                           n_min_trials=max(min_trials, 1))
    if name == "percentile":
        return optuna.pruners.PercentilePruner(arg or 25.0, n_startup_trials=min_trials,
                                               n_min_trials=max(min_trials, 1))
    if name == "hyperband":  # over the decision window: its brackets decide inside it
        first, last = (step_of(min(points)), step_of(max(points))) if points else (1, 1000)
        return optuna.pruners.HyperbandPruner(min_resource=max(first, 1),
                                              max_resource=max(last, first + 1),
                                              reduction_factor=3)
    if name == "threshold":
        return optuna.pruners.ThresholdPruner(upper=arg)
    return None


@dataclass
class Told:
    """A trial the pruner's study holds: its loss at each decision point (None where its
    curve had none), how it ended, and its val_bpb."""

    values: list[float | None]
    state: str  # complete, pruned, fail
    value: float | None = None


@dataclass
class WatchSpec:
    """Everything a Watch checks, as data."""

    number: int = 0
    rule: str = "none"
    points: list[float] = field(default_factory=lambda: list(DEFAULT_POINTS))
    min_trials: int = 3
    history: list[Told] = field(default_factory=list)
    guard: bool = True
    guard_until: float = 0.5  # the guard acts before this progress (the warm-down's start)
    incumbent: list[list[float | None]] = field(default_factory=list)  # its curve
    spread: list[list[float]] = field(default_factory=list)  # [progress, seed std] pairs
    preflight: dict | None = None  # limit_mb, min_steps, time_budget, token_steps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> WatchSpec:
        data = dict(data)
        data["history"] = [Told(**t) for t in data.get("history", [])]
        return cls(**data)


class Watch:
    """The checks of one running trial (see the module's docstring)."""

    def __init__(self, spec: WatchSpec):
        """Built before the trial starts (by the executor, on the node that runs it): the
        study is replayed here, so the reader thread only reports and asks."""
        self.spec = spec
        self.pending = sorted(spec.points) if parse_rule(spec.rule)[0] != "none" else []
        done = sum(t.state == "complete" for t in spec.history)
        self._trial = None
        if self.pending and done >= spec.min_trials:
            study = replay_study(spec)
            self._trial = study.ask() if study is not None else None
        elif done < spec.min_trials:
            self.pending = []  # no rule decides before min_trials completed

    def point(self, point: dict) -> Stop | None:
        progress, loss = point["progress"], point["loss"]
        if not math.isfinite(loss):
            return Stop("diverged", f"loss became {loss} at {progress:.0%} of the budget "
                                    f"(step {point['step']})")
        stop = self._guard(progress, loss) if self.spec.guard else None
        while stop is None and self.pending and progress >= self.pending[0] - 1e-9:
            stop = self._decide(self.pending.pop(0), loss)
        return stop

    def preflight(self, numbers: dict[str, float]) -> Stop | None:
        return probe_verdict(numbers, self.spec.preflight) if self.spec.preflight else None

    # -- the divergence guard --------------------------------------------------------------
    def ceiling(self, progress: float) -> float | None:
        """The loss above which the guard stops a trial at `progress` (None: no guard)."""
        if not GUARD_FROM <= progress < self.spec.guard_until or not self.spec.incumbent:
            return None
        best = finite_at(self.spec.incumbent, progress)
        if best is None:
            return None
        spread = finite_at(self.spec.spread, progress) or 0.0
        return best + max(GUARD_SHARE * best, GUARD_SIGMAS * spread)

    def _guard(self, progress: float, loss: float) -> Stop | None:
        ceiling = self.ceiling(progress)
        if ceiling is None or loss <= ceiling:
            return None
        return Stop("pruned", f"divergence guard at {progress:.0%}: loss {loss:.4f} is above "
                              f"{ceiling:.4f}, the incumbent's there plus its margin")

    # -- early stopping --------------------------------------------------------------------
    def _decide(self, point: float, loss: float) -> Stop | None:
        trial = self._trial
        if trial is None:
            return None
        trial.report(loss, step_of(point))
        if not trial.should_prune():
            return None
        completed = [t.values[self.spec.points.index(point)] for t in self.spec.history
                     if t.state == "complete"]
        completed = [v for v in completed if v is not None]
        name = parse_rule(self.spec.rule)[0]
        middle = sorted(completed)[len(completed) // 2] if completed else None
        against = f"; completed trials' median there {middle:.4f} of {len(completed)}" \
            if middle is not None else ""
        return Stop("pruned", f"by {name}: loss {loss:.4f} at {point:.0%}{against}")


def replay_study(spec: WatchSpec):
    """The in-memory study of the told trials, in trial order, each with its loss at the
    decision points as intermediate values and ended as it ended. Hyperband's successive
    halving keeps, per trial, the value it met at each rung: there each trial reports its
    points and asks the pruner as it did while it ran; the other pruners read only the
    intermediate values, and the trials are added as they are (linear, not one ask each)."""
    import optuna
    from optuna.trial import TrialState

    pruner = make_pruner(spec.rule, spec.points, spec.min_trials)
    if pruner is None:
        return None
    _quiet_optuna()
    study = optuna.create_study(study_name=STUDY_NAME, direction="minimize", pruner=pruner,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    states = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}
    if parse_rule(spec.rule)[0] != "hyperband":
        study.add_trials([_frozen(t, spec.points) for t in spec.history])
        return study
    for told in spec.history:
        trial = study.ask()
        for step, value in reported(spec.points, told.values).items():
            trial.report(value, step)
            trial.should_prune()  # the rung records Hyperband keeps
        if told.state == "complete" and told.value is not None:
            study.tell(trial, told.value)
        else:
            study.tell(trial, state=states.get(told.state, TrialState.FAIL))
    return study


def _frozen(told: Told, points: list[float]):
    """A told trial as Optuna stores a finished one."""
    from optuna.trial import TrialState, create_trial

    values = reported(points, told.values)
    if told.state == "complete" and told.value is not None:
        return create_trial(state=TrialState.COMPLETE, value=told.value,
                            intermediate_values=values)
    state = TrialState.PRUNED if told.state == "pruned" else TrialState.FAIL
    return create_trial(state=state, intermediate_values=values)


def reported(points: list[float], values: list[float | None]) -> dict[int, float]:
    """{step: loss} of the decision points a trial reached, in order, up to its first gap."""
    out = {}
    for point, value in zip(points, values, strict=False):
        if value is None:
            break
        out[step_of(point)] = value
    return out


def probe_verdict(numbers: dict[str, float], spec: dict) -> Stop | None:
    """A probe's verdict from its numbers (peak_memory_mb, step_seconds) and the session's
    limits (`spec`: limit_mb, min_steps, time_budget, token_steps)."""
    peak, limit = numbers.get("peak_memory_mb"), spec.get("limit_mb")
    if limit and isinstance(peak, float) and peak > HEADROOM * limit:
        return Stop("oom", f"preflight peak {peak:.0f} MB is above {HEADROOM:.0%} of the "
                           f"{limit:.0f} MB host memory limit: the full run would be killed")
    predicted = predicted_steps(numbers.get("step_seconds"), spec)
    min_steps = spec.get("min_steps")
    if min_steps and predicted is not None and predicted < min_steps:
        return Stop("rejected", f"preflight predicts {predicted} steps in the budget, fewer "
                                f"than --min-steps {min_steps}")
    return None


def predicted_steps(step_s, spec: dict) -> int | None:
    """The steps the budget allows: fixed under a token budget, else budget / step time."""
    if spec.get("token_steps"):
        return int(spec["token_steps"])
    if isinstance(step_s, float) and step_s > 0 and spec.get("time_budget"):
        return int(spec["time_budget"] / step_s)
    return None
