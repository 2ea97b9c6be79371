"""Which of the changes between two commits carried the gain (`autoresearch attribute`).

The diff from `--from` (default the baseline) to `--to` (default best) is split into its
changes: one per hyperparameter whose value differs when only the block changed, else one per
changed stretch of train.py (a hunk). Each change is measured two ways, K seeds each, paired
by seed with its endpoint:
- leave-one-out: `to` with that change undone; delta = val_bpb(to - c) - val_bpb(to)
  (positive: the change helped, taking it away hurts);
- add-one: `from` with only that change; delta = val_bpb(from + c) - val_bpb(from)
  (negative: the change helps on its own).
A variant that a session would refuse as a trial (`SearchSpace.check_source`: a value outside
the space, a searched name set to something other than a literal) or that does not compile is
reported as unappliable, not run. Every variant is a commit in the run's repo (parent: the
endpoint it changes) under refs/attribution/<folder>/, its runs and the table in
attribution/<folder>/.
"""

from __future__ import annotations

import difflib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.analysis.reruns import RecordedRun
from agent.edit import block
from agent.edit.block import SpaceError, render_block
from agent.edit.space import SearchSpace
from agent.errors import UserError
from agent.record.ledger import atomic_write
from agent.stats import paired_differences


@dataclass
class Change:
    name: str
    without: str | None  # train.py of `to` without this change (None: unappliable)
    only: str | None  # train.py of `from` with just this change
    why_not: dict = field(default_factory=dict)  # variant -> why it cannot run


def problem(space: SearchSpace, source: str) -> str:
    """Why this train.py cannot run as a trial ("" when it can)."""
    try:
        compile(source, "train.py", "exec")
    except SyntaxError as e:
        return f"train.py does not parse: {e.msg} (line {e.lineno})"
    try:
        space.check_source(source)
    except SpaceError as e:
        return str(e)
    return ""


def _show(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


def _block_only(space: SearchSpace, before: str, after: str) -> list[str] | None:
    """The names whose values differ when only the block changed, else None. A searched
    name's line may differ in the spaces before its comment (a session keeps the comments'
    column as values change length)."""
    a, b = block.values(before, space.names), block.values(after, space.names)
    if _spaced(render_block(before, b), space) != _spaced(after, space):
        return None
    return [k for k in space.names if k in b and a.get(k) != b[k]]


def _spaced(source: str, space: SearchSpace) -> list[str]:
    """The lines of `source`, a searched name's assignment with its runs of spaces as one."""
    names = tuple(space.names)
    return [" ".join(line.split()) if line.split("=", 1)[0].strip() in names else line
            for line in source.splitlines()]


def _hunks(before: str, after: str):
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    ops = difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes()
    return old, new, ops


def with_changes(space: SearchSpace, before: str, after: str, keep: set[int]) -> str:
    """`before` with the changes numbered `keep` (0-based, in split_changes' order) made."""
    names = _block_only(space, before, after)
    if names is not None:
        b = block.values(after, space.names)
        return render_block(before, {**block.values(before, space.names),
                                     **{k: b[k] for i, k in enumerate(names) if i in keep}})
    old, new, ops = _hunks(before, after)
    out, i = [], 0
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            out += old[i1:i2]
        else:
            out += new[j1:j2] if i in keep else old[i1:i2]
            i += 1
    return "".join(out)


def split_changes(space: SearchSpace, before: str, after: str) -> list[Change]:
    """The changes from `before` to `after`, each with its two variants."""
    a, b = block.values(before, space.names), block.values(after, space.names)
    names = _block_only(space, before, after)
    if names is not None:  # only the block changed: one change per value
        changes = [Change(f"{k} {_show(a.get(k))} -> {_show(b[k])}",
                          render_block(after, {**b, k: a.get(k)}),
                          render_block(before, {**a, k: b[k]}))
                   for k in names]
    else:
        old, new, ops = _hunks(before, after)
        ops = [op for op in ops if op[0] != "equal"]
        changes = []
        for tag, i1, i2, j1, j2 in ops:
            first = (new[j1:j2] or old[i1:i2])[0].strip()[:40]
            changes.append(Change(f"{tag} line {j1 + 1}: {first}",
                                  "".join(new[:j1] + old[i1:i2] + new[j2:]),
                                  "".join(old[:i1] + new[j1:j2] + old[i2:])))
    for c in changes:
        for variant in ("without", "only"):
            why = problem(space, getattr(c, variant))
            if why:
                c.why_not[variant] = why
                setattr(c, variant, None)
    return changes


def attribute(run_dir: Path, start: str = "baseline", end: str = "best", k: int = 2,
              sandbox: str | None = None, progress=None, prepare_network: bool = False,
              isolation: str = "auto") -> dict:
    """Measure each change between `start` and `end`; the table, also in attribution.json."""
    with RecordedRun.open(run_dir, sandbox, prepare_network, isolation) as rec:
        a, b = rec.resolve(start), rec.resolve(end)
        if a == b:
            raise UserError(f"--from {start} and --to {end} are the same commit: nothing to "
                            "attribute")
        changes = split_changes(rec.space, rec.ws.source(a), rec.ws.source(b))
        if not changes:
            raise UserError(f"{start} and {end} have the same train.py: nothing to attribute")
        name = f"{start}-{end}-{time.strftime('%Y%m%d-%H%M%S')}"
        out, seeds = rec.rd.root / "attribution" / name, rec.seeds(k)
        variants = {"from": a, "to": b}
        for i, c in enumerate(changes, 1):
            for variant, parent, text in (("without", b, c.without), ("only", a, c.only)):
                if text is not None:
                    sha = rec.ws.write_commit(parent, f"attribute: {variant} {c.name}", text)
                    rec.ws.set_ref(f"refs/attribution/{name}/{i}-{variant}", sha)
                    variants[f"{i}-{variant}"] = sha
        runs = [(sha, out / key / f"seed-{s}", s) for key, sha in variants.items()
                for s in seeds]
        if progress is not None:
            progress(f"{len(runs)} runs: {len(variants)} variants x {k} seeds in {out}")
        results = rec.run(runs)
        done = iter(results)
        vals = {key: [next(done).val_bpb for _ in seeds] for key in variants}
        rows = []
        for i, c in enumerate(changes, 1):
            loo = paired_differences(vals.get(f"{i}-without", [None] * k), vals["to"])
            add = paired_differences(vals.get(f"{i}-only", [None] * k), vals["from"])
            rows.append({"change": c.name, "leave_one_out": loo[0], "leave_one_out_std": loo[1],
                         "add_one": add[0], "add_one_std": add[1], "unappliable": c.why_not,
                         "commits": {v: variants.get(f"{i}-{v}") for v in ("without", "only")}})
        table = {"run": str(rec.rd.root), "from": start, "to": end,
                 "from_commit": a, "to_commit": b, "seeds": seeds, "folder": str(out),
                 "from_val_bpb": vals["from"], "to_val_bpb": vals["to"], "changes": rows,
                 "cost_s": round(sum(r.wall_s for r in results), 1)}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "attribution.json", (json.dumps(table, indent=2) + "\n").encode())
        from agent.plots import attribution_figure, save

        save(attribution_figure(table), out / "attribution.png")
        table["plot"] = str(out / "attribution.png")
        return table

