"""Local backend: a subprocess for machines without Docker, with the same result record.

Every trial runs from a private staging folder (`$TMPDIR/ar-local-*`): a copy of its tree
(`sandbox try DIR` never runs in DIR), its own TMPDIR, and, when the session runs as root, as
the unprivileged user 65534 in its own mount and network namespace (sandbox/launch.py): /root
and /home hidden, data and source read-only, out/ and the compile cache the only folders it
may write besides /tmp, /var/tmp, /dev/shm and /run/lock, which are its own (folders of the
staging folder, gone with it), no network, no user namespaces (a folder's preparation, run
the same way, sees out/ at its own path and may write its mounts, and has the host's network
when the user passes --prepare-network). Without root it runs as the
session's user, which it can then read and write like any of that user's programs, and shares
the host's /tmp, /var/tmp and /dev/shm: use Docker for untrusted code (README, "Sandbox").

Host memory is limited by a cgroup of the trial's own where the host allows one, else by a
watchdog over the resident memory of its process tree (sandbox/memguard.py) -- never by
RLIMIT_AS, which CUDA's address-space reservations break. What it writes into out/ and its
temporary folders is capped (sandbox/diskguard.py). On timeout, and after it ends in any
case, every process it started is killed; the trial dies with the session (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sandbox.base import (
    CANCELLED,
    Limits,
    SandboxError,
    TrialRun,
    cache_env,
    give_tree,
    held_out_test,
    make_readable,
    tool_env,
    trial_env,
    wait_for,
)
from sandbox.curve import Stream
from sandbox.diskguard import DiskGuard
from sandbox.gpus import ensure_uvm
from sandbox.images.host import TRIAL_GID, TRIAL_UID, interpreter_roots
from sandbox.logsink import LogSink
from sandbox.memguard import memory_guard
from sandbox.result import TrialResult, build_result

# Folders that hold users' own files (keys, configs, caches): hidden from root-run trials.
HIDDEN = ("/root", "/home")
LAUNCH = Path(__file__).with_name("launch.py")
DATA_FILES = ("train.bin", "meta.json")
STAGE_PREFIX = "ar-local-"  # + the pid of the session that made it
# The folders of the staging folder a root-run trial sees as the places anyone may write
# (tmp/ is its TMPDIR in any case): counted by --disk, and on a disk, not in RAM, unless
# $TMPDIR is a tmpfs.
PRIVATE = {"/tmp": "tmp", "/var/tmp": "var-tmp", "/dev/shm": "shm", "/run/lock": "run-lock"}


ISOLATION = ("auto", "none")
PROBED: dict[str, None] = {}  # the interpreters whose trials were isolated here
NO_ISOLATION = ("local trials cannot be isolated here ({why}): pass --isolation none to run "
                "them as {user}, with this machine's files, keys and network in their reach "
                "(README, \"Sandbox\"), or use the docker backend")


class LocalSandbox:
    name = "local"

    def __init__(self, python: str | None = None, memory_guard: str = "auto",
                 isolate: str = "auto"):
        if isolate not in ISOLATION:
            raise SandboxError(f"--isolation {isolate!r}: use auto or none")
        self.python = python or sys.executable
        self.memory_guard = memory_guard  # auto (cgroup, else watchdog), cgroup, watchdog
        # auto: as root, the trial user in its own namespaces; "none": as the session's user
        self.isolated = isolate == "auto" and os.geteuid() == 0 and sys.platform == "linux"
        _remove_stale_stages()
        if self.isolated:  # a root session whose trials would run as root: refused
            why = self.isolation_problem()
            if why is not None:
                raise SandboxError(NO_ISOLATION.format(why=why, user="root"))

    def isolation_problem(self) -> str | None:
        """Why a root session's trials cannot be isolated here (None: they can), found once
        per interpreter by a trial that only prints a line, run the way every trial runs
        (namespaces, mounts, the trial user, its seccomp filter, this interpreter read as
        that user): a container without CAP_SYS_ADMIN, or a venv the trial user cannot
        read, fails here and not in every trial of a night."""
        if not self.isolated:
            return None
        if self.python in PROBED:
            return None
        why = self._probe()
        if why is None:  # only a success is kept: a probe cut by load is tried again
            PROBED[self.python] = None
        return why

    def _probe(self) -> str | None:
        result, lines = self.run_script("print('isolated: uid', __import__('os').getuid())\n",
                                        Limits(timeout_s=60, memory="1g", disk="64m"))
        if result.exit_code == 0 and f"isolated: uid {TRIAL_UID}" in lines:
            return None
        return (lines[-1] if lines else result.reason or f"exit {result.exit_code}")[:200]

    def run_script(self, source: str, limits: Limits,
                   env: dict[str, str] | None = None) -> tuple[TrialResult, list[str]]:
        """`source` run once as a trial's train.py (the isolation probe, sandbox/probe.py):
        the result and the non-empty lines it printed, its folder removed after. Named like a
        stage, so a session killed meanwhile leaves nothing behind for long."""
        work = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-script-"))
        try:
            tree = work / "src"
            tree.mkdir()
            (tree / "train.py").write_text(source)
            result = self.run(TrialRun(tree=tree, workdir=work / "trial", env=env or {}),
                              limits)
            log = Path(result.log_path or work / "trial" / "train.log")
            text = log.read_text(errors="replace") if log.is_file() else ""
            return result, [x.strip() for x in text.splitlines() if x.strip()]
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def run(self, run: TrialRun, limits: Limits, cancel=None, watch=None) -> TrialResult:
        workdir = Path(run.workdir)
        out = workdir / "out"
        out.mkdir(parents=True, exist_ok=True)
        if self.isolated and limits.gpus:  # the trial user cannot make the node itself
            ensure_uvm(self.python)  # ours: a folder's [run] python never runs as root
        stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-"))
        try:
            return self._run(run, limits, workdir, out, stage, cancel, watch)
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def _run(self, run: TrialRun, limits: Limits, workdir: Path, out: Path,
             stage: Path, cancel, watch) -> TrialResult:
        src = stage / "src"
        shutil.copytree(run.tree, src, ignore=shutil.ignore_patterns("__pycache__", ".git"))
        make_readable(stage)  # before the trial's own private folders are made in it
        tmp = stage / "tmp"
        scratch = [stage / name for name in PRIVATE.values()] if self.isolated else [tmp]
        for folder in scratch:
            folder.mkdir(mode=0o700)
        binds: list[tuple[str, str, bool]] = []
        reveal: list[str] = []  # folders brought back, writable, once /tmp and /root are covered
        if self.isolated:
            for folder in (out, *scratch):
                os.chown(folder, TRIAL_UID, TRIAL_GID)
        if not self.isolated:
            view_out = out.resolve()
        elif run.prepare:  # at its own path: the data folder it prints is a host path
            view_out = out.resolve()
            reveal.append(str(view_out))
        else:
            view_out = stage / "out"
            binds.append((str(out.resolve()), str(view_out), True))
        python = run.python or self.python  # the training folder's interpreter, if it has one
        env = {**trial_env(run, limits), **tool_env(python),
               "HOME": str(view_out), "AR_OUT_DIR": str(view_out), "TMPDIR": str(tmp)}
        for host, rel in run.mounts:  # read-only under HOME: a bind when isolated, else a link
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            if self.isolated:
                (out / rel).mkdir(exist_ok=True) if os.path.isdir(host) else (out / rel).touch()
                if run.prepare and os.path.isdir(host):  # a preparation writes its data there
                    give_tree(Path(host), TRIAL_UID, TRIAL_GID)
                binds.append((host, str(view_out / rel), run.prepare))
            elif not (out / rel).exists():
                (out / rel).symlink_to(host)
        if run.data_dir is not None:
            env["AR_DATA_DIR"] = str(self._data(Path(run.data_dir), run.hide_val, stage, binds))
        if run.cache_dir is not None:
            cache = Path(run.cache_dir)
            cache.mkdir(parents=True, exist_ok=True)
            if self.isolated:
                give_tree(cache, TRIAL_UID, TRIAL_GID)
                binds.append((str(cache.resolve()), str(stage / "cache"), True))
                cache = stage / "cache"
            env.update(cache_env(cache.resolve()))
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in limits.gpus)
        guard = memory_guard(limits.memory_bytes, self.memory_guard)
        env.update(guard.env)
        argv = ["/bin/sh", "-c", run.command] if run.command else [python, str(src / run.script)]
        cwd = src if run.command else view_out  # a command runs in the folder, as it was written
        if self.isolated:
            hide = [h for h in HIDDEN if os.path.isdir(h)]
            roots = interpreter_roots(python)
            for root in roots:  # a venv behind a folder the trial user cannot enter: hide
                closed = _closed_ancestor(root)  # that folder, keep the venv
                if closed and not _under(closed, hide):
                    hide.append(closed)
            if run.hide_val and run.data_dir is not None:  # the real folder holds val.bin:
                data = str(Path(run.data_dir).resolve())  # covered, once train.bin is bound
                if not any(_under(p, [data]) for p in (str(stage), *roots)):
                    hide.append(data)
            if run.data_dir is not None:  # the test split beside the data: never a trial's
                given = Path(os.path.abspath(run.data_dir))  # beside a link, or its target
                for test in {held_out_test(given), held_out_test(given.resolve())}:
                    if test.is_dir() and not _under(str(test), hide + list(PRIVATE)) \
                            and not any(_under(p, [str(test)]) for p in (str(stage), *roots)):
                        hide.append(str(test))
            covered = hide + list(PRIVATE)  # what the trial sees there is not the host's
            keep = [r for r in roots if _under(r, covered)]
            spec = {"binds": binds, "hide": hide, "keep": keep, "stage": str(stage),
                    "private": [(str(stage / name), f) for f, name in PRIVATE.items()],
                    "reveal": reveal, "uid": TRIAL_UID, "gid": TRIAL_GID,
                    "no_network": not run.network, "parent": os.getpid(), "cwd": str(cwd),
                    "argv": argv, "env": env}
            (stage / "launch.json").write_text(json.dumps(spec))
            command, child_env = [self.python, "-I", str(LAUNCH), str(stage / "launch.json")], {}
        else:
            command, child_env = argv, env

        def in_child() -> None:  # runs in the child between fork and exec
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            guard.enter()
            if limits.cpuset:  # this slot's own cores (parallel trials on a CPU host)
                os.sched_setaffinity(0, limits.cpuset)
            if not self.isolated:  # the launcher sets it itself, after changing uid
                _die_with_parent()

        sink = LogSink(workdir / "train.log", cap=limits.log_cap_bytes)
        start = time.monotonic()
        timed_out = False
        try:
            proc = subprocess.Popen(
                command, cwd=cwd if not self.isolated else stage, env=child_env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=in_child, close_fds=True)
        except BaseException:
            guard.finish()
            sink.close()
            raise
        guard.watch(proc.pid)
        disk = DiskGuard([out, *scratch], limits.disk_bytes, lambda: _kill_group(proc.pid)).start()
        stream = Stream(sink, workdir / "curve.jsonl", watch,
                        lambda: proc.returncode is None and _kill_group(proc.pid))
        reader = threading.Thread(target=_pump, args=(proc.stdout, stream), daemon=True)
        reader.start()
        try:
            outcome = wait_for(proc.wait, subprocess.TimeoutExpired, start + limits.timeout_s,
                               cancel)
            timed_out, cancelled = outcome == "timeout", outcome == "cancelled"
        finally:
            _kill_group(proc.pid)  # also on Ctrl-C, and stragglers after a normal exit
            proc.wait()
            disk.stop()
            memory = guard.finish()  # kills whatever left the group, too
            reader.join(timeout=10)
            stream.close()
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
        if result.watched(stream).stopped_at is not None and not cancelled:
            return result  # the session's watch ended it: its verdict stands
        if memory.oom_killed:
            result.reason = (f"killed by the host memory limit {limits.memory} "
                             f"({memory.how}; peak {_mb(memory.peak_bytes)})")
        elif disk.exceeded:
            result.status, result.val_bpb = "crash", None
            result.reason = (f"wrote more than {limits.disk} into out/ and its temporary "
                             "folders (the --disk limit)")
        elif cancelled:
            result.status, result.val_bpb, result.reason = "crash", None, CANCELLED
        return result

    def _data(self, data: Path, hide_val: bool, stage: Path,
              binds: list[tuple[str, str, bool]]) -> Path:
        """Where the trial finds its data: the folder itself, or with `hide_val` a view that
        holds train.bin and meta.json and an empty val.bin."""
        view = stage / "data"
        if not hide_val:
            if not self.isolated:
                return data.resolve()
            binds.append((str(data.resolve()), str(view), False))
            return view
        view.mkdir()
        (view / "val.bin").touch()
        for name in DATA_FILES:
            if self.isolated:
                binds.append((str((data / name).resolve()), str(view / name), False))
            else:
                _link_or_copy(data / name, view / name)
        return view


def _under(path: str, folders: list[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def _closed_ancestor(path: str) -> str | None:
    """The outermost folder above `path` that others may not enter (None: all open)."""
    parts = Path(path).parts
    for i in range(2, len(parts)):
        folder = os.path.join(*parts[:i])
        try:
            if not os.stat(folder).st_mode & 0o001:
                return folder
        except OSError:
            return None
    return None


def _remove_stale_stages() -> None:
    """Staging folders of sessions that were killed before they could remove them."""
    from sandbox.reaper import alive

    for folder in Path(tempfile.gettempdir()).glob(f"{STAGE_PREFIX}*"):
        pid = folder.name[len(STAGE_PREFIX):].split("-")[0]
        if pid.isdigit() and not alive(int(pid)) and folder.stat().st_uid == os.geteuid():
            shutil.rmtree(folder, ignore_errors=True)


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


# Loaded once here: dlopen between fork and exec could block on a lock held by another thread.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    if _LIBC is not None:  # elsewhere the session's own kill is all there is
        _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _mb(value: int | None) -> str:
    return "unknown" if not value else f"{value / 2**20:,.0f} MiB"


def _pump(pipe, stream: Stream) -> None:
    """Read the trial's output to its end; what cannot be kept (a full disk) is dropped, never
    left in the pipe, where the trial would block until its timeout."""
    broken = False
    for chunk in iter(lambda: pipe.read1(65536), b""):
        if not broken:
            try:
                stream.write(chunk)
            except OSError:
                broken = True
    pipe.close()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
