"""A Ray task per trial (`--executor ray [--ray-address auto|ray://HOST:PORT]`).

The driver (the session) keeps git, the ledger and the optimizer; each trial becomes a task
asking for its GPUs (`num_gpus`, from --gpus-per-trial) and CPUs (--cpus, default 1), and
runs the same sandbox on the node Ray picks. The trial's code travels as the tar of its
commit; what it wrote (train.log, the harness's log, out/ up to 64 MB) comes back as bytes and
is written into the run folder: regular files only, read as the trial user could read them, so
a link in out/ brings nothing of its target. Without --ray-address the session starts a Ray
instance of its own, listening on 127.0.0.1 only, its files in a folder only this user can
open. Every node needs the same Python environment (this package, torch), the prepared data at
the same path, and for Docker trials the image: checked on each node at start, with a clear
error naming the node.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import replace
from pathlib import Path, PurePosixPath

from agent.executors.base import TrialJob, execute
from agent.text import reason
from sandbox.base import Limits, SandboxError
from sandbox.images.host import TRIAL_GID, TRIAL_UID
from sandbox.result import TrialResult

RETURNED_BYTES = 64 * 2**20  # what a trial's folder may send back to the driver
DEPTH = 32  # folders nested deeper than this in a trial's folder are not sent back
LOOPBACK = "127.0.0.1"
INSTALL = "pip install 'autoresearch-sandbox[ray]'"


def _ray():
    try:
        import ray
    except ImportError:
        raise SandboxError(f"--executor ray needs Ray on this machine: {INSTALL}") from None
    return ray


class RayExecutor:
    """A Ray task per trial, `slots` at once, each on the node that got its resources.
    `why`: the cluster and sandbox it uses, for the banner."""

    def __init__(self, sandbox_kind: str, limits: list[Limits], address: str | None,
                 data_dir: str | None, gpus_per_trial: int, isolation: str = "auto"):
        ray = _ray()
        self.ray, self.sandbox_kind, self.limits = ray, sandbox_kind, limits[0]
        self.isolation = isolation
        self.slots = len(limits)
        self.started_here = not ray.is_initialized()
        self.temp_dir: str | None = None  # the private folder of an instance started here
        if self.started_here:
            try:
                if address is None and not os.environ.get("RAY_ADDRESS"):  # Ray reads it too
                    self.temp_dir = start_local(ray)
                else:
                    ray.init(address=address, log_to_driver=False, include_dashboard=False,
                             configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = address or "a new local instance"
                raise SandboxError(f"cannot reach the Ray cluster at {where}: {reason(e)}") \
                    from None
        self.task = ray.remote(num_cpus=self.limits.cpus or 1, num_gpus=gpus_per_trial,
                               max_retries=0)(run_on_node)
        self.why = (f"ray executor, {len(ray.nodes())} node(s), {self.slots} trials at once, "
                    f"{sandbox_kind} sandbox on each")
        self._refs: dict = {}
        check_nodes(ray, sandbox_kind, data_dir, isolation)
        # start the workers and their imports now, not on the first trials' clock
        warm = ray.remote(num_cpus=self.limits.cpus or 1, num_gpus=gpus_per_trial)(_warm)
        ray.get([warm.remote() for _ in range(self.slots)])

    def submit(self, prepared, job: TrialJob) -> None:
        """Start `job` as a task; `prepared` (the session's trial, with its `number`) comes
        back beside its result from `wait`."""
        ref = self.task.remote(replace(job, limits=self.limits), self.sandbox_kind,
                               self.isolation)
        self._refs[ref] = (prepared, job)

    def wait(self) -> list[tuple[object, TrialResult]]:
        """Block until a task finishes; every finished (prepared, result), by number (a lost
        task is a crash)."""
        ready, _ = self.ray.wait(list(self._refs), num_returns=1)
        more, _ = self.ray.wait([r for r in self._refs if r not in ready],
                                num_returns=len(self._refs) - len(ready), timeout=0)
        finished = []
        for ref in ready + more:
            prepared, job = self._refs.pop(ref)
            try:
                result, files = self.ray.get(ref)
            except Exception as e:  # the task itself failed (a node lost, a worker killed)
                why = f"ray task failed: {reason(e)}"[:300]
                finished.append((prepared, TrialResult(status="crash", backend="ray",
                                                       reason=why)))
                continue
            finished.append((prepared, unpack(result, files, Path(job.workdir))))
        return sorted(finished, key=lambda pr: pr[0].number)

    def close(self) -> None:
        for ref in list(self._refs):
            self.ray.cancel(ref, force=True)
        self._refs.clear()
        if self.started_here:
            self.ray.shutdown()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_local(ray) -> str:
    """Start a Ray instance for this session alone; return its temp folder.

    Ray's default folder, /tmp/ray, is world-writable without the sticky bit and seen by local
    trials: anyone could replace its sockets or its `ray_current_cluster`. Ray makes its own
    folder 0777 whatever it is given, so it gets one inside a 0700 folder of ours: no one else
    can reach it, and no other instance is found through it.

    On Linux Ray binds every server to the host's outward address and turns a
    `_node_ip_address` of 127.0.0.1 back into that address; only with multi-host mode off (the
    constant that RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER sets when Ray is imported) does it keep the
    loopback address, so it is off while the instance starts. A Ray that ignores this is
    refused rather than left listening on every interface."""
    from ray._private import ray_constants

    temp = tempfile.mkdtemp(prefix="ar-ray-head-")  # 0700, ours; short: Ray's sockets live here
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", _node_ip_address=LOOPBACK, _temp_dir=f"{temp}/ray",
                 log_to_driver=False, include_dashboard=False, configure_logging=False)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
    bound = {n["NodeManagerAddress"] for n in ray.nodes()}
    if bound != {LOOPBACK}:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        raise RuntimeError(f"this Ray ({ray.__version__}) listens on {', '.join(sorted(bound))}, "
                           f"not {LOOPBACK} only; start a cluster yourself and pass "
                           "--ray-address")
    return temp


def run_on_node(job: TrialJob, sandbox_kind: str, isolation: str = "auto"):
    """The task: run the job in this node's sandbox, on the GPUs Ray gave it; return its
    result record and the files it wrote."""
    import ray

    from sandbox import select_sandbox

    gpus = tuple(int(g) for g in ray.get_gpu_ids())
    sandbox, _ = select_sandbox(sandbox_kind, isolation)
    work = Path(tempfile.mkdtemp(prefix="ar-ray-"))
    try:
        key = hashlib.sha256((job.cache_dir or "").encode()).hexdigest()[:12]
        cache = Path.home() / ".cache" / "autoresearch-sandbox" / "compile" / key
        local = replace(job, workdir=str(work / "trial"), cache_dir=str(cache),
                        limits=replace(job.limits, gpus=gpus))
        result = execute(sandbox, local, scratch=work)
        return result.to_dict(), collect(work / "trial")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def collect(folder: Path) -> dict[str, bytes]:
    """The folder's regular files (logs first), up to RETURNED_BYTES in all.

    This runs as the node's user (often root) on a folder the trial wrote: a link in out/ may
    name /etc/shadow or /proc/self/environ (this worker's environment, API keys and all). So
    nothing is followed: every folder and file is opened relative to its parent with
    O_NOFOLLOW, links, pipes and devices stay behind, and a file is read only where the trial
    user could read it or it is the sandbox's own. An entry that cannot be read is left out;
    it never costs the trial its result."""
    try:
        top = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return {}
    try:
        found = sorted(_regular_files(top, os.fstat(top), "", 0),
                       key=lambda f: (PurePosixPath(f[0]).suffix != ".log", f[0]))
        files, total = {}, 0
        for rel, size in found:
            if total + size <= RETURNED_BYTES:
                data = _read(top, rel, RETURNED_BYTES - total)
                if data is not None:
                    files[rel] = data
                    total += len(data)
        return files
    finally:
        os.close(top)


def _may_read(st: os.stat_result, parent: os.stat_result) -> bool:
    """Whether the trial user could read this file (list and enter this folder), or it is the
    sandbox's own: ours, in a folder no one else can write, so no trial put it there."""
    me = os.geteuid()
    if st.st_uid == me and parent.st_uid == me and not parent.st_mode & 0o022:
        return True
    want = 0o5 if stat.S_ISDIR(st.st_mode) else 0o4
    shift = 6 if st.st_uid == TRIAL_UID else 3 if st.st_gid == TRIAL_GID else 0
    return (st.st_mode >> shift) & want == want


def _open_at(parent: int, name: str, flags: int = 0) -> int:
    return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | flags,
                   dir_fd=parent)


def _regular_files(fd: int, st: os.stat_result, prefix: str, depth: int):
    """(relative path, size) of each regular file the trial user could read, below `fd`."""
    try:
        names = sorted(os.listdir(fd))
    except OSError:
        return
    for name in names:
        try:
            entry = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            continue
        if not _may_read(entry, st):
            continue
        if stat.S_ISREG(entry.st_mode):
            yield prefix + name, entry.st_size
        elif stat.S_ISDIR(entry.st_mode) and depth < DEPTH:
            try:
                child = _open_at(fd, name, os.O_DIRECTORY)
            except OSError:
                continue
            try:
                yield from _regular_files(child, os.fstat(child), f"{prefix}{name}/", depth + 1)
            finally:
                os.close(child)


def _read(top: int, rel: str, limit: int) -> bytes | None:
    """The file at `rel`, opened one component at a time without following links and checked
    again once open (the listing may be stale); None if it is no longer a readable regular
    file of at most `limit` bytes."""
    opened: list[int] = []
    try:
        fd, st = top, os.fstat(top)
        *folders, name = rel.split("/")
        for part, flags in [(f, os.O_DIRECTORY) for f in folders] + [(name, 0)]:
            opened.append(_open_at(fd, part, flags))
            fd, parent, st = opened[-1], st, os.fstat(opened[-1])
            if not _may_read(st, parent):
                return None
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        data = bytearray()
        while chunk := os.read(fd, min(2**20, limit + 1 - len(data))):
            data += chunk
            if len(data) > limit:  # grew since the listing
                return None
        return bytes(data)
    except OSError:
        return None
    finally:
        for fd in opened:
            os.close(fd)


def unpack(result: dict, files: dict[str, bytes], workdir: Path) -> TrialResult:
    for rel, data in files.items():
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
            continue  # a node sends names below the trial's folder; anything else is dropped
        target = workdir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    record = TrialResult.from_dict(result)
    record.log_path = str(workdir / "train.log")
    return record


def check_nodes(ray, sandbox_kind: str, data_dir: str | None, isolation: str = "auto") -> None:
    """Every alive node can run trials: the data is there, the sandbox starts."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_probe)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(sandbox_kind, data_dir, isolation) for n in nodes]
    problems = [f"node {n['NodeManagerAddress']}: {p}" for n, p in zip(nodes, ray.get(refs),
                                                                       strict=True) if p]
    if problems:
        raise SandboxError("the Ray cluster cannot run trials: " + "; ".join(problems))


def _warm() -> None:
    import agent.executors.base  # noqa: F401
    import sandbox.local  # noqa: F401


def _probe(sandbox_kind: str, data_dir: str | None, isolation: str = "auto") -> str:
    if data_dir is not None and not all(
            os.path.isfile(os.path.join(data_dir, n)) for n in ("train.bin", "val.bin",
                                                                "meta.json")):
        return (f"no prepared data at {data_dir} (copy it there, or run "
                f"`python prepare.py --out {data_dir}` on that node)")
    try:
        from sandbox import select_sandbox

        select_sandbox(sandbox_kind, isolation)
    except Exception as e:  # any failure to start the sandbox is this node's problem
        return f"the {sandbox_kind} sandbox cannot start: {reason(e)}"
    return ""
