"""Can this machine isolate a local trial, and does a GPU reach it? (`sandbox check --gpus`)

A GPU box a user (or our own check) gets for minutes may lack what the local backend's
isolation needs: the right to `unshare` (a container without CAP_SYS_ADMIN), a writable
memory cgroup (then a watchdog limits memory), /dev/nvidia-uvm before the first CUDA init (a
trial user cannot make it), an interpreter the trial user may read (a venv under a closed
folder), a C compiler on the trial's PATH (torch.compile). `machine_report` finds out the way
a trial would: a probe script run by the local backend exactly as trials run (as the trial
user in its namespaces, under the memory guard, with the GPUs' variables), which reports what
it can open, find and initialise from inside. Where isolation cannot be had the report says
why and what a session will do: refuse, unless it is given `--isolation none`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from sandbox.base import Limits, SandboxError
from sandbox.gpus import ensure_uvm
from sandbox.images.host import TRIAL_UID
from sandbox.local import LocalSandbox
from sandbox.memguard import cgroup_available

PREFIX = "probe: "
PROBE = r'''
import json, os, shutil, stat, sys
facts = {"uid": os.getuid(), "python": sys.executable, "devices": {}}
facts["compiler"] = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
if os.environ.get("AR_PROBE_CUDA") == "1":
    try:
        import torch
        facts["torch"] = torch.__version__
        count = torch.cuda.device_count()
        facts["cuda"] = {"count": count}
        if count:
            torch.zeros(1, device="cuda")
            facts["cuda"]["name"] = torch.cuda.get_device_name(0)
    except Exception as e:
        text = str(e).strip().splitlines()
        facts["cuda"] = {"error": type(e).__name__ + (": " + text[0][:200] if text else "")}
# after CUDA's init, which may make nodes (nvidia-uvm); device nodes only (not nvidia-caps/)
for name in sorted(os.listdir("/dev")):
    path = "/dev/" + name
    if name.startswith("nvidia") and stat.S_ISCHR(os.stat(path).st_mode):
        try:
            os.close(os.open(path, os.O_RDWR))
            facts["devices"][path] = "ok"
        except OSError as e:
            facts["devices"][path] = e.strerror or str(e)
print("probe: " + json.dumps(facts), flush=True)
'''


def host_devices(root: str = "/") -> list[str]:
    """The NVIDIA device nodes of this host (character devices: not /dev/nvidia-caps/)."""
    dev = Path(root) / "dev"
    return sorted(f"/dev/{p.name}" for p in dev.glob("nvidia*") if p.is_char_device()) \
        if dev.is_dir() else []


def run_probe(sandbox: LocalSandbox, gpus: tuple[int, ...]) -> tuple[dict | None, str]:
    """The probe run as a trial: (its facts, or None, and the last line it printed)."""
    result, lines = sandbox.run_script(
        PROBE, Limits(timeout_s=300, memory="16g", disk="64m", gpus=gpus),
        {"AR_PROBE_CUDA": "1" if gpus else "0"})
    found = next((json.loads(x[len(PREFIX):]) for x in reversed(lines)
                  if x.startswith(PREFIX)), None)
    last = lines[-1] if lines else (result.reason or f"exit {result.exit_code}")
    return found, last[:200]


def machine_report(gpus: tuple[int, ...] = (), isolation: str = "auto") -> dict:
    """What a local trial gets here, found from inside one; `session` says what a session
    started now with this `isolation` would do."""
    root = os.geteuid() == 0
    report: dict = {"root": root, "host_devices": host_devices(), "gpus": list(gpus),
                    "memory_guard": cgroup_available() or "watchdog"}
    if gpus and root:  # as a session does before its first unprivileged trial
        report["uvm_made"] = ensure_uvm(sys.executable)
    try:
        sandbox = LocalSandbox(isolate=isolation)
        refused = None
    except SandboxError as e:  # no isolation here: what a trial would get without it
        refused = str(e)
        sandbox = LocalSandbox(isolate="none")
    report["isolation"] = (f"uid {TRIAL_UID} in mount and network namespaces of its own"
                           if sandbox.isolated else
                           "none: trials run as root" if root else
                           "none: trials run as you (not root)")
    try:
        facts, last = run_probe(sandbox, gpus)
    except (OSError, SandboxError) as e:  # the probe could not even start
        facts, last = None, f"{type(e).__name__}: {e}"
    report["trial"] = facts
    problems = []
    if refused:
        problems.append(refused)
    if facts is None:
        problems.append(f"the probe trial did not run: {last}")
    else:
        closed = sorted(p for p, v in facts["devices"].items() if v != "ok")
        if gpus and not facts["devices"]:
            problems.append("no /dev/nvidia* inside the trial")
        if gpus and closed:
            problems.append("the trial user cannot open " + ", ".join(closed))
        if gpus and "/dev/nvidia-uvm" not in facts["devices"]:
            problems.append("no /dev/nvidia-uvm: CUDA cannot initialise in a trial")
        if not facts.get("compiler"):
            problems.append("no C compiler on the trial's PATH (torch.compile needs one)")
        cuda = facts.get("cuda") or {}
        if gpus and (cuda.get("error") or not cuda.get("count")):
            problems.append(f"CUDA in a trial: {cuda.get('error') or 'no device'}")
    report["problems"] = problems
    if refused:
        report["session"] = "refuses to start (pass --isolation none to run trials as root)"
    elif problems:
        report["session"] = "starts, but its trials will fail: " + "; ".join(problems)
    else:
        report["session"] = f"runs trials with {report['isolation']}, memory by " \
                            f"{report['memory_guard']}"
    return report
