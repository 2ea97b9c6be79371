"""The harness scores a trial's exported model itself (issue 9, point 2): a forged summary
changes nothing, a model that looks ahead is caught, training never sees val."""

from __future__ import annotations

import shutil

from agent.paths import baseline_dir
from sandbox.base import TrialRun
from sandbox.harness import run_scored
from tests.sandbox.helpers import limits, make_trial

TRAINER = """
    import os
    import torch
    import torch.nn as nn

    d = os.environ["AR_DATA_DIR"]
    print("val.bin holds", os.path.getsize(os.path.join(d, "val.bin")), "bytes", flush=True)
    torch.manual_seed(0)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(256, 16)
            self.out = nn.Linear(16, 256)

        def forward(self, idx):
            h = self.embed(idx)
            if {look_ahead}:
                h = h + h.mean(dim=1, keepdim=True)  # every position sees the whole window
            return self.out(h)

    if {save}:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(Model().eval(), (torch.zeros(2, 64, dtype=torch.long),),
                                      dynamic_shapes={{"idx": {{0: batch}}}})
        torch.export.save(program, os.path.join(os.environ["AR_OUT_DIR"], "model.pt2"))
    print("---")
    print("val_bpb: 0.000100")  # a forged score
    print("training_seconds: 1.0")
"""


def scored(backend, tmp_path, data, look_ahead=False, save=True):
    run = make_trial(tmp_path, TRAINER.format(look_ahead=look_ahead, save=save))
    shutil.copy(baseline_dir() / "prepare.py", run.tree / "prepare.py")
    run = TrialRun(run.tree, run.workdir, data_dir=data,
                   env={"AR_SEED": "1", "AR_EVAL_TOKENS": "8192"})
    return run, run_scored(backend, run, limits(timeout_s=180, memory="2g"), seq_len=64)


def test_a_forged_summary_is_recorded_but_the_harness_scores(backend, tmp_path, prepared_data):
    run, result = scored(backend, tmp_path, prepared_data)
    log = (run.workdir / "train.log").read_text()
    assert "val.bin holds 0 bytes" in log  # training never saw the validation split
    assert result.status == "ok", (result, (run.workdir / "eval" / "train.log").read_text())
    assert result.score == "harness" and result.printed_val_bpb == 0.0001
    assert 6.0 < result.val_bpb < 10.0  # an untrained model: about 8 bits per byte
    assert result.score_mismatch
    assert result.metrics["harness_causal"] == "yes"
    assert not (run.workdir / "out" / "model.pt2").exists()  # scored, then not kept


def test_the_harness_reads_as_many_val_bytes_as_the_trial_under_a_short_budget(
        backend, tmp_path, prepared_data):
    """prepare.py reads fewer val bytes under a TIME_BUDGET below 60 s: the harness's scoring
    gets the budget too, so it scores the windows the trial's own evaluation would."""
    run = make_trial(tmp_path, TRAINER.format(look_ahead=False, save=True))
    shutil.copy(baseline_dir() / "prepare.py", run.tree / "prepare.py")
    run = TrialRun(run.tree, run.workdir, data_dir=prepared_data,
                   env={"AR_SEED": "1", "TIME_BUDGET": "1"})
    result = run_scored(backend, run, limits(timeout_s=180, memory="2g"), seq_len=64)
    assert result.status == "ok", (result, (run.workdir / "eval" / "train.log").read_text())
    assert result.metrics["harness_eval_windows"] == 2**15 // 64  # not 2**18 // 64


def test_a_model_that_looks_ahead_is_never_scored(backend, tmp_path, prepared_data):
    run, result = scored(backend, tmp_path, prepared_data, look_ahead=True)
    assert result.status == "crash" and result.val_bpb is None
    assert result.reason.startswith("harness: non-causal: logits before position"), result


def test_no_exported_model_is_a_crash_that_says_what_to_do(backend, tmp_path, prepared_data):
    run, result = scored(backend, tmp_path, prepared_data, save=False)
    assert result.status == "crash" and "no model to score" in result.reason, result


COPIER = """
    import os
    import shutil

    here = os.path.dirname(os.path.abspath(__file__))
    shutil.copy(os.path.join(here, "model.pt2"), os.environ["AR_OUT_DIR"])
    print("---")
    print("training_seconds: 1.0")
"""


def test_a_pickled_model_runs_no_code_and_is_not_scored(backend, tmp_path, prepared_data):
    """Issue 21: on main, a model.pt2 whose first weight was a pickle ran its own code in the
    scoring process, printed `val_bpb: 0.000042` and was recorded ok."""
    import io

    import torch

    from tests.sandbox.test_harness_audits import FAMILY, Payload, export, pickled

    run = make_trial(tmp_path, COPIER)
    shutil.copy(baseline_dir() / "prepare.py", run.tree / "prepare.py")
    buffer = io.BytesIO()
    torch.save(Payload("/tmp/pickle-ran"), buffer)
    pickled(export(FAMILY["honest"], tmp_path / "h.pt2"), run.tree / "model.pt2",
            buffer.getvalue())
    run = TrialRun(run.tree, run.workdir, data_dir=prepared_data,
                   env={"AR_SEED": "1", "AR_EVAL_TOKENS": "8192"})
    result = run_scored(backend, run, limits(timeout_s=180, memory="2g"), seq_len=256)
    log = (run.workdir / "eval" / "train.log").read_text()
    assert result.status == "crash" and result.val_bpb is None, (result, log)
    assert "pickled object" in result.reason and "0.000042" not in log


LINKER = """
    import os

    os.symlink("/etc/shadow", os.path.join(os.environ["AR_OUT_DIR"], "model.pt2"))
    print("---")
    print("training_seconds: 1.0")
"""


def test_a_model_that_is_a_link_is_not_followed(backend, tmp_path, prepared_data):
    run = make_trial(tmp_path, LINKER)
    shutil.copy(baseline_dir() / "prepare.py", run.tree / "prepare.py")
    run = TrialRun(run.tree, run.workdir, data_dir=prepared_data, env={"AR_SEED": "1"})
    result = run_scored(backend, run, limits(timeout_s=120, memory="2g"), seq_len=256)
    assert result.status == "crash" and "no model to score" in result.reason, result
