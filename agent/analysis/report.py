"""What users read: live progress of a session, and the replay / compare tables and JSON."""

from __future__ import annotations

import statistics
import textwrap
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.loop.progress import STATUS_STYLE
from agent.text import clean, markup, wrap

CURVE_ROWS = 25  # what `replay --curve` shows of a curve (--json: all of it)
CURVE_KEYS = ("progress", "step", "tokens", "loss", "seconds")


def wide_console() -> Console:
    """A console that does not squeeze wide tables when the output is a file or a pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


WIDE = 10_000  # --wide: a console this wide never breaks a row; a table takes what it needs


def fitting_console(wide: bool = False) -> Console:
    """The console a table command prints to: the terminal's width, else $COLUMNS, else 80 (a
    pipe), which its tables fit by leaving out columns (fitted); --wide: no limit."""
    return Console(width=WIDE) if wide else Console()


def fitted(columns: list[tuple[str, str, bool]], rows: list[list[str]], width: int | None,
           drop: tuple[str, ...], text_min: int = 30, **table) -> Table:
    """A table of `columns` (header, justify, whether its cells are words that may wrap) that
    fits `width` columns: a value (a number, a name) is never broken, a wrapping cell breaks
    between words and keeps at least `text_min` columns, and while the table is still too
    wide the columns named in `drop` are left out in that order, said in its caption.
    `width` None: every column, no cell wrapped (--wide)."""
    from rich.measure import Measurement
    from rich.text import Text

    def needs(i: int) -> int:
        return max(Text.from_markup(cell).cell_len for cell in [columns[i][0]] +
                   [r[i] for r in rows])

    def build(shown: list[int]) -> Table:
        out = Table(**table)
        for i in shown:
            name, justify, words = columns[i]
            if words and width is not None:  # breaks between words; folds a word too long
                out.add_column(name, justify=justify, overflow="fold",
                               min_width=max(min(text_min, needs(i)), len(name)))
            else:
                out.add_column(name, justify=justify, no_wrap=True, min_width=needs(i))
        for r in rows:
            out.add_row(*(r[i] for i in shown))
        return out

    shown = list(range(len(columns)))
    result = build(shown)
    names = [c[0] for c in columns]
    if width is None:
        return result
    measure = Console(width=WIDE)
    for name in drop:
        if Measurement.get(measure, measure.options, result).minimum <= width:
            break
        if name in names:
            shown.remove(names.index(name))
            result = build(shown)
    left = [names[i] for i in range(len(columns)) if i not in shown]
    if left:
        result.caption = (f"left out to fit {width} columns: {', '.join(left)} (--wide shows "
                          "them)")
        result.caption_justify = "left"
    return result


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


# replay's columns, and the order they are left out in when the rationale would have fewer
# than 30 columns: the trial, its outcome and its reason stay
REPLAY_COLUMNS = [("trial", "right", False), ("commit", "left", False), ("method", "left", False),
                  ("status", "left", False), ("val_bpb", "right", False),
                  ("best", "right", False), ("diff", "right", False),
                  ("rationale / reason", "left", True)]
REPLAY_DROP = ("commit", "diff", "best", "method")
TEXT_MIN = 30  # the rationale's least width before a column is left out for it


def _replay_cells(r: dict) -> list[str]:
    """A replay row's cells as plain text, in REPLAY_COLUMNS' order."""
    val = "-" if r["val_bpb"] is None else f"{r['val_bpb']:.6f}"
    best = "-" if r["best_val_bpb"] is None else f"{r['best_val_bpb']:.6f}"
    text = r["rationale"] if r["status"] == "ok" else (r["reason"] or r["rationale"])
    return [str(r["trial"]), *(clean(r[k] or "", one_line=True)
                               for k in ("commit", "method", "status")), val, best,
            f"+{r['added']} -{r['removed']}", clean(text or "", one_line=True)]


def replay_text(rows: list[dict], title: str, width: int | None = 120) -> str:
    """The replay table as plain aligned text: for long sessions, where a rich Table costs
    milliseconds per row (10,000 trials: seconds instead of 16 s). Fits `width` as
    replay_table does: columns left out in REPLAY_DROP's order, the rationale broken between
    words under its column; `width` None: one line a trial."""
    cells = [_replay_cells(r) for r in rows]
    for c, r in zip(cells, rows, strict=True):
        c[1] = c[1][:7]  # a commit is known by its first 7 characters
        c[-1] += " *" if r["is_best"] else ""
    names = [c[0] for c in REPLAY_COLUMNS]
    sizes = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    shown = list(range(len(names) - 1))

    def room() -> int:
        return (width or 0) - sum(sizes[i] + 2 for i in shown)

    for name in REPLAY_DROP:
        if width is None or room() >= TEXT_MIN:
            break
        shown.remove(names.index(name))
    left = [names[i] for i in range(len(names) - 1) if i not in shown]

    def line(row: list[str]) -> str:
        head = "  ".join(row[i].rjust(sizes[i]) if REPLAY_COLUMNS[i][1] == "right"
                         else row[i].ljust(sizes[i]) for i in shown) + "  "
        text = row[-1]
        if width is None:
            return head + text
        return textwrap.fill(text, max(width, len(head) + TEXT_MIN), initial_indent=head,
                             subsequent_indent=" " * len(head), break_long_words=False,
                             break_on_hyphens=False) if text else head.rstrip()

    lines = [wrap(title, width), line(names)]
    lines += [line(c) for c in cells]
    if left:
        lines.append(wrap(f"left out to fit {width} columns: {', '.join(left)} (--wide shows "
                          "them)", width))
    return "\n".join(lines) + "\n"


def replay_table(rows: list[dict], title: str, width: int | None = 120) -> Table:
    """The replay table, fitted to `width` columns (None: --wide, nothing wrapped)."""
    cells = []
    for r in rows:
        trial, commit, method, status, val, best, diff, text = map(escape, _replay_cells(r))
        style = STATUS_STYLE.get(r["status"], "white")
        if r["is_best"]:
            val = f"[bold green]{val}[/bold green]"
        cells.append([trial, commit[:7], method, f"[{style}]{status}[/{style}]", val, best,
                      diff, text])
    return fitted(REPLAY_COLUMNS, cells, width, REPLAY_DROP, TEXT_MIN, title=markup(title),
                  title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True)


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


# compare's tables leave out columns in these orders where the width is too small: the run,
# its method, its best and what failed stay
COMPARE_DROP = ("overhead s", "baseline", "seed", "llm valid", "tokens", "wall", "trials",
                "pruned", "failed")
METHODS_DROP = ("median", "cost lost", "tokens", "95% CI of mean", "seeds", "cost to target",
                "pruned", "$", "failed")
COMPACT = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False,
           "collapse_padding": True, "title_justify": "left"}


def compare_table(rows: list[dict], width: int | None = None) -> Table:
    """One row per run, fitted to `width` columns (None: all of them)."""
    llm = any(r["prompt_tokens"] or r["completion_tokens"] or r.get("spend_usd") for r in rows)
    pruning = any(r.get("pruned") for r in rows)
    columns = ["run", "method", "seed", "trials", "best", "baseline", "failed"]
    columns += ["pruned"] if pruning else []
    columns += ["wall", "overhead s"]
    columns += ["llm valid", "tokens", "cost $"] if llm else []
    best = min((r["best_val_bpb"] for r in rows if r["best_val_bpb"] is not None), default=None)
    cells = []
    for r in rows:
        val = "-" if r["best_val_bpb"] is None else f"{r['best_val_bpb']:.6f}"
        if r["best_val_bpb"] is not None and r["best_val_bpb"] == best:
            val = f"[bold green]{val}[/bold green]"
        base = "-" if r["baseline_val_bpb"] is None else f"{r['baseline_val_bpb']:.6f}"
        row = [markup(Path(r["run"]).name), markup(r["method"]), str(r["seed"]),
               str(r["trials"]), val, base, f"{100 * r['failed_share']:.0f}%"]
        row += [pruned_cell(r.get("pruned", 0), r.get("pruned_cost_s", 0.0))] if pruning else []
        row += [_duration(r["wall_s"]), _overhead(r)]
        if llm:
            row += [f"{r['llm_valid']}/{r['llm_proposals']}",
                    str(r["prompt_tokens"] + r["completion_tokens"]),
                    f"{r.get('spend_usd', r['cost_usd']):.4f}"]
        cells.append(row)
    spec = [(c, "left" if c in ("run", "method") else "right", False) for c in columns]
    return fitted(spec, cells, width, COMPARE_DROP, title="runs", **COMPACT)


def methods_table(stats: dict[str, dict], ref: str | None, width: int | None = None) -> Table:
    """One row per method: its best over seeds, failures, cost, and the test against ref;
    fitted to `width` columns (None: all of them)."""
    pruning = any(m.get("pruned") for m in stats.values())
    columns = ["method", "seeds", "mean ± std", "median", "95% CI of mean", "failed",
               "cost lost", *(["pruned"] if pruning else []), "cost to target", "tokens", "$",
               "p vs ref"]
    best = min((m["mean_best"] for m in stats.values() if m["mean_best"] is not None),
               default=None)
    cells = []
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
        cells.append([markup(method), str(m["runs"]),
                      mean, "-" if m["median_best"] is None else f"{m['median_best']:.4f}",
                      "-" if ci is None else f"{ci[0]:.4f} .. {ci[1]:.4f}",
                      f"{100 * m['failed_share']:.0f}%", f"{100 * m['failed_cost_share']:.0f}%",
                      *pruned, "-" if reach is None else _duration(reach), str(m["tokens"]),
                      f"{m['cost_usd']:.4f}", p])
    spec = [(c, "left" if c == "method" else "right", False) for c in columns]
    title = "methods" + (f" (paired one-sided Wilcoxon against {markup(ref)})" if ref else "")
    return fitted(spec, cells, width, METHODS_DROP, title=title, **COMPACT)


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
