"""The hyperparameter block of a train.py: read it, check it holds literals, render it.

The block is found by parsing, not by markers: every constant the space names must be a
module-level `NAME = value` whose value is a literal or a constant expression such as `2**19`
(karpathy/autoresearch writes batch sizes that way). Rendering replaces only the value text,
keeps the line's comment at its column, and keeps the `2**k` form where the new value allows.
What values are allowed is the search space's to say (agent/edit/space.py).
"""

from __future__ import annotations

import ast
import itertools
import math
import operator
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.errors import UserError

if TYPE_CHECKING:
    from agent.edit.space import SearchSpace

Value = int | float | str


class SpaceError(UserError, ValueError):
    """The search space file or a configuration is invalid; the message says why."""


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
          ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
          ast.Pow: operator.pow}


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
    if isinstance(node, ast.BinOp) and type(node.op) in BINOPS:
        left, right = _number(_bounded(node.left)), _number(_bounded(node.right))
        if isinstance(node.op, ast.Pow) and isinstance(left, int) and isinstance(right, int) \
                and abs(right) * max(abs(left).bit_length() - 1, 0) > MAX_BITS:
            raise SpaceError(f"{left}**{right} is past 2**{MAX_BITS}")
        return _in_bounds(BINOPS[type(node.op)](left, right))
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


def values(source: str, names: list[str]) -> dict[str, Value]:
    """The value of each of `names` in the block, in file order; SpaceError naming any that
    is not a module-level `NAME = value` line."""
    return {n: a.value for n, a in read_block(source, names).items()}


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
        if m and is_power_of_two(value):
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
