"""Local backend: a subprocess for machines without Docker, with the same result record.

train.py runs in its own session (process group) under RLIMIT_AS; on timeout, and after it
ends in any case, the whole group is killed, so a child that ignores SIGTERM is not left
behind. Weaker than Docker, and said so: no network isolation, and the source is read-only
only by its file modes (which root ignores).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sandbox.base import Limits, TrialRun, trial_env
from sandbox.logsink import LogSink
from sandbox.result import TrialResult, build_result


class LocalSandbox:
    name = "local"

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable

    def run(self, run: TrialRun, limits: Limits) -> TrialResult:
        workdir = Path(run.workdir)
        out = workdir / "out"
        out.mkdir(parents=True, exist_ok=True)
        env = {**trial_env(run, limits), "HOME": str(out.resolve()),
               "AR_OUT_DIR": str(out.resolve()), "PATH": os.path.dirname(self.python)}
        if run.data_dir is not None:
            env["AR_DATA_DIR"] = str(Path(run.data_dir).resolve())
        if limits.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in limits.gpus)
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""
        memory = limits.memory_bytes

        def limit_child() -> None:  # runs in the child between fork and exec
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

        sink = LogSink(workdir / "train.log", cap=limits.log_cap_bytes)
        start = time.monotonic()
        timed_out = False
        proc = subprocess.Popen(
            [self.python, str(Path(run.tree).resolve() / "train.py")], cwd=out, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=limit_child, close_fds=True)
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
            reader.join(timeout=10)
            sink.close()
        code = proc.returncode
        return build_result(
            code, sink.tail_text(), timed_out=timed_out,
            oom_killed=False, wall_s=round(time.monotonic() - start, 3),
            log_path=str(sink.path), log_bytes=sink.total, log_truncated=sink.truncated,
            backend=self.name)


def _pump(pipe, sink: LogSink) -> None:
    for chunk in iter(lambda: pipe.read1(65536), b""):
        sink.write(chunk)
    pipe.close()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
