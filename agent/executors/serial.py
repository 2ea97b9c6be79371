"""One trial at a time, in the session's own thread (Ctrl-C reaches the sandbox directly)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from agent.executors.base import TrialJob, execute
from sandbox.base import Limits
from sandbox.result import TrialResult


class SerialExecutor:
    """One slot, run when the session waits. `why`: the sandbox's choice, for the banner."""

    slots = 1

    def __init__(self, sandbox, limits: Limits, scratch: Path, why: str = ""):
        self.sandbox, self.limits, self.scratch, self.why = sandbox, limits, scratch, why
        self._queue: list = []

    def submit(self, prepared, job: TrialJob) -> None:
        """Queue `job` on the slot's limits; `prepared` (the session's trial) comes back
        beside its result from `wait`."""
        self._queue.append((prepared, replace(job, limits=self.limits)))

    def wait(self) -> list[tuple[object, TrialResult]]:
        """Run the oldest queued job; its (prepared, result)."""
        prepared, job = self._queue.pop(0)
        return [(prepared, execute(self.sandbox, job, self.scratch))]

    def close(self) -> None:
        self._queue.clear()
