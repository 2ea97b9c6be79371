"""`autoresearch track RUN... --to NAME[:WHERE]`: a finished, stopped or killed session (or
every session of a bench folder) sent to a tracker afterwards, exactly as a live session
with `--track` would have sent it; trials the tracker holds already are skipped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent.config.settings import SessionConfig
from agent.edit.space import load_space
from agent.errors import UserError
from agent.record.newrun import require_session
from agent.record.rundir import RunDir
from agent.record.workspace import Workspace
from agent.track import group_of, make_tracker
from agent.track.feed import send
from agent.track.view import session_view


def backfill(run_dir: Path, spec: str, say: Callable[[str], None],
             advance: Callable[[], None] = lambda: None) -> int:
    """Send one session folder's trials to the tracker `spec`; the number of trials it now
    holds from this session. Locked like a session (a running one is tracked live with
    --track); a tracker that fails is a UserError."""
    rd = RunDir(run_dir)
    require_session(rd)
    with rd:
        config = SessionConfig.load(rd.session_toml)
        space = load_space(rd.repo / "search_space.toml", config.preset)
        ws = Workspace(rd.repo)
        notes = rd.notes(broken=lambda e: say(f"{rd.root}: {e}; reading the trials from git"))
        failures: list[str] = []

        def heard(text: str) -> None:
            failures.append(text)
            say(text)

        tracker = make_tracker(spec, rd.root)
        sender = send([tracker], rd, session_view(rd, config, space, ws, group_of(rd.root)),
                      notes, heard, advance)
    if failures:
        raise UserError(failures[0])
    return sender.sent
