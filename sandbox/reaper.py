"""Removes a session's trial containers once the session is gone, even after kill -9.

A Docker container outlives the process that started it. The Docker backend therefore starts
this small watcher beside the session (its own process session, so Ctrl-C in the terminal
does not reach it): it waits for the session's pid to disappear, removes every trial
container labelled with that owner, and exits. A session that ends normally has removed its
containers already; the watcher then finds none.

    python -c 'from sandbox.reaper import main; main()' PID HOST
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is gone for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def start(owner_pid: int, host: str) -> subprocess.Popen:
    """The watcher for `owner_pid`, detached from the session's process group."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    for name in ("DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "HOME"):
        if name in os.environ:  # how to reach the engine, as the session does
            env[name] = os.environ[name]
    return subprocess.Popen(
        [sys.executable, "-c", "from sandbox.reaper import main; main()", str(owner_pid), host],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True, env=env)


def main(argv: list[str] | None = None) -> None:
    pid, host = (argv or sys.argv[1:])[:2]
    while alive(int(pid)):
        time.sleep(0.5)
    import docker

    from sandbox.base import LABEL, OWNER_LABEL

    client = docker.from_env(timeout=60)
    owner = f"{OWNER_LABEL}={host}:{pid}"
    for container in client.containers.list(all=True,
                                            filters={"label": [f"{LABEL}=trial", owner]}):
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass
