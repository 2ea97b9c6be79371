"""Loading runs for `compare` and `bench`: their rows, notes, and per-method statistics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from agent.analysis.report import compare_row
from agent.config.settings import SessionConfig
from agent.record.newrun import require_session
from agent.record.note import TrialNote
from agent.record.rundir import RunDir, sessions_in
from agent.stats import default_target, method_stats


@dataclass
class Comparison:
    rows: list[dict]
    notes: dict[str, list[TrialNote]]  # run -> its notes
    ref: str | None = None
    target: float | None = None
    stats: dict[str, dict] = field(default_factory=dict)

    @property
    def groups(self) -> dict[str, list[list[TrialNote]]]:
        out: dict[str, list] = {}
        for row in self.rows:
            out.setdefault(row["method"], []).append(self.notes[row["run"]])
        return out


def compare_runs(run_dirs: list[Path], ref: str | None = None,
                 target: float | None = None) -> Comparison:
    rows, notes = [], {}
    for run_dir in sessions_in(run_dirs):
        rd = RunDir(run_dir)
        require_session(rd)
        config = SessionConfig.load(rd.session_toml)
        run_notes = rd.notes(broken=lambda e: None)  # a broken ledger stops no comparison
        elapsed = rd.load_clock() if rd.clock_json.exists() else None
        row = compare_row(run_dir, config, run_notes, elapsed)
        rows.append(row)
        notes[row["run"]] = run_notes
    comparison = Comparison(rows, notes)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    comparison.ref = ref if ref in methods else (default_ref(methods) if ref is None
                                                 else None)
    comparison.target = target if target is not None else default_target(rows)
    by = {m: [r for r in rows if r["method"] == m] for m in methods}
    for m in methods:
        ref_rows = by.get(comparison.ref) if comparison.ref and m != comparison.ref else None
        comparison.stats[m] = method_stats(by[m], notes, comparison.target, ref_rows)
        comparison.stats[m]["pruned"] = sum(r["pruned"] for r in by[m])
        comparison.stats[m]["pruned_cost_s"] = round(sum(r["pruned_cost_s"] for r in by[m]), 3)
    for row in rows:  # --json stays a list of runs; the method's summary rides along
        row["method_stats"] = comparison.stats[row["method"]]
    return comparison


def default_ref(methods: list[str]) -> str | None:
    """The reference the others are tested against without --ref: TPE (the paper's), else
    random search, else the first method; None for a single method."""
    if len(methods) < 2:
        return None
    return next((m for m in ("tpe", "random") if m in methods), methods[0])


def dumps(comparison: Comparison) -> str:
    return json.dumps(comparison.rows, sort_keys=True)
