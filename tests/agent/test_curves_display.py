"""Learning curves and pruned trials where users read them (issue 23, points 1 and 7):
`replay --trial N --curve`, the progress plot's curves panel, `compare --plot`'s curves panel,
and the pruned counts and cost in the compare tables. The run folders are built by hand: a
session.toml, a ledger of notes whose results hold curves, and one trial's curve.jsonl."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from typer.testing import CliRunner

from agent.analysis.comparison import compare_runs
from agent.analysis.report import compare_table, methods_table, wide_console
from agent.cli.main import app
from agent.config.settings import SessionConfig
from agent.loop.progress import STATUS_STYLE, ProgressPlot
from agent.plots import compare_figure, curve_of, progress_figure, save
from agent.record.note import TrialNote
from tests.agent.test_text_is_data import CSI, FORBIDDEN, OSC52

runner = CliRunner()
ENV = {"COLUMNS": "200"}


def curve(final: float, upto: float = 1.0, points: int = 51, nan_at: float | None = None):
    """[progress, loss] pairs of a loss falling from ~10 to `final`, up to `upto`."""
    out = []
    for i in range(points):
        p = round(i / (points - 1), 4)
        if p > upto + 1e-9:
            break
        if nan_at is not None and p >= nan_at:
            out.append([p, None])
            break
        out.append([p, round(final + (10.0 - final) * math.exp(-8 * p), 4)])
    return out


def note(trial: int, status: str = "ok", val: float | None = None, final: float = 3.0,
         stopped_at: float | None = None, reason: str = "", cost: float = 60.0,
         method: str = "tpe", pairs: list | None = None) -> TrialNote:
    result: dict = {"curve": pairs if pairs is not None else
                    curve(final, upto=stopped_at or 1.0,
                          nan_at=0.3 if status == "diverged" else None)}
    if stopped_at is not None:
        result["stopped_at"] = stopped_at
    if reason:
        result["reason"] = reason
    return TrialNote(trial=trial, commit=f"{trial + 1:040x}", method=method, status=status,
                     val_bpb=val if status == "ok" else None, result=result, cost_s=cost)


def session_notes(method: str = "tpe", offset: float = 0.0) -> list[TrialNote]:
    """A baseline, four ok trials (trial 3 the best), two pruned ones and a diverged one."""
    return [
        note(0, val=3.06 + offset, final=3.0 + offset, method=method),
        note(1, val=3.20 + offset, final=3.15 + offset, method=method),
        note(2, "pruned", final=4.2, stopped_at=0.25, cost=18.0, method=method,
             reason="pruned at 0.25 by median: loss 4.12 above the median 3.50 of 3 trials"),
        note(3, val=2.70 + offset, final=2.65 + offset, method=method),
        note(4, "diverged", final=3.0, reason="loss nan at step 40", cost=20.0, method=method),
        note(5, "pruned", final=3.9, stopped_at=0.45, cost=30.0, method=method,
             reason="by the divergence guard"),
        note(6, val=2.95 + offset, final=2.9 + offset, method=method),
    ]


def run_folder(root: Path, notes: list[TrialNote], method: str = "tpe", seed: int = 0) -> Path:
    root.mkdir(parents=True)
    SessionConfig(sandbox="local", method=method, seed=seed).save(root / "session.toml")
    (root / "trials.jsonl").write_text("".join(json.dumps(n.to_dict()) + "\n" for n in notes))
    return root


@pytest.fixture
def run(tmp_path) -> Path:
    folder = run_folder(tmp_path / "run", session_notes())
    full = tmp_path / "run" / "trials" / "0003"
    full.mkdir(parents=True)
    lines = [json.dumps({"progress": i / 99, "step": i * 10, "tokens": i * 40960,
                         "loss": 10.0 - i * 0.07, "seconds": i * 0.6}) for i in range(100)]
    lines[50] = json.dumps({"progress": 50 / 99, "step": 500, "tokens": 2048000,
                            "loss": float("nan"), "seconds": 30.0})  # NaN: JSON's extension
    (full / "curve.jsonl").write_text("\n".join(lines) + "\nnot json\n")
    return folder


def replay(*args: str):
    return runner.invoke(app, ["replay", *args], env=ENV)


# ---------------------------------------------------------------------------------------------
# replay --trial N --curve

def test_replay_curve_from_curve_jsonl_is_thinned_to_25_rows(run):
    result = replay(str(run), "--trial", "3", "--curve")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "trial 3 ok, val_bpb 2.700000 (25 of 100 points from curve.jsonl)"
    rows = [line.split() for line in lines[1:] if line.strip() and line.split()[0][0].isdigit()]
    assert len(rows) == 25
    assert rows[0] == ["0.000", "0", "0", "10.0000", "0.0"]  # the first point
    assert rows[-1] == ["1.000", "990", "4,055,040", "3.0700", "59.4"]  # and the last
    header = next(line for line in lines if "progress" in line).split()
    assert header == ["progress", "step", "tokens", "loss", "seconds"]


def test_replay_curve_json_is_the_full_strict_curve(run):
    result = replay(str(run), "--trial", "3", "--curve", "--json")
    assert result.exit_code == 0, result.output
    points = json.loads(result.output, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert len(points) == 100  # every point; the line that is not JSON skipped
    assert points[50]["loss"] is None  # the NaN, as JSON has it
    assert set(points[0]) == {"progress", "step", "tokens", "loss", "seconds"}
    assert points[99]["step"] == 990 and points[99]["tokens"] == 99 * 40960


def test_replay_curve_of_a_pruned_trial_from_its_note(run):
    result = replay(str(run), "--trial", "2", "--curve")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == ("trial 2 pruned at 0.25 by median: loss 4.12 above the median 3.50 of "
                        "3 trials (13 points from the note)")
    rows = [line.split() for line in lines[1:] if line.strip() and line.split()[0][0].isdigit()]
    assert len(rows) == 13 and rows[-1][0] == "0.240"  # ends where it was stopped
    assert rows[-1][1:3] == ["-", "-"] and rows[-1][4] == "-"  # the note has no step/tokens/s
    other = replay(str(run), "--trial", "5", "--curve")
    assert other.output.splitlines()[0].startswith(
        "trial 5 pruned at 0.45: by the divergence guard (")
    data = json.loads(replay(str(run), "--trial", "5", "--curve", "--json").output)
    assert data[-1] == {"progress": 0.44, "step": None, "tokens": None,
                        "loss": data[-1]["loss"], "seconds": None}


def test_replay_curve_shows_where_a_loss_went_nan(run):
    result = replay(str(run), "--trial", "4", "--curve")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("trial 4 diverged: loss nan at step 40")
    assert result.output.rstrip().splitlines()[-1].split()[-2:] == ["finite", "-"]


def test_replay_curve_without_one_is_a_line_and_exit_0(tmp_path):
    old = note(1, val=3.0, pairs=[])
    old.result = {}  # a note from before curves were recorded
    folder = run_folder(tmp_path / "old", [note(0, val=3.1, pairs=[]), old])
    result = replay(str(folder), "--trial", "1", "--curve")
    assert result.exit_code == 0
    assert result.output.strip().splitlines() == [
        "trial 1 (ok) has no learning curve: its train.py printed no progress lines, or it "
        "ran before curves were recorded"]
    assert json.loads(replay(str(folder), "--trial", "1", "--curve", "--json").output) == []
    refused = replay(str(folder), "--curve")
    assert refused.exit_code == 2 and "--trial N" in refused.output


def test_replay_curve_text_from_the_folder_is_data(tmp_path):
    hostile = note(1, "pruned", final=4.0, stopped_at=0.25,
                   reason=f"[/dim] [red]x[/red] {OSC52} {CSI} end")
    hostile.status = "pruned"
    folder = run_folder(tmp_path / "h", [note(0, val=3.0), hostile])
    outside = tmp_path / "outside.jsonl"  # a link out of the folder is not followed
    outside.write_text(json.dumps({"progress": 0.5, "step": 1, "tokens": 1, "loss": 1.0,
                                   "seconds": 1.0}) + "\n")
    (folder / "trials" / "0001").mkdir(parents=True)
    (folder / "trials" / "0001" / "curve.jsonl").symlink_to(outside)
    result = runner.invoke(app, ["replay", str(folder), "--trial", "1", "--curve"], env=ENV)
    assert result.exit_code == 0, result.output
    out = result.stdout_bytes
    assert not [b for b in FORBIDDEN if b in out], out[:300]
    assert "[/dim] [red]x[/red]" in result.output  # markup printed as it is
    assert "from the note" in result.output.splitlines()[0]


def test_curves_are_drawn_and_shown_in_bounds():
    n = note(1, pairs=[[0.5, 3.0], ["a", 1.0], [0.1], [0.3, float("inf")], [1.5, 2.0],
                       [float("nan"), 1.0], [-0.1, 9.0], "no"])
    # TrialNote.curve keeps progress in 0..1 only: a point outside it is no point
    assert curve_of(n) == [(0.3, None), (0.5, 3.0)]
    assert curve_of(TrialNote(trial=1, commit="a" * 40, result={"curve": {"a": 1}})) == []


# ---------------------------------------------------------------------------------------------
# replay's list: pruned like the other statuses

def test_replay_lists_pruned_trials_with_their_reason(run):
    assert "pruned" in STATUS_STYLE
    result = replay(str(run))
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.split()[:1] == ["2"])
    assert "pruned" in row and "pruned at 0.25 by median" in row
    rows = json.loads(replay(str(run), "--json").output)
    assert [r["status"] for r in rows].count("pruned") == 2


# ---------------------------------------------------------------------------------------------
# The progress plot

def test_progress_plot_has_a_curves_panel(tmp_path):
    notes = session_notes()
    fig = progress_figure(notes, "a run")
    trials, curves = fig.axes
    assert trials.get_ylabel() == "val_bpb"
    assert sum(len(c.get_offsets()) for c in trials.collections) == len(notes)
    labels = [t.get_text() for t in trials.get_legend().get_texts()]
    assert "pruned (2, at the top)" in labels
    pruned = [c for c in trials.collections if c.get_label().startswith("pruned")][0]
    ceiling = pruned.get_offsets()[:, 1]
    assert (ceiling > 3.2).all()  # above every value: they have none
    assert curves.get_xlabel().startswith("progress") and "loss" in curves.get_ylabel()
    lines = [ln for ln in curves.get_lines() if len(ln.get_xdata())]
    dashed = [ln for ln in lines if ln.get_linestyle() == "--"]
    assert sorted(max(ln.get_xdata()) for ln in dashed) == [0.24, 0.44]  # end where stopped
    best = next(ln for ln in lines if ln.get_label().startswith("best"))
    assert best.get_label() == "best: trial 3 (2.7000)" and best.get_color() == "black"
    baseline = next(ln for ln in lines if ln.get_label().startswith("baseline"))
    assert baseline.get_linewidth() > max(ln.get_linewidth() for ln in dashed)
    legend = [t.get_text() for t in curves.get_legend().get_texts()]
    assert {"ok (2)", "pruned (2)", "diverged (1)"} <= set(legend)
    png = save(fig, tmp_path / "progress.png")
    assert mpimg.imread(png).shape[1] > 1200


def test_progress_plot_of_100_trials_and_of_notes_without_curves(tmp_path):
    notes = [note(0, val=3.06, final=3.0)]
    for t in range(1, 100):
        final = 2.6 + (t * 37 % 100) / 80
        if final > 3.5:
            notes.append(note(t, "pruned", final=final, stopped_at=0.25 if final > 3.7 else 0.45,
                              reason="pruned by median"))
        else:
            notes.append(note(t, val=final + 0.05, final=final))
    fig = progress_figure(notes, "100 trials")
    curves = fig.axes[1]
    faint = [ln for ln in curves.get_lines() if ln.get_label().startswith("_")]
    assert len(faint) == 98 and max(ln.get_alpha() for ln in faint) <= 0.25
    save(fig, tmp_path / "progress100.png")
    for n in notes:
        n.result = {}
    assert len(progress_figure(notes, "old").axes) == 1  # a run without curves: as before


def test_progress_plot_reporter_draws_the_curves(tmp_path):
    plot = ProgressPlot(tmp_path / "progress.png", "live", every_s=0.0)
    plot.seed(session_notes()[:3])
    plot.finished(session_notes()[3])
    plot.stop()
    assert mpimg.imread(tmp_path / "progress.png").shape[1] > 1200  # two panels


# ---------------------------------------------------------------------------------------------
# compare: the curves panel, pruned counts and their cost

@pytest.fixture
def runs(tmp_path) -> list[Path]:
    return [run_folder(tmp_path / "tpe-s0", session_notes("tpe"), "tpe", 0),
            run_folder(tmp_path / "tpe-s1", session_notes("tpe", 0.05), "tpe", 1),
            run_folder(tmp_path / "random-s0",
                       [n for n in session_notes("random", 0.1) if n.status != "pruned"],
                       "random", 0)]


def test_compare_counts_pruned_trials_apart_from_failed_ones(runs):
    comparison = compare_runs(runs)
    row = comparison.rows[0]
    assert row["pruned"] == 2 and row["pruned_cost_s"] == 48.0
    assert row["failed_share"] == pytest.approx(1 / 6)  # the diverged one; pruned are not
    assert row["failed_cost_share"] == pytest.approx(20 / sum(n.cost_s for n in
                                                              session_notes()))
    assert comparison.stats["tpe"]["pruned"] == 4
    assert comparison.stats["tpe"]["pruned_cost_s"] == 96.0
    assert comparison.stats["random"]["pruned"] == 0
    console = wide_console()
    with console.capture() as captured:
        console.print(compare_table(comparison.rows))
        console.print(methods_table(comparison.stats, comparison.ref))
    text = captured.get()
    assert text.count("2 (cost 48 s)") == 2 and "4 (cost 96 s)" in text
    assert text.count("pruned") == 2  # a column in each table
    result = runner.invoke(app, ["compare", *map(str, runs), "--json"], env=ENV)
    assert result.exit_code == 0, result.output
    assert [r["pruned"] for r in json.loads(result.output)] == [2, 2, 0]


def test_compare_without_pruned_trials_has_no_pruned_column(tmp_path):
    folder = run_folder(tmp_path / "r", [n for n in session_notes() if n.status != "pruned"])
    comparison = compare_runs([folder])
    console = wide_console()
    with console.capture() as captured:
        console.print(compare_table(comparison.rows))
    assert "pruned" not in captured.get()


def test_compare_plot_has_a_curves_panel(runs, tmp_path):
    comparison = compare_runs(runs)
    fig = compare_figure(comparison.groups, comparison.ref)
    by_trial, by_cost, failed, one, curves = fig.axes
    assert by_trial.get_xlabel() == "trial" and one.get_xlabel() == "trial"
    assert "best trial" in curves.get_title()
    labels = [t.get_text() for t in curves.get_legend().get_texts()]
    assert labels == ["tpe: best trial of each run", "random: best trial of each run",
                      "baseline (of one run)"]
    solid = [ln for ln in curves.get_lines() if ln.get_linestyle() == "-"]
    assert len(solid) == 3  # one per run
    assert "pruned" in [t.get_text() for t in failed.get_legend().get_texts()][0]
    assert failed.get_ylabel() == "failed / pruned trials (%)"
    hatched = [p for p in failed.patches if p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_height() == pytest.approx(100 * 2 / 6)
    result = runner.invoke(app, ["compare", *map(str, runs), "--plot",
                                 str(tmp_path / "compare.png")], env=ENV)
    assert result.exit_code == 0, result.output
    pixels = mpimg.imread(tmp_path / "compare.png")
    assert pixels.shape[0] > 1100 and pixels.std() > 0.05
    for folder in runs:  # older runs, no curves: the four panels of before
        lines = (folder / "trials.jsonl").read_text().splitlines()
        (folder / "trials.jsonl").write_text("".join(
            json.dumps({**json.loads(x), "result": {}}) + "\n" for x in lines))
    assert len(compare_figure(compare_runs(runs).groups).axes) == 4
