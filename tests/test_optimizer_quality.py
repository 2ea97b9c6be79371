"""Optimizer quality, regression-tested on the surrogate of our own testbed (issue 25,
point 3): CMA-ES and TPE each beat random search at 30 trials over 20 seeds with a
one-sided p < 0.05, every optimizer asked and told as a session does
(benchmarks/surrogate/quality.py). A tell that teaches the wrong thing is caught."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from scipy.stats import mannwhitneyu

ROOT = Path(__file__).resolve().parent.parent
SEEDS, TRIALS = 20, 30


def quality():
    path = ROOT / "benchmarks" / "surrogate" / "quality.py"
    spec = importlib.util.spec_from_file_location("surrogate_quality", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["surrogate_quality"] = module
    spec.loader.exec_module(module)
    return module


def p_better(bests: dict, method: str) -> float:
    return mannwhitneyu(bests[method], bests["random"], alternative="less").pvalue


@pytest.fixture(scope="module")
def bests():
    return quality().compare(["random", "tpe", "cmaes"], SEEDS, TRIALS)


@pytest.mark.parametrize("method", ["tpe", "cmaes"])
def test_the_method_beats_random_search_on_the_surrogate(bests, method):
    print(f"{method}: p = {p_better(bests, method):.4g}")
    assert p_better(bests, method) < 0.05


def test_a_tell_that_teaches_the_wrong_thing_is_caught(monkeypatch, bests):
    """The same comparison with every value told with its sign flipped (a tell that teaches
    the opposite of what happened): neither method beats random any more."""
    import agent.optimizers.encoding as encoding

    right = encoding.told_value
    monkeypatch.setattr(encoding, "told_value", lambda record, seen: -right(record, seen))
    broken = quality().compare(["random", "tpe", "cmaes"], SEEDS, TRIALS)
    assert broken["random"] == bests["random"]  # random ignores what it is told anyway
    for method in ("tpe", "cmaes"):
        print(f"{method} with a broken tell: p = {p_better(broken, method):.4g}")
        assert p_better(broken, method) > 0.05
