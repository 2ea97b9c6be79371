"""The classifier against real log shapes (tests/sandbox/logs) and its order of precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.result import build_result, classify, crash_reason

LOGS = Path(__file__).parent / "logs"


@pytest.mark.parametrize("name, code, status, reason", [
    ("dynamo_no_compiler.log", 1, "crash",
     "torch._inductor.exc.InductorError: InvalidCxxCompiler: No working C++ compiler found"),
    ("cuda_init_failed.log", 2, "crash",
     "CUDA init failed: Unexpected error from cudaGetDeviceCount()."),
    ("cuda_init_failed_new.log", 3, "crash",
     "CUDA init failed: Unexpected error from cudaGetDeviceCount()."),
    ("cuda_init_cpu_torch.log", 3, "crash", "CUDA init failed: Torch not compiled with CUDA"),
    ("cuda_oom.log", 1, "cuda_oom", "CUDA out of memory"),
    ("cublas_alloc_failed.log", 1, "cuda_oom", "CUDA out of memory"),
    ("nan.log", 1, "diverged", "FAIL: training loss nan at step"),
])
def test_real_logs(name, code, status, reason):
    got_status, got_reason = classify(code, (LOGS / name).read_text())
    assert got_status == status
    assert got_reason.startswith(reason), got_reason
    assert "TORCHDYNAMO_VERBOSE" not in got_reason and "\n" not in got_reason


def test_cuda_init_reason_drops_torch_internal_location():
    reason = crash_reason((LOGS / "cuda_init_failed.log").read_text())
    assert reason.endswith("Error 2: out of memory"), reason


def test_the_exception_line_of_the_last_traceback_wins():
    log = ("Traceback (most recent call last):\n  File \"a.py\", line 1\nKeyError: 'first'\n"
           "\nDuring handling of the above exception, another exception occurred:\n\n"
           "Traceback (most recent call last):\n  File \"a.py\", line 3, in <module>\n"
           "    raise ValueError('second')\n    ^^^^^^^^^^^^^\n"
           "ValueError: second\n\nSet TORCHDYNAMO_VERBOSE=1 for the internal stack trace\n")
    assert crash_reason(log) == "ValueError: second"


def test_without_a_traceback_the_last_line_that_is_not_advice():
    assert crash_reason("loading\nconfig error: DEPTH=0 must be positive\n") == \
        "config error: DEPTH=0 must be positive"
    assert crash_reason("boom\nSet TORCHDYNAMO_VERBOSE=1 for more\n") == "boom"


# The order of precedence, one row per rule: what the kernel says beats our clock, which beats
# the log; a CUDA OOM beats a crash; FAIL is divergence; ok needs exit 0 and a summary.
SUMMARY = "---\nval_bpb: 1.25\ntraining_seconds: 10.0\n"
CUDA_OOM = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"


@pytest.mark.parametrize("code, log, oom_killed, timed_out, status", [
    (137, CUDA_OOM, True, True, "oom"),
    (137, CUDA_OOM, False, True, "timeout"),
    (1, CUDA_OOM + "FAIL: loss nan\n", False, False, "cuda_oom"),
    (1, "MemoryError\n", False, False, "oom"),
    (0, "MemoryError\n" + SUMMARY, False, False, "ok"),
    (1, "FAIL: training loss inf at step 3\n", False, False, "diverged"),
    (1, "step 3 loss nan\n", False, False, "diverged"),
    (0, "step 3 loss nan\n" + SUMMARY, False, False, "ok"),
    (None, "", False, False, "crash"),
    (1, SUMMARY, False, False, "crash"),
    (0, "no summary\n", False, False, "crash"),
    (0, "---\nval_bpb: nan\n", False, False, "crash"),
    (0, SUMMARY, False, False, "ok"),
])
def test_precedence(code, log, oom_killed, timed_out, status):
    assert classify(code, log, oom_killed=oom_killed, timed_out=timed_out)[0] == status


def test_overhead_is_wall_minus_training():
    result = build_result(0, SUMMARY, wall_s=14.5)
    assert result.status == "ok" and result.training_s == 10.0 and result.overhead_s == 4.5
    assert build_result(1, "boom\n", wall_s=3.0).overhead_s is None
