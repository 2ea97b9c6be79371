"""A Ray task per trial (`--executor ray [--ray-address auto|ray://HOST:PORT]`).

The driver (the session) keeps git, the ledger and the optimizer; each trial becomes a task
asking for its GPUs (`num_gpus`, from --gpus-per-trial) and CPUs (--cpus, default 1), and
runs the same sandbox on the node Ray picks. The trial's code travels as the tar of its
commit; what it wrote (train.log, the harness's log, out/ up to 64 MB) comes back as bytes and
is written into the run folder. Every node needs the same Python environment (this package,
torch), the prepared data at the same path, and for Docker trials the image: checked on each
node at start, with a clear error naming the node.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from agent.executors.base import TrialJob, execute
from sandbox.base import Limits, SandboxError
from sandbox.result import TrialResult

RETURNED_BYTES = 64 * 2**20  # what a trial's folder may send back to the driver
INSTALL = "pip install 'autoresearch-sandbox[ray]'"


def _ray():
    try:
        import ray
    except ImportError:
        raise SandboxError(f"--executor ray needs Ray on this machine: {INSTALL}") from None
    return ray


class RayExecutor:
    def __init__(self, sandbox_kind: str, limits: list[Limits], address: str | None,
                 data_dir: str | None, gpus_per_trial: int):
        ray = _ray()
        self.ray, self.sandbox_kind, self.limits = ray, sandbox_kind, limits[0]
        self.slots = len(limits)
        self.started_here = not ray.is_initialized()
        if self.started_here:
            try:
                ray.init(address=address, log_to_driver=False, include_dashboard=False,
                         configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = address or "a new local instance"
                raise SandboxError(f"cannot reach the Ray cluster at {where}: {e}") from None
        self.task = ray.remote(num_cpus=self.limits.cpus or 1, num_gpus=gpus_per_trial,
                               max_retries=0)(run_on_node)
        self.why = (f"ray executor, {len(ray.nodes())} node(s), {self.slots} trials at once, "
                    f"{sandbox_kind} sandbox on each")
        self._refs: dict = {}
        check_nodes(ray, sandbox_kind, data_dir)
        # start the workers and their imports now, not on the first trials' clock
        warm = ray.remote(num_cpus=self.limits.cpus or 1, num_gpus=gpus_per_trial)(_warm)
        ray.get([warm.remote() for _ in range(self.slots)])

    def submit(self, prepared, job: TrialJob) -> None:
        ref = self.task.remote(replace(job, limits=self.limits), self.sandbox_kind)
        self._refs[ref] = (prepared, job)

    def wait(self) -> list:
        ready, _ = self.ray.wait(list(self._refs), num_returns=1)
        more, _ = self.ray.wait([r for r in self._refs if r not in ready],
                                num_returns=len(self._refs) - len(ready), timeout=0)
        finished = []
        for ref in ready + more:
            prepared, job = self._refs.pop(ref)
            try:
                result, files = self.ray.get(ref)
            except Exception as e:  # the task itself failed (a node lost, a worker killed)
                finished.append((prepared, TrialResult(status="crash", backend="ray",
                                                       reason=f"ray task failed: {e}"[:300])))
                continue
            finished.append((prepared, unpack(result, files, Path(job.workdir))))
        return sorted(finished, key=lambda pr: pr[0].number)

    def close(self) -> None:
        for ref in list(self._refs):
            self.ray.cancel(ref, force=True)
        self._refs.clear()
        if self.started_here:
            self.ray.shutdown()


def run_on_node(job: TrialJob, sandbox_kind: str):
    """The task: run the job in this node's sandbox, on the GPUs Ray gave it; return its
    result record and the files it wrote."""
    import ray

    from sandbox import select_sandbox

    gpus = tuple(int(g) for g in ray.get_gpu_ids())
    sandbox, _ = select_sandbox(sandbox_kind)
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
    """The folder's files (logs first), up to RETURNED_BYTES in all."""
    files, total = {}, 0
    paths = sorted((p for p in folder.rglob("*") if p.is_file()),
                   key=lambda p: (p.suffix != ".log", str(p)))
    for path in paths:
        size = path.stat().st_size
        if total + size <= RETURNED_BYTES:
            files[str(path.relative_to(folder))] = path.read_bytes()
            total += size
    return files


def unpack(result: dict, files: dict[str, bytes], workdir: Path) -> TrialResult:
    for rel, data in files.items():
        target = workdir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    record = TrialResult.from_dict(result)
    record.log_path = str(workdir / "train.log")
    return record


def check_nodes(ray, sandbox_kind: str, data_dir: str | None) -> None:
    """Every alive node can run trials: the data is there, the sandbox starts."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_probe)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(sandbox_kind, data_dir) for n in nodes]
    problems = [f"node {n['NodeManagerAddress']}: {p}" for n, p in zip(nodes, ray.get(refs),
                                                                       strict=True) if p]
    if problems:
        raise SandboxError("the Ray cluster cannot run trials: " + "; ".join(problems))


def _warm() -> None:
    import agent.executors.base  # noqa: F401
    import sandbox.local  # noqa: F401


def _probe(sandbox_kind: str, data_dir: str | None) -> str:
    if data_dir is not None and not all(
            os.path.isfile(os.path.join(data_dir, n)) for n in ("train.bin", "val.bin",
                                                                "meta.json")):
        return (f"no prepared data at {data_dir} (copy it there, or run "
                f"`python prepare.py --out {data_dir}` on that node)")
    try:
        from sandbox import select_sandbox

        select_sandbox(sandbox_kind)
    except Exception as e:  # any failure to start the sandbox is this node's problem
        return f"the {sandbox_kind} sandbox cannot start: {e}"
    return ""
