"""Both backends against real processes and a real Docker engine (issue 3's acceptance)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from sandbox.base import LABEL, TrialRun
from tests.sandbox.helpers import SUMMARY, limits, make_trial


@pytest.fixture
def docker_backend(docker_client, host_image):
    from sandbox.docker import DockerSandbox

    return DockerSandbox(client=docker_client)


def gone(pid: int, wait_s: float = 3.0) -> bool:
    """True once `pid` no longer runs (a zombie waiting for init to reap it counts as gone)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def trial_containers(client):
    """This test process's trial containers (other sessions on the engine are not ours)."""
    from sandbox.docker import OWNER_LABEL

    owner = f"{OWNER_LABEL}={socket.gethostname()}:{os.getpid()}"
    return client.containers.list(all=True, filters={"label": [f"{LABEL}=trial", owner]})


def test_ok_trial_reports_the_summary(backend, tmp_path):
    run = make_trial(tmp_path, f"print('step 1'); {SUMMARY}")
    result = backend.run(run, limits())
    assert result.status == "ok", result
    assert result.val_bpb == 1.5 and result.training_s == 0.1 and result.exit_code == 0
    assert (run.workdir / "train.log").read_text().startswith("step 1\n---\n")
    assert result.backend == backend.name


def test_memory_hog_is_oom(backend, tmp_path):
    run = make_trial(tmp_path, """
        chunks = []
        for _ in range(64):
            chunks.append(bytearray(64 * 2**20))  # 4 GiB in total, touched
        print("survived")
    """)
    t = time.monotonic()
    result = backend.run(run, limits(memory="256m"))
    assert result.status == "oom", result
    assert time.monotonic() - t < 20
    if backend.name == "docker":
        assert result.oom_killed and result.exit_code == 137
        assert trial_containers(backend.client) == []


def test_sleeper_times_out_fast_and_leaves_nothing(backend, tmp_path):
    run = make_trial(tmp_path, """
        import os, signal, time
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            open(os.path.join(os.environ["AR_OUT_DIR"], "child.pid"), "w").write(
                str(os.getpid()))
            time.sleep(600)
            os._exit(0)
        print("parent sleeping", flush=True)
        time.sleep(600)
    """)
    t = time.monotonic()
    result = backend.run(run, limits(timeout_s=5))
    elapsed = time.monotonic() - t
    assert result.status == "timeout", result
    assert elapsed < 10, elapsed
    if backend.name == "docker":
        assert trial_containers(backend.client) == []
    else:
        assert gone(int((run.workdir / "out" / "child.pid").read_text()))


def test_child_outliving_a_clean_exit_is_killed_locally(tmp_path):
    from sandbox.local import LocalSandbox

    run = make_trial(tmp_path, f"""
        import os, signal, time
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            open(os.path.join(os.environ["AR_OUT_DIR"], "child.pid"), "w").write(
                str(os.getpid()))
            time.sleep(600)
        time.sleep(0.5)
        {SUMMARY}
    """)
    result = LocalSandbox().run(run, limits())
    assert result.status == "ok"
    assert gone(int((run.workdir / "out" / "child.pid").read_text()))


@pytest.mark.parametrize("log, status", [
    ("Traceback (most recent call last):\n  File \"train.py\", line 9\n"
     "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n", "cuda_oom"),
    ("step 10 loss nan\nFAIL: loss is nan at step 10\n", "diverged"),
    ("---\nval_bpb: 1.0\nTraceback (most recent call last):\nValueError: boom\n", "crash"),
])
def test_log_classification(backend, tmp_path, log, status):
    run = make_trial(tmp_path, f"import sys; sys.stdout.write({log!r}); sys.exit(1)")
    result = backend.run(run, limits())
    assert result.status == status, result
    assert result.val_bpb is None


def test_api_keys_never_enter(backend, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "secret123")
    run = make_trial(tmp_path, f"""
        import os
        print(sorted(os.environ.items()))
        print("key" if "OPENAI_API_KEY" in os.environ else "no key")
        {SUMMARY}
    """)
    result = backend.run(run, limits())
    log = (run.workdir / "train.log").read_text()
    assert result.status == "ok" and "no key" in log
    assert "secret123" not in log and "secret123" not in result.to_json()


def test_disallowed_variables_are_refused(tmp_path):
    from sandbox.local import LocalSandbox

    run = make_trial(tmp_path, SUMMARY)
    run.env["OPENAI_API_KEY"] = "x"
    with pytest.raises(ValueError, match="not allowed into a trial: OPENAI_API_KEY"):
        LocalSandbox().run(run, limits())


def bridge_address(client) -> str:
    """The host's own address on Docker's default bridge (docker0), read off the interface."""
    import fcntl
    import struct

    options = client.networks.get("bridge").attrs.get("Options") or {}
    name = options.get("com.docker.network.bridge.name", "docker0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
    return socket.inet_ntoa(packed[20:24])  # SIOCGIFADDR


def _listen(host: str):
    srv = socket.socket()
    srv.bind((host, 0))
    srv.listen(8)
    srv.settimeout(0.2)
    hits = []

    def accept():
        while not getattr(srv, "closed", False):
            try:
                conn, _ = srv.accept()
                hits.append(1)
                conn.close()
            except OSError:
                if srv.fileno() == -1:
                    return
    threading.Thread(target=accept, daemon=True).start()
    return srv, srv.getsockname()[1], hits


def test_no_network_and_no_writes_in_docker(docker_backend, docker_client, tmp_path):
    bridge = bridge_address(docker_client)
    targets = []
    servers = []
    for host in ("127.0.0.1", bridge):
        srv, port, hits = _listen(host)
        servers.append((srv, hits))
        with socket.create_connection((host, port), timeout=2):  # the listener is real
            pass
        targets.append((host, port))
    time.sleep(0.3)
    control = [len(h) for _, h in servers]
    run = make_trial(tmp_path, f"""
        import socket
        for host, port in {targets!r}:
            try:
                socket.create_connection((host, port), timeout=2).close()
                print("connected", host)
            except OSError as e:
                print("refused", host, type(e).__name__)
        for path in ("/src/evil.py", "/evil", "/usr/evil"):
            try:
                open(path, "w").write("x")
                print("wrote", path)
            except OSError as e:
                print("denied", path, e.errno)
        open("/out/ok.txt", "w").write("fine")
        {SUMMARY}
    """)
    result = docker_backend.run(run, limits())
    log = (run.workdir / "train.log").read_text()
    for srv, _ in servers:
        srv.close()
    assert result.status == "ok", log
    assert "connected" not in log and log.count("refused") == 2, log
    assert "wrote" not in log and log.count("denied") == 3, log
    assert [len(h) for _, h in servers] == control  # nothing reached the listeners
    assert (run.workdir / "out" / "ok.txt").read_text() == "fine"
    assert not (run.tree / "evil.py").exists()


def test_a_gigabyte_of_output_keeps_memory_flat(backend, tmp_path):
    """Measured in a fresh interpreter, so the peak RSS is this trial's alone."""
    script = f"""
        import sys
        line = b"x" * 1023 + b"\\n"
        block = line * 1024
        for _ in range(1024):
            sys.stdout.buffer.write(block)
        sys.stdout.flush()
        {SUMMARY}
    """
    run = make_trial(tmp_path, script)
    driver = f"""
import json, resource, sys
from pathlib import Path
sys.path.insert(0, {os.getcwd()!r})
from sandbox.base import Limits, TrialRun
if {backend.name!r} == "docker":
    from sandbox.docker import DockerSandbox as B
else:
    from sandbox.local import LocalSandbox as B
run = TrialRun(tree=Path({str(run.tree)!r}), workdir=Path({str(run.workdir)!r}))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
r = B().run(run, Limits(timeout_s=120, memory="1g", log_cap_bytes=4 * 2**20))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"status": r.status, "bytes": r.log_bytes, "cut": r.log_truncated,
                  "grew_mb": (after - before) / 1024, "val": r.val_bpb}}))
"""
    out = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["status"] == "ok" and info["val"] == 1.5, info
    assert info["bytes"] >= 2**30 and info["cut"], info
    assert info["grew_mb"] < 64, info
    size = (run.workdir / "train.log").stat().st_size
    assert size < 4 * 2**20 + 2**20 + 200
    assert "log cut here" in (run.workdir / "train.log").read_text(errors="replace")


def test_orphaned_trial_containers_are_removed(docker_client, host_image):
    from sandbox.docker import OWNER_LABEL, DockerSandbox

    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = docker_client.containers.create(
        host_image, ["/usr/bin/sleep", "600"],
        labels={LABEL: "trial", OWNER_LABEL: f"{socket.gethostname()}:{dead.pid}"})
    mine = docker_client.containers.create(
        host_image, ["/usr/bin/sleep", "600"],
        labels={LABEL: "trial", OWNER_LABEL: f"{socket.gethostname()}:{os.getpid()}"})
    try:
        DockerSandbox(client=docker_client)
        ids = {c.id for c in docker_client.containers.list(
            all=True, filters={"label": f"{LABEL}=trial"})}
        assert orphan.id not in ids and mine.id in ids
    finally:
        for c in (orphan, mine):
            try:
                c.remove(force=True)
            except Exception:
                pass


def test_missing_image_says_how_to_build(docker_client):
    from sandbox.base import SandboxError
    from sandbox.docker import DockerSandbox

    with pytest.raises(SandboxError, match="autoresearch sandbox build --gpu"):
        DockerSandbox(image="autoresearch-sandbox/nope:0", client=docker_client)


@pytest.mark.slow
def test_the_real_baseline_runs_ok(backend, tmp_path, prepared_data):
    """The packaged train.py, cpu preset, in this backend: ok with a val_bpb."""
    import shutil

    from agent.paths import baseline_dir
    from sandbox.base import TrialRun

    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("train.py", "prepare.py"):
        shutil.copy(baseline_dir() / name, tree / name)
    tree.chmod(0o755)
    run = TrialRun(tree=tree, workdir=tmp_path / "work", data_dir=prepared_data,
                   env={"AR_TOKEN_BUDGET": "16384", "AR_EVAL_TOKENS": "16384", "AR_SEED": "1"})
    result = backend.run(run, limits(timeout_s=300, memory="4g"))
    assert result.status == "ok", (run.workdir / "train.log").read_text()[-3000:]
    assert 0 < result.val_bpb < 8.0
    assert result.metrics["num_params_M"] > 0 and result.peak_memory_mb > 0
    assert sorted(p.name for p in tree.iterdir()) == ["prepare.py", "train.py"]


def test_a_container_removed_behind_our_back_is_a_crash_not_an_exception(docker_backend,
                                                                         docker_client, tmp_path):
    run = make_trial(tmp_path, "import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    results = []
    worker = threading.Thread(target=lambda: results.append(docker_backend.run(run, limits())))
    worker.start()
    deadline = time.monotonic() + 30
    while not trial_containers(docker_client) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    for c in trial_containers(docker_client):
        c.remove(force=True)  # what `docker rm -f` by another hand does
    worker.join(timeout=60)
    (result,) = results
    assert result.status == "crash", result
    assert trial_containers(docker_client) == []


def test_hide_val_shows_train_and_an_empty_val(backend, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name, content in (("train.bin", b"t" * 100), ("val.bin", b"v" * 50),
                          ("meta.json", b"{}")):
        (data / name).write_bytes(content)
    script = f"""
        import os
        d = os.environ["AR_DATA_DIR"]
        print(sorted((n, os.path.getsize(os.path.join(d, n))) for n in os.listdir(d)))
        {SUMMARY}
    """
    for hide, expected in ((True, "[('meta.json', 2), ('train.bin', 100), ('val.bin', 0)]"),
                           (False, "[('meta.json', 2), ('train.bin', 100), ('val.bin', 50)]")):
        run = make_trial(tmp_path, script, name=f"h{hide}")
        run = TrialRun(run.tree, run.workdir, data_dir=data, env=run.env, hide_val=hide)
        result = backend.run(run, limits())
        log = (run.workdir / "train.log").read_text()
        assert result.status == "ok", log
        assert expected in log, log
