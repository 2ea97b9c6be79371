"""K trials at once on this host: a thread per slot, each slot its own GPUs or CPU cores.

The sandbox does the work (a container or a process group per trial); the threads only wait
for it. `close` (Ctrl-C, an error) cancels what runs: each sandbox kills and removes its
trial within about a second, and the threads are joined.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from dataclasses import replace
from pathlib import Path

from agent.executors.base import TrialJob, execute
from sandbox.base import Limits
from sandbox.result import TrialResult


class PoolExecutor:
    """`slots` trials at once, one per entry of `limits`. `why`: the sandbox's choice."""

    def __init__(self, sandbox, limits: list[Limits], scratch: Path, why: str = ""):
        self.sandbox, self.limits, self.scratch, self.why = sandbox, limits, scratch, why
        self.slots = len(limits)
        self._free = list(range(self.slots))
        self._running: dict[cf.Future, tuple[object, int]] = {}
        self._cancel = threading.Event()
        self._pool = cf.ThreadPoolExecutor(max_workers=self.slots,
                                           thread_name_prefix="trial-slot")

    def submit(self, prepared, job: TrialJob) -> None:
        """Start `job` on a free slot's limits; `prepared` (the session's trial, with its
        `number`) comes back beside its result from `wait`."""
        slot = self._free.pop(0)  # the session never submits more than `slots`
        job = replace(job, limits=self.limits[slot])
        future = self._pool.submit(execute, self.sandbox, job, self.scratch, self._cancel)
        self._running[future] = (prepared, slot)

    def wait(self) -> list[tuple[object, TrialResult]]:
        """Block until a trial finishes; every finished (prepared, result), by number."""
        done, _ = cf.wait(list(self._running), return_when=cf.FIRST_COMPLETED)
        finished = []
        for future in sorted(done, key=lambda f: self._running[f][0].number):
            prepared, slot = self._running.pop(future)
            self._free.append(slot)
            finished.append((prepared, future.result()))
        self._free.sort()
        return finished

    def close(self) -> None:
        self._cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._running.clear()
