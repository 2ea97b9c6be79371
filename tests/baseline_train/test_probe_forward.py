"""A probe's evaluation-sized forward runs on the eager module (issue 24): through
torch.compile's wrapper, in no_grad, it compiled an inference graph that the trial never
uses, 10-25 s per probe on a GPU (train.py's evaluation is eager)."""

from __future__ import annotations

import contextlib
import time

import pytest
import torch

from tests.baseline_train.helpers import load_prepare


class Counting(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)
        self.calls: list[bool] = []  # grad mode of each call

    def forward(self, x):
        self.calls.append(torch.is_grad_enabled())
        return self.linear(x)


def probe_of(model, prepare):
    run = prepare.Trial.__new__(prepare.Trial)  # the kit's state after a probe's steps
    run.model, run.autocast, run.device = model, contextlib.nullcontext(), torch.device("cpu")
    run.probe, run.batch, run._predicted_mb = True, 4, None
    run.steps, run.step_times, run.skip_steps, run.t_start = 2, [0.01], 1, time.time()
    return run


def test_the_probes_forward_compiles_nothing(capsys):
    from torch._dynamo.utils import counters

    prepare = load_prepare()
    eager = Counting()
    compiled = torch.compile(eager, backend="eager", dynamic=False)
    compiled(torch.randn(4, 8)).sum().backward()  # the probe's training step, compiled
    frames = counters["frames"]["ok"]
    assert frames >= 1 and eager.calls  # dynamo traced it once

    with pytest.raises(SystemExit) as done:
        probe_of(compiled, prepare).end_preflight(torch.randn(16, 8))
    assert done.value.code == 0
    assert counters["frames"]["ok"] == frames  # no second (no-grad) graph
    assert eager.calls[-1] is False  # the forward ran, eagerly, without grad
    out = capsys.readouterr().out
    assert "preflight: ok" in out and "preflight_batch: 4" in out

    with pytest.raises(SystemExit):  # an uncompiled model is called as it is
        probe_of(eager, prepare).end_preflight(torch.randn(16, 8))
    assert eager.calls[-1] is False
