"""Pictures of sessions and comparisons (matplotlib, drawn off-screen).

- `progress_figure(notes)`: one run, every trial a point coloured by its status (failures
  drawn at the top edge as crosses, pruned trials there as down-triangles: neither has a
  value), and the incumbent's line; beside it, where trials recorded learning curves, the
  curves panel: train loss against progress, every trial a thin faint line, pruned trials
  dashed and ending where they were stopped (a triangle there), failures ending in a cross
  (at the top edge where the loss went non-finite), the best trial black, the baseline blue.
- `compare_figure(groups)`: best-so-far against trials and against cost, one line per method
  (the median over seeds) with a band from the best to the worst seed; the failed share per
  method (and the pruned share, hatched, on top of it); the trials of one run per method;
  and, where runs recorded curves, the best trial's curve of every run, coloured by method.
Each function returns the Figure (tests read its axes back); `save` writes a PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.stats import best_so_far
from agent.text import clean

STATUS_COLOURS = {"ok": "#2a9d3f", "oom": "#d62728", "cuda_oom": "#8c1c13",
                  "timeout": "#ff7f0e", "diverged": "#9467bd", "crash": "#7f7f7f",
                  "rejected": "#e377c2", "pruned": "#17becf"}
MARKERS = {"ok": "o", "pruned": "v"}  # any other status: "x"


def can_plot() -> bool:
    """Whether matplotlib imports here: a GPU machine may have only what a session needs
    (torch, numpy, rich, typer, jinja2), and a session runs the same without its picture."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


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


def curve_of(note) -> list[tuple[float, float | None]]:
    """A note's learning curve as users see it (TrialNote.curve: [progress, loss] pairs):
    progress within 0..1, in order, a loss that is not a finite number None (the line
    breaks there), a point whose progress is not one left out."""
    return sorted(note.curve(), key=lambda p: p[0])  # TrialNote.curve checked each number


def _drawable(note) -> bool:
    """Whether a note's curve has a loss to draw (a run without one keeps the old figure)."""
    return any(loss is not None for _, loss in curve_of(note))


def _best(notes):
    """The trial with the lowest val_bpb at the session's seed, or None."""
    ok = [n for n in notes if n.status == "ok" and n.method != "confirm" and n.val_bpb is not None]
    return min(ok, key=lambda n: n.val_bpb) if ok else None


def _trials_panel(ax, notes, title: str) -> None:
    notes = sorted(notes, key=lambda n: n.trial)
    ok_values = [n.val_bpb for n in notes if n.status == "ok"]
    top = max(ok_values) if ok_values else 1.0
    bottom = min(ok_values) if ok_values else 0.0
    ceiling = top + 0.08 * max(top - bottom, 0.05)  # where trials without a value are drawn
    for status, colour in STATUS_COLOURS.items():
        xs = [n.trial for n in notes if n.status == status]
        ys = [n.val_bpb if status == "ok" else ceiling for n in notes if n.status == status]
        if xs:
            label = f"{status} ({len(xs)}{', at the top' if status == 'pruned' else ''})"
            ax.scatter(xs, ys, s=22, color=colour, label=label,
                       marker=MARKERS.get(status, "x"), zorder=3)
    best = best_so_far(notes)
    xs = [n.trial for n, b in zip(notes, best, strict=True) if b is not None]
    ax.step(xs, [b for b in best if b is not None], where="post", color="black",
            linewidth=1.2, label="incumbent")
    ax.set_xlabel("trial")
    ax.set_ylabel("val_bpb")
    ax.set_title(_label(title))
    ax.legend(fontsize=7, loc="best")


def _loss_limits(curves) -> tuple[float, float] | None:
    """The loss range worth seeing: from the lowest loss to a high quantile of the losses
    after the first 10 % (the first steps' loss, near ln(vocab), would flatten the rest)."""
    losses = [loss for c in curves for p, loss in c if loss is not None]
    late = [loss for c in curves for p, loss in c if loss is not None and p >= 0.1]
    if not losses:
        return None
    low, high = min(losses), float(np.percentile(late or losses, 98))
    pad = 0.05 * max(high - low, 1e-3)
    return low - pad, high + pad


def _curves_panel(ax, notes) -> None:
    """Every trial's curve, faint; the best and the baseline on top; pruned ones dashed."""
    curves = {n.trial: curve_of(n) for n in notes}
    notes = sorted((n for n in notes if curves[n.trial]), key=lambda n: n.trial)
    best = _best(notes)
    alpha = float(np.clip(8 / max(len(notes), 1), 0.2, 0.7))  # 100 trials stay readable
    limits = _loss_limits(list(curves.values()))
    bottom, top = limits if limits is not None else (0.0, 1.0)
    counts: dict[str, int] = {}  # per status: one legend entry each, not one per trial
    for n in notes:
        if n is best or n.trial == 0:
            continue  # drawn last, on top
        xs, ys = _arrays(curves[n.trial])
        colour = _curve_colour(n.status)
        counts[n.status] = counts.get(n.status, 0) + 1
        ax.plot(xs, ys, color=colour, linewidth=0.7, alpha=alpha,
                linestyle="--" if n.status == "pruned" else "-")
        if n.status != "ok":  # where it stopped; where its loss went non-finite: at the top
            y = ys[-1] if np.isfinite(ys[-1]) else top
            ax.scatter(xs[-1], y, s=16, color=colour, zorder=3, clip_on=False,
                       marker=MARKERS.get(n.status, "x"), alpha=min(1.0, 2 * alpha))
    baseline = next((n for n in notes if n.trial == 0), None)
    for n, colour, width, label in ((baseline, "#1f77b4", 1.3, "baseline"),
                                    (best, "black", 1.8, "best")):
        if n is None or (label == "baseline" and n is best):
            continue  # a baseline that is the best is drawn as the best
        xs, ys = _arrays(curves[n.trial])
        value = f" ({n.val_bpb:.4f})" if n.val_bpb is not None else ""
        ax.plot(xs, ys, color=colour, linewidth=width, label=f"{label}: trial {n.trial}{value}",
                zorder=4)
    for status, count in sorted(counts.items(), key=lambda kv: (kv[0] != "ok", kv[0])):
        ax.plot([], [], color=_curve_colour(status), linewidth=1,
                linestyle="--" if status == "pruned" else "-", label=f"{status} ({count})")
    ax.set_ylim(bottom, top)
    _curve_axes(ax, "learning curves", 7)


def _curve_colour(status: str) -> str:
    """Grey for the many ok curves (the highlighted ones stand out), a status colour else."""
    return "#7a7a7a" if status == "ok" else STATUS_COLOURS.get(status, "#7f7f7f")


def _arrays(curve) -> tuple[np.ndarray, np.ndarray]:
    """A curve as x and y arrays, a missing (non-finite) loss as NaN: the line breaks there."""
    return (np.array([p for p, _ in curve], dtype=float),
            np.array([np.nan if loss is None else loss for _, loss in curve], dtype=float))


def progress_figure(notes, title: str = "trials"):
    """The val_bpb panel (axes[0]); beside it the curves panel once any trial has a curve."""
    notes = list(notes)
    if not any(_drawable(n) for n in notes):
        fig = _figure(7, 4)
        _trials_panel(fig.subplots(), notes, title)
        return fig
    fig = _figure(13, 4.5)
    trials, curves = fig.subplots(1, 2)
    _trials_panel(trials, notes, title)
    _curves_panel(curves, notes)
    fig.tight_layout()
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

    curved = any(_drawable(n) for runs in groups.values() for r in runs for n in r)
    fig = _figure(12, 12 if curved else 8)
    layout = fig.add_gridspec(3 if curved else 2, 2, height_ratios=[1, 1, 1.1][:2 + curved])
    by_trial, by_cost, failed, one = (fig.add_subplot(layout[i, j]) for i in (0, 1)
                                      for j in (0, 1))
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
        # a pruned trial was stopped on purpose: not a failure, its own hatched share on top
        shares = [_share(r, lambda n: n.status not in ("ok", "pruned")) for r in runs]
        pruned = 100 * float(np.mean([_share(r, lambda n: n.status == "pruned") for r in runs]))
        share = 100 * float(np.mean(shares))
        spread = [[share - 100 * min(shares)], [100 * max(shares) - share]]  # best..worst seed
        failed.bar(i, share, color=colour, yerr=spread if len(shares) > 1 else None, capsize=4)
        if pruned:
            failed.bar(i, pruned, bottom=share, color="white", edgecolor=colour, hatch="///")
        top = max(top, 100 * max(shares) + pruned)
        failed.annotate(f"{share:.0f} %" + (f" (+{pruned:.0f} % pruned)" if pruned else ""),
                        (i, share + pruned), textcoords="offset points", xytext=(5, 3),
                        ha="left", fontsize=8)  # beside the spread's line
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
    failed.set_title("failed share per method (mean, bar: best..worst seed)")
    pruning = any(n.status == "pruned" for runs in groups.values() for r in runs for n in r)
    failed.set_ylabel("failed / pruned trials (%)" if pruning else "failed trials (%)")
    if pruning:
        from matplotlib.patches import Patch

        failed.legend(handles=[Patch(facecolor="white", edgecolor="#555555", hatch="///",
                                     label="pruned (stopped early, not failed)")], fontsize=8)
    shown = ref if ref in groups else next(iter(groups))
    _trials_panel(one, groups[shown][0], f"every trial of one {shown} run")
    if curved:
        _best_curves_panel(fig.add_subplot(layout[2, :]), groups, colours)
    fig.tight_layout()
    return fig


def _share(notes, counted) -> float:
    """The share of a run's trials (the baseline not counted) that `counted` picks."""
    ran = [n for n in notes if n.trial > 0]
    return sum(bool(counted(n)) for n in ran) / max(1, len(ran))


def _best_curves_panel(ax, groups: dict[str, list[list]], colours: list[str]) -> None:
    """The best trial's curve of every run, one colour per method; one baseline, dotted."""
    drawn = []
    for i, (method, runs) in enumerate(groups.items()):
        label = f"{_label(method)}: best trial of each run"
        for notes in runs:
            best = _best(notes)
            curve = curve_of(best) if best is not None else []
            if curve:
                ax.plot(*_arrays(curve), color=colours[i % len(colours)], linewidth=1.2,
                        alpha=0.8, label=label)
                drawn.append(curve)
                label = None  # one legend entry per method
    baseline = next((c for runs in groups.values() for r in runs for n in r
                     if n.trial == 0 and (c := curve_of(n))), None)
    if baseline:
        ax.plot(*_arrays(baseline), color="black", linestyle=":", linewidth=1.2,
                label="baseline (of one run)")
        drawn.append(baseline)
    limits = _loss_limits(drawn)
    if limits is not None:
        ax.set_ylim(*limits)
    _curve_axes(ax, "learning curve of each run's best trial", 8)


def _curve_axes(ax, title: str, legend_size: int) -> None:
    """What every learning-curve panel shares: the progress axis, labels, grid, legend."""
    ax.set_xlim(0, 1)
    ax.set_xlabel("progress (fraction of the budget)")
    ax.set_ylabel("train loss (smoothed)")
    ax.set_title(title)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=legend_size, loc="upper right")


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
