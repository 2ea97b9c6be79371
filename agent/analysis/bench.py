"""`autoresearch bench`: every method x every seed under one folder, resumable as a whole.

    runs/bench-NAME/
      bench.toml         the methods, seeds, stop rule and session settings (what resume reads)
      METHOD-sSEED/      one session folder per run
      compare.png, report.html, compare.json   written when the bench is done

Runs go seed by seed (all methods of seed 0, then of seed 1, ...), so a bench cut short is
still balanced. With `--cost`, every run stops at the same summed trial cost (sandbox + LLM
seconds): a method whose model is slow gets fewer trials, as it would in real life. Running
the same command again (or after kill -9) resumes the run that was cut and goes on.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

from agent.analysis.comparison import Comparison, compare_runs
from agent.analysis.report import pruned_cell
from agent.config.settings import TRACKERS, SessionConfig, toml_value
from agent.loop.progress import QuietReporter
from agent.loop.session import Session
from agent.record.newrun import SessionError
from agent.record.rundir import RunDir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def plan(folder: Path, methods: list[str], seeds: int, template: SessionConfig) -> dict:
    """The bench's plan: from bench.toml when it exists (a resume), else written there."""
    path = folder / "bench.toml"
    if path.exists():
        stored = tomllib.loads(path.read_text())
        session = stored["session"]
        # like session.toml's: only trackers whose store lies in the folder (agent/track/)
        session["track"] = [t for t in session.get("track", []) if t in TRACKERS]
        # methods are compared at equal trials or cost: no run stops early by a stop rule
        # (a bench.toml from before the rules existed has none)
        session.setdefault("stop_after_failures", 0)
        return {"methods": stored["methods"], "seeds": stored["seeds"],
                "template": SessionConfig(**session)}
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# autoresearch bench: run the same command again to resume it",
             f"methods = {toml_value(methods)}", f"seeds = {seeds}", "", "[session]"]
    for key, value in template.model_dump().items():
        if value is not None and key not in ("method", "seed"):
            lines.append(f"{key} = {toml_value(value)}")
    path.write_text("\n".join(lines) + "\n")
    return {"methods": methods, "seeds": seeds, "template": template}


def run_dirs(folder: Path, methods: list[str], seeds: int) -> list[Path]:
    return [folder / f"{m}-s{s}" for s in range(seeds) for m in methods]


def run(folder: Path, methods: list[str], seeds: int, template: SessionConfig,
        reporter_for=lambda name: QuietReporter(), say=print) -> Comparison:
    """Create or resume every run of the bench, then write its report."""
    p = plan(folder, methods, seeds, template)
    own = {"isolation": template.isolation}  # this command's, never bench.toml's
    for seed in range(p["seeds"]):
        for method in p["methods"]:
            run_dir = folder / f"{method}-s{seed}"
            reporter = reporter_for(run_dir.name)
            if RunDir(run_dir).exists():
                session = Session.open(run_dir, reporter, template.track)
                session.config = session.config.model_copy(update=own)
            else:
                track = list(dict.fromkeys(p["template"].track + template.track))
                config = p["template"].model_copy(update={"method": method, "seed": seed,
                                                          "track": track, **own})
                session = Session.create(run_dir, config, reporter)
            say(f"bench: {run_dir.name}")
            session.run()
    return report(folder, run_dirs(folder, p["methods"], p["seeds"]))


def report(folder: Path, runs: list[Path], ref: str | None = None) -> Comparison:
    """compare.png, compare.json and report.html of the finished runs."""
    from agent.analysis.comparison import dumps
    from agent.plots import compare_figure, progress_figure, save

    done = [r for r in runs if RunDir(r).exists()]
    if not done:
        raise SessionError(f"{folder} holds no finished run to report on")
    comparison = compare_runs(done, ref)
    save(compare_figure(comparison.groups, comparison.ref), folder / "compare.png")
    for row in comparison.rows:
        notes = comparison.notes[row["run"]]
        save(progress_figure(notes, Path(row["run"]).name),
             Path(row["run"]) / "progress.png")
    (folder / "compare.json").write_text(dumps(comparison) + "\n")
    (folder / "report.html").write_text(render_html(folder, comparison))
    return comparison


def render_html(folder: Path, comparison: Comparison) -> str:
    """One static page: the methods table, the runs table, the pictures."""
    esc = html.escape

    def cell(value, digits=4):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return esc(str(value))

    methods = "".join(
        f"<tr><td>{esc(m)}</td><td>{s['runs']}</td><td>{cell(s['mean_best'])}"
        f" ± {cell(s['std_best'])}</td><td>{cell(s['median_best'])}</td>"
        f"<td>{cell(s['ci95_mean_best'] and s['ci95_mean_best'][0])} .. "
        f"{cell(s['ci95_mean_best'] and s['ci95_mean_best'][1])}</td>"
        f"<td>{100 * s['failed_share']:.0f}%</td><td>{100 * s['failed_cost_share']:.0f}%</td>"
        f"<td>{esc(pruned_cell(s.get('pruned', 0), s.get('pruned_cost_s', 0.0)))}</td>"
        f"<td>{cell(s['cost_to_target_s'], 0)}</td><td>{s['tokens']}</td>"
        f"<td>{cell((s.get('vs_ref') or {}).get('p_value'), 3)}</td></tr>"
        for m, s in comparison.stats.items())
    runs = "".join(
        f"<tr><td><a href='{esc(Path(r['run']).name)}/progress.png'>"
        f"{esc(Path(r['run']).name)}</a></td><td>{esc(r['method'])}</td><td>{r['seed']}</td>"
        f"<td>{r['trials']}</td><td>{cell(r['best_val_bpb'])}</td>"
        f"<td>{100 * r['failed_share']:.0f}%</td>"
        f"<td>{esc(pruned_cell(r.get('pruned', 0), r.get('pruned_cost_s', 0.0)))}</td>"
        f"<td>{cell(r['cost_s'], 0)}</td></tr>"
        for r in comparison.rows)
    target = cell(comparison.target)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>bench {esc(folder.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}</style></head><body>
<h1>bench {esc(folder.name)}</h1>
<p>Score: the best val_bpb of each run. Cost: summed sandbox + LLM seconds of its trials.
Target for "cost to target": {target}. p: one-sided Wilcoxon signed-rank test, paired by seed,
that the method's best is lower than {esc(comparison.ref or "the reference")}'s; with 3
seeds the smallest possible p is 0.125.</p>
<h2>methods</h2><table><tr><th>method</th><th>seeds</th><th>mean ± std</th><th>median</th>
<th>95% CI of mean</th><th>failed</th><th>cost lost</th><th>pruned</th><th>cost to target s</th>
<th>tokens</th><th>p vs ref</th></tr>{methods}</table>
<h2>pictures</h2><img src="compare.png" alt="best so far against trials and cost" width="100%">
<h2>runs</h2><table><tr><th>run</th><th>method</th><th>seed</th><th>trials</th><th>best</th>
<th>failed</th><th>pruned</th><th>cost s</th></tr>{runs}</table>
</body></html>
"""
