"""A trial's log, streamed to a file as it runs, with bounded memory and disk.

The first `cap` bytes go to the file as they come; after that only the last `tail` bytes are
kept (in memory), and at the end they are appended behind a line that says how much was cut.
A trial printing 1 GB thus costs `cap + tail` bytes of disk and `tail` bytes of memory.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path


class LogSink:
    def __init__(self, path: Path, cap: int = 32 * 2**20, tail: int = 2**20):
        self.path = Path(path)
        self.cap, self.tail_size = cap, tail
        self.written = 0  # bytes that reached the file
        self.total = 0  # bytes the trial printed
        self._tail: deque[bytes] = deque()
        self._tail_len = 0
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.total += len(chunk)
        room = self.cap - self.written
        if room > 0:
            self._file.write(chunk[:room])
            self._file.flush()
            self.written += min(room, len(chunk))
        self._tail.append(chunk)
        self._tail_len += len(chunk)
        while self._tail_len - len(self._tail[0]) >= self.tail_size:
            self._tail_len -= len(self._tail.popleft())

    @property
    def truncated(self) -> bool:
        return self.total > self.written

    def tail_text(self) -> str:
        """The last `tail` bytes (or all of a short log), decoded leniently."""
        data = b"".join(self._tail)[-self.tail_size:]
        return data.decode("utf-8", errors="replace")

    def close(self) -> None:
        if self._file.closed:
            return
        if self.truncated:
            tail = b"".join(self._tail)[-self.tail_size:]
            start = max(self.written, self.total - len(tail))
            cut = start - self.written
            self._file.write(f"\n[autoresearch: log cut here, {cut} bytes not kept; "
                             f"the last {self.total - start} bytes follow]\n".encode())
            self._file.write(tail[len(tail) - (self.total - start):])
        self._file.close()
