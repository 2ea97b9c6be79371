"""Host-memory limits for the local backend that work with CUDA (DESIGN.md, Sandbox).

RLIMIT_AS caps virtual address space, and CUDA reserves far more of it at init than any
trial touches: under an 8 GiB RLIMIT_AS an H200 trial failed `cudaGetDeviceCount()` with
"out of memory". What the kernel offers for real memory is a cgroup; where the host lets us
make one (cgroup v1's memory controller as root, or a cgroup v2 subtree whose memory
controller we may enable) the trial runs in its own, with `limit == limit incl. swap`, and the
kernel's OOM killer ends it. Elsewhere a watchdog samples the memory of the trial's process
tree (each process's proportional set size) and kills it past the limit. Both also find
every process the trial started, including those that left its process group, so nothing
outlives a trial.

A guard is used as: `guard = memory_guard(limit)`, `Popen(..., preexec_fn=guard.enter)`,
`guard.watch(pid)`, and after the trial ends `guard.finish()` (kills what is left, returns
whether the limit was hit and the peak).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GuardReport:
    oom_killed: bool  # the limit was hit and the trial killed for it
    peak_bytes: int | None  # peak memory of the trial's processes, where known
    how: str  # "cgroup v1", "cgroup v2", "watchdog"


class CgroupGuard:
    """The trial in a cgroup of its own below the one this process runs in."""

    env: dict[str, str] = {}

    def __init__(self, path: Path, version: int, limit: int):
        self.path, self.version, self.limit = path, version, limit
        self.how = f"cgroup v{version}"
        self._procs = str(path / "cgroup.procs")

    @classmethod
    def create(cls, limit: int) -> CgroupGuard:
        """Raises OSError when this host gives us no usable memory cgroup."""
        parent, version = _own_memory_cgroup()
        path = parent / f"autoresearch-trial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        try:
            if version == 1:
                (path / "memory.limit_in_bytes").write_text(str(limit))
                memsw = path / "memory.memsw.limit_in_bytes"
                if memsw.exists():  # absent when the kernel does not account swap
                    memsw.write_text(str(limit))
            else:
                (path / "memory.max").write_text(str(limit))
                swap = path / "memory.swap.max"
                if swap.exists():
                    swap.write_text("0")
        except OSError:
            path.rmdir()
            raise
        return cls(path, version, limit)

    def enter(self) -> None:
        """In the child between fork and exec: move itself into the cgroup."""
        with open(self._procs, "w") as f:
            f.write(str(os.getpid()))

    def watch(self, pid: int) -> None:
        pass  # the kernel does the watching

    def finish(self) -> GuardReport:
        _kill_until_empty(self.path / "cgroup.procs")
        if self.version == 1:
            oom = _counter(self.path / "memory.oom_control", "oom_kill")
            peak = _read_int(self.path / "memory.memsw.max_usage_in_bytes") \
                or _read_int(self.path / "memory.max_usage_in_bytes")
        else:
            oom = _counter(self.path / "memory.events", "oom_kill")
            peak = _read_int(self.path / "memory.peak")
        for _ in range(50):  # rmdir fails while the kernel still tears the last task down
            try:
                self.path.rmdir()
                break
            except OSError:
                time.sleep(0.02)
        return GuardReport(oom_killed=bool(oom), peak_bytes=peak, how=self.how)


class WatchdogGuard:
    """Samples the memory of the trial's process tree; kills it past the limit. The summed
    resident sizes (a cheap counter) are an upper bound; only when they pass the limit does
    each process count its proportional set size instead (PSS: a page shared by n processes
    counts 1/n in each; /proc/PID/smaps_rollup walks the process's page tables, too costly to
    read ten times a second), so the pages a trainer shares with the compile workers it forks
    (Inductor starts one per core) count once, not once per process; RSS where the kernel
    gives no PSS. The peak is what was counted: RSS below the limit, PSS above it.

    Weaker than a cgroup: a process that allocates faster than one sampling interval can
    overshoot the limit by what it allocates in that time (~0.1 s). Processes that leave the
    tree (double fork + setsid) are found because this process is made a child subreaper
    (orphans are re-parented to us, not to init) and each carries the trial's token in its
    environment."""

    how = "watchdog"

    def __init__(self, limit: int, interval_s: float = 0.1):
        self.limit, self.interval_s = limit, interval_s
        self.peak = 0
        self.oom = False
        self.token = uuid.uuid4().hex
        self.env = {"AR_TRIAL_TOKEN": self.token}
        self._pid: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._known: dict[int, object] = {}  # pid -> psutil.Process, kept to kill orphans
        _become_subreaper()

    def enter(self) -> None:
        pass

    def watch(self, pid: int) -> None:
        self._pid = pid
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _processes(self) -> list:
        import psutil

        try:
            root = psutil.Process(self._pid)
            found = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            found = []
        for orphan in psutil.Process().children():  # re-parented to us, the subreaper
            if orphan.pid not in self._known and self._carries_token(orphan):
                found += [orphan, *_children(orphan)]
        for p in found:
            self._known.setdefault(p.pid, p)
        return [p for p in self._known.values() if _running(p)]

    def _carries_token(self, process) -> bool:
        import psutil

        try:
            return process.environ().get("AR_TRIAL_TOKEN") == self.token
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False

    def _loop(self) -> None:
        import psutil

        while not self._stop.is_set():
            processes, total = self._processes(), 0
            for p in processes:
                try:
                    total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            if total > self.limit:  # summed RSS counts shared pages once per process
                total = 0
                for p in processes:
                    try:
                        total += _proportional(p)
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
            self.peak = max(self.peak, total)
            if total > self.limit:
                self.oom = True
                self._kill_all()
                return
            self._stop.wait(self.interval_s)

    def _kill_all(self) -> None:
        import psutil

        for _ in range(3):  # a dying parent may still fork once
            processes = self._processes()
            if not processes:
                return
            for p in processes:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            # the trial's main process is reaped by its Popen, which must see its exit status
            psutil.wait_procs([p for p in processes if p.pid != self._pid], timeout=2)

    def finish(self) -> GuardReport:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._kill_all()
        for pid in self._known:  # reap the orphans that were re-parented to us
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        return GuardReport(oom_killed=self.oom, peak_bytes=self.peak or None, how=self.how)


def memory_guard(limit: int, prefer: str = "auto") -> CgroupGuard | WatchdogGuard:
    """A cgroup where this host allows one (prefer="auto"), else the watchdog."""
    if prefer not in ("auto", "cgroup", "watchdog"):
        raise ValueError(f"memory guard {prefer!r}: use auto, cgroup or watchdog")
    if prefer != "watchdog":
        try:
            return CgroupGuard.create(limit)
        except OSError:
            if prefer == "cgroup":
                raise
    return WatchdogGuard(limit)


def cgroup_available() -> str | None:
    """'cgroup v1' / 'cgroup v2' when trials here get their own memory cgroup, else None."""
    try:
        guard = CgroupGuard.create(1 << 30)
    except OSError:
        return None
    guard.finish()
    return guard.how


def _own_memory_cgroup() -> tuple[Path, int]:
    """The folder of this process's memory cgroup, and the cgroup version."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    for line in lines:  # v1: "4:memory:/path"
        _, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(","):
            for m in mounts:
                fields = m.split()
                sep = fields.index("-")
                if fields[sep + 1] == "cgroup" and "memory" in fields[sep + 3].split(","):
                    return _under(fields[4], fields[3], rel), 1
    for line in lines:  # v2: "0::/path"
        if line.startswith("0::"):
            rel = line[3:]
            for m in mounts:
                fields = m.split()
                sep = fields.index("-")
                if fields[sep + 1] == "cgroup2":
                    path = _under(fields[4], fields[3], rel)
                    _enable_memory_controller(path)
                    return path, 2
    raise OSError("no memory cgroup hierarchy is mounted")


def _under(mount_point: str, mount_root: str, rel: str) -> Path:
    if mount_root != "/" and rel.startswith(mount_root):
        rel = rel[len(mount_root):]
    path = Path(mount_point) / rel.lstrip("/")
    if not os.access(path, os.W_OK):
        raise OSError(f"{path} is not writable")
    return path


def _enable_memory_controller(path: Path) -> None:
    control = path / "cgroup.subtree_control"
    if "memory" in control.read_text().split():
        return
    if "memory" not in (path / "cgroup.controllers").read_text().split():
        raise OSError(f"the memory controller is not delegated to {path}")
    control.write_text("+memory")  # fails (EBUSY) while this cgroup holds processes itself


def _kill_until_empty(procs: Path, wait_s: float = 5.0) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            pids = [int(p) for p in procs.read_text().split()]
        except OSError:
            return
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def _counter(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip()) or None
    except (OSError, ValueError):
        return None


def _proportional(process) -> int:
    """The process's PSS in bytes (/proc/PID/smaps_rollup, Linux 4.14+), else its RSS."""
    try:
        with open(f"/proc/{process.pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return process.memory_info().rss


def _children(process) -> list:
    import psutil

    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


_SUBREAPER = False


def _become_subreaper() -> None:
    """PR_SET_CHILD_SUBREAPER (Linux): orphaned descendants are re-parented to this process."""
    global _SUBREAPER
    if _SUBREAPER or not os.path.exists("/proc/self"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        _SUBREAPER = libc.prctl(36, 1, 0, 0, 0) == 0  # 36: PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _running(process) -> bool:
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
