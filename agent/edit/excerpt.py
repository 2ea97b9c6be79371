"""What of train.py a prompt shows when the whole file does not fit the model's window.

The file is cut into units along its top-level statements (a long class into its methods);
the units that set the hyperparameters are always shown, then those that recent diffs
touched, then those that use the most hyperparameters (the optimizer, the schedule, the
model's shape: where an edit most likely goes), as many as fit, each in full. Every run of
left-out units becomes one marker line; a diff whose hunk copies a marker line is refused by
agent/edit/patching.py (`apply_patch(..., elided=markers)`), since the lines it stands for
were never seen.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

SPLIT_LINES = 40  # a top-level class longer than this is cut into its methods
CHUNK_LINES = 30  # a file that does not parse is cut into chunks of this many lines


@dataclass(frozen=True)
class Excerpt:
    text: str
    markers: tuple[str, ...] = ()  # the lines of `text` that stand for left-out lines
    left_out: int = 0  # how many lines of the file are not shown


@dataclass
class _Unit:
    first: int  # 1-based, inclusive
    last: int
    sets: bool = False  # assigns a kept name (the hyperparameter block)
    uses: int = 0  # how many distinct kept names it reads
    touched: bool = False
    cost: int = 0


def excerpt(source: str, room: int, cost: Callable[[str], int],
            marker: Callable[[int, int], str], keep: Iterable[str] = (),
            touched: Iterable[str] = ()) -> Excerpt | None:
    """`source` in at most `room` tokens (by `cost`, which adds up over lines as
    agent/llm/window.py's estimate does): the whole file when it fits; else the units that
    assign a name of `keep`, then the units holding a line of `touched`, then the units
    reading the most names of `keep`, in full, the rest as `marker(first, last)` lines.
    None when even the units that assign the kept names do not fit."""
    if cost(source) <= room:
        return Excerpt(source)
    lines = source.splitlines(keepends=True)
    names = set(keep)
    units = _units(source, lines, names)
    changed = {t.strip() for t in touched if len(t.strip()) > 3}
    for u in units:
        u.touched = any(s.strip() in changed for s in lines[u.first - 1:u.last])
        u.cost = cost("".join(lines[u.first - 1:u.last]))
    per_marker = cost(marker(len(lines), len(lines)) + "\n")  # the longest numbers

    def size(chosen: set[int]) -> int:
        gaps = sum(id(u) not in chosen and (i == 0 or id(units[i - 1]) in chosen)
                   for i, u in enumerate(units))
        return sum(u.cost for u in units if id(u) in chosen) + gaps * per_marker

    chosen = {id(u) for u in units if u.sets}
    if size(chosen) > room:
        return None
    ranked = sorted((u for u in units if not u.sets),
                    key=lambda u: (not u.touched, -u.uses, u.last - u.first, u.first))
    for u in ranked:
        if size(chosen | {id(u)}) <= room:
            chosen.add(id(u))
    shown = _assemble(lines, units, chosen, marker)
    return shown if cost(shown.text) <= room else None


def _assemble(lines: list[str], units: list[_Unit], chosen: set[int],
              marker: Callable[[int, int], str]) -> Excerpt:
    out, markers, gap, left = [], [], None, 0
    for u in units:
        if id(u) in chosen:
            if gap is not None:
                line = marker(gap, u.first - 1)
                out.append(line + "\n")
                markers.append(line)
                gap = None
            out.extend(lines[u.first - 1:u.last])
            continue
        left += u.last - u.first + 1
        gap = u.first if gap is None else gap
    if gap is not None:
        line = marker(gap, units[-1].last)
        out.append(line + "\n")
        markers.append(line)
    return Excerpt("".join(out), tuple(markers), left)


def _units(source: str, lines: list[str], names: set[str]) -> list[_Unit]:
    """Units covering every line in order: each top-level statement with the comments and
    blank lines above it; a long class as its header and its methods."""
    try:
        body = ast.parse(source).body
    except SyntaxError:  # still shown, in chunks; the block's lines found by their text
        units = [_Unit(i, min(i + CHUNK_LINES - 1, len(lines)))
                 for i in range(1, len(lines) + 1, CHUNK_LINES)]
        alternatives = "|".join(map(re.escape, names or {"\0"}))
        sets = re.compile(rf"^({alternatives})\s*[:=]")
        for u in units:
            u.sets = any(sets.match(s) for s in lines[u.first - 1:u.last])
        return units
    units: list[_Unit] = []
    start = 1
    for node in body:
        end = node.end_lineno or node.lineno
        if isinstance(node, ast.ClassDef) and end - start >= SPLIT_LINES and node.body:
            inner = start
            for child in node.body:
                child_end = child.end_lineno or child.lineno
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    first_line = min([child.lineno] + [d.lineno for d in child.decorator_list])
                    if first_line - 1 >= inner:
                        units.append(_describe(_Unit(inner, first_line - 1), node, names))
                        inner = first_line
                    units.append(_describe(_Unit(inner, child_end), child, names))
                    inner = child_end + 1
            if inner <= end:
                units.append(_describe(_Unit(inner, end), node, names))
        else:
            units.append(_describe(_Unit(start, end), node, names))
        start = end + 1
    if units and start <= len(lines):
        units[-1].last = len(lines)
    elif not units:
        units = [_Unit(1, len(lines))]
    return units


def _describe(unit: _Unit, node: ast.AST, names: set[str]) -> _Unit:
    targets = node.targets if isinstance(node, ast.Assign) else \
        [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
    unit.sets = any(isinstance(t, ast.Name) and t.id in names for t in targets)
    unit.uses = len({n.id for n in ast.walk(node)
                     if isinstance(n, ast.Name) and n.id in names})
    return unit
