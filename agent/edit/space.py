"""The search space: `search_space.toml` read into parameters, presets and constraints.

A parameter says which values it takes (`check`, `grid`, `nearest`); the space says whether a
configuration, or a whole train.py (`check_source`), is one it can run as a trial. Constraints
are comparisons over parameter and fixed names, evaluated by a restricted evaluator.
"""

from __future__ import annotations

import ast
import math
import operator
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.edit.block import (
    BINOPS,
    SpaceError,
    Value,
    is_power_of_two,
    non_literal,
    read_block,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # "int" | "float" | "categorical"
    default: Value
    low: float | None = None
    high: float | None = None
    log: bool = False
    power_of_two: bool = False
    choices: tuple[str, ...] = ()
    help: str = ""

    def check(self, value: Any, preset: str = "") -> str | None:
        """None if `value` lies in this parameter's space, else a one-line reason."""
        where = f" of the {preset} preset" if preset else ""
        if self.type == "categorical":
            if value not in self.choices:
                return f"{self.name} = {value!r} is not one of {', '.join(self.choices)}"
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{self.name} = {value!r} is not a number"
        if self.type == "int" and not float(value).is_integer():
            return f"{self.name} = {value!r} is not an integer"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{self.name} = {value!r} is not finite"
        if value < self.low:
            return f"{self.name} = {value!r} is below the lower bound {self.low!r}{where}"
        if value > self.high:
            return f"{self.name} = {value!r} is above the upper bound {self.high!r}{where}"
        if self.power_of_two and not is_power_of_two(int(value)):
            return f"{self.name} = {value!r} is not a power of two"
        return None

    def grid(self) -> Sequence[Value] | None:
        """Every value this parameter may take, ascending (choices in the toml's order): the
        powers of two or the integers within the bounds; None for a float, which takes any
        value within its bounds."""
        if self.type == "categorical":
            return self.choices
        if self.power_of_two:
            low = max(math.ceil(math.log2(self.low)), 0) if self.low > 0 else 0
            high = math.floor(math.log2(self.high)) if self.high >= 1 else -1
            return [2**e for e in range(low, high + 1)]
        if self.type == "int":
            return range(math.ceil(self.low), math.floor(self.high) + 1)
        return None

    def nearest(self, value: Any, k: int = 1) -> list[Value]:
        """The k values of this parameter's space nearest to `value`, nearest first; each
        passes `check`. Distance counts in exponents for powers of two (so each power owns
        the same stretch of log2), in units for ints; a tie goes to the larger value. A float
        has one answer: `value` at 6 significant digits (so the rendered file holds exactly
        what an optimizer was told), held within the bounds. A categorical lists `value` first
        when it is a choice, then the other choices in order."""
        grid = self.grid()
        if self.type == "categorical":
            return sorted(grid, key=lambda c: c != value)[:k]
        if grid is None:
            return [min(max(float(f"{float(value):.6g}"), float(self.low)), float(self.high))]
        if not grid:
            return []
        v = min(max(float(value), grid[0]), grid[-1])  # inf and values <= 0 have a distance
        if self.power_of_two:
            at = math.log2(v)
            return sorted(grid, key=lambda g: (abs(g.bit_length() - 1 - at), -g))[:k]
        c = int(min(max(math.floor(v + 0.5), grid[0]), grid[-1]))
        near = range(max(c - k, grid[0]), min(c + k, grid[-1]) + 1)  # ints: only around v
        return sorted(near, key=lambda g: (abs(g - v), -g))[:k]


@dataclass(frozen=True)
class Constraint:
    expr: str
    message: str

    def holds(self, env: dict[str, Value]) -> bool:
        return bool(_safe_eval(self.expr, env))


@dataclass(frozen=True)
class SearchSpace:
    params: dict[str, Param]
    constraints: tuple[Constraint, ...] = ()
    fixed: dict[str, Value] = field(default_factory=dict)
    preset: str = ""
    time_budget: float | None = None
    memory: str | None = None  # the preset's host-memory limit per trial, e.g. "48g"

    @property
    def names(self) -> list[str]:
        return list(self.params)

    def defaults(self) -> dict[str, Value]:
        return {n: p.default for n, p in self.params.items()}

    def errors(self, values: dict[str, Any]) -> list[str]:
        """Every reason `values` (a full or partial configuration) is outside the space.
        Constraints are checked once every name they mention is known."""
        errs = [f"{name} is not a hyperparameter of this space" for name in values
                if name not in self.params]
        errs += [e for n, v in values.items() if n in self.params
                 if (e := self.params[n].check(v, self.preset))]
        env = {**self.fixed, **values}
        for c in self.constraints:
            if _names(c.expr) <= set(env) and not errs and not c.holds(env):
                shown = ", ".join(f"{n}={env[n]!r}" for n in sorted(_names(c.expr)))
                errs.append(f"{c.message} ({shown})")
        return errs

    def validate(self, values: dict[str, Any]) -> None:
        errs = self.errors(values)
        if errs:
            raise SpaceError("; ".join(errs))

    def check_source(self, source: str) -> None:
        """Raise SpaceError unless `source` is a train.py this space can run as a trial: it
        parses, every searched name it binds is one module-level `NAME = literal` line, and
        the values it holds lie in the space. A searched name it lacks is no error: a code
        agent may remove or rename one, and the trial then runs without it."""
        bad = non_literal(source, self.names)
        if bad:
            raise SpaceError("hyperparameters must stay literal values in the block: "
                             + "; ".join(bad))
        present = read_block(source)
        self.validate({n: present[n].value for n in self.names if n in present})


def load_space(path: str | Path, preset: str | None = None) -> SearchSpace:
    """Read `search_space.toml`; with `preset`, apply that preset's ranges and defaults."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpaceError(f"no search space at {path}: add a search_space.toml") from None
    except tomllib.TOMLDecodeError as e:
        raise SpaceError(f"{path} is not valid TOML: {e}") from None
    params = {}
    for name, spec in doc.get("params", {}).items():
        try:
            params[name] = _param(name, spec)
        except (KeyError, TypeError, ValueError) as e:
            raise SpaceError(f"{path}: parameter {name}: {e}") from None
    constraints = tuple(Constraint(c["expr"], c.get("message", c["expr"]))
                        for c in doc.get("constraints", []))
    for c in constraints:
        _safe_eval_check(c.expr)
    preset = preset or doc.get("default_preset")
    presets = doc.get("presets", {})
    if preset is None:
        return SearchSpace(params, constraints)
    if preset not in presets:
        known = ", ".join(presets) or "none"
        raise SpaceError(f"unknown preset {preset!r} in {path} (known: {known})")
    spec = presets[preset]
    for name, (low, high) in spec.get("ranges", {}).items():
        params[name] = replace(params[name], low=low, high=high)
    for name, value in spec.get("defaults", {}).items():
        params[name] = replace(params[name], default=value)
    space = SearchSpace(params, constraints, dict(spec.get("fixed", {})), preset,
                        spec.get("time_budget"), spec.get("memory"))
    space.validate(space.defaults())
    return space


def _param(name: str, spec: dict) -> Param:
    kind = spec["type"]
    if kind == "categorical":
        return Param(name, kind, spec["default"], choices=tuple(spec["choices"]),
                     help=spec.get("help", ""))
    if kind not in ("int", "float"):
        raise ValueError(f"type must be int, float or categorical, not {kind!r}")
    return Param(name, kind, spec["default"], spec["low"], spec["high"],
                 spec.get("log", False), spec.get("power_of_two", False),
                 help=spec.get("help", ""))


# ---------------------------------------------------------------------------
# Constraints: names, numbers, arithmetic and comparisons, nothing else.

_CMPOPS = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
           ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne}


def _eval_node(node: ast.AST, env: dict[str, Value]) -> Any:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body, env)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise SpaceError(f"unknown name {node.id!r}")
        return env[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval_node(node.operand, env)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in BINOPS:
        left, right = _eval_node(node.left, env), _eval_node(node.right, env)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise SpaceError("exponent too large")
        return BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.Compare):
        left = _eval_node(node.left, env)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval_node(comp, env)
            if type(op) not in _CMPOPS or not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    raise SpaceError(f"unsupported expression: {ast.dump(node)[:60]}")


def _safe_eval(expr: str, env: dict[str, Value]) -> Any:
    return _eval_node(ast.parse(expr, mode="eval"), env)


def _safe_eval_check(expr: str) -> None:
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise SpaceError(f"constraint {expr!r} is not an expression: {e.msg}") from None
    names = {n.id: 1 for n in ast.walk(tree) if isinstance(n, ast.Name)}
    _eval_node(tree, names)


def _names(expr: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(expr, mode="eval")) if isinstance(n, ast.Name)}
