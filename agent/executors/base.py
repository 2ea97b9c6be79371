"""What every executor runs: a `TrialJob` (plain data, so Ray can ship it to another node),
through `execute` (the sandbox, or the harness around it), on a slot's `Limits`."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.watch import Watch, WatchSpec
from sandbox.base import Limits, TrialRun, make_readable
from sandbox.harness import run_scored
from sandbox.result import TrialResult


@dataclass
class TrialJob:
    """Everything one trial needs, as data: its code travels as a tar of the commit."""

    number: int
    tree_tar: bytes  # `git archive` of the trial's commit
    workdir: str  # where train.log and out/ go (on the machine that runs it)
    data_dir: str | None
    env: dict[str, str]
    cache_dir: str | None
    limits: Limits
    scoring: str = "printed"
    seq_len: int | None = None
    folder: dict = field(default_factory=dict)  # RunSpec.job(): python, env, mounts
    watch: dict | None = None  # agent/watch.WatchSpec as data: what may stop it early
    # harness scoring only: a prepared folder the model is also scored on (the test split's,
    # for `autoresearch report`); None for every trial of a session
    test_data_dir: str | None = None


def execute(sandbox, job: TrialJob, scratch: Path | None = None,
            cancel: threading.Event | None = None) -> TrialResult:
    """Unpack the job's tree and run it in `sandbox` (scored by the harness if asked)."""
    folder = Path(tempfile.mkdtemp(prefix="ar-trial-", dir=scratch))
    try:
        tree = folder / "src"
        tree.mkdir()
        with tarfile.open(fileobj=io.BytesIO(job.tree_tar)) as tar:
            tar.extractall(tree, filter="data")
        make_readable(folder)
        run = TrialRun(tree=tree, workdir=Path(job.workdir),
                       data_dir=Path(job.data_dir) if job.data_dir else None, env=job.env,
                       cache_dir=Path(job.cache_dir) if job.cache_dir else None,
                       python=job.folder.get("python"), folder_env=job.folder.get("env", {}),
                       mounts=tuple(tuple(m) for m in job.folder.get("mounts", ())))
        watch = Watch(WatchSpec.from_dict(job.watch)) if job.watch else None
        if job.scoring == "harness":
            return run_scored(sandbox, run, job.limits, job.seq_len, scratch=scratch,
                              cancel=cancel, watch=watch,
                              test_data=Path(job.test_data_dir) if job.test_data_dir else None)
        return sandbox.run(run, job.limits, cancel=cancel, watch=watch)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def slot_limits(base: Limits, workers: int, gpus: list[int], gpus_per_trial: int | None,
                cpus: float | None) -> list[Limits]:
    """One Limits per slot: its own GPU ids (gpus_per_trial of them, default 1), and on a
    CPU host its own cores when each trial gets a whole number of them."""
    slots = []
    per = gpus_per_trial or 1
    for i in range(workers):
        own = tuple(gpus[i * per:(i + 1) * per]) if gpus else ()
        cpuset: tuple[int, ...] = ()
        if cpus and float(cpus).is_integer() and workers * int(cpus) <= (os.cpu_count() or 1):
            cpuset = tuple(range(i * int(cpus), (i + 1) * int(cpus)))
        slots.append(replace(base, gpus=own, cpus=cpus or base.cpus, cpuset=cpuset))
    return slots
