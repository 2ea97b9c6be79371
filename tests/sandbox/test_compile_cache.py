"""The session's compile cache: one folder, mounted into every trial, reused by the next one."""

from __future__ import annotations

import pytest

from sandbox.base import TrialRun
from tests.sandbox.helpers import SUMMARY, limits, make_trial


def test_the_second_trial_finds_the_first_ones_cache_files(backend, tmp_path):
    cache = tmp_path / "cache"
    script = f"""
        import os
        for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
            folder = os.environ[var]
            os.makedirs(folder, exist_ok=True)
            print(var, "holds", sorted(os.listdir(folder)))
            open(os.path.join(folder, "from-" + os.environ["AR_SEED"]), "w").write("x")
        {SUMMARY}
    """
    logs = []
    for seed in ("1", "2"):
        run = make_trial(tmp_path, script, name=f"t{seed}")
        run = TrialRun(run.tree, run.workdir, env={"AR_SEED": seed}, cache_dir=cache)
        result = backend.run(run, limits())
        logs.append((run.workdir / "train.log").read_text())
        assert result.status == "ok", logs[-1]
    assert "TORCHINDUCTOR_CACHE_DIR holds []" in logs[0]
    assert "TORCHINDUCTOR_CACHE_DIR holds ['from-1']" in logs[1]
    assert "TRITON_CACHE_DIR holds ['from-1']" in logs[1]
    assert sorted(p.name for p in (cache / "inductor").iterdir()) == ["from-1", "from-2"]


@pytest.mark.slow
def test_torch_compile_hits_the_cache_the_first_trial_filled(backend, tmp_path):
    """Real torch.compile (Inductor's C++ backend on the CPU): the first trial misses the FX
    graph cache and fills it; the second, a new process, hits it."""
    cache = tmp_path / "cache"
    script = f"""
        import torch
        from torch._dynamo.utils import counters

        @torch.compile
        def f(x):
            return (x.sin() * 2 + x.cos()).sum()

        f(torch.randn(64))
        print("hits", counters["inductor"]["fxgraph_cache_hit"],
              "misses", counters["inductor"]["fxgraph_cache_miss"])
        {SUMMARY}
    """
    logs = []
    for name in ("a", "b"):
        run = make_trial(tmp_path, script, name=name)
        run = TrialRun(run.tree, run.workdir, env={"AR_SEED": "1"}, cache_dir=cache)
        result = backend.run(run, limits(timeout_s=300, memory="2g"))
        logs.append((run.workdir / "train.log").read_text())
        assert result.status == "ok", logs[-1][-3000:]
    assert "hits 0 misses 1" in logs[0], logs[0][-2000:]
    assert "hits 1 misses 0" in logs[1], logs[1][-2000:]
