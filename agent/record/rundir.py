"""Every path of a run folder, its trials as recorded, and the lock held by the one process
that drives it.

    runs/NAME/
      session.toml  repo/  results.tsv  trials.jsonl  trials/NNNN/  optimizer/  cache/  tmp/
      .lock         held (flock) by the process driving the folder; says its pid and host
      pricing.json  the per-token and per-hour prices its dollar figures use
      warm_start.json  --warm-start: the earlier runs' trials it started from
      guidance.md   `autoresearch steer`: text the LLM methods' next prompts show
      stop.request  `autoresearch stop`: the running session finishes its trials and stops

The lock is an advisory `fcntl.flock` on `.lock`: the kernel drops it when its process dies
(kill -9 included), so a stale lock is simply taken over; a live holder makes a second
process fail at once with a line naming the holder.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from agent.errors import UserError
from agent.record.ledger import Ledger, atomic_write
from agent.record.note import TrialNote
from agent.record.workspace import Workspace


class RunDirBusy(UserError):
    """Another live process drives this run folder."""


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._lock_fd: int | None = None

    # -- paths --------------------------------------------------------------------------
    @property
    def session_toml(self) -> Path:
        return self.root / "session.toml"

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def optimizer(self) -> Path:
        return self.root / "optimizer"

    @property
    def state_pkl(self) -> Path:
        return self.optimizer / "state.pkl"

    @property
    def clock_json(self) -> Path:
        return self.optimizer / "clock.json"

    @property
    def cut_calls(self) -> Path:
        """LLM calls of asks --max-usd cut short: paid for, in no trial's record."""
        return self.optimizer / "cut-calls.jsonl"

    @property
    def llm_server_log(self) -> Path:
        return self.optimizer / "llm-server.log"

    @property
    def cache(self) -> Path:
        """The compile cache the session's trials share."""
        return self.root / "cache"

    @property
    def tmp(self) -> Path:
        """Scratch space of the driving process (trial trees); emptied when a session opens."""
        return self.root / "tmp"

    @property
    def progress_png(self) -> Path:
        return self.root / "progress.png"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def pricing_json(self) -> Path:
        """The prices the session's dollar figures use (agent/llm/pricing.py)."""
        return self.root / "pricing.json"

    @property
    def warm_start_json(self) -> Path:
        """The earlier runs' trials the session started from (--warm-start)."""
        return self.root / "warm_start.json"

    @property
    def guidance_md(self) -> Path:
        return self.root / "guidance.md"

    @property
    def stop_request(self) -> Path:
        return self.root / "stop.request"

    def trial(self, n: int) -> Path:
        return self.root / "trials" / f"{n:04d}"

    def trial_log(self, n: int, result: dict | None) -> Path | None:
        """Trial n's train.log, else the log its record names (the run that was the trial: a
        preflight, say); only a file inside this folder: a record or a link in a folder from
        someone else may name any file."""
        named = (result or {}).get("log_path")
        paths = [self.trial(n) / "train.log"]
        if isinstance(named, str) and named:
            paths.append(self.root / named)  # a relative one: relative to the folder
        return next((p for p in paths if self.holds(p) and p.is_file()), None)

    def holds(self, path: Path) -> bool:
        """Whether `path`, its links followed, lies inside this folder."""
        try:
            return Path(path).resolve().is_relative_to(self.root.resolve())
        except (OSError, RuntimeError, ValueError):
            return False

    def exists(self) -> bool:
        return self.session_toml.is_file()

    # -- the record ----------------------------------------------------------------------
    def notes(self, from_git: bool = False,
              broken: Callable[[Exception], None] | None = None) -> list[TrialNote]:
        """The session's trials, sorted by number: the ledger's, or the git notes' when asked
        or when the ledger is missing (git is the source of truth, the ledger a convenience).
        A ledger line that is not a trial record raises its LedgerError (one line naming the
        line and `--rebuild`), unless `broken` is given: then it hears the error and the notes
        come from git. Nothing is written."""
        ledger = Ledger(self.root)
        if not from_git and ledger.jsonl.exists():
            try:
                return ledger.records()
            except (ValueError, TypeError) as e:  # LedgerError names the line
                if broken is None:
                    raise
                broken(e)
        notes = Workspace(self.repo).notes().values()
        return sorted((TrialNote.from_dict(r) for r in notes), key=lambda n: n.trial)

    # -- the lock -----------------------------------------------------------------------
    def lock(self) -> RunDir:
        """Take the folder's lock or raise RunDirBusy naming the process that holds it."""
        if self._lock_fd is not None:
            return self
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            pid, host = (holder + ["?", "?"])[:2]
            raise RunDirBusy(f"{self.root} is in use by pid {pid} on {host}: wait for that "
                             "session to end or stop it, then try again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {int(time.time())}\n".encode(), 0)
        self._lock_fd = fd
        return self

    def holder(self) -> str | None:
        """The process driving this folder ("pid P on HOST"), None when none is (a probe of
        the lock that takes it for no longer than the call)."""
        try:
            fd = os.open(self.lock_file, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, host = (os.pread(fd, 200, 0).decode(errors="replace").split() + ["?", "?"])[:2]
            return f"pid {pid} on {host}"
        finally:
            os.close(fd)  # closing drops a lock this call took
        return None

    def unlock(self) -> None:
        if self._lock_fd is None:
            return
        try:
            os.ftruncate(self._lock_fd, 0)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunDir:
        return self.lock()

    def __exit__(self, *exc) -> None:
        self.unlock()

    def load_clock(self) -> float | None:
        """Seconds the session ran before; None when clock.json is unreadable."""
        try:
            elapsed = json.loads(self.clock_json.read_text())["elapsed_s"]
        except FileNotFoundError:
            return 0.0
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None
        return float(elapsed) if isinstance(elapsed, (int, float)) and elapsed >= 0 else None

    def save_clock(self, elapsed: float) -> None:
        atomic_write(self.clock_json, json.dumps({"elapsed_s": round(elapsed, 3)}).encode())

    def clear_tmp(self) -> None:
        """Empty tmp/ of what a killed process left (only while holding the lock)."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(exist_ok=True)


def sessions_in(paths: list[Path]) -> list[Path]:
    """The session folders `paths` name: a bench folder (bench.toml, no session.toml) stands
    for its runs, in the order of their names."""
    found = []
    for path in map(Path, paths):
        if (path / "bench.toml").is_file() and not (path / "session.toml").is_file():
            runs = sorted(p for p in path.iterdir() if (p / "session.toml").is_file())
            if not runs:
                raise UserError(f"{path} is a bench folder without a run yet: run the bench "
                                "command again to start it")
            found += runs
        else:
            found.append(path)
    return found
