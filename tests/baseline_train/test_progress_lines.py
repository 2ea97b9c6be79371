"""The kit's progress lines (the learning curve a trial prints, issue 23):
`progress: 0.250 step 120 tokens 491520 loss 3.4512 seconds 75.1`, at step 1, at the last
step (1.000) and at least every 2 % of the budget; a NaN loss gets its line before FAIL."""

from __future__ import annotations

import math

import pytest

from tests.baseline_train.helpers import (
    TINY_STEP,
    progress,
    run_train,
    summary,
    tiny_tree,
)

TINY_STEPS = 120  # a step is under 1 % of the budget: not every step gets a line


@pytest.mark.slow
def test_token_budget_lines_are_at_most_2_percent_apart_and_end_at_1(prepared_data, tmp_path):
    tree = tiny_tree(tmp_path / "tree")
    proc = run_train(tree, prepared_data, AR_TOKEN_BUDGET=str(TINY_STEPS * TINY_STEP),
                     AR_EVAL_TOKENS="2048")
    result = summary(proc)
    points = progress(proc.stdout)
    fractions = [p[0] for p in points]
    assert points[0][:3] == (0.008, 1, TINY_STEP)
    assert points[-1][:3] == (1.0, TINY_STEPS, TINY_STEPS * TINY_STEP)
    assert max(b - a for a, b in zip(fractions, fractions[1:], strict=False)) <= 0.02 + 1e-9
    for fraction, step, tokens, loss, _ in points:
        assert fraction == round(step / TINY_STEPS, 3) and tokens == step * TINY_STEP
        assert math.isfinite(loss) and 0 < loss < 10
    assert len(points) < TINY_STEPS  # thinned: about one line per 2 % (here every 2nd step)
    assert result["num_steps"] == TINY_STEPS and math.isfinite(result["val_bpb"])
    assert "step 00001 (0.8%) | loss " in proc.stdout  # the step lines are still there


@pytest.mark.slow
def test_time_budget_fraction_is_training_seconds_over_the_budget(prepared_data, tmp_path):
    tree = tiny_tree(tmp_path / "tree")
    budget = 3.0
    proc = run_train(tree, prepared_data, AR_TOKEN_BUDGET="", TIME_BUDGET=str(budget),
                     AR_EVAL_TOKENS="2048")
    result = summary(proc)
    points = progress(proc.stdout)
    fractions = [p[0] for p in points]
    assert points[0][:2] == (0.0, 1) and points[0][4] == 0.0  # the untimed warm-up step
    assert fractions[-1] == 1.0 and points[-1][4] >= budget
    assert points[-1][1] == result["num_steps"]
    assert fractions == sorted(fractions)
    for fraction, step, tokens, _, seconds in points:
        assert tokens == step * TINY_STEP
        # seconds are printed to 0.1 s, the fraction to 0.001
        assert abs(fraction - min(seconds / budget, 1.0)) <= 0.05 / budget + 0.0005 + 1e-9
    # a line where the next step, twice as long as the last, could pass 2 %; a busy
    # machine's step can be longer still, so this allows a little more
    assert max(b - a for a, b in zip(fractions, fractions[1:], strict=False)) <= 0.05
