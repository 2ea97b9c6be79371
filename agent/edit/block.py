"""The search space (`search_space.toml`) and the hyperparameter block of a train.py.

The block is found by parsing, not by markers: every constant the space names must be a
module-level `NAME = value` whose value is a literal or a constant expression such as `2**19`
(karpathy/autoresearch writes batch sizes that way). Rendering replaces only the value text,
keeps the line's comment at its column, and keeps the `2**k` form where the new value allows.
"""

from __future__ import annotations

import ast
import itertools
import math
import operator
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Value = int | float | str


class SpaceError(UserError, ValueError):
    """The search space file or a configuration is invalid; the message says why."""


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
        if self.power_of_two and not _is_power_of_two(int(value)):
            return f"{self.name} = {value!r} is not a power of two"
        return None

    def snap(self, value: Any, clip: bool = False) -> Value:
        """Round a raw proposal onto the grid this parameter lives on (ints, powers of two,
        6 significant digits for floats, so the rendered file holds exactly what was told).
        Bounds are enforced by `check`; `clip=True` clips instead, for methods that ask."""
        if self.type == "categorical":
            return value
        if clip:
            return self.nearest(value)[0]
        v = float(value)
        if self.power_of_two:
            return 2 ** round(math.log2(max(v, 1.0)))
        if self.type == "int":
            return int(round(v))
        return float(f"{v:.6g}")

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
        has one answer: `value` held within the bounds at 6 significant digits. A categorical
        lists `value` first when it is a choice, then the other choices in order."""
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


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


# ---------------------------------------------------------------------------
# Restricted arithmetic: constraints and `2**19`-style constants, nothing else.

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
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
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval_node(node.left, env), _eval_node(node.right, env)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise SpaceError("exponent too large")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.Compare):
        left = _eval_node(node.left, env)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval_node(comp, env)
            if type(op) not in _CMPOPS or not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    raise SpaceError(f"unsupported expression: {ast.dump(node)[:60]}")


# A block constant is read in the session's own process from a file a model may have written:
# it is a literal, or a short arithmetic form such as `2**19` or `3 * 2**10`, whose every step
# is bounded before it is computed (no string arithmetic, no number past 2**128).
MAX_PARTS, MAX_BITS, MAX_STR = 16, 128, 1000


def literal_value(node: ast.AST) -> Value:
    """The value of a block constant's expression, or SpaceError naming why it is not one."""
    if sum(1 for _ in itertools.islice(ast.walk(node), MAX_PARTS + 1)) > MAX_PARTS:
        raise SpaceError(f"an expression of more than {MAX_PARTS} parts")
    return _bounded(node)


def _bounded(node: ast.AST) -> Value:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        return _in_bounds(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _number(_bounded(node.operand))
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _number(_bounded(node.left)), _number(_bounded(node.right))
        if isinstance(node.op, ast.Pow) and isinstance(left, int) and isinstance(right, int) \
                and abs(right) * max(abs(left).bit_length() - 1, 0) > MAX_BITS:
            raise SpaceError(f"{left}**{right} is past 2**{MAX_BITS}")
        return _in_bounds(_BINOPS[type(node.op)](left, right))
    raise SpaceError(f"not a literal ({type(node).__name__})")


def _number(value: Value) -> int | float:
    if isinstance(value, str):
        raise SpaceError("arithmetic on a string")
    return value


def _in_bounds(value: Any) -> Value:
    if isinstance(value, str):
        if len(value) > MAX_STR:
            raise SpaceError(f"a string of more than {MAX_STR} characters")
        return value
    if isinstance(value, int) and abs(value).bit_length() > MAX_BITS:
        raise SpaceError(f"a number past 2**{MAX_BITS}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SpaceError("a number that is not finite")
    if not isinstance(value, (int, float)):  # (-8) ** 0.5 is complex
        raise SpaceError(f"a {type(value).__name__} value")
    return value


def _parse_module(source: str) -> ast.Module:
    """train.py's syntax tree; a file nested past what the parser takes is a SpaceError, not
    the session's MemoryError or RecursionError."""
    try:
        return ast.parse(source)
    except SyntaxError as e:
        raise SpaceError(f"train.py does not parse (line {e.lineno}): {e.msg}") from None
    except (MemoryError, RecursionError):
        raise SpaceError("train.py nests an expression deeper than Python parses") from None


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


# ---------------------------------------------------------------------------
# The block inside train.py.

@dataclass(frozen=True)
class Assignment:
    name: str
    value: Value
    line: int  # 1-based
    start: int  # column of the value's first character
    end: int  # column after its last character
    text: str  # the value's source text


def read_block(source: str, names: list[str] | None = None) -> dict[str, Assignment]:
    """Find each module-level `NAME = constant` (all upper-case names, or `names`)."""
    tree = _parse_module(source)
    lines = source.splitlines()
    found: dict[str, Assignment] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if (names is not None and name not in names) or (names is None and not name.isupper()):
            continue
        if node.value.lineno != node.value.end_lineno:
            continue
        try:
            value = literal_value(node.value)
        except (SpaceError, ArithmeticError, TypeError):
            continue
        line = lines[node.value.lineno - 1]
        start, end = _char_cols(line, node.value.col_offset, node.value.end_col_offset)
        found[name] = Assignment(name, value, node.value.lineno, start, end, line[start:end])
    if names is not None:
        missing = [n for n in names if n not in found]
        if missing:
            raise SpaceError("train.py has no module-level constant for "
                             + ", ".join(missing) + " (expected `NAME = value` lines)")
    return found


def non_literal(source: str, names: list[str]) -> list[str]:
    """Every binding of a searched name that is not one module-level `NAME = literal` line
    (`float(50)`, `*=`, a tuple target, an assignment inside a block or function, ...): such a
    value escapes the space's bounds, so a trial holding one is refused."""
    try:
        tree = _parse_module(source)
    except SpaceError:
        return []  # read_block reports it
    plain = {id(node) for node in tree.body if isinstance(node, ast.Assign)
             and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)}
    lines = source.splitlines()
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.NamedExpr)):
            targets = [node.target]
        else:
            continue
        bound = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        hit = sorted(bound & set(names))
        if not hit:
            continue
        why = "" if id(node) in plain and node.value.lineno == node.value.end_lineno else \
            "not one `NAME = value` line"
        if not why:
            try:
                literal_value(node.value)
            except (SpaceError, ArithmeticError, TypeError) as e:
                why = str(e) or type(e).__name__
        if why:
            text = lines[node.lineno - 1].strip()
            problems.append(f"line {node.lineno}: `{text[:80]}` sets {', '.join(hit)} to "
                            f"something other than a literal value ({why[:80]})")
    return problems


def render_block(source: str, values: dict[str, Value]) -> str:
    """`source` with each named constant set to its new value; everything else untouched."""
    block = read_block(source, list(values))
    lines = source.splitlines(keepends=True)
    for name, value in values.items():
        a = block[name]
        text = format_value(value, a.text)
        raw = lines[a.line - 1]
        eol = raw[len(raw.rstrip("\r\n")):]
        line = raw[: len(raw) - len(eol)]
        head, tail = line[: a.start], line[a.end:]
        m = re.match(r"(\s+)(#.*)$", tail)
        if m:  # the comment stays at its column; a longer value pushes it right
            column = len(line) - len(m.group(2))
            gap = max(column - len(head) - len(text), min(len(m.group(1)), 2))
            tail = " " * gap + m.group(2)
        lines[a.line - 1] = head + text + tail + eol
    return "".join(lines)


def format_value(value: Value, old_text: str = "") -> str:
    if isinstance(value, bool):
        raise SpaceError("booleans are not hyperparameter values here")
    if isinstance(value, str):
        quote = "'" if old_text.startswith("'") else '"'
        return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote
    if isinstance(value, int):
        m = re.fullmatch(r"\s*2\s*\*\*\s*\d+\s*", old_text)
        if m and _is_power_of_two(value):
            return f"2**{value.bit_length() - 1}"
        return str(value)
    return repr(float(value))


def _char_cols(line: str, start_byte: int, end_byte: int) -> tuple[int, int]:
    """ast columns count UTF-8 bytes; convert to character offsets in `line`."""
    raw = line.encode()
    return len(raw[:start_byte].decode()), len(raw[:end_byte].decode())


def apply_preset(source: str, space: SearchSpace) -> str:
    """Rewrite the block with the preset's defaults and fixed constants (session start)."""
    names = [n for n in space.fixed if n in read_block(source)]
    return render_block(source, {**space.defaults(), **{n: space.fixed[n] for n in names}})
