"""What trackers are shown of a session and of each trial, built from the run folder alone
(session.toml, the notes, git, trials/NNNN/): the live session and `autoresearch track`'s
backfill of a finished one send the same thing.

Every text comes from a trial, an LLM or a folder that may be someone else's: it is cleaned
of control characters (agent/text.py) and capped before a tracker stores it."""

from __future__ import annotations

from datetime import datetime

from agent.config.settings import SessionConfig
from agent.edit.space import SearchSpace
from agent.protocols import TrackedSession, TrackedTrial
from agent.record.note import TrialNote
from agent.record.rundir import RunDir
from agent.record.workspace import Workspace
from agent.text import clean

TAG_CHARS = 4000  # MLflow keeps 8,000 per tag, W&B and Optuna more: one cap for all
LOG_CHARS = 100_000  # the log's head and tail, each half of it

# the numbers of a trial: (metric name, where in the note's result it is)
RESULT_METRICS = (("training_s", ("training_s",)), ("peak_memory_mb", ("peak_memory_mb",)),
                  ("tokens_per_second", ("metrics", "tokens_per_second")),
                  ("mfu_percent", ("metrics", "mfu_percent")),
                  ("num_steps", ("metrics", "num_steps")),
                  ("num_params_M", ("metrics", "num_params_M")),
                  ("stopped_at", ("stopped_at",)))


def session_view(rd: RunDir, config: SessionConfig, space: SearchSpace, ws: Workspace,
                 group: str = "") -> TrackedSession:
    """The session's record: its settings as params, what identifies it as tags."""
    budget = (f"{config.trials} trials" if config.trials is not None else
              f"{config.cost_s:g} s of cost" if config.cost_s else
              f"{config.budget_s:g} s" if config.budget_s else "")
    params = {"method": config.method, "seed": config.seed, "preset": space.preset or "none",
              "model": config.model or ("built-in" if config.method in ("centaur", "llm-hpo",
                                                                         "code-agent") else ""),
              "budget": budget, "time_budget": config.time_budget,
              "token_budget": config.token_budget, "sandbox": config.sandbox,
              "workers": config.workers, "confirm": config.confirm, "prune": config.prune,
              "score": config.scoring, "space": ",".join(space.names),
              "baseline_commit": ws.baseline}
    return TrackedSession(
        key=str(rd.root.resolve()), name=rd.root.name, group=group,
        params={k: clean(v, one_line=True)[:500] for k, v in params.items()
                if v is not None and v != ""},
        tags={"autoresearch.run_dir": str(rd.root.resolve()), "method": config.method,
              "seed": str(config.seed), "baseline_commit": ws.baseline},
        space={name: {"type": p.type, "low": p.low, "high": p.high, "log": p.log,
                      "choices": list(p.choices), "power_of_two": p.power_of_two}
               for name, p in space.params.items()})


def _dig(data: dict, path: tuple[str, ...]):
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None


def _ms(stamp: str) -> int | None:
    try:
        return int(datetime.fromisoformat(stamp).timestamp() * 1000)
    except (TypeError, ValueError):
        return None


def _log(rd: RunDir, note: TrialNote) -> str:
    path = rd.trial_log(note.trial, note.result)
    if path is None:
        return ""
    text = path.read_bytes()
    if len(text) > LOG_CHARS:
        half = LOG_CHARS // 2
        text = text[:half] + b"\n[... cut here ...]\n" + text[-half:]
    return clean(text.decode("utf-8", "replace"))


def trial_view(rd: RunDir, ws: Workspace, note: TrialNote) -> TrackedTrial:
    """Trial `note` as trackers store it."""
    result = note.result or {}
    metrics = {"val_bpb": note.val_bpb, "best_val_bpb": note.best_val_bpb,
               "cost_s": note.cost_s, "wall_s": note.wall_s, "llm_calls": note.llm_calls,
               "llm_prompt_tokens": (note.tokens or {}).get("prompt", 0),
               "llm_completion_tokens": (note.tokens or {}).get("completion", 0),
               "llm_usd": note.cost_usd}
    metrics.update({name: _dig(result, path) for name, path in RESULT_METRICS})
    metrics = {k: v for k, v in ((k, _number(v)) for k, v in metrics.items()) if v is not None}
    curve = []
    for point in note.curve():
        loss = _number(point[1]) if len(point) > 1 else None
        if loss is not None:
            curve.append((int(round(point[0] * 1000)), loss))
    tags = {"trial": str(note.trial), "status": note.status, "reason": note.reason,
            "method": note.method, "commit": note.commit, "parent_commit": note.parent or "",
            "rationale": note.description, "seed": str(note.seed),
            "is_best_when_recorded": str(bool(note.is_best)).lower()}
    tags = {k: clean(v)[:TAG_CHARS] for k, v in tags.items() if v != ""}
    artifacts = {"train.log": _log(rd, note)}
    if note.diff:
        artifacts["diff_vs_parent.diff"] = clean(note.diff)
    if note.trial > 0:
        artifacts["diff_vs_baseline.diff"] = clean(ws.diff(ws.baseline, note.commit))
    llm = rd.trial(note.trial) / "llm.jsonl"
    if rd.holds(llm) and llm.is_file():
        artifacts["llm.jsonl"] = clean(llm.read_text("utf-8", "replace"))
    start = _ms(note.started_at)
    end = start + int((note.wall_s or 0) * 1000) if start is not None else None
    return TrackedTrial(number=note.trial, status=note.status, val_bpb=_number(note.val_bpb),
                        params=dict(note.config or {}), metrics=metrics, curve=curve,
                        tags=tags, artifacts={k: v for k, v in artifacts.items() if v},
                        start_ms=start or 0, end_ms=end or 0)
