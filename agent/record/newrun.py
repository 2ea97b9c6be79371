"""Creating a run folder: checked first, built beside its place, renamed into it.

A kill during creation leaves either nothing under the run's name or a whole folder (only a
hidden `.NAME.creating-*` staging folder, removed by the next creation); a folder an older
version left half-created (no session.toml, nothing recorded) is taken over.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from agent.config.runspec import load_runspec
from agent.config.settings import SessionConfig
from agent.edit import block
from agent.edit.block import apply_preset
from agent.edit.space import load_space
from agent.errors import UserError
from agent.record.workspace import Workspace
from sandbox.base import make_readable


class SessionError(UserError):
    """A session cannot start or go on; the message says what to do."""


def create_run_folder(run_dir: Path, config: SessionConfig) -> SessionConfig:
    """Make `run_dir` hold a new session for `config`; returns the config as saved."""
    from agent.paths import baseline_dir

    run_dir = Path(run_dir)
    if (run_dir / "session.toml").exists():
        raise SessionError(f"{run_dir} already holds a session: `autoresearch resume "
                           f"{run_dir}` continues it, or pick another --run-dir")
    if run_dir.exists() and not run_dir.is_dir():
        raise SessionError(f"--run-dir {run_dir} is a file: pick a folder")
    remove_half_created(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise SessionError(f"{run_dir} exists and is not empty: pick another --run-dir")
    train_dir = Path(config.train_dir) if config.train_dir else baseline_dir()
    if not (train_dir / "train.py").is_file():
        raise SessionError(f"{train_dir} has no train.py: --train-dir takes the folder "
                           "that holds train.py and search_space.toml")
    load_runspec(train_dir)  # a broken [run] table: one line before anything is created
    space = load_space(train_dir / "search_space.toml", config.preset)
    source = (train_dir / "train.py").read_text()
    block.values(source, space.names)  # raises unless every searched constant is there
    train_py = apply_preset(source, space) if config.preset else None
    baseline = block.values(train_py or source, space.names)
    errors = space.errors(baseline)
    if errors:
        raise SessionError(outside_space(train_dir, space, source, config.preset, errors))
    prepare = train_dir / "prepare.py"
    if config.scoring == "harness" and not (
            prepare.is_file() and "def evaluate_bpb(" in prepare.read_text()):
        raise SessionError(
            f"--score harness scores each trial with {prepare}'s evaluate_bpb, and "
            f"{train_dir} has none: add it, or pass --score printed to rank trials by what "
            "train.py prints (safe only for methods that edit the block alone)")
    earlier = None
    if config.warm_start:  # refused here, before anything is created, unless it fits
        from agent.record.warmstart import earlier_trials

        old = [str(Path(p).resolve()) for p in config.warm_start]
        earlier = earlier_trials([Path(p) for p in old], train_py or source, space)
        config = config.model_copy(update={"warm_start": old})
    config = config.model_copy(update={"train_dir": str(train_dir.resolve())})
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.creating-",
                                        dir=run_dir.parent))
    except OSError as e:
        raise SessionError(f"cannot create {run_dir} ({e.strerror or e}): pick another "
                           "--run-dir") from None
    try:
        make_readable(staging)  # its trials reach cache/ and trials/ as another user
        Workspace.create(staging / "repo", train_dir, train_py)
        (staging / "optimizer").mkdir()
        (staging / "trials").mkdir()
        config.save(staging / "session.toml")
        if earlier is not None:
            from agent.record.warmstart import save

            save(staging / "warm_start.json", earlier)
        if run_dir.exists():
            run_dir.rmdir()  # empty (checked above); the rename needs the name free
        os.rename(staging, run_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return config


def half_created(run_dir: Path) -> bool:
    """A folder an older version left when killed while creating a session: no
    session.toml, nothing but what creation makes, and no trial recorded."""
    if not run_dir.is_dir() or (run_dir / "session.toml").exists():
        return False
    names = {p.name for p in run_dir.iterdir()}
    trials = run_dir / "trials"
    return bool(names) and names <= {"repo", "optimizer", "trials", ".lock"} and not (
        trials.is_dir() and any(trials.iterdir()))


def remove_half_created(run_dir: Path) -> None:
    if half_created(run_dir):
        shutil.rmtree(run_dir)
    for stale in run_dir.parent.glob(f".{run_dir.name}.creating-*"):  # a killed create
        shutil.rmtree(stale, ignore_errors=True)


def outside_space(train_dir: Path, space, source: str, asked: str | None,
                  errors: list[str]) -> str:
    """Why the baseline cannot start, and which preset of the folder's space it would fit."""
    import tomllib

    toml = train_dir / "search_space.toml"
    which = f"the {space.preset} preset" + ("" if asked else f", {toml.name}'s default")
    text = (f"the baseline train.py lies outside its own search space ({which}): "
            + "; ".join(errors))
    if asked:
        return text
    fits = []
    for preset in tomllib.loads(toml.read_text()).get("presets", {}):
        if preset != space.preset:
            other = load_space(toml, preset)
            values = block.values(source, other.names)
            fits += [] if other.errors(values) else [preset]
    if fits:
        text += (f"; it fits the {fits[0]} preset: pass --preset {fits[0]}, or set "
                 f'default_preset = "{fits[0]}" in {toml}')
    return text


def require_session(rd) -> None:
    """SessionError unless `rd` (a RunDir) holds a session, saying what it holds instead."""
    if rd.exists():
        return
    if half_created(rd.root):
        raise SessionError(f"{rd.root} holds a session that was killed while it was being "
                           f"created: start it again with `autoresearch run --run-dir "
                           f"{rd.root} ...`")
    raise SessionError(f"{rd.root} is not a session folder (no session.toml): check the "
                       "path, or start one with `autoresearch run`")
