"""A cap on what a trial writes (`--disk`, default 10g): its folders' size, checked on a timer.

Docker's own storage quota needs overlay2 on xfs with project quotas, which few hosts have,
so both backends do the same portable thing: every `interval_s` the allocated size (blocks,
so a sparse file counts what it really takes) of the trial's writable folders is summed, and
past the limit `on_exceed` kills the trial. A local trial's are out/ and its temporary
folders, which as root are also its /tmp, /var/tmp, /dev/shm and /run/lock (sandbox/local.py).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def allocated_bytes(folders: list[Path]) -> int:
    total = 0
    for folder in folders:
        for root, dirs, files in os.walk(folder, onerror=lambda e: None):
            for name in files + dirs:
                try:
                    total += os.lstat(os.path.join(root, name)).st_blocks * 512
                except OSError:
                    pass
    return total


class DiskGuard:
    def __init__(self, folders: list[Path], limit: int, on_exceed, interval_s: float = 1.0):
        self.folders, self.limit, self.on_exceed = folders, limit, on_exceed
        self.interval_s = interval_s
        self.exceeded = False
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> DiskGuard:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            used = allocated_bytes(self.folders)
            self.peak = max(self.peak, used)
            if used > self.limit:
                self.exceeded = True
                self.on_exceed()
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
