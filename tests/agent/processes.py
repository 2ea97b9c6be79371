"""What the tests of commands and servers share: the `autoresearch` command as a process, a
free port on 127.0.0.1, a server started in its own process group and polled until it
answers, and stopped with its children."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

BIN = os.path.dirname(sys.executable)


def autoresearch(*args, wait=True, **kw):
    """(exit code, output) of `autoresearch ARGS`; the running process with wait=False."""
    exe = shutil.which("autoresearch", path=BIN)
    proc = subprocess.Popen([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kw)
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(cmd: list[str], port: int, ready: str) -> subprocess.Popen:
    """Start `cmd` and wait (up to 90 s) until http://127.0.0.1:PORT/READY answers."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=2):
                return proc
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, cmd
            time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
