"""Docker backend: one container per trial, train.py as its main process (DESIGN.md, Sandbox).

Each container gets a read-only root and source, the data read-only, one writable output
folder, no network, an unprivileged user, no capabilities, no-new-privileges,
mem_limit == memswap_limit, a pids limit, a CPU quota, the session's compile cache read-write,
and GPUs: by DeviceRequest where the NVIDIA container toolkit is installed, else as device
nodes plus the driver's libraries (sandbox/gpus.py). Its output is
read from an attach stream (the log driver is off, so the engine keeps no copy) into a
LogSink. OOM is read from State.OOMKilled, a timeout from our own clock; the container is
removed in every case, Ctrl-C included. A folder's preparation (TrialRun.prepare) runs the
same way, with its mounts writable, out/ at its own path as HOME, and a network only when the
user allowed it.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

import docker
import docker.errors
from docker.types import DeviceRequest, LogConfig, Mount

from sandbox.base import (
    CANCELLED,
    LABEL,
    OWNER_LABEL,
    Limits,
    NoEngine,
    SandboxError,
    TrialRun,
    cache_env,
    give_tree,
    trial_env,
    trial_path,
    wait_for,
)
from sandbox.curve import Stream
from sandbox.diskguard import DiskGuard
from sandbox.gpus import GPUError, device_passthrough, toolkit_available
from sandbox.images.host import (
    HOST_IMAGE,
    TRIAL_GID,
    TRIAL_UID,
    build_host_image,
    host_mounts,
    interpreter_roots,
)
from sandbox.logsink import LogSink
from sandbox.reaper import alive
from sandbox.result import TrialResult, build_result

GPU_IMAGE = "autoresearch-sandbox/gpu:1"

DEFAULT_SOCKET = "unix:///var/run/docker.sock"  # where docker.from_env looks without DOCKER_HOST


def connect(timeout: int = 60) -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except docker.errors.DockerException as e:
        said = " ".join(str(e).split())
        # the client's usual words ("Error while fetching server API version: ('Connection
        # aborted.', ConnectionRefusedError(111, ...))") said as what they mean
        for sign, meaning in (("ConnectionRefusedError", "connection refused"),
                              ("FileNotFoundError", "no socket"),
                              ("PermissionError", "permission denied on its socket")):
            if sign in said:
                said = f"{meaning} at {os.environ.get('DOCKER_HOST') or DEFAULT_SOCKET}"
                break
        raise NoEngine(f"{type(e).__name__}: {said}" if said else type(e).__name__) from None


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def cleanup_orphans(client: docker.DockerClient) -> list[str]:
    """Remove trial containers whose owning process on this host is gone (a killed session)."""
    removed = []
    host = socket.gethostname()
    for c in client.containers.list(all=True, filters={"label": f"{LABEL}=trial"}):
        owner_host, _, pid = c.labels.get(OWNER_LABEL, ":").partition(":")
        if owner_host == host and pid.isdigit() and alive(int(pid)):
            continue
        if owner_host not in (host, ""):
            continue  # another machine's session sharing this engine: not ours to judge
        try:
            c.remove(force=True)
            removed.append(c.short_id)
        except docker.errors.NotFound:
            pass
    return removed


class DockerSandbox:
    name = "docker"

    def __init__(self, image: str | None = None, client: docker.DockerClient | None = None,
                 python: str | None = None):
        self.client = client or connect()
        self.built = False  # the offline host image was missing and built here
        if image is None:
            image = GPU_IMAGE if image_exists(self.client, GPU_IMAGE) else HOST_IMAGE
            if image == HOST_IMAGE and not image_exists(self.client, image):
                build_host_image(self.client)  # an empty root file system: about a second
                self.built = True
        if not image_exists(self.client, image):
            hint = ("autoresearch sandbox build --from-host" if image == HOST_IMAGE
                    else "autoresearch sandbox build --gpu")
            raise SandboxError(f"image {image} is missing: run `{hint}`")
        self.image = image
        self.image_id = self.client.images.get(image).id
        self.from_host = image == HOST_IMAGE
        # The host image runs the host's interpreter; any other image brings its own python.
        self.python = python or (sys.executable if self.from_host else "python")
        self._toolkit: tuple[bool, str] | None = None
        cleanup_orphans(self.client)
        _watch_this_session()

    def gpu_mode(self) -> tuple[str, str]:
        """("toolkit" | "device-nodes", why): how GPUs reach this engine's trials."""
        if self._toolkit is None:
            self._toolkit = toolkit_available(self.client)
        has, why = self._toolkit
        if has:
            return "toolkit", f"DeviceRequest: {why}"
        return "device-nodes", (f"{why}: /dev/nvidia* nodes and the driver's libraries are "
                                "passed in read-only instead")

    def run(self, run: TrialRun, limits: Limits, cancel=None, watch=None) -> TrialResult:
        workdir = Path(run.workdir)
        out = workdir / "out"
        out.mkdir(parents=True, exist_ok=True)
        _give_to_trial_user(out)
        # A preparation sees out/ at its own host path, as its HOME: the folder it prints is
        # then a host path (agent/config/data.py accepts one inside out/ or a mount).
        view_out = str(out.resolve()) if run.prepare else "/out"
        home = view_out if run.prepare else "/tmp"
        env = {**trial_env(run, limits), "HOME": home, "USER": "trial", "AR_OUT_DIR": view_out}
        mounts = [Mount("/src", str(Path(run.tree).resolve()), type="bind", read_only=True),
                  Mount(view_out, str(out.resolve()), type="bind", read_only=False)]
        if run.data_dir is not None:
            data = Path(run.data_dir).resolve()
            if run.hide_val:  # train.bin and meta.json only; val.bin an empty file
                empty = workdir / ".empty-val.bin"
                empty.touch()
                mounts += [Mount(f"/data/{n}", str(data / n), type="bind", read_only=True)
                           for n in ("train.bin", "meta.json")]
                mounts.append(Mount("/data/val.bin", str(empty.resolve()), type="bind",
                                    read_only=True))
            else:
                mounts.append(Mount("/data", str(data), type="bind", read_only=True))
            env["AR_DATA_DIR"] = "/data"
        if run.cache_dir is not None:
            cache = Path(run.cache_dir)
            cache.mkdir(parents=True, exist_ok=True)
            _give_to_trial_user(cache)
            mounts.append(Mount("/cache", str(cache.resolve()), type="bind", read_only=False))
            env.update(cache_env("/cache"))
        python = self.python
        if self.from_host:
            mounts += [m.as_docker() for m in host_mounts()]
            if run.python:  # the training folder's venv, read-only at its own path
                python = run.python
                have = [m["Target"] for m in mounts]
                mounts += [Mount(r, r, type="bind", read_only=True)
                           for r in interpreter_roots(run.python)
                           if not any(r == h or r.startswith(h + "/") for h in have)]
        for host, rel in run.mounts:  # read-only under HOME; a preparation writes its data
            if run.prepare and os.path.isdir(host):
                give_tree(Path(host), TRIAL_UID, TRIAL_GID)
            mounts.append(Mount(f"{home}/{rel}", host, type="bind", read_only=not run.prepare))
        argv = [python, f"/src/{run.script}"]
        if run.command:  # by the shell, in the folder, the interpreter's folder on PATH
            argv = ["/bin/sh", "-c", run.command]
            env["PATH"] = trial_path(python, here=False)
        sink = LogSink(workdir / "train.log", cap=limits.log_cap_bytes)
        start = time.monotonic()
        container = disk = lines = None
        timed_out = oom_killed = cancelled = False
        exit_code = None
        try:
            options = self._options(limits, env, mounts)
            options.update(network_disabled=not run.network,
                           working_dir="/src" if run.command else view_out)
            container = self.client.containers.create(self.image, argv, **options)
            stream = container.attach(stdout=True, stderr=True, stream=True, logs=False)
            lines = Stream(sink, workdir / "curve.jsonl", watch,
                           lambda c=container: _kill(c))
            reader = threading.Thread(target=_pump, args=(stream, lines), daemon=True)
            reader.start()
            container.start()
            disk = DiskGuard([out], limits.disk_bytes, lambda: _kill(container)).start()
            codes: list = []

            def wait_exit(timeout):
                codes.append(container.wait(timeout=timeout)["StatusCode"])
            try:  # requests' ReadTimeout / ConnectionError: the short wait ran out
                outcome = wait_for(wait_exit, Exception, start + limits.timeout_s, cancel,
                                   not_found=docker.errors.NotFound)
            except docker.errors.NotFound:  # removed behind our back (docker rm -f)
                outcome = "gone"
            timed_out, cancelled = outcome == "timeout", outcome == "cancelled"
            if timed_out or cancelled:
                _kill(container)
                exit_code = container.wait(timeout=30)["StatusCode"]
            else:
                exit_code = codes[-1] if codes else None
            try:
                container.reload()
                oom_killed = bool(container.attrs["State"].get("OOMKilled"))
            except docker.errors.NotFound:  # removed behind our back: classified from the log
                pass
            reader.join(timeout=10)
        except docker.errors.ImageNotFound:
            raise SandboxError(f"image {self.image} is missing: rebuild it") from None
        except docker.errors.APIError as e:
            raise SandboxError(f"the Docker engine refused the trial: {e.explanation}") from None
        finally:
            if disk is not None:
                disk.stop()
            if lines is not None:
                lines.close()
            if container is not None:
                try:
                    container.remove(force=True)
                except docker.errors.APIError:  # gone already, or being removed by someone
                    pass
            sink.close()
        result = build_result(
            exit_code, sink.tail_text(), oom_killed=oom_killed, timed_out=timed_out,
            wall_s=round(time.monotonic() - start, 3), log_path=str(sink.path),
            log_bytes=sink.total, log_truncated=sink.truncated, backend=self.name)
        result.image = self.image_id
        if lines is not None and result.watched(lines).stopped_at is not None \
                and not cancelled:
            return result  # the session's watch ended it: its verdict stands
        if disk is not None and disk.exceeded and not oom_killed:
            result.status, result.val_bpb = "crash", None
            result.reason = f"wrote more than {limits.disk} into out/ (the --disk limit)"
        elif cancelled:
            result.status, result.val_bpb, result.reason = "crash", None, CANCELLED
        return result

    def _options(self, limits: Limits, env: dict[str, str], mounts: list[Mount]) -> dict:
        mem = limits.memory_bytes
        options = dict(
            environment=env, mounts=mounts, working_dir="/out",
            user=f"{TRIAL_UID}:{TRIAL_GID}", network_disabled=True, read_only=True,
            tmpfs={"/tmp": "size=512m,mode=1777"}, security_opt=["no-new-privileges"],
            cap_drop=["ALL"], mem_limit=mem, memswap_limit=mem, pids_limit=limits.pids,
            labels={LABEL: "trial", OWNER_LABEL: f"{socket.gethostname()}:{os.getpid()}"},
            log_config=LogConfig(type="none"), stdin_open=False, tty=False,
            shm_size="256m",
        )
        if limits.cpus:
            options["nano_cpus"] = int(limits.cpus * 1e9)
        if limits.cpuset:
            options["cpuset_cpus"] = ",".join(str(c) for c in limits.cpuset)
        if limits.gpus and self.gpu_mode()[0] == "toolkit":
            options["device_requests"] = [DeviceRequest(
                device_ids=[str(g) for g in limits.gpus], capabilities=[["gpu"]])]
        elif limits.gpus:
            try:
                gpu = device_passthrough(limits.gpus, libs_in_place=self.from_host)
            except GPUError as e:
                raise SandboxError(str(e)) from None
            options["devices"] = gpu.devices
            mounts += [Mount(target, source, type="bind", read_only=True)
                       for source, target in gpu.mounts]
            env.update(gpu.env)
        return options


_REAPER: dict[int, object] = {}  # this process's pid -> its watcher (one per session process)


def _watch_this_session() -> None:
    """Start (once per process) the watcher that removes our containers if we are killed."""
    from sandbox import reaper

    if os.getpid() not in _REAPER:
        _REAPER[os.getpid()] = reaper.start(os.getpid(), socket.gethostname())


def _pump(stream, sink: LogSink) -> None:
    try:
        for chunk in stream:
            sink.write(chunk)
    except Exception:  # the stream ends with the container; nothing to report
        pass


def _kill(container) -> None:
    try:
        container.kill()
    except docker.errors.APIError:
        pass  # it exited on its own between our clock and the kill


def _give_to_trial_user(path: Path) -> None:
    """The trial runs as an unprivileged uid: let it write its output folder."""
    try:
        os.chown(path, TRIAL_UID, TRIAL_GID)
    except PermissionError:
        os.chmod(path, 0o777)
