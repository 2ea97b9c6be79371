"""Runs one trial in isolation and says what happened (DESIGN.md, Sandbox)."""

from __future__ import annotations

from sandbox.base import Limits, NoEngine, Sandbox, SandboxError, TrialRun
from sandbox.result import TrialResult

__all__ = ["Limits", "Sandbox", "SandboxError", "TrialResult", "TrialRun", "select_sandbox"]


def select_sandbox(kind: str = "auto", isolation: str = "auto") -> tuple[Sandbox, str]:
    """The backend for `kind` (auto, docker, local) and one line saying which and why.
    `isolation` is the local backend's (sandbox/local.py): auto isolates a root session's
    trials or refuses where it cannot; none runs them as the session's user."""
    if kind == "local":
        from sandbox.local import LocalSandbox

        return LocalSandbox(isolate=isolation), "local backend (asked for)"
    if kind not in ("auto", "docker"):
        raise SandboxError(f"unknown sandbox {kind!r}: use auto, docker or local")
    try:
        from sandbox.docker import DockerSandbox

        backend = DockerSandbox()
        built = " (built just now: the offline host image)" if backend.built else ""
        return backend, f"docker backend, image {backend.image}{built}"
    except SandboxError as e:
        if kind == "docker":
            raise
        from sandbox.local import LocalSandbox

        # auto chose, and says so as a choice: asking for local is not the remedy here
        why = (f"no Docker engine answers: {e.why}; start dockerd for the docker backend"
               if isinstance(e, NoEngine) else str(e) or type(e).__name__)
        return LocalSandbox(isolate=isolation), f"local backend ({why})"
