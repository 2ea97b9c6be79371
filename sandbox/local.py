"""Local backend: a subprocess for machines without Docker, with the same result record.

train.py runs in its own session (process group). Host memory is limited by a cgroup of its
own where the host allows one, else by a watchdog over the resident memory of its process
tree (sandbox/memguard.py) -- never by RLIMIT_AS, which CUDA's address-space reservations
break. On timeout, and after it ends in any case, every process it started is killed. Weaker
than Docker, and said so: no network isolation, and the source is read-only only by its file
modes (which root ignores).
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sandbox.base import Limits, TrialRun, cache_env, trial_env
from sandbox.logsink import LogSink
from sandbox.memguard import memory_guard
from sandbox.result import TrialResult, build_result

# System folders a trial may find programs in: torch.compile needs a C compiler, Triton and
# CUDA their tools. Only folders that exist are used; the interpreter's own folder comes first.
SYSTEM_PATH = ("/usr/local/cuda/bin", "/usr/local/nvidia/bin", "/usr/local/sbin",
               "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


class LocalSandbox:
    name = "local"

    def __init__(self, python: str | None = None, memory_guard: str = "auto"):
        self.python = python or sys.executable
        self.memory_guard = memory_guard  # auto (cgroup, else watchdog), cgroup, watchdog

    def run(self, run: TrialRun, limits: Limits) -> TrialResult:
        workdir = Path(run.workdir)
        out = workdir / "out"
        out.mkdir(parents=True, exist_ok=True)
        env = {**trial_env(run, limits), **tool_env(self.python),
               "HOME": str(out.resolve()), "AR_OUT_DIR": str(out.resolve())}
        if run.data_dir is not None:
            env["AR_DATA_DIR"] = str(Path(run.data_dir).resolve())
        if run.cache_dir is not None:
            env.update(cache_env(Path(run.cache_dir).resolve()))
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in limits.gpus)
        guard = memory_guard(limits.memory_bytes, self.memory_guard)
        env.update(guard.env)

        def in_child() -> None:  # runs in the child between fork and exec
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            guard.enter()

        sink = LogSink(workdir / "train.log", cap=limits.log_cap_bytes)
        start = time.monotonic()
        timed_out = False
        try:
            proc = subprocess.Popen(
                [self.python, str(Path(run.tree).resolve() / "train.py")], cwd=out, env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=in_child, close_fds=True)
        except BaseException:
            guard.finish()
            sink.close()
            raise
        guard.watch(proc.pid)
        reader = threading.Thread(target=_pump, args=(proc.stdout, sink), daemon=True)
        reader.start()
        try:
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
        finally:
            _kill_group(proc.pid)  # also on Ctrl-C, and stragglers after a normal exit
            proc.wait()
            memory = guard.finish()  # kills whatever left the group, too
            reader.join(timeout=10)
            sink.close()
        code = proc.returncode
        if code is not None and code < 0:  # killed by a signal: the shell's (and Docker's) code
            code = 128 - code
        peak_mb = memory.peak_bytes / 2**20 if memory.peak_bytes else None
        result = build_result(
            code, sink.tail_text(), timed_out=timed_out and not memory.oom_killed,
            oom_killed=memory.oom_killed, wall_s=round(time.monotonic() - start, 3),
            log_path=str(sink.path), log_bytes=sink.total, log_truncated=sink.truncated,
            backend=self.name, host_peak_mb=round(peak_mb, 1) if peak_mb else None)
        if memory.oom_killed:
            result.reason = (f"killed by the host memory limit {limits.memory} "
                             f"({memory.how}; peak {_mb(memory.peak_bytes)})")
        return result


def tool_env(python: str) -> dict[str, str]:
    """PATH of the interpreter's folder and the system folders, and CC / CXX where found:
    what torch.compile and Triton need, and nothing from the host's own environment."""
    folders = [os.path.dirname(python)]
    folders += [f for f in SYSTEM_PATH if os.path.isdir(f) and f not in folders]
    path = os.pathsep.join(folders)
    env = {"PATH": path}
    for var, names in (("CC", ("cc", "gcc", "clang")), ("CXX", ("c++", "g++", "clang++"))):
        found = next((p for p in (shutil.which(n, path=path) for n in names) if p), None)
        if found:
            env[var] = found
    return env


def _mb(value: int | None) -> str:
    return "unknown" if not value else f"{value / 2**20:,.0f} MiB"


def _pump(pipe, sink: LogSink) -> None:
    for chunk in iter(lambda: pipe.read1(65536), b""):
        sink.write(chunk)
    pipe.close()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
