"""Issue 23, point 2: the agent sees the dynamics. agent/curves.py summarises a learning curve
in one line; llm-hpo, centaur and code-agent show it for the best trial and the last few, a
pruned trial says where it was stopped, and a history without curves renders as before."""

from __future__ import annotations

import math
import shutil

import pytest

from agent import curves, paths
from agent.edit.space import load_space
from agent.llm import prompting
from agent.llm.client import LLM, LLMConfig
from agent.optimizers.centaur import Centaur
from agent.optimizers.code_agent import CodeAgent
from agent.optimizers.llm_hpo import LLMHPO
from agent.protocols import TrialRecord
from agent.testing.scripted_llm import ScriptedLLM
from tests.agent.test_llm_methods import context, edit

NAN = float("nan")


def falling(final: float, end: float = 1.0, n: int = 64) -> tuple[tuple[float, float], ...]:
    """A smooth training curve of `n` points up to progress `end`, ending near `final`."""
    return tuple((round(end * (i + 1) / n, 4), final + 6.0 * math.exp(-5 * end * (i + 1) / n))
                 for i in range(n))


# -- agent/curves.py -----------------------------------------------------------------------

def test_value_at_is_the_first_point_at_or_past_the_progress():
    curve = ((0.0, 9.0), (0.1, 6.0), (0.3, 4.0), (1.0, 3.0))
    assert curves.value_at(curve, 0.1) == 6.0
    assert curves.value_at(curve, 0.25) == 4.0  # not interpolated
    assert curves.value_at(curve, 1.0) == 3.0
    assert curves.value_at(((0.0, 9.0), (0.25, 5.0)), 0.5) is None  # ended before
    assert curves.value_at((), 0.1) is None
    assert math.isnan(curves.value_at(((0.2, None),), 0.1))  # a non-finite loss, as stored


def test_diverged_at_a_non_finite_or_sharply_rising_loss():
    assert curves.diverged_at(falling(3.0)) is None
    assert curves.diverged_at(()) is None
    assert curves.diverged_at(((0.1, 5.0), (0.2, 4.0), (0.3, NAN))) == 0.3
    assert curves.diverged_at(((0.1, 5.0), (0.2, None))) == 0.2
    assert curves.diverged_at(((0.1, 5.0), (0.2, float("inf")))) == 0.2
    rising = ((0.1, 5.0), (0.2, 4.0), (0.3, 4.4), (0.4, 5.2), (0.5, 9.0))
    assert curves.diverged_at(rising) == 0.4  # 5.2 > 1.2 * 4.0; 4.4 is noise
    assert curves.diverged_at(((0.1, 4.0), (0.2, 4.1), (0.3, 4.0))) is None


def test_summary_of_a_whole_curve():
    """A point every 2 %: the one at or just past each of 10, 25, 50 and 75 %, then the end,
    2 decimals."""
    every_2 = tuple((i / 50, 10 - i / 10 + 0.001) for i in range(51))
    assert curves.summary(every_2) == "10% 9.50, 25% 8.70, 50% 7.50, 75% 6.20, 100% 5.00"
    assert curves.summary(()) == ""


def test_summary_of_a_pruned_curve_ends_where_it_was_stopped():
    pruned = falling(3.8, end=0.27, n=14)
    line = curves.summary(pruned)
    assert line.endswith("27% " + f"{pruned[-1][1]:.2f}") and "50%" not in line
    assert line.startswith("10% ") and "25% " in line
    assert curves.ended_at(pruned) == 0.27 and curves.ended_at(()) is None


def test_summary_says_where_it_diverged():
    assert curves.summary(((0.1, 5.0), (0.2, 4.0), (0.3, NAN))) == \
        "10% 5.00, 30% nan; diverged at 30%"
    assert curves.summary(((0.1, 5.0), (0.25, 4.0), (0.5, 7.5), (1.0, 6.0))) == \
        "10% 5.00, 25% 4.00, 50% 7.50, 100% 6.00; diverged at 50%"


def test_summary_of_a_sparse_curve_writes_each_point_once_with_its_own_progress():
    assert curves.summary(((0.0, 9.0), (0.6, 4.0), (1.0, 3.5))) == "60% 4.00, 100% 3.50"
    assert curves.summary(((0.5, 4.0),)) == "50% 4.00"


# -- the prompts ---------------------------------------------------------------------------

REASON = "median: loss 4.12 above the median 3.50 of 5 completed trials"


@pytest.fixture
def space():
    return load_space(paths.baseline_dir() / "search_space.toml", "cpu")


def history(space, with_curves: bool = True) -> list[TrialRecord]:
    """Trial 1 best and early; later ones worse, trial 4 pruned at 25 %, trial 5 oom."""
    base = space.defaults()
    rows = [TrialRecord(0, "ok", base, 3.10), TrialRecord(1, "ok", {**base, "DEPTH": 5}, 2.90),
            TrialRecord(2, "ok", {**base, "DEPTH": 3}, 3.20),
            TrialRecord(3, "ok", {**base, "DEPTH": 6}, 3.00),
            TrialRecord(4, "pruned", {**base, "DEPTH": 2}, None, reason=REASON),
            TrialRecord(5, "oom", {**base, "DEPTH": 8}, None, reason="killed by the host "
                        "memory limit"),
            TrialRecord(6, "ok", {**base, "DEPTH": 7}, 3.05)]
    if with_curves:
        finals = {0: 3.1, 1: 2.9, 2: 3.2, 3: 3.0, 6: 3.05}
        for t in rows:
            t.curve = falling(finals[t.number]) if t.number in finals else ()
        rows[4].curve = falling(3.9, end=0.25, n=16)
    return rows


METHODS = {"llm-hpo": LLMHPO, "code-agent": CodeAgent,
           "centaur": lambda *a, **k: Centaur(*a, ratio=1.0, warmup=0, **k)}


def prompt(space, method: str, trials: list[TrialRecord], compact: bool = False) -> str:
    with ScriptedLLM(default=edit({"DEPTH": 4}, "deeper")) as llm:
        client = LLM(LLMConfig(llm.model, llm.api_base, compact=compact))
        opt = METHODS[method](space, 0, space.defaults(), llm=client)
        opt.ask(trials, [], context(space, len(trials)))
        return llm.requests[-1]["messages"][-1]["content"]


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_prompts_show_the_best_curve_and_where_a_trial_was_pruned(space, method, compact):
    trials = history(space)
    text = prompt(space, method, trials, compact)
    best = f"- trial 1 (best): {curves.summary(trials[1].curve)}\n"
    assert best in text
    assert f"- trial 4 (pruned at 25%): {curves.summary(trials[4].curve)}\n" in text
    assert f"- trial 6: {curves.summary(trials[6].curve)}\n" in text
    assert f"trial 4 pruned at 25% ({REASON[:60]}" in text  # the history line says so too
    assert "trial 5 oom" in text and "trial 5 (" not in text  # no curve, no curve line
    block = text.split("Smoothed train loss by share of the budget")[1].splitlines()[1:]
    shown = [line.split(":")[0] for line in block[:next(i for i, line in enumerate(block)
                                                        if not line.startswith("- trial "))]]
    # the best, then the last 2 (a small model) or 3 with a curve
    assert shown == ["- trial 1 (best)", *(["- trial 3"] if not compact else []),
                     "- trial 4 (pruned at 25%)", "- trial 6"]
    assert "\n\n\n" not in text


def test_a_small_models_prompts_still_grow_only_at_the_end(space):
    """Curve lines sit in the varying part: each compact prompt still starts with the whole
    trial list of the one before, although the trials with a curve line change."""
    trials = history(space)
    prompts = [prompt(space, "llm-hpo", trials[:n], compact=True) for n in (5, 6, 7)]
    for before, after in zip(prompts, prompts[1:], strict=False):
        listed = before[:before.index("\n\n", before.index("Trials in order"))]
        assert after.startswith(listed)
    assert "pruned at 25%" in prompts[0]


@pytest.fixture
def prompts_without_curves(tmp_path, monkeypatch):
    """prompts/ as it was before curves: no curve block, a bare status."""
    folder = tmp_path / "prompts"
    shutil.copytree(paths.prompts_dir(), folder)
    undone = []
    for path in folder.glob("*.j2"):
        text = path.read_text()
        for new, old in (('{% include "_curves.j2" %}\n', ""),
                         ("{{ status(t) }}", "{{ t.status }}"),
                         ("{{ status(a) }}", "{{ a.status }}")):
            undone += [new] * text.count(new)
            text = text.replace(new, old)
        path.write_text(text)
    assert len(undone) == 6, undone  # 2 curve blocks, 4 status words
    return folder


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_history_without_curves_renders_as_before(space, method, compact, monkeypatch,
                                                     prompts_without_curves):
    trials = history(space, with_curves=False)
    now = prompt(space, method, trials, compact)
    monkeypatch.setattr(paths, "prompts_dir", lambda: prompts_without_curves)
    monkeypatch.setattr(prompting, "_ENV", None)
    before = prompt(space, method, trials, compact)
    monkeypatch.setattr(prompting, "_ENV", None)
    assert now == before
    assert "Smoothed train loss" not in now and "\n\n\n" not in now
    assert "trial 4 pruned (" in now  # still says pruned, without a point to name


def test_the_curve_lines_cost_little(space):
    """The small-model budget: with curves the compact llm-hpo prompt grows by its curve
    block alone (a header and 3 lines), under 600 characters (~150 tokens)."""
    with_curves = prompt(space, "llm-hpo", history(space), compact=True)
    without = prompt(space, "llm-hpo", history(space, with_curves=False), compact=True)
    assert 0 < len(with_curves) - len(without) < 600
