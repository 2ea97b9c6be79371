"""Is a stopping rule safe here? (`autoresearch prune-check`, the check Ax runs before it turns
on its percentile early stopping.)

For each recorded run, the rule (and the divergence guard, unless --no-guard) is replayed over
the recorded curves, in trial order, exactly as a session would have asked it: the same
WatchSpec (agent/loop/watching.py) from the trials before, each trial's curve fed point by
point to the same Watch (agent/watch.py). A trial it stops counts as pruned for the trials
after it, as it would have been. What it reports per run: the trials it would have stopped and
where, the cost saved (at least the unspent share of their training, (1 - progress) x
training seconds; their evaluation is saved too, and not counted), and whether it would have
stopped the run's eventual best or any of its top 3 (by val_bpb, among trials after the
baseline). The proposals themselves would have been the same only for methods that ignore
outcomes: read it as "on these curves", not "in that session".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.config.settings import SessionConfig
from agent.loop.watching import watch_spec
from agent.record.newrun import require_session
from agent.record.note import TrialNote
from agent.record.rundir import RunDir
from agent.watch import Watch


@dataclass
class RunCheck:
    run: str
    rule: str
    checked: int = 0  # trials after the baseline with a curve
    stopped: list[dict] = field(default_factory=list)  # trial, at, by, saved_s, val_bpb
    cost_s: float = 0.0  # the run's recorded cost
    saved_s: float = 0.0
    best: int | None = None
    top3: list[int] = field(default_factory=list)

    @property
    def stopped_best(self) -> bool:
        return self.best is not None and any(s["trial"] == self.best for s in self.stopped)

    @property
    def stopped_top3(self) -> int:
        return sum(s["trial"] in self.top3 for s in self.stopped)

    def to_dict(self) -> dict:
        return {"run": self.run, "rule": self.rule, "checked": self.checked,
                "stopped": self.stopped, "cost_s": round(self.cost_s, 3),
                "saved_s": round(self.saved_s, 3),
                "saved_share": round(self.saved_s / self.cost_s, 4) if self.cost_s else 0.0,
                "best": self.best, "stopped_best": self.stopped_best, "top3": self.top3,
                "stopped_top3": self.stopped_top3}


def check_run(run_dir: Path, rule: str, points: list[float], min_trials: int,
              guard: bool) -> RunCheck:
    rd = RunDir(run_dir)
    require_session(rd)
    config = SessionConfig.load(rd.session_toml).model_copy(update={
        "prune": rule, "prune_at": points, "prune_min_trials": min_trials, "guard": guard})
    notes = {n.trial: n for n in rd.notes(broken=lambda e: None)}
    check = RunCheck(str(run_dir), rule, cost_s=sum(n.cost_s or 0.0 for n in notes.values()))
    ranked = sorted((n for n in notes.values() if n.trial > 0 and n.method != "confirm"
                     and n.status == "ok" and n.val_bpb is not None),
                    key=lambda n: (n.val_bpb, n.trial))
    check.best = ranked[0].trial if ranked else None
    check.top3 = [n.trial for n in ranked[:3]]
    seen: dict[int, TrialNote] = {}  # the notes as they would have been under the rule
    for n in sorted(notes):
        note = notes[n]
        seen[n] = note
        curve = note.curve()
        if n == 0 or note.method == "confirm" or not curve:
            continue
        check.checked += 1
        spec = watch_spec(config, seen, n, note.config, config.workers)
        if spec is None:
            continue
        watch = Watch(spec)
        for step, (progress, loss) in enumerate(curve, 1):
            stop = watch.point({"progress": progress, "step": step,
                                "loss": math.nan if loss is None else loss})
            if stop is not None:
                break
        else:
            continue
        if note.status != "ok" and stop.status == note.status:
            continue  # it ended that way anyway (a NaN the run itself stopped at)
        training = (note.result or {}).get("training_s") or 0.0
        saved = max(0.0, (1 - progress) * training) if note.status == "ok" else 0.0
        check.stopped.append({"trial": n, "at": round(progress, 4), "status": stop.status,
                              "reason": stop.reason, "saved_s": round(saved, 3),
                              "val_bpb": note.val_bpb})
        check.saved_s += saved
        kept = [list(p) for p in curve if p[0] <= progress]
        seen[n] = replace(note, status=stop.status, val_bpb=None,
                          result={**(note.result or {}), "curve": kept,
                                  "status": stop.status, "stopped_at": progress})
    return check


def check_runs(run_dirs: list[Path], rules: list[str], points: list[float], min_trials: int,
               guard: bool) -> list[RunCheck]:
    return [check_run(run, rule, points, min_trials, guard) for rule in rules
            for run in run_dirs]
