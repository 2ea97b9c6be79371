"""The optimizers, by the name `--method` gives them.

Every optimizer is constructed as `Cls(space, seed, baseline, **options)` and follows the
`Optimizer` protocol of `agent.optimizers.base`; its pickle is its resume state.
"""

from __future__ import annotations

from typing import Any

from agent.edit.block import Value
from agent.edit.space import SearchSpace
from agent.optimizers.base import Optimizer
from agent.optimizers.centaur import Centaur
from agent.optimizers.cmaes import CMAES
from agent.optimizers.code_agent import CodeAgent
from agent.optimizers.llm_hpo import LLMHPO
from agent.optimizers.random import RandomSearch
from agent.optimizers.tpe import TPE

METHODS: dict[str, type] = {
    "random": RandomSearch,
    "tpe": TPE,
    "cmaes": CMAES,
    "centaur": Centaur,
    "llm-hpo": LLMHPO,
    "code-agent": CodeAgent,
}
LLM_METHODS = ("centaur", "llm-hpo", "code-agent")


def make_optimizer(name: str, space: SearchSpace, seed: int, baseline: dict[str, Value],
                   **options: Any) -> Optimizer:
    """The optimizer called `name`; `options` go to its constructor (e.g. CMA-ES's sigma0,
    an LLM method's model). An unknown name raises ValueError listing the known ones."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r} (known: {', '.join(METHODS)})") from None
    return cls(space, seed, baseline, **options)
