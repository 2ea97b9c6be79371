"""AR_PREFLIGHT_STEPS=N with AR_PREFLIGHT_CONTINUE=1: the first N training steps are the
probe, one `preflight: ok ...` line follows them and the same process trains on to the same
val_bpb (issue 23). A fit ramp that says the batch must shrink makes it today's probe."""

from __future__ import annotations

import re

import pytest

from tests.baseline_train.helpers import (
    BUDGET,
    STEP_TOKENS,
    TINY_STEP,
    make_tree,
    progress,
    run_train,
    summary,
    tiny_tree,
)

OK = re.compile(r"preflight: ok peak_memory_mb (\d+\.\d) step_seconds (\d+\.\d{4}) "
                r"preflight_batch (\d+)( predicted_peak_mb (\d+\.\d))?")
IN_PROCESS = {"AR_PREFLIGHT_STEPS": "2", "AR_PREFLIGHT_CONTINUE": "1"}


def verdicts(stdout: str) -> list[tuple[int, re.Match]]:
    """(line index, match) of every `preflight: ok ...` line; each must parse."""
    found = []
    for i, line in enumerate(stdout.splitlines()):
        if line.startswith("preflight: ok "):
            m = OK.fullmatch(line)
            assert m, f"unparsable: {line!r}"
            found.append((i, m))
    return found


def line_of(stdout: str, prefix: str) -> int:
    return next(i for i, line in enumerate(stdout.splitlines()) if line.startswith(prefix))


@pytest.mark.slow
@pytest.mark.parametrize("ramp", [False, True], ids=["no-ramp", "ramp-fits"])
def test_the_probe_is_the_first_steps_and_training_goes_on_unchanged(
        baseline_run, prepared_data, tmp_path, ramp):
    """The same seed gives the val_bpb of the run without the probe to the printed digits;
    with AR_PREFLIGHT_FIT_MB far above the peak the ramp runs, finds that the batch fits and
    leaves the model and optimizers as they were before it."""
    tree = make_tree(tmp_path / "tree")
    env = {**IN_PROCESS, "AR_SEED": "42"}
    if ramp:
        env["AR_PREFLIGHT_FIT_MB"] = "1000000"
    proc = run_train(tree, prepared_data, **env)
    result = summary(proc)
    [(at, ok)] = verdicts(proc.stdout)
    assert line_of(proc.stdout, "progress: 0.500 step 2 ") < at
    assert at < line_of(proc.stdout, "progress: 0.750 step 3 ")
    assert int(ok[3]) == 16 and float(ok[1]) > 0 and float(ok[2]) > 0
    assert (ok[5] is not None) == ramp
    if ramp:
        assert "preflight: peak MB by micro-batch 1: " in proc.stdout
    assert "preflight" not in result and result["num_steps"] == BUDGET // STEP_TOKENS
    assert f"{result['val_bpb']:.6f}" == f"{baseline_run['val_bpb']:.6f}"
    assert [p[1] for p in progress(proc.stdout)] == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_ramp_that_shrinks_the_batch_ends_with_todays_probe_block(prepared_data, tmp_path):
    tree = make_tree(tmp_path / "tree")
    proc = run_train(tree, prepared_data, **IN_PROCESS, AR_PREFLIGHT_FIT_MB="1")
    result = summary(proc)  # exit 0, the `---` block of a separate probe
    assert result["preflight"] == "ok" and result["preflight_batch"] == 1
    assert result["num_steps"] == 2 and result["predicted_peak_mb"] > 1
    assert "val_bpb" not in result
    assert verdicts(proc.stdout) == [] and progress(proc.stdout) == []


@pytest.mark.slow
def test_a_budget_shorter_than_the_probe_says_its_verdict_at_the_last_step(
        prepared_data, tmp_path):
    tree = tiny_tree(tmp_path / "tree")
    proc = run_train(tree, prepared_data, AR_PREFLIGHT_STEPS="5", AR_PREFLIGHT_CONTINUE="1",
                     AR_TOKEN_BUDGET=str(3 * TINY_STEP), AR_EVAL_TOKENS="2048")
    result = summary(proc)
    [(at, ok)] = verdicts(proc.stdout)
    assert line_of(proc.stdout, "progress: 1.000 step 3 ") < at
    assert int(ok[3]) == 2 and result["num_steps"] == 3


@pytest.mark.slow
def test_a_bad_continue_value_is_a_config_error(prepared_data, tmp_path):
    tree = make_tree(tmp_path / "tree")
    proc = run_train(tree, prepared_data, AR_PREFLIGHT_STEPS="2", AR_PREFLIGHT_CONTINUE="yes")
    assert proc.returncode == 2
    assert "config error: AR_PREFLIGHT_CONTINUE='yes' must be 0 or 1" in proc.stderr
