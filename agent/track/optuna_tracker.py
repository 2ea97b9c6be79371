"""An Optuna study per session (`--track optuna[:STORAGE]`): every trial of every method, not
only TPE's, as a trial of the study, with the search space's distributions, so that
`optuna-dashboard HOME/optuna.log` shows the session's history, slice, parallel-coordinate
and importance plots.

Default storage: a journal file, HOME/optuna.log (HOME: the run folder, or its bench's
folder, where each session is a study of its own); STORAGE may be another journal file's
path or any RDB URL Optuna takes (sqlite:///..., postgresql://...). A trial is one append
(`study.add_trial`), found again by its user attribute `trial`: resume and backfill add each
trial once. Trial states: ok -> COMPLETE (value val_bpb), pruned -> PRUNED (with its curve as
intermediate values), every failure and refusal -> FAIL (the status in user attributes).
A value outside the space (a code agent may write one) is kept as a user attribute, not as
a parameter, since Optuna refuses a parameter outside its distribution."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from agent.protocols import TrackedSession, TrackedTrial


def distributions(space: dict[str, dict]) -> dict:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out = {}
    for name, p in space.items():
        if p["type"] == "categorical":
            out[name] = CategoricalDistribution(p["choices"])
        elif p["type"] == "int":
            out[name] = IntDistribution(int(p["low"]), int(p["high"]), log=p["log"])
        else:
            out[name] = FloatDistribution(float(p["low"]), float(p["high"]), log=p["log"])
    return out


class OptunaTracker:
    name = "optuna"

    def __init__(self, where: str | None, home: Path):
        self.where, self.home = where, home
        self.study = None
        self.known: set[int] = set()

    def storage(self):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        if self.where and "://" in self.where:
            return self.where  # an RDB URL
        path = Path(self.where) if self.where else self.home / "optuna.log"
        return JournalStorage(JournalFileBackend(str(path)))

    def open(self, session: TrackedSession) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger("optuna").setLevel(logging.WARNING)
        name = f"{session.group}/{session.name}" if session.group else session.name
        self.study = optuna.create_study(study_name=name, storage=self.storage(),
                                         direction="minimize", load_if_exists=True)
        for key, value in {**session.params, "run_dir": session.key}.items():
            self.study.set_user_attr(key, value)
        self.dists = distributions(session.space)
        self.known = {int(t.user_attrs["trial"]) for t in self.study.get_trials(deepcopy=False)
                      if str(t.user_attrs.get("trial", "")).isdigit()}

    def holds(self, number: int) -> bool:
        return number in self.known

    def trial(self, trial: TrackedTrial) -> None:
        import optuna
        from optuna.trial import TrialState

        if trial.number in self.known:
            return
        params, dists, outside = {}, {}, {}
        for name, value in trial.params.items():
            dist = self.dists.get(name)
            if dist is not None and _inside(dist, value):
                params[name], dists[name] = value, dist
            else:
                outside[name] = value
        ok = trial.status == "ok" and trial.val_bpb is not None
        state = TrialState.COMPLETE if ok else TrialState.PRUNED \
            if trial.status == "pruned" else TrialState.FAIL
        attrs = {**trial.tags, **{f"metric.{k}": v for k, v in trial.metrics.items()}}
        if outside:
            attrs["outside_space"] = outside
        attrs["trial"] = str(trial.number)
        frozen = optuna.trial.create_trial(
            state=state, value=trial.val_bpb if ok else None, params=params,
            distributions=dists, user_attrs=attrs,
            intermediate_values={step: loss for step, loss in trial.curve})
        if trial.start_ms:  # the dashboard's times are the trial's, not this call's
            frozen.datetime_start = datetime.fromtimestamp(trial.start_ms / 1000)
            frozen.datetime_complete = datetime.fromtimestamp(
                max(trial.end_ms, trial.start_ms) / 1000)
        self.study.add_trial(frozen)
        self.known.add(trial.number)

    def best(self, number: int | None) -> None:
        if number is not None:
            self.study.set_user_attr("best_trial", number)

    def close(self, finished: bool) -> None:
        self.study.set_user_attr("finished", finished)


def _inside(dist, value) -> bool:
    """Whether `value` lies in `dist` as Optuna will check it (a string in a float
    distribution, a float where an int one wants an int, a bound crossed: no)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(dist, IntDistribution) and not float(value).is_integer():
        return False
    return dist.low <= value <= dist.high
