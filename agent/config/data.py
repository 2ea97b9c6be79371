"""The trial data: prepared once by the training folder's own step, inside the sandbox.

A folder's prepare.py (`[run] prepare = "auto"`) and its `[run] prepare` command are code
from someone else (DESIGN.md, "Trust"): they run through the same Sandbox as its trials, as
the trial user, with the trials' environment (no key of the session's), no network unless the
user passes --prepare-network, their [run] mounts writable and a folder `WORKDIR/out` of
their own as HOME. The data folder one prints last is accepted only inside that folder or a
mount. The one exception is our own code: a prepare.py byte-identical to the packaged
baseline's runs on the host, since it fetches its held-out validation archive into a private
cache (baseline_train/prepare.py) that no trial may see.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from agent.errors import UserError
from agent.text import clean
from sandbox.base import Limits, TrialRun

# What a program prints when it finds no network: resolvers, sockets, urllib, requests, curl.
NO_NETWORK = re.compile(
    r"Temporary failure in name resolution|Name or service not known|Network is unreachable|"
    r"No address associated with hostname|Could not resolve host|Failed to establish a new "
    r"connection|Connection refused|getaddrinfo|URLError|NameResolutionError|No route to host",
    re.I)


class DataError(UserError):
    """prepare.py could not prepare the data; the message says what it printed."""


@dataclass(frozen=True)
class Preparation:
    """Where and how a folder's preparation runs: the sandbox (a kind, or a backend already
    made), a folder of its own (its log, and out/: its HOME), the network only when the user
    allowed it, and the trials' memory and disk limits."""

    sandbox: object  # "auto" | "docker" | "local", or a sandbox.base.Sandbox
    workdir: Path
    network: bool = False
    memory: str = Limits.memory
    disk: str = Limits.disk
    isolation: str = "auto"  # the local backend's (sandbox/local.py)


def prepare_data(spec, repo: Path, train_dir: Path, where: Preparation) -> Path | None:
    """The data folder of a session, as its training folder's [run] table says: `auto` runs
    prepare.py (it prints the folder); `none` and `once` leave it to train.py (the user ran
    the preparation); anything else is a command, run in (a copy of) the training folder,
    whose last line may name the folder."""
    if spec.prepare == "auto":
        return prepare_default_data(repo, where, spec)
    if spec.prepare in ("none", "once"):
        return None
    run = _trial_run(spec, Path(train_dir), where, command=spec.prepare)
    return _sandboxed(run, where, f"[run] prepare = {spec.prepare!r}", 6 * 3600, required=False)


def prepare_default_data(train_dir: Path, where: Preparation | None = None,
                         spec=None) -> Path | None:
    """Run `train_dir/prepare.py` (no arguments: its default corpus, cached) and return the
    folder it printed last; None if the folder has no prepare.py. Only the packaged one runs
    without `where`."""
    prepare = Path(train_dir) / "prepare.py"
    if not prepare.is_file():
        return None
    if is_packaged_prepare(prepare):
        return packaged_prepare()
    if where is None:
        raise ValueError(f"{prepare} is not the packaged prepare.py: say where it runs")
    run = _trial_run(spec, Path(train_dir), where, script="prepare.py")
    return _sandboxed(run, where, str(prepare), 1800, required=True)


def is_packaged_prepare(prepare: Path) -> bool:
    """Whether `prepare` is, byte for byte, the packaged baseline's prepare.py (our code)."""
    from agent.paths import baseline_dir

    try:
        return prepare.read_bytes() == (baseline_dir() / "prepare.py").read_bytes()
    except OSError:
        return False


def packaged_prepare(*args: str) -> Path:
    """The packaged prepare.py itself (not a folder's copy), on the host as the session, with
    `args` (none: the default corpus; `--test --out DIR`: its test split): the folder it
    printed last."""
    from agent.paths import baseline_dir

    prepare = baseline_dir() / "prepare.py"
    out = subprocess.run([sys.executable, str(prepare), *args], capture_output=True,
                         text=True, timeout=1800)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines or not Path(lines[-1]).is_dir():
        tail = (out.stderr.strip().splitlines() or lines or ["no output"])[-1]
        raise DataError(f"{prepare} could not prepare its data: {clean(tail, one_line=True)}")
    return Path(lines[-1])


def _trial_run(spec, tree: Path, where: Preparation, script: str = "train.py",
               command: str | None = None) -> TrialRun:
    where.workdir.mkdir(parents=True, exist_ok=True)
    return TrialRun(
        tree=tree.resolve(), workdir=where.workdir, script=script, command=command,
        prepare=True, network=where.network,
        python=spec.python if spec else None, folder_env=dict(spec.env) if spec else {},
        mounts=tuple(spec.relative_mounts()) if spec else ())


def _sandboxed(run: TrialRun, where: Preparation, what: str, timeout_s: float,
               required: bool) -> Path | None:
    from sandbox import select_sandbox

    backend = where.sandbox
    if isinstance(backend, str):
        backend = select_sandbox(backend, where.isolation)[0]
    result = backend.run(run, Limits(timeout_s=timeout_s, memory=where.memory,
                                     disk=where.disk))
    log = Path(result.log_path or run.workdir / "train.log")
    lines = [x.strip() for x in _text(log).splitlines() if x.strip()]
    if result.exit_code != 0 or result.timed_out or result.oom_killed:
        # the reason may quote the preparation's own output (a crash line, a FAIL line)
        why = (f"took longer than {timeout_s:.0f} s" if result.timed_out
               else clean(result.reason, one_line=True)[:300]
               if (result.oom_killed or result.exit_code is None or "--disk" in result.reason)
               else f"exit {result.exit_code}")
        tail = clean((lines or ["no output"])[-1], one_line=True)[:300]
        hint = ""
        if not run.network:
            hint = ("; it found no network: pass --prepare-network to let it download"
                    if NO_NETWORK.search("\n".join(lines[-20:]))
                    else "; it ran without network (--prepare-network gives it one)")
        raise DataError(f"{what} failed in the {backend.name} sandbox ({why}{hint}): {tail} "
                        f"(log: {log})")
    printed = lines[-1] if lines else ""
    data = _host_folder(printed, run)
    if data is None and (required or printed.startswith("/")):
        raise DataError(f"{what} printed {clean(printed, one_line=True)[:200]!r} last, not a "
                        "folder inside its $HOME ($AR_OUT_DIR) or a [run] mount: write the data "
                        f"there and print that folder (log: {log})")
    return data


def _host_folder(printed: str, run: TrialRun) -> Path | None:
    """The host folder that `printed` (a path as the preparation saw it) names: inside its
    out/ folder or a mount, links followed and still inside; None for anything else."""
    if not printed.startswith("/"):
        return None
    out = (Path(run.workdir) / "out").resolve()
    # a mount as the preparation saw it under HOME, or at its own path (a link followed)
    views = [(out / rel, Path(host)) for host, rel in run.mounts]
    views += [(Path(host), Path(host)) for host, _ in run.mounts] + [(out, out)]
    path = os.path.normpath(printed)
    for view, host in sorted(views, key=lambda v: -len(str(v[0]))):
        rel = os.path.relpath(path, view)
        if rel == ".." or rel.startswith("../"):
            continue
        found = (host / rel).resolve()
        if found.is_dir() and found.is_relative_to(host.resolve()):
            return found
        return None
    return None


def _text(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except OSError:
        return ""
