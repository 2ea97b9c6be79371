"""--warm-start OLD_RUN: the trials of earlier sessions a new one starts from.

At creation the old runs are read once (their git notes, their baseline train.py) and what
the new session may learn from is copied into RUN/warm_start.json, so a resume does not need
the old folders and the run says where it started from. Only runs on the same baseline count:
the old baseline train.py must equal the new one once the searched values are set aside (the
block's other lines, the model, the loop), else the new session is refused with the first
lines that differ. An old folder may be anyone's: its records are data, each configuration is
checked against the new space and dropped when it does not fit.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from agent.edit import block
from agent.edit.block import SpaceError
from agent.edit.space import SearchSpace
from agent.errors import UserError
from agent.protocols import TrialRecord
from agent.record.note import NoteError, TrialNote
from agent.record.workspace import Workspace
from agent.text import clean


class WarmStartError(UserError):
    """An old run cannot seed this session; the message says why."""


def set_aside(source: str, space: SearchSpace) -> str:
    """train.py with every searched value replaced by the same placeholder."""
    return block.render_block(source, dict.fromkeys(space.names, 0))


def differences(old: str, new: str, limit: int = 4) -> str:
    lines = [ln for ln in difflib.unified_diff(old.splitlines(), new.splitlines(), "old",
                                               "new", n=0, lineterm="")
             if ln[:1] in "+-" and not ln.startswith(("---", "+++"))]
    shown = " | ".join(clean(ln, True)[:100] for ln in lines[:limit])
    return shown + (f" | ... ({len(lines) - limit} more)" if len(lines) > limit else "")


def earlier_trials(old_runs: list[Path], new_source: str, space: SearchSpace) -> dict:
    """What warm_start.json holds: the old runs, and their trials the new session can use."""
    trials, sources = [], []
    for run in map(Path, old_runs):
        if not (run / "session.toml").is_file() or not (run / "repo").is_dir():
            raise WarmStartError(f"--warm-start {run}: not a session folder (no session.toml "
                                 "and repo/)")
        ws = Workspace(run / "repo")
        try:
            old_source = ws.source(ws.baseline)
            old = set_aside(old_source, space)
        except (SpaceError, OSError, RuntimeError) as e:
            raise WarmStartError(f"--warm-start {run}: its baseline train.py cannot be read "
                                 f"against this space ({clean(e, True)[:200]})") from None
        new = set_aside(new_source, space)
        if old != new:
            raise WarmStartError(f"--warm-start {run}: its baseline differs from this one "
                                 f"outside the searched values: {differences(old, new)}")
        used = 0
        for data in ws.notes().values():
            try:
                note = TrialNote.from_dict(data)
            except NoteError:
                continue
            if note.method == "confirm" or not isinstance(note.config, dict) or \
                    set(note.config) != set(space.names) or space.errors(note.config):
                continue
            trials.append({"run": str(run), "trial": note.trial, "status": note.status,
                           "config": note.config, "val_bpb": note.val_bpb,
                           "reason": clean(note.reason, True)[:200]})
            used += 1
        sources.append({"run": str(run), "baseline": ws.baseline, "trials": used})
    trials.sort(key=lambda t: (t["run"], t["trial"]))
    return {"from": sources, "trials": trials}


def save(path: Path, earlier: dict) -> None:
    path.write_text(json.dumps(earlier, indent=1, sort_keys=True) + "\n")


def load(path: Path, space: SearchSpace) -> list[TrialRecord]:
    """The earlier trials in warm_start.json as optimizers see them ([] without one); each
    checked again (the folder may be someone else's)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise WarmStartError(f"{path} is unreadable ({type(e).__name__}): delete it to run "
                             "without a warm start") from None
    records = []
    for t in data.get("trials", []) if isinstance(data, dict) else []:
        config, val = t.get("config") if isinstance(t, dict) else None, t.get("val_bpb")
        if not isinstance(config, dict) or set(config) != set(space.names) or \
                space.errors(config) or not (val is None or isinstance(val, (int, float))):
            continue
        status = t.get("status") if isinstance(t.get("status"), str) else "crash"
        number = t.get("trial") if isinstance(t.get("trial"), int) else -1
        records.append(TrialRecord(number, status, config, val, method="earlier",
                                   reason=clean(t.get("reason", ""), True)[:200]))
    return records
