"""The surrogate's pipeline (issue 25): fit.py on trials of a known shape scores itself on
configurations it was not fitted on, ships trees that say exactly what scikit-learn's model
says, and its training folder runs through the real sandbox."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benchmarks" / "surrogate"


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def truth(c: dict) -> float:
    steps = 32768 / c["TOTAL_BATCH_SIZE"]
    return (2.5 + (math.log10(c["MATRIX_LR"]) + 1.2) ** 2 + 3.0 / steps ** 0.5
            + 0.02 * c["DEPTH"])


def trials(n: int = 150) -> list[dict]:
    """Rows as collect.py writes them, from a known function: a learning-rate valley, more
    steps better, big models out of memory; 10 configurations at 3 seeds (noise 0.02)."""
    from agent.edit.space import load_space
    from agent.optimizers.random import RandomSearch

    space = load_space(HERE / "folder" / "search_space.toml", "cpu")
    opt = RandomSearch(space, 0, space.defaults())
    rows = []
    for i in range(n):
        c = space.defaults() if i == 0 else opt.ask([]).values
        for s in ([0, 1, 2] if i < 10 else [0]):
            size = c["DEPTH"] * c["DEVICE_BATCH_SIZE"] * c["ASPECT_RATIO"]
            fail = size > 8000
            value = None if fail else truth(c) + random.Random(f"{i} {s}").gauss(0, 0.02)
            rows.append({"key": f"random-{i}-s{s}", "source": "random", "seed": s,
                         "config": c, "status": "oom" if fail else "ok", "val_bpb": value,
                         "peak_memory_mb": None if fail else float(size),
                         "reason": "", "wall_s": 10.0, "token_budget": 32768,
                         "eval_tokens": 32768})
    return rows


def test_fit_scores_itself_out_of_sample_and_ships_exact_trees(tmp_path):
    rows = trials()
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, report = tmp_path / "surrogate.json", tmp_path / "fit.json"
    done = subprocess.run([sys.executable, str(HERE / "fit.py"), "--data", str(data), "--out",
                           str(out), "--report", str(report)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    fit = json.loads(report.read_text())
    assert fit["trials"] == 170 and fit["configurations"] == 150 and fit["failed"] > 10
    assert fit["spearman_rho"] >= 0.9 and fit["mae"] < 0.2, fit
    assert fit["failure_accuracy"] > fit["always_ok_accuracy"], fit
    # the peak memory, held out: ranked and sized well; most out-of-memory trials foreseen
    assert fit["memory"]["spearman_rho"] > 0.9 and fit["memory"]["median_relative_error"] < 0.2
    caught, total = map(int, fit["memory"]["oom_caught"].split(" of "))
    assert total > 10 and caught >= 0.7 * total, fit["memory"]
    assert 0.01 < fit["noise_std"] < 0.03  # the 0.02 the rows were drawn with
    assert out.stat().st_size < 1_000_000  # small, and JSON: no pickle to load
    rt = load(HERE / "folder" / "surrogate.py", "surrogate_runtime")
    model = rt.load(out)
    fails = [r for r in rows if r["status"] != "ok"]
    assert sum(rt.predict(r["config"], model)[0] == "oom" for r in fails) >= 0.8 * len(fails)
    ok = [r for r in rows if r["status"] == "ok"]
    said_ok = [r for r in ok if rt.predict(r["config"], model)[0] == "ok"]
    assert len(said_ok) >= 0.9 * len(ok)  # a few near the limit: the memory rule's margin
    errors = [abs(rt.predict(r["config"], model)[1] - truth(r["config"])) for r in said_ok]
    assert sorted(errors)[len(errors) // 2] < 0.1  # in-sample, the median error is small
    a = rt.predict(said_ok[0]["config"], model, seed=1)
    assert a == rt.predict(said_ok[0]["config"], model, seed=1) != rt.predict(
        said_ok[0]["config"], model, seed=2)


def test_the_folder_runs_as_a_trial(tmp_path):
    from sandbox.base import Limits, TrialRun
    from sandbox.local import LocalSandbox

    folder = tmp_path / "folder"
    shutil.copytree(HERE / "folder", folder, ignore=shutil.ignore_patterns("__pycache__"))
    rows = trials(80)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    subprocess.run([sys.executable, str(HERE / "fit.py"), "--data", str(data), "--out",
                    str(folder / "surrogate.json"), "--report", str(tmp_path / "fit.json")],
                   check=True, capture_output=True, timeout=300, cwd=ROOT)
    result = LocalSandbox().run(TrialRun(tree=folder, workdir=tmp_path / "trial",
                                         env={"AR_SEED": "4"}), Limits(timeout_s=60))
    log = (tmp_path / "trial" / "train.log").read_text()
    assert result.status == "ok", log
    assert 2.0 < result.val_bpb < 8.0, result  # its speed: README, benchmarks
    assert f"surrogate of {len(rows)} cpu trials at 32768 tokens" in log
    assert "num_steps: 8" in log  # 32768 tokens at the default 4096 per step


def test_the_folder_is_the_packaged_cpu_space_and_block():
    """The surrogate folder copies the packaged search space and the cpu preset's block: a
    change to either without the other would rank optimizers on another space."""
    from agent.edit.block import values
    from agent.edit.space import load_space
    from agent.paths import baseline_dir

    packaged = baseline_dir() / "search_space.toml"
    assert (HERE / "folder" / "search_space.toml").read_text() == packaged.read_text()
    space = load_space(packaged, "cpu")
    names = space.names + list(space.fixed)
    block = values((HERE / "folder" / "train.py").read_text(), names)
    assert block == {**space.defaults(), **space.fixed}
