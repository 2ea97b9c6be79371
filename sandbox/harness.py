"""A trial scored by the harness, not by what train.py prints (`--score harness`).

Where code outside the hyperparameter block can change (the code agent), train.py's own
summary proves nothing: it can print any val_bpb, read val.bin while training, or build a
model that looks ahead. So the trial runs in two steps, each in its own sandbox:

1. training, with AR_SCORE=harness and the validation split hidden (an empty val.bin): train.py
   exports its model to $AR_OUT_DIR/model.pt2 and may print what it likes;
2. evaluation by sandbox/harness_eval.py, fixed code, beside the trial's read-only prepare.py
   and a copy of the exported model, with the whole data: a causality check, then
   prepare.evaluate_bpb.

The record is the training's (time, memory, summary kept as information) with the harness's
val_bpb; a printed val_bpb that differs from the measured one is recorded as a mismatch.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from sandbox.base import Limits, TrialRun, make_readable
from sandbox.result import TrialResult

EVALUATOR = Path(__file__).with_name("harness_eval.py")
MODEL = "model.pt2"
MISMATCH = 1e-2  # bf16 training vs fp32 scoring differ by less than this on an honest trial


def run_scored(sandbox, run: TrialRun, limits: Limits, seq_len: int | None = None,
               scratch: Path | None = None, cancel=None, watch=None,
               test_data: Path | None = None) -> TrialResult:
    """The trial trained with val hidden, then its exported model scored on val; with
    `test_data` (a prepared folder whose val.bin holds the test split: `autoresearch
    report`) the same model is scored there too, by the same code, into metrics test_bpb
    (None if that scoring failed) and test_status."""
    trained = sandbox.run(replace(run, hide_val=True,
                                  env={**run.env, "AR_SCORE": "harness"}), limits, cancel,
                          watch)
    trained.score = "harness"
    printed = trained.metrics.get("val_bpb")
    trained.printed_val_bpb = printed if isinstance(printed, float) else None
    finished = trained.exit_code == 0 and trained.status in ("ok", "crash")
    if not finished:  # oom, timeout, diverged, pruned, a crash: the training's verdict stands
        return trained
    model = Path(run.workdir) / "out" / MODEL
    folder = Path(tempfile.mkdtemp(prefix="ar-eval-", dir=scratch))
    try:
        make_readable(folder)  # while empty: the model moved in below is the trial user's
        tree = folder / "src"
        tree.mkdir()
        shutil.copy(Path(run.tree) / "prepare.py", tree / "prepare.py")
        shutil.copy(EVALUATOR, tree / "ar_evaluate.py")
        if model.is_file() and not model.is_symlink():  # a link could name any host file
            shutil.move(str(model), tree / MODEL)  # out/ keeps no 100 MB copy per trial
        # the budget too: prepare.py reads fewer val bytes under a short one (eval_tokens)
        env = {k: v for k, v in run.env.items()
               if k in ("AR_SEED", "AR_EVAL_TOKENS", "TIME_BUDGET", "AR_TOKEN_BUDGET")}
        if seq_len:
            env["AR_EVAL_SEQ_LEN"] = str(seq_len)
        evaluated = sandbox.run(TrialRun(tree=tree, workdir=Path(run.workdir) / "eval",
                                         data_dir=run.data_dir, env=env,
                                         script="ar_evaluate.py"), limits, cancel)
        tested = None
        if test_data is not None and evaluated.status == "ok":
            tested = sandbox.run(TrialRun(tree=tree, workdir=Path(run.workdir) / "eval-test",
                                          data_dir=test_data, env=env,
                                          script="ar_evaluate.py"), limits, cancel)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = merge(trained, evaluated)
    if tested is not None:
        result.wall_s = round(result.wall_s + tested.wall_s, 3)
        result.metrics["test_status"] = tested.status
        result.metrics["test_bpb"] = tested.val_bpb if tested.status == "ok" else None
    return result


def merge(trained: TrialResult, evaluated: TrialResult) -> TrialResult:
    result = replace(trained, wall_s=round(trained.wall_s + evaluated.wall_s, 3))
    result.metrics = {**trained.metrics, **{f"harness_{k}": v
                                            for k, v in evaluated.metrics.items()}}
    if evaluated.status != "ok":
        result.status, result.val_bpb = evaluated.status, None
        result.reason = f"harness: {evaluated.reason}"
        result.overhead_s = None
        return result
    result.status, result.reason, result.val_bpb = "ok", "", evaluated.val_bpb
    seconds = trained.metrics.get("training_seconds")
    result.training_s = float(seconds) if isinstance(seconds, float) else None
    if result.training_s is not None:
        result.overhead_s = round(max(result.wall_s - result.training_s, 0.0), 3)
    printed = result.printed_val_bpb
    result.score_mismatch = printed is not None and abs(printed - result.val_bpb) > MISMATCH
    return result
