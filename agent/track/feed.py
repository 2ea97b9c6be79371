"""Sending a session's trials to its trackers: live (`Feed`, a Reporter whose process does
the sending, so a slow or dead tracker never holds the session up) and afterwards (`send`,
what `autoresearch track RUN --to NAME` runs over a finished or stopped run folder).

Both send the same views (agent/track/view.py) the same way: `open`, every recorded trial
(the tracker skips those it holds: resume and backfill are idempotent), `best` after each,
`close`. A tracker that raises is warned about once and fed no more; the session goes on and
`autoresearch track` sends what is missing later."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from agent.protocols import TrackedSession, Tracker
from agent.record.note import TrialNote
from agent.record.rundir import RunDir
from agent.record.workspace import Workspace
from agent.text import reason
from agent.track.view import trial_view

DRAIN_S = 30.0  # how long the end of a session waits for its trackers


class Sender:
    """Feeds trackers, in the calling thread; the first error of a tracker disables it."""

    def __init__(self, trackers: list[Tracker], rd: RunDir, say: Callable[[str], None]):
        self.trackers, self.rd, self.say = list(trackers), rd, say
        self.ws = Workspace(rd.repo)
        self.commits: dict[str, int] = {}  # commit -> trial, of the trials sent
        self.sent = 0

    def _each(self, call: Callable[[Tracker], None]) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as e:  # a tracker's own failure, whatever its library raises
                self.trackers.remove(tracker)
                first = reason(e)[:200]
                self.say(f"tracking to {tracker.name} failed ({type(e).__name__}: {first}); "
                         f"the session goes on without it: `autoresearch track "
                         f"{self.rd.root} --to {tracker.name}` sends its trials later")

    def open(self, session: TrackedSession) -> None:
        self._each(lambda t: t.open(session))

    def trial(self, note: TrialNote) -> None:
        self.commits[note.commit] = note.trial
        self.sent += 1
        wanting = [t for t in self.trackers if not t.holds(note.trial)]
        if not wanting:  # a resume or backfill: no view built (its diffs, its log) to skip
            return
        view = trial_view(self.rd, self.ws, note)
        self._each(lambda t: t.trial(view) if t in wanting else None)

    def best(self) -> None:
        if self.trackers:
            number = self.commits.get(self.ws.best)
            self._each(lambda t: t.best(number))

    def close(self, finished: bool) -> None:
        self._each(lambda t: t.close(finished))


def send(trackers: list[Tracker], rd: RunDir, session: TrackedSession,
         notes: Iterable[TrialNote], say: Callable[[str], None],
         advance: Callable[[], None] = lambda: None) -> Sender:
    """Every trial of a run folder to `trackers` (the backfill)."""
    sender = Sender(trackers, rd, say)
    sender.open(session)
    for note in notes:
        sender.trial(note)
        advance()
    sender.best()
    sender.close(finished=True)
    return sender


class Feed:
    """A Reporter that hands a running session's trials to a process of its own that feeds
    the trackers: a tracker's import, store set-up and writes (seconds for MLflow) hold
    neither the session's thread nor, as a thread's would, its interpreter lock. `begin`
    (once the session knows its notes) starts it, opens the trackers and sends the trials
    recorded before (a resumed session's, which the trackers skip when they hold them);
    each recorded trial follows; every line of news may be the gate moving best, so best is
    looked at again. What the process has to say (a tracker that failed) is said here, at
    the next call. `stop` waits up to DRAIN_S for it, then says what was not sent."""

    def __init__(self, specs: list[str], rd: RunDir, say: Callable[[str], None]):
        self.specs, self.rd, self.say = list(specs), rd, say
        self.proc = self.jobs = self.said = None
        self.finished_ok = False

    def launch(self) -> None:
        """Start the process early (the session's first step): its imports overlap with the
        session's own start."""
        if not self.specs or self.proc is not None:
            return
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded driver
        self.jobs, self.said = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(target=serve, name="autoresearch-trackers", daemon=True,
                                args=(self.specs, str(self.rd.root), self.jobs, self.said))
        self.proc.start()

    def begin(self, session: TrackedSession, notes: Iterable[TrialNote]) -> None:
        self.launch()
        if self.proc is None:
            return
        self.jobs.put(("open", session))
        for note in notes:
            self.jobs.put(("trial", note))
        self.jobs.put(("best", None))

    def _hear(self) -> None:
        import queue

        while self.said is not None:
            try:
                self.say(self.said.get_nowait())
            except queue.Empty:
                return

    # -- Reporter ------------------------------------------------------------------------------
    def start(self, done: int, total: int | None) -> None: ...

    def note(self, text: str) -> None:
        if self.proc is not None:
            self.jobs.put(("best", None))
            self._hear()

    def running(self, n: int, action) -> None:
        self._hear()

    def finished(self, note: TrialNote) -> None:
        if self.proc is not None:
            self.jobs.put(("trial", note))
            self.jobs.put(("best", None))
            self._hear()

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        self.jobs.put(("close", self.finished_ok))
        proc.join(DRAIN_S)
        self._hear()
        if proc.is_alive():
            proc.terminate()
            self.say(f"tracking to {', '.join(self.specs)}: gave up waiting after "
                     f"{DRAIN_S:.0f} s; `autoresearch track {self.rd.root} --to NAME` sends "
                     "what is missing")
        self.jobs.close()
        self.said.close()
        self.said = None


def serve(specs: list[str], run_dir: str, jobs, said) -> None:
    """The trackers' process: what `Feed` queues, in order, until `close` (or until the
    session's process is gone: a kill -9 leaves nothing to wait for)."""
    import importlib
    import os
    import queue
    import signal

    from agent.track import TRACKERS, make_tracker

    # Ctrl-C reaches the whole process group: the session stops its trials and then waits
    # for this process, which finishes what it was sending rather than dying mid-write
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    rd = RunDir(run_dir)
    trackers = []
    for spec in specs:
        try:
            trackers.append(make_tracker(spec, rd.root))
        except Exception as e:  # an extra gone since the session checked it
            said.put(f"tracking to {spec} is off: {reason(e)[:200]}")
    for tracker in trackers:  # their libraries, while the session starts
        try:
            importlib.import_module(TRACKERS[tracker.name][0])
        except Exception:  # noqa: S110  said when the tracker is opened
            pass
    sender = Sender(trackers, rd, said.put)
    while True:
        try:
            kind, item = jobs.get(timeout=5)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        except (EOFError, OSError):
            return
        if kind == "open":
            sender.open(item)
        elif kind == "trial":
            sender.trial(item)
        elif kind == "best":
            sender.best()
        else:
            sender.close(item)
            return
