"""Experiment trackers a session feeds: MLflow, Weights & Biases, an Optuna study
(`--track mlflow[:URI]`, `--track wandb[:PROJECT]`, `--track optuna[:STORAGE]`; the
`Tracker` protocol in agent/protocols.py). Each is an optional extra, imported only when
asked for; agent/track/feed.py sends them the trials without ever holding the session up."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from agent.errors import UserError

# name -> (module that must import, the extra that installs it)
TRACKERS = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb"),
            "optuna": ("optuna", "optuna-dashboard")}


def parse_track(spec: str) -> tuple[str, str | None]:
    """'mlflow' -> ('mlflow', None); 'mlflow:http://h:5000' -> ('mlflow', 'http://h:5000');
    a UserError that says what to write for anything else."""
    name, _, where = spec.strip().partition(":")
    if name not in TRACKERS:
        raise UserError(f"--track {spec}: use mlflow[:URI], wandb[:PROJECT] or "
                        "optuna[:STORAGE]")
    return name, where or None


def missing_extra(name: str) -> str | None:
    module, extra = TRACKERS[name]
    if importlib.util.find_spec(module) is None:
        return (f"--track {name} needs {module}: pip install "
                f"'autoresearch-sandbox[{extra}]' (or pip install {module})")
    return None


def home_of(run_dir: Path) -> Path:
    """Where a session's default stores live: its bench's folder when it is one of a bench's
    sessions (one store, one experiment for the bench), else the run folder."""
    run_dir = Path(run_dir)
    return run_dir.parent if (run_dir.parent / "bench.toml").is_file() else run_dir


def group_of(run_dir: Path) -> str:
    home = home_of(run_dir)
    return home.name if home != Path(run_dir) else ""


def make_tracker(spec: str, run_dir: Path, offline: bool = False):
    """The tracker `spec` names, its stores in the run folder (or its bench's) unless the
    spec says where; `offline` (W&B): never send, whatever key is set."""
    name, where = parse_track(spec)
    problem = missing_extra(name)
    if problem:
        raise UserError(problem)
    home = home_of(run_dir)
    if name == "mlflow":
        from agent.track.mlflow_tracker import MlflowTracker

        return MlflowTracker(where, home)
    if name == "wandb":
        from agent.track.wandb_tracker import WandbTracker

        return WandbTracker(where, home, offline)
    from agent.track.optuna_tracker import OptunaTracker

    return OptunaTracker(where, home)
