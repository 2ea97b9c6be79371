"""The sandbox interface: limits, the environment a trial may see, the backend protocol."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sandbox.result import TrialResult

LABEL = "autoresearch-sandbox"
# "<hostname>:<pid>" of the process that started a container (its reaper removes it)
OWNER_LABEL = f"{LABEL}.owner"

# The only variables a trial ever sees. Host variables (API keys above all) never enter: the
# backends build the environment from these names and from nothing else.
ALLOWED_ENV = re.compile(
    r"^(AR_[A-Z0-9_]+|TIME_BUDGET|OMP_NUM_THREADS|OMP_WAIT_POLICY|PYTHONHASHSEED)$")
# System folders a trial may find programs in: torch.compile needs a C compiler, Triton and
# CUDA their tools. The interpreter's own folder comes first.
SYSTEM_PATH = ("/usr/local/cuda/bin", "/usr/local/nvidia/bin", "/usr/local/sbin",
               "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


class UserError(RuntimeError):
    """Bad input or a state the user can fix; the message says what to do. The root of every
    such error, here at the bottom so that sandbox/ needs nothing from agent/ (agent.errors
    re-exports it)."""


class SandboxError(UserError):
    """The sandbox itself cannot run trials (no engine, no image); the message says what to do."""


class NoEngine(SandboxError):
    """No Docker engine answers. `why` is what the client said, or its exception's type where
    it said nothing (a bare DockerException): never an empty reason."""

    def __init__(self, why: str):
        super().__init__(f"no Docker engine answers ({why}): start dockerd, or use "
                         "--sandbox local")
        self.why = why


@dataclass(frozen=True)
class Limits:
    """What one trial may use. `memory` is host memory (RAM + swap); GPU memory is capped by
    the trial itself through AR_GPU_MEM_FRACTION, which the backends pass in."""

    timeout_s: float = 900.0
    memory: str = "8g"
    pids: int = 512
    cpus: float | None = None
    gpus: tuple[int, ...] = ()
    gpu_mem_fraction: float | None = None
    disk: str = "10g"  # what the trial may write into out/ (and its temp folder)
    cpuset: tuple[int, ...] = ()  # the cores this trial may run on (a parallel slot's own)
    log_cap_bytes: int = 32 * 2**20  # head of the log kept on disk; the tail is kept too

    @property
    def memory_bytes(self) -> int:
        return parse_memory(self.memory)

    @property
    def disk_bytes(self) -> int:
        return parse_memory(self.disk)


def parse_memory(text: str | int) -> int:
    """'8g', '512m', '256MiB', '1.5G' or a byte count -> bytes (more than 0)."""
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", str(text).lower())
        if not m:
            raise ValueError(f"{text!r} is not a size like 512m or 8g")
        number, unit = float(m.group(1)), m.group(2)
        value = int(number * 1024 ** " kmgt".index(unit or " "))
    if value <= 0:
        raise ValueError(f"{text!r} is no size at all: give one like 512m or 8g")
    return value


@dataclass(frozen=True)
class TrialRun:
    """One trial's inputs besides the limits: the code, where its files go, its data."""

    tree: Path  # folder holding train.py (and prepare.py): mounted read-only
    workdir: Path  # train.log is written here by the host; out/ is the trial's writable folder
    data_dir: Path | None = None  # prepared data, mounted read-only as AR_DATA_DIR
    env: dict[str, str] = field(default_factory=dict)  # TIME_BUDGET, AR_SEED, ...
    cache_dir: Path | None = None  # the session's compile cache, shared by its trials (rw)
    script: str = "train.py"  # what runs: a file of `tree`
    hide_val: bool = False  # the trial sees train.bin and meta.json, and an empty val.bin
    # how the training folder runs (its [run] table, config/runspec.py): its interpreter, extra
    # variables (checked there: no secrets, nothing of ours), host folders read under HOME
    python: str | None = None
    folder_env: dict[str, str] = field(default_factory=dict)
    mounts: tuple[tuple[str, str], ...] = ()  # (host path, path relative to the trial's HOME)
    # A folder's preparation (agent/config/data.py), run where its trials run and as their user:
    # `command` (by /bin/sh, in the source folder) instead of `script`, the mounts writable,
    # and out/ seen at its own host path as HOME, so the data folder it prints is a host path
    # (agent/config/data.py accepts one inside out/ or a mount). Trials keep all of it False/None.
    prepare: bool = False
    command: str | None = None
    network: bool = False  # the host's network: only a preparation the user allowed it


def held_out_test(data_dir: Path) -> Path:
    """The folder that holds a prepared folder's test split (baseline_train/prepare.py,
    test_dir): beside it, FOLDER.test. No trial may read it; only the harness's scoring of a
    final result gets it, as its data folder."""
    data_dir = Path(data_dir)
    return data_dir.with_name(data_dir.name + ".test")


def make_readable(tree: Path) -> None:
    """Let the trial user (another uid) read `tree` and enter its folders, itself included:
    mkdtemp makes 0o700, and a tar or a copy keeps whatever modes its source had. Links are
    left alone: chmod would follow one to a file outside the tree."""
    for root, _dirs, files in os.walk(tree):
        os.chmod(root, 0o755)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o644)


def give_tree(folder: Path, uid: int, gid: int) -> None:
    """Let the trial user write the folder (and what earlier runs left in it); where the
    session may not chown, the folder stays as it is."""
    if folder.stat().st_uid == uid:
        return
    below = (os.path.join(root, n) for root, dirs, files in os.walk(folder) for n in dirs + files)
    for name in [str(folder), *below]:
        try:
            os.lchown(name, uid, gid)
        except OSError:
            pass


def cache_env(cache_dir: Path | str) -> dict[str, str]:
    """Where torch.compile (Inductor) and Triton keep what they compiled: one folder per
    session, so only its first trial pays the whole compile."""
    return {"TORCHINDUCTOR_CACHE_DIR": f"{cache_dir}/inductor",
            "TRITON_CACHE_DIR": f"{cache_dir}/triton"}


def trial_path(python: str, here: bool = True) -> str:
    """The trial's PATH: the interpreter's folder, then the system folders; on this host
    (`here`) only those that exist, in a container all of them (its own, not checked here)."""
    folders = [os.path.dirname(python)] if "/" in python else []
    folders += [f for f in SYSTEM_PATH if (not here or os.path.isdir(f)) and f not in folders]
    return os.pathsep.join(folders)


def tool_env(python: str) -> dict[str, str]:
    """PATH (`trial_path`), and CC / CXX where found on it: what torch.compile and Triton
    need, and nothing from the host's own environment."""
    path = trial_path(python)
    env = {"PATH": path}
    for var, names in (("CC", ("cc", "gcc", "clang")), ("CXX", ("c++", "g++", "clang++"))):
        found = next((p for p in (shutil.which(n, path=path) for n in names) if p), None)
        if found:
            env[var] = found
    return env


def trial_env(run: TrialRun, limits: Limits) -> dict[str, str]:
    """The trial's whole environment, minus what each backend adds for its own paths."""
    bad = [k for k in run.env if not ALLOWED_ENV.match(k)]
    if bad:
        raise ValueError(f"variables not allowed into a trial: {', '.join(sorted(bad))}")
    env = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8",
           **run.folder_env, **{k: str(v) for k, v in run.env.items()}}
    if limits.cpus:
        env.setdefault("OMP_NUM_THREADS", str(max(1, int(limits.cpus))))
    if limits.gpu_mem_fraction is not None:
        env["AR_GPU_MEM_FRACTION"] = str(limits.gpu_mem_fraction)
    env.setdefault("AR_DEVICE", "cuda" if limits.gpus else "cpu")
    if limits.gpus:  # GPU ids mean what nvidia-smi shows, not CUDA's fastest-first order
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return env


CANCELLED = "cancelled: the session stopped while it ran"


def wait_for(wait, timeout_error, deadline: float, cancel=None, not_found=None) -> str:
    """Call `wait(timeout)` until it returns ("exited"), the deadline passes ("timeout") or
    `cancel` is set ("cancelled"); short waits, so a cancel is seen within a second."""
    import time

    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout"
        if cancel is not None and cancel.is_set():
            return "cancelled"
        asked = time.monotonic()
        try:
            wait(min(remaining, 1.0) if cancel is not None else remaining)
            return "exited"
        except timeout_error as e:
            if not_found is not None and isinstance(e, not_found):
                raise
            if time.monotonic() - asked < 0.05:  # failed at once (no engine?): do not spin
                time.sleep(0.2)


class Sandbox(Protocol):
    """Runs one trial in isolation. `cancel` (a threading.Event) stops it early: the session
    is stopping and will not record the result. `watch` (sandbox/curve.py's Stream calls its
    `point` and `preflight`) may stop it with a status of its own: early stopping."""

    name: str

    def run(self, run: TrialRun, limits: Limits, cancel=None, watch=None) -> TrialResult: ...
