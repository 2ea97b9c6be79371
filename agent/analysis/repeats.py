"""One train.py, several seeds: the noise floor of a training folder (`autoresearch noise`).

The folder (its preset applied, as a session would start it) is run once per seed, exactly as
a trial runs (the same sandbox, executor and limits), each seed in its own workdir under
the output folder; the summary is the mean, standard deviation and range of val_bpb.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import statistics
import tarfile
from dataclasses import dataclass
from pathlib import Path

from agent.config.data import prepare_data
from agent.config.runspec import load_runspec
from agent.config.settings import SessionConfig
from agent.edit.block import apply_preset
from agent.edit.space import load_space
from agent.loop.plan import TrialPlan
from sandbox.result import TrialResult


@dataclass
class Seeded:
    """What an executor needs of a 'prepared trial': a number to order results by."""

    number: int


def tar_folder(folder: Path) -> bytes:
    """The folder as a tar, subfolders included, as a session's repo holds it: no dotfiles,
    no __pycache__ (agent/record/workspace.py copies a training folder the same way)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            parts = path.relative_to(folder).parts
            if path.is_file() and not any(p.startswith(".") or p == "__pycache__"
                                          for p in parts):
                tar.add(path, arcname="/".join(parts))
    return buf.getvalue()


def run_trees(runs: list[tuple[bytes, Path, int]], config: SessionConfig, space,
              data_dir: Path | None, cache: Path, spec=None,
              test_data: Path | None = None) -> list[TrialResult]:
    """Each (tree as tar, folder, seed) run once, exactly as a trial of `config` runs (the
    same sandbox, executor, limits and environment, AR_SEED set, the training folder's [run]
    table `spec`); results in `runs`' order. `test_data`: where a harness-scored model is
    also scored (the test split)."""
    data = str(data_dir) if data_dir else None
    plan = TrialPlan(config.model_copy(update={"data_dir": data}), space, spec)
    scratch = cache.parent / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    executor = plan.executor(scratch)
    results: dict[int, TrialResult] = {}
    queue = list(enumerate(runs))
    running = 0
    try:
        while queue or running:
            while queue and running < executor.slots:
                i, (tree_tar, folder, seed) = queue.pop(0)
                job = plan.job(i, tree_tar, folder, {**plan.env(), "AR_SEED": str(seed)}, cache,
                               test_data=test_data)
                executor.submit(Seeded(i), job)
                running += 1
            for done, result in executor.wait():
                results[done.number] = result
                running -= 1
    finally:
        executor.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return [results[i] for i in range(len(runs))]


def run_seeds(tree: Path, out: Path, seeds: list[int], config: SessionConfig,
              data_dir: Path | None, spec=None) -> list[TrialResult]:
    """Run `tree` once per seed in `out/seed-S`; the results in the order of `seeds`."""
    space = load_space(tree / "search_space.toml", config.preset)
    tree_tar = tar_folder(tree)
    return run_trees([(tree_tar, out / f"seed-{s}", s) for s in seeds], config, space,
                     data_dir, out / "cache", spec)


def noise(train_dir: Path, out: Path, seeds: list[int], config: SessionConfig) -> dict:
    """The baseline of `train_dir` once per seed; its summary, also written to noise.json."""
    space = load_space(train_dir / "search_space.toml", config.preset)
    tree = out / "tree"
    shutil.copytree(train_dir, tree, ignore=shutil.ignore_patterns(".*", "__pycache__"))
    source = (tree / "train.py").read_text()
    if config.preset:
        (tree / "train.py").write_text(apply_preset(source, space))
    spec = load_runspec(train_dir)
    data = Path(config.data_dir) if config.data_dir else prepare_data(
        spec, tree, train_dir, TrialPlan(config, space, spec).preparation(out / "prepare"))
    results = run_seeds(tree, out, seeds, config, data, spec)
    rows = [{"seed": s, "status": r.status, "val_bpb": r.val_bpb,
             "training_s": r.training_s, "num_steps": r.metrics.get("num_steps"),
             "wall_s": r.wall_s, "reason": r.reason} for s, r in zip(seeds, results,
                                                                      strict=True)]
    values = [r["val_bpb"] for r in rows if r["val_bpb"] is not None]
    summary = {"train_dir": str(train_dir), "preset": space.preset, "seeds": seeds,
               "budget": TrialPlan(config, space).budget(), "runs": rows,
               "ok": len(values), "mean": statistics.fmean(values) if values else None,
               "std": statistics.stdev(values) if len(values) > 1 else None,
               "min": min(values, default=None), "max": max(values, default=None)}
    if summary["std"] is not None and not math.isfinite(summary["std"]):
        summary["std"] = None
    (out / "noise.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
