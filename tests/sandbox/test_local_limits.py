"""The local backend's memory limit without RLIMIT_AS, its PATH, and nothing outliving a trial
(issue 8). A fake GPU list takes the GPU path: CUDA_VISIBLE_DEVICES is set, nothing else of
the trial changes on a CPU machine."""

from __future__ import annotations

import os
import textwrap
import time

import pytest

from sandbox.local import LocalSandbox
from sandbox.memguard import cgroup_available
from tests.sandbox.helpers import SUMMARY, limits, make_trial

HOG = """
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    print("RLIMIT_AS", "unlimited" if soft == resource.RLIM_INFINITY else soft, flush=True)
    chunks = []
    for _ in range(16):
        chunks.append(b"x" * (64 * 2**20))  # 1 GiB in all, every page written
    print("survived", flush=True)
"""


@pytest.fixture(params=["cgroup", "watchdog"])
def guard(request):
    """Both ways the local backend limits memory. This CI machine (root, cgroup v1) has a
    writable memory cgroup; outside CI a host without one skips that half with the reason."""
    if request.param == "cgroup" and cgroup_available() is None:
        message = "no writable memory cgroup on this host (not root, or no delegation)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return request.param


def test_a_hog_under_a_gpu_trial_is_oom_without_rlimit_as(guard, tmp_path):
    run = make_trial(tmp_path, HOG)
    t = time.monotonic()
    result = LocalSandbox(memory_guard=guard).run(run, limits(memory="256m", gpus=(0,)))
    log = (run.workdir / "train.log").read_text()
    assert "RLIMIT_AS unlimited" in log
    assert "survived" not in log
    assert result.status == "oom" and result.oom_killed, result
    assert "256m" in result.reason and "peak" in result.reason, result.reason
    assert result.host_peak_mb is not None and result.host_peak_mb >= 200, result
    assert result.exit_code == 137
    assert time.monotonic() - t < 30


def test_cpu_trials_have_no_rlimit_as_either(guard, tmp_path):
    run = make_trial(tmp_path, textwrap.dedent(HOG.replace("range(16)", "range(2)")) + SUMMARY)
    result = LocalSandbox(memory_guard=guard).run(run, limits(memory="1g"))
    log = (run.workdir / "train.log").read_text()
    assert result.status == "ok", log
    assert "RLIMIT_AS unlimited" in log and "survived" in log


def test_a_child_that_leaves_the_process_group_does_not_outlive_the_trial(guard, tmp_path):
    run = make_trial(tmp_path, f"""
        import os, signal, time
        pidfile = os.path.join(os.environ["AR_OUT_DIR"], "escaped.pid")
        if os.fork() == 0:
            os.setsid()  # a new session: the process-group kill no longer reaches it
            if os.fork() == 0:  # and a grandchild, reparented to init when its parent exits
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                open(pidfile, "w").write(str(os.getpid()))
                time.sleep(600)
            os._exit(0)
        while not os.path.exists(pidfile):
            time.sleep(0.05)
        time.sleep(0.3)
        {SUMMARY}
    """)
    result = LocalSandbox(memory_guard=guard).run(run, limits())
    assert result.status == "ok", result
    pid = int((run.workdir / "out" / "escaped.pid").read_text())
    if guard == "watchdog":  # the watchdog knows only processes it saw while sampling
        assert _gone(pid) or _wait_gone(pid), "escaped grandchild still runs"
    else:
        assert _wait_gone(pid), "escaped grandchild still runs"


def test_path_holds_the_system_compiler(tmp_path):
    """What torch.compile needs: a C compiler found through PATH / CC that builds and runs."""
    run = make_trial(tmp_path, f"""
        import os, subprocess
        print("PATH", os.environ["PATH"])
        print("CC", os.environ.get("CC"))
        open("hello.c", "w").write('int main(void) {{ return 42; }}')
        subprocess.run([os.environ["CC"], "hello.c", "-o", "hello"], check=True)
        print("ran", subprocess.run(["./hello"]).returncode)
        {SUMMARY}
    """)
    result = LocalSandbox().run(run, limits())
    log = (run.workdir / "train.log").read_text()
    assert result.status == "ok", log
    path = next(ln for ln in log.splitlines() if ln.startswith("PATH ")).split()[1].split(":")
    assert "/usr/bin" in path and os.path.dirname(LocalSandbox().python) == path[0]
    assert "ran 42" in log, log


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, wait_s: float = 3.0) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_the_watchdog_counts_pages_a_tree_shares_once(tmp_path):
    """A trainer and the workers it forks share pages (Inductor starts one compile worker per
    core): the watchdog sums proportional set sizes, so 4 processes touching one 320 MB
    shared mapping count about 320 MB, not the 1.28 GB their RSS adds up to (issue 24)."""
    run = make_trial(tmp_path, f"""
        import mmap, os, time
        size = 320 * 2**20
        shared = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
        for i in range(0, size, 4096):
            shared[i] = 1  # every page resident, in the parent
        def tree_sum(field):
            total = 0
            for pid in [os.getpid(), *children]:
                with open(f"/proc/{{pid}}/smaps_rollup") as f:
                    total += next(int(x.split()[1]) for x in f if x.startswith(field))
            return total // 1024
        children = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                s = 0
                for i in range(0, size, 4096):
                    s += shared[i]  # every page resident in this child too
                time.sleep(2.0)
                os._exit(0)
            children.append(pid)
        time.sleep(1.0)
        print("rss_sum_mb", tree_sum("Rss:"), "pss_sum_mb", tree_sum("Pss:"), flush=True)
        for pid in children:
            os.waitpid(pid, 0)
        {SUMMARY}
    """)
    result = LocalSandbox(memory_guard="watchdog").run(run, limits(memory="640m"))
    log = (run.workdir / "train.log").read_text()
    assert result.status == "ok", log
    rss, pss = (int(x) for x in log.split("rss_sum_mb ")[1].split()[::2][:2])
    assert rss > 1200 and pss < 500, log  # RSS summed would have been killed at 640m
    assert 300 <= result.host_peak_mb < 640, result
