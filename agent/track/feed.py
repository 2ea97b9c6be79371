"""Sending a session's trials to its trackers: live (`Feed`, a Reporter whose thread does
the sending, so a slow or dead tracker never holds the session up) and afterwards (`send`,
what `autoresearch track RUN --to NAME` runs over a finished or stopped run folder).

Both send the same views (agent/track/view.py) the same way: `open`, every recorded trial
(the tracker skips those it holds: resume and backfill are idempotent), `best` after each,
`close`. A tracker that raises is warned about once and fed no more; the session goes on and
`autoresearch track` sends what is missing later."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable

from agent.protocols import TrackedSession, Tracker
from agent.record.note import TrialNote
from agent.record.rundir import RunDir
from agent.record.workspace import Workspace
from agent.text import clean
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
                first = clean(str(e) or type(e).__name__, one_line=True)[:200]
                self.say(f"tracking to {tracker.name} failed ({type(e).__name__}: {first}); "
                         f"the session goes on without it: `autoresearch track "
                         f"{self.rd.root} --to {tracker.name}` sends its trials later")

    def open(self, session: TrackedSession) -> None:
        self._each(lambda t: t.open(session))

    def trial(self, note: TrialNote) -> None:
        if not self.trackers:
            return
        view = trial_view(self.rd, self.ws, note)
        self._each(lambda t: t.trial(view))
        self.commits[note.commit] = note.trial
        self.sent += 1

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
    """A Reporter that hands a running session's trials to a thread feeding the trackers.
    `begin` (once the session knows its notes) opens the trackers and sends the trials
    recorded before (a resumed session's, which the trackers skip when they hold them); each
    recorded trial follows; every line of news may be the gate moving best, so best is looked
    at again. `stop` waits up to DRAIN_S for the thread, then says what was not sent."""

    def __init__(self, trackers: list[Tracker], rd: RunDir, say: Callable[[str], None]):
        self.sender = Sender(trackers, rd, say)
        self.say, self.rd = say, rd
        self.jobs: queue.Queue = queue.Queue()
        self.thread: threading.Thread | None = None
        self.finished_ok = False

    def begin(self, session: TrackedSession, notes: Iterable[TrialNote]) -> None:
        if not self.sender.trackers:
            return
        self.thread = threading.Thread(target=self._work, name="trackers", daemon=True)
        self.thread.start()
        self.jobs.put(("open", session))
        for note in notes:
            self.jobs.put(("trial", note))
        self.jobs.put(("best", None))

    def _work(self) -> None:
        while True:
            kind, item = self.jobs.get()
            if kind == "open":
                self.sender.open(item)
            elif kind == "trial":
                self.sender.trial(item)
            elif kind == "best":
                self.sender.best()
            else:
                self.sender.close(item)
                return

    # -- Reporter ------------------------------------------------------------------------------
    def start(self, done: int, total: int | None) -> None: ...

    def note(self, text: str) -> None:
        if self.thread is not None:
            self.jobs.put(("best", None))

    def running(self, n: int, action) -> None: ...

    def finished(self, note: TrialNote) -> None:
        if self.thread is not None:
            self.jobs.put(("trial", note))
            self.jobs.put(("best", None))

    def stop(self) -> None:
        if self.thread is None:
            return
        self.jobs.put(("close", self.finished_ok))
        self.thread.join(DRAIN_S)
        if self.thread.is_alive():
            left = self.jobs.qsize()
            names = ", ".join(t.name for t in self.sender.trackers)
            self.say(f"tracking to {names}: gave up waiting after {DRAIN_S:.0f} s with "
                     f"{left} updates not sent; `autoresearch track {self.rd.root} --to NAME` "
                     "sends them")
        self.thread = None
