"""Where prepared trials run (DESIGN.md, Scale): `serial` (one at a time), `pool` (K slots on
this host), `ray` (a task per trial on a Ray cluster). The session never knows which."""

from __future__ import annotations

from agent.executors.base import TrialJob, execute, slot_limits
from agent.executors.pool import PoolExecutor
from agent.executors.serial import SerialExecutor

__all__ = ["PoolExecutor", "SerialExecutor", "TrialJob", "execute", "make_executor",
           "slot_limits"]


def make_executor(kind: str, sandbox_kind: str, limits: list, scratch, ray_address=None,
                  data_dir=None, gpus_per_trial: int = 0, isolation: str = "auto"):
    """The executor `kind` with one slot per entry of `limits`."""
    if kind == "ray":
        from agent.executors.ray_cluster import RayExecutor

        return RayExecutor(sandbox_kind, limits, ray_address, data_dir, gpus_per_trial,
                           isolation)
    from sandbox import select_sandbox

    sandbox, why = select_sandbox(sandbox_kind, isolation)
    if kind == "serial" or len(limits) == 1:
        return SerialExecutor(sandbox, limits[0], scratch, why)
    return PoolExecutor(sandbox, limits, scratch, why)
