"""Pictures of sessions and comparisons (matplotlib, drawn off-screen).

- `progress_figure(notes)`: one run, every trial a point coloured by its status (failures
  drawn at the top edge, where they have no value), and the incumbent's line.
- `compare_figure(groups)`: best-so-far against trials and against cost, one line per method
  (the median over seeds) with a band from the best to the worst seed; the failed share per
  method; and the trials of one run per method.
Each function returns the Figure (tests read its axes back); `save` writes a PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.stats import best_so_far
from agent.text import clean

STATUS_COLOURS = {"ok": "#2a9d3f", "oom": "#d62728", "cuda_oom": "#8c1c13",
                  "timeout": "#ff7f0e", "diverged": "#9467bd", "crash": "#7f7f7f",
                  "rejected": "#e377c2"}


def _figure(width: float, height: float):
    """A Figure outside pyplot: no global state, safe beside other threads."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _label(text) -> str:
    """Text from a run (a line of code, a method's or a run's name) as matplotlib shows it:
    one clean line whose `$` are escaped, so it is never parsed as mathtext (where an unknown
    command such as `\\frob` raises when the figure is drawn)."""
    return clean(text, one_line=True).replace("$", r"\$")


def save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    return path


def _trials_panel(ax, notes, title: str) -> None:
    notes = sorted(notes, key=lambda n: n.trial)
    ok_values = [n.val_bpb for n in notes if n.status == "ok"]
    top = max(ok_values) if ok_values else 1.0
    bottom = min(ok_values) if ok_values else 0.0
    ceiling = top + 0.08 * max(top - bottom, 0.05)  # where failures are drawn
    for status, colour in STATUS_COLOURS.items():
        xs = [n.trial for n in notes if n.status == status]
        ys = [n.val_bpb if status == "ok" else ceiling for n in notes if n.status == status]
        if xs:
            ax.scatter(xs, ys, s=22, color=colour, label=status,
                       marker="o" if status == "ok" else "x", zorder=3)
    best = best_so_far(notes)
    xs = [n.trial for n, b in zip(notes, best, strict=True) if b is not None]
    ax.step(xs, [b for b in best if b is not None], where="post", color="black",
            linewidth=1.2, label="incumbent")
    ax.set_xlabel("trial")
    ax.set_ylabel("val_bpb")
    ax.set_title(_label(title))
    ax.legend(fontsize=7, loc="best")


def progress_figure(notes, title: str = "trials"):
    fig = _figure(7, 4)
    _trials_panel(fig.subplots(), notes, title)
    return fig


def _band(runs: list[list[tuple[float, float | None]]], grid: np.ndarray):
    """Median, min and max over runs of a step function known at (x, y) points, on `grid`."""
    values = []
    for points in runs:
        xs = np.array([x for x, y in points if y is not None])
        ys = np.array([y for x, y in points if y is not None])
        row = np.full(len(grid), np.nan)
        if len(xs):
            idx = np.searchsorted(xs, grid, side="right") - 1
            row[idx >= 0] = ys[idx[idx >= 0]]
        values.append(row)
    stack = np.array(values)
    with np.errstate(all="ignore"):
        return (np.nanmedian(stack, axis=0), np.nanmin(stack, axis=0),
                np.nanmax(stack, axis=0))


def compare_figure(groups: dict[str, list[list]], ref: str | None = None):
    """`groups`: method -> the note lists of its runs (one per seed)."""
    import warnings

    from matplotlib import rcParams

    fig = _figure(12, 8)
    (by_trial, by_cost), (failed, one) = fig.subplots(2, 2)
    colours = rcParams["axes.prop_cycle"].by_key()["color"]
    longest = max(sum(n.cost_s or 0.0 for n in r) for runs in groups.values() for r in runs)
    unit, per = ("minutes", 60.0) if longest >= 120 else ("seconds", 1.0)
    top = 0.0  # the highest failed share of any run
    for i, (method, runs) in enumerate(groups.items()):
        colour = colours[i % len(colours)]
        per_trial = [[(n.trial, b) for n, b in zip(sorted(r, key=lambda n: n.trial),
                                                    best_so_far(r), strict=True)] for r in runs]
        per_cost = []
        for r in runs:
            notes = sorted(r, key=lambda n: n.trial)
            spent = np.cumsum([n.cost_s or 0.0 for n in notes])
            per_cost.append(list(zip(spent.tolist(), best_so_far(notes), strict=True)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns before a result
            grid = np.arange(0, max(len(r) for r in runs))
            mid, low, high = _band(per_trial, grid)
            by_trial.plot(grid, mid, color=colour, label=f"{_label(method)} ({len(runs)} seeds)")
            by_trial.fill_between(grid, low, high, color=colour, alpha=0.15)
            end = max(max((x for x, _ in p), default=0.0) for p in per_cost)
            cgrid = np.linspace(0, end, 200)
            mid, low, high = _band(per_cost, cgrid)
            by_cost.plot(cgrid / per, mid, color=colour, label=_label(method))
            by_cost.fill_between(cgrid / per, low, high, color=colour, alpha=0.15)
        shares = [sum(n.status != "ok" for n in r if n.trial > 0) /
                  max(1, sum(n.trial > 0 for n in r)) for r in runs]
        share = 100 * float(np.mean(shares))
        spread = [[share - 100 * min(shares)], [100 * max(shares) - share]]  # best..worst seed
        failed.bar(i, share, color=colour, yerr=spread if len(shares) > 1 else None, capsize=4)
        top = max(top, 100 * max(shares))
        failed.annotate(f"{share:.0f} %", (i, share), textcoords="offset points",
                        xytext=(5, 3), ha="left", fontsize=8)  # beside the spread's line
    by_trial.set_xlabel("trial")
    by_trial.set_ylabel("best val_bpb so far")
    by_trial.set_title("best so far against trials (median, band: best..worst seed)")
    by_trial.legend(fontsize=8)
    by_cost.set_xlabel(f"cost ({unit} of sandbox + LLM time)")
    by_cost.set_ylabel("best val_bpb so far")
    by_cost.set_title("best so far against cost")
    by_cost.legend(fontsize=8)
    failed.set_xticks(range(len(groups)), [_label(m) for m in groups], rotation=20)
    failed.set_ylim(0, max(5.0, 1.2 * top))
    failed.set_ylabel("failed trials (%)")
    failed.set_title("failed share per method (mean, bar: best..worst seed)")
    shown = ref if ref in groups else next(iter(groups))
    _trials_panel(one, groups[shown][0], f"every trial of one {shown} run")
    fig.tight_layout()
    return fig


def attribution_figure(table: dict):
    """`table` of agent/analysis/attribution.py: per change, the val_bpb it is worth measured both
    ways, drawn as gains (right of zero: the change helped), with the seeds' spread."""
    rows = table["changes"]
    fig = _figure(9, 1.2 + 0.55 * len(rows))
    ax = fig.subplots()
    y = np.arange(len(rows))
    for offset, key, label, sign, colour in (
            (-0.2, "leave_one_out", "leave-one-out: to minus the change", 1, "#1f77b4"),
            (0.2, "add_one", "add-one: from plus the change", -1, "#ff7f0e")):
        gains = [sign * r[key] if r[key] is not None else 0.0 for r in rows]
        errs = [r[f"{key}_std"] or 0.0 for r in rows]
        ax.barh(y + offset, gains, height=0.38, xerr=errs, capsize=3, color=colour,
                label=label)
        for i, r in enumerate(rows):
            if r[key] is None:
                ax.text(0, i + offset, "  not run: " + ("unappliable" if r["unappliable"]
                                                        else "failed"),
                        va="center", fontsize=7, color="#555555")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, [_label(r["change"]) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("val_bpb gained (right of 0: the change helped; bars: mean over seeds, "
                  "whiskers: std)")
    ax.set_title(f"what each change from {_label(table['from'])} to {_label(table['to'])} is "
                 f"worth ({len(table['seeds'])} seeds)")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
