"""What users read: live progress of a session, and the replay / compare tables and JSON."""

from __future__ import annotations

import statistics
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from agent.loop.progress import STATUS_STYLE
from agent.text import clean, markup

CURVE_ROWS = 25  # what `replay --curve` shows of a curve (--json: all of it)
CURVE_KEYS = ("progress", "step", "tokens", "loss", "seconds")


def wide_console() -> Console:
    """A console that does not squeeze wide tables when the output is a file or a pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def diffstat(diff: str) -> tuple[int, int]:
    added = removed = 0
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    return added, removed


def replay_rows(notes: list) -> list[dict]:
    """The stable `replay --json` rows (documented in README)."""
    rows = []
    for n in notes:
        added, removed = diffstat(n.diff or "")
        result = n.result or {}
        rows.append({
            "trial": n.trial, "commit": n.commit, "method": n.method, "status": n.status,
            "val_bpb": n.val_bpb, "best_val_bpb": n.best_val_bpb, "is_best": n.is_best,
            "added": added, "removed": removed, "rationale": n.description,
            "reason": result.get("reason", ""), "wall_s": result.get("wall_s"),
            "overhead_s": result.get("overhead_s"), "config": n.config,
        })
    return rows


def replay_text(rows: list[dict], title: str, width: int = 120) -> str:
    """The replay table as plain aligned text: for long sessions, where a rich Table costs
    milliseconds per row (10,000 trials: seconds instead of 16 s)."""
    room = max(16, width - 72)
    lines = [clean(title, one_line=True),
             f"{'trial':>6}  {'commit':7}  {'method':10}  {'status':9} {'val_bpb':>9} "
             f"{'best':>9} {'diff':>9}  rationale / reason"]
    for r in rows:
        val = "-" if r["val_bpb"] is None else f"{r['val_bpb']:.6f}"
        best = "-" if r["best_val_bpb"] is None else f"{r['best_val_bpb']:.6f}"
        text = r["rationale"] if r["status"] == "ok" else (r["reason"] or r["rationale"])
        diff = f"+{r['added']} -{r['removed']}"
        commit, method, status = (clean(r[k] or "", one_line=True)
                                  for k in ("commit", "method", "status"))
        lines.append(f"{r['trial']:>6}  {commit[:7]:7}  {method[:10]:10}  "
                     f"{status:9} {val:>9} {best:>9} {diff:>9}  "
                     f"{clean(text or '', one_line=True)[:room]}"
                     + (" *" if r["is_best"] else ""))
    return "\n".join(lines) + "\n"


def replay_table(rows: list[dict], title: str, width: int = 120) -> Table:
    table = Table(title=markup(title), box=box.SIMPLE_HEAD, show_edge=False)
    room = max(16, width - 72)  # what the fixed columns leave for the rationale
    for col, just, width in (("trial", "right", 5), ("commit", "left", 7),
                             ("method", "left", 8), ("status", "left", 8),
                             ("val_bpb", "right", 8), ("best", "right", 8),
                             ("diff", "right", 7)):
        table.add_column(col, justify=just, no_wrap=True, min_width=width)
    table.add_column("rationale / reason", no_wrap=True)
    for r in rows:
        style = STATUS_STYLE.get(r["status"], "white")
        val = "-" if r["val_bpb"] is None else f"{r['val_bpb']:.6f}"
        best = "-" if r["best_val_bpb"] is None else f"{r['best_val_bpb']:.6f}"
        if r["is_best"]:
            val = f"[bold green]{val}[/bold green]"
        text = r["rationale"] if r["status"] == "ok" else (r["reason"] or r["rationale"])
        table.add_row(str(r["trial"]), markup(r["commit"][:7]), markup(r["method"] or ""),
                      f"[{style}]{markup(r['status'])}[/{style}]", val, best,
                      f"+{r['added']} -{r['removed']}", markup(text or "", room))
    return table


def curve_points(note, path: Path | None) -> tuple[list[dict], str]:
    """A trial's learning curve as `{progress, step, tokens, loss, seconds}` points, and where
    it came from: its full-resolution `curve.jsonl` at `path` when that holds points, else the
    note's thinned [progress, loss] pairs (step, tokens and seconds None). A value that is not
    a finite number is None (a loss that went NaN, or a foreign file's junk): the JSON stays
    strict JSON."""
    from agent.curves import finite
    from agent.plots import curve_of  # numpy: only for a curve, not every replay

    if path is not None:
        from sandbox.curve import read_curve

        points = [{k: _whole(finite(point.get(k)), k) for k in CURVE_KEYS}
                  for point in read_curve(path)]
        points = [p for p in points if p["progress"] is not None]
        if points:
            return points, "curve.jsonl"
    return [{"progress": p, "step": None, "tokens": None, "loss": loss, "seconds": None}
            for p, loss in curve_of(note)], "the note"


def _whole(number: float | None, key: str) -> float | int | None:
    """Steps and tokens are counts."""
    return int(number) if number is not None and key in ("step", "tokens") else number


def curve_header(note, count: int, source: str) -> str:
    """One line: the trial, its outcome (val_bpb, or where and why it was stopped), and how
    many points of which curve follow."""
    from agent.curves import finite

    result = note.result or {}
    if note.status == "pruned":
        at = finite(result.get("stopped_at"))
        reason = note.reason or "stopped early"
        outcome = reason if reason.startswith("pruned") or at is None else \
            f"pruned at {at:.2f}: {reason}"
    elif note.status == "ok" and note.val_bpb is not None:
        outcome = f"ok, val_bpb {note.val_bpb:.6f}"
    else:
        outcome = f"{note.status}: {note.reason}" if note.reason else note.status
    shown = f"{min(count, CURVE_ROWS)} of {count}" if count > CURVE_ROWS else str(count)
    return clean(f"trial {note.trial} {outcome} ({shown} points from {source})", one_line=True)


def curve_table(points: list[dict]) -> Table:
    """The curve, thinned to CURVE_ROWS rows spread evenly (the first and the last kept)."""
    if len(points) > CURVE_ROWS:
        step = (len(points) - 1) / (CURVE_ROWS - 1)
        points = [points[round(i * step)] for i in range(CURVE_ROWS)]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for key in CURVE_KEYS:
        table.add_column(key, justify="right")
    for p in points:
        table.add_row(*(_curve_cell(key, p[key]) for key in CURVE_KEYS))
    return table


def _curve_cell(key: str, value) -> str:
    if value is None:
        return "not finite" if key == "loss" else "-"
    return {"progress": f"{value:.3f}", "step": str(value), "tokens": f"{value:,}",
            "loss": f"{value:.4f}", "seconds": f"{value:.1f}"}[key]


def compare_row(run_dir: Path, config, notes: list, elapsed_s: float | None) -> dict:
    """The stable `compare --json` row of one run (documented in README)."""
    ran = [n for n in notes if n.trial > 0]
    ok = [n for n in notes if n.status == "ok" and n.method != "confirm"]  # the session's seed
    best = min(ok, key=lambda n: n.val_bpb) if ok else None
    baseline = next((n for n in notes if n.trial == 0), None)
    overheads = [o for n in notes if (o := (n.result or {}).get("overhead_s")) is not None]
    return {
        "run": str(run_dir), "method": config.method, "seed": config.seed,
        "trials": len(ran),
        "best_val_bpb": best.val_bpb if best else None,
        "best_trial": best.trial if best else None,
        "baseline_val_bpb": baseline.val_bpb if baseline else None,
        # a pruned trial was stopped on purpose: counted apart from the failed ones
        "failed_share": (sum(n.status not in ("ok", "pruned") for n in ran) / len(ran))
        if ran else 0.0,
        "pruned": sum(n.status == "pruned" for n in ran),
        "pruned_cost_s": round(sum(n.cost_s or 0.0 for n in ran if n.status == "pruned"), 3),
        "statuses": {s: sum(n.status == s for n in notes)
                     for s in sorted({n.status for n in notes})},
        "wall_s": elapsed_s if elapsed_s is not None else sum(n.wall_s or 0 for n in notes),
        "prompt_tokens": sum((n.tokens or {}).get("prompt", 0) for n in notes),
        "completion_tokens": sum((n.tokens or {}).get("completion", 0) for n in notes),
        "cost_usd": sum(n.cost_usd or 0.0 for n in notes),  # the LLM calls
        # and the sandbox at the run's --gpu-usd-per-hour (none: 0)
        "spend_usd": sum((n.cost_usd or 0.0) + (config.gpu_usd_per_hour or 0.0)
                         * (n.cost_s or 0.0) / 3600 for n in notes),
        "llm_proposals": sum(n.llm_valid is not None for n in notes),
        "llm_valid": sum(n.llm_valid is True for n in notes),
        # seconds around training (start, compile, data, eval): the first ok trial fills the
        # compile cache, the later ones should pay less
        "overhead_first_s": overheads[0] if overheads else None,
        "overhead_s": statistics.median(overheads[1:]) if len(overheads) > 1 else None,
        "cost_s": round(sum(n.cost_s or 0.0 for n in notes), 3),
        "failed_cost_share": (sum(n.cost_s or 0.0 for n in ran
                                  if n.status not in ("ok", "pruned"))
                              / max(sum(n.cost_s or 0.0 for n in notes), 1e-9)),
    }


def compare_table(rows: list[dict]) -> Table:
    llm = any(r["prompt_tokens"] or r["completion_tokens"] or r.get("spend_usd") for r in rows)
    table = Table(title="runs")
    pruning = any(r.get("pruned") for r in rows)
    columns = ["run", "method", "seed", "trials", "best", "baseline", "failed"]
    columns += ["pruned"] if pruning else []
    columns += ["wall", "overhead s"]
    columns += ["llm valid", "tokens", "cost $"] if llm else []
    for col in columns:
        table.add_column(col, justify="left" if col in ("run", "method") else "right",
                         no_wrap=col != "run", overflow="fold")
    best = min((r["best_val_bpb"] for r in rows if r["best_val_bpb"] is not None), default=None)
    for r in rows:
        val = "-" if r["best_val_bpb"] is None else f"{r['best_val_bpb']:.6f}"
        if r["best_val_bpb"] is not None and r["best_val_bpb"] == best:
            val = f"[bold green]{val}[/bold green]"
        base = "-" if r["baseline_val_bpb"] is None else f"{r['baseline_val_bpb']:.6f}"
        cells = [markup(Path(r["run"]).name), markup(r["method"]), str(r["seed"]),
                 str(r["trials"]), val, base, f"{100 * r['failed_share']:.0f}%"]
        cells += [pruned_cell(r.get("pruned", 0), r.get("pruned_cost_s", 0.0))] if pruning else []
        cells += [_duration(r["wall_s"]), _overhead(r)]
        if llm:
            cells += [f"{r['llm_valid']}/{r['llm_proposals']}",
                      str(r["prompt_tokens"] + r["completion_tokens"]),
                      f"{r.get('spend_usd', r['cost_usd']):.4f}"]
        table.add_row(*cells)
    return table


def methods_table(stats: dict[str, dict], ref: str | None) -> Table:
    """One row per method: its best over seeds, failures, cost, and the test against ref."""
    table = Table(title="methods" + (f" (paired one-sided Wilcoxon against {markup(ref)})"
                                     if ref else ""))
    pruning = any(m.get("pruned") for m in stats.values())
    for col in ("method", "seeds", "mean ± std", "median", "95% CI of mean", "failed",
                "cost lost", *(["pruned"] if pruning else []), "cost to target", "tokens", "$",
                "p vs ref"):
        table.add_column(col, justify="left" if col == "method" else "right")
    best = min((m["mean_best"] for m in stats.values() if m["mean_best"] is not None),
               default=None)
    for method, m in stats.items():
        mean = "-" if m["mean_best"] is None else f"{m['mean_best']:.4f}"
        if m["std_best"] is not None:
            mean += f" ± {m['std_best']:.4f}"
        if m["mean_best"] is not None and m["mean_best"] == best:
            mean = f"[bold green]{mean}[/bold green]"
        ci = m["ci95_mean_best"]
        vs = m.get("vs_ref") or {}
        p = "ref" if method == ref else ("-" if vs.get("p_value") is None
                                         else f"{vs['p_value']:.3f} (n={vs['pairs']})")
        reach = m["cost_to_target_s"]
        pruned = [pruned_cell(m.get("pruned", 0), m.get("pruned_cost_s", 0.0))] if pruning \
            else []
        table.add_row(markup(method), str(m["runs"]),
                      mean, "-" if m["median_best"] is None else f"{m['median_best']:.4f}",
                      "-" if ci is None else f"{ci[0]:.4f} .. {ci[1]:.4f}",
                      f"{100 * m['failed_share']:.0f}%", f"{100 * m['failed_cost_share']:.0f}%",
                      *pruned, "-" if reach is None else _duration(reach), str(m["tokens"]),
                      f"{m['cost_usd']:.4f}", p)
    return table


def pruned_cell(count: int, cost_s: float) -> str:
    """'pruned N (cost X s)': the trials the pruner stopped and what they cost up to there
    (the rest of their budget, never spent, is what pruning saved)."""
    return f"{count} (cost {cost_s:,.0f} s)" if count else "-"


def _overhead(row: dict) -> str:
    """'first / later' seconds around training."""
    first, later = row.get("overhead_first_s"), row.get("overhead_s")
    if first is None:
        return "-"
    return f"{first:.1f}" if later is None else f"{first:.1f} / {later:.1f}"


def _duration(seconds: float) -> str:
    seconds = int(seconds or 0)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
