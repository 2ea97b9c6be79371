"""A comparison that holds up (issue 11): equal cost, the statistics against scipy, the
pictures read back, and a bench resumed after kill -9."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from agent.analysis import bench
from agent.cli.main import app
from agent.config.settings import SessionConfig
from agent.stats import bootstrap_mean_ci, paired_wilcoxon
from agent.testing.scripted_llm import ScriptedLLM

runner = CliRunner()


def template(train_dir, **kw) -> SessionConfig:
    return SessionConfig(**{"sandbox": "local", "train_dir": str(train_dir),
                            "time_budget": 0.05, **kw})


def notes_of(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]


def test_equal_cost_gives_a_slow_llm_fewer_trials(tmp_path, train_dir):
    depths = itertools.cycle([3, 5, 6, 7, 2, 8])

    def slow(request):  # a model that takes 0.6 s per answer
        time.sleep(0.6)
        return ("```json\n" + json.dumps({"tool": "edit_hyperparameters",
                                           "values": {"DEPTH": next(depths)},
                                           "rationale": "slow"}) + "\n```")

    with ScriptedLLM(default=slow) as llm:
        cfg = template(train_dir, cost_s=3.0, model=llm.model, api_base=llm.api_base)
        comparison = bench.run(tmp_path / "b", ["random", "llm-hpo"], 1, cfg,
                               say=lambda text: None)
    by = {r["method"]: r for r in comparison.rows}
    assert by["llm-hpo"]["trials"] < by["random"]["trials"] / 2, by
    for method, row in by.items():
        notes = notes_of(Path(row["run"]))
        spent = sum(n["cost_s"] for n in notes)
        last = max(n["cost_s"] for n in notes)
        assert 3.0 <= spent < 3.0 + last + 1e-6, (method, spent)  # stopped once it was spent
    llm_notes = notes_of(Path(by["llm-hpo"]["run"]))
    assert all(n["cost_s"] >= 0.6 for n in llm_notes if n["trial"] > 0)  # LLM time counted


def test_wilcoxon_and_bootstrap_match_scipy():
    from scipy.stats import wilcoxon

    ours = {0: 1.00, 1: 1.10, 2: 0.90, 3: 1.20, 4: 1.05, 5: 0.97}
    ref = {0: 1.05, 1: 1.12, 2: 0.95, 3: 1.19, 4: 1.15, 5: 1.01, 6: 2.0}  # seed 6 unpaired
    got = paired_wilcoxon(ours, ref)
    expected = wilcoxon([ours[s] for s in range(6)], [ref[s] for s in range(6)],
                        alternative="less")
    assert got["pairs"] == 6
    assert got["p_value"] == pytest.approx(expected.pvalue)
    assert got["statistic"] == pytest.approx(expected.statistic)
    # five pairs all lower: the exact one-sided p is 1/2**5
    five = paired_wilcoxon({s: 1.0 for s in range(5)}, {s: 1.1 + s / 100 for s in range(5)})
    assert five["p_value"] == pytest.approx(1 / 32)
    three = paired_wilcoxon({s: 1.0 for s in range(3)}, {s: 1.1 + s / 100 for s in range(3)})
    assert three["p_value"] == pytest.approx(0.125)  # the best 3 seeds can give
    low, high = bootstrap_mean_ci([1.0, 1.1, 0.9, 1.2, 1.05])
    assert low < 1.05 < high and high - low < 0.3
    assert bootstrap_mean_ci([1.0]) is None


def test_compare_statistics_and_plot(tmp_path, train_dir):
    cfg = template(train_dir, trials=5)
    comparison = bench.run(tmp_path / "b", ["random", "tpe", "cmaes"], 3, cfg,
                           say=lambda text: None)
    assert set(comparison.stats) == {"random", "tpe", "cmaes"} and comparison.ref == "tpe"
    runs = sorted(str(p) for p in (tmp_path / "b").glob("*-s*"))
    result = runner.invoke(app, ["compare", *runs, "--json", "--ref", "random",
                                 "--plot", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 9
    tpe = [r for r in rows if r["method"] == "tpe"]
    stats = tpe[0]["method_stats"]
    bests = [r["best_val_bpb"] for r in tpe]
    assert stats["mean_best"] == pytest.approx(np.mean(bests))
    assert stats["std_best"] == pytest.approx(np.std(bests, ddof=1))
    assert stats["seeds"] == [0, 1, 2] and stats["vs_ref"]["pairs"] == 3
    assert (tmp_path / "c.png").stat().st_size > 0
    table = runner.invoke(app, ["compare", *runs, "--ref", "random"])
    assert "p vs ref" in table.output and "mean ± std" in table.output
    assert runner.invoke(app, ["compare", *runs, "--ref", "hyperband"]).exit_code == 2
    # without a TPE run the others are tested against random search, and the output says so
    no_tpe = [r for r in runs if "/tpe-" not in r]
    result = runner.invoke(app, ["compare", *no_tpe, "--json"])
    assert json.loads(result.output)[0]["method_stats"]["vs_ref"]["pairs"] == 3  # cmaes's
    table = runner.invoke(app, ["compare", *no_tpe], env={"COLUMNS": "200"})
    assert "reference: random (no tpe run among them" in table.output


def test_the_pictures_have_the_axes_they_claim(tmp_path, train_dir):
    import matplotlib.image as mpimg

    from agent.analysis.comparison import compare_runs
    from agent.plots import compare_figure, progress_figure, save

    cfg = template(train_dir, trials=4)
    bench.run(tmp_path / "b", ["random", "cmaes"], 2, cfg, say=lambda text: None)
    comparison = compare_runs(sorted((tmp_path / "b").glob("*-s*")))
    fig = compare_figure(comparison.groups, "random")
    by_trial, by_cost, failed, one = fig.axes[:4]  # a fifth: the curves, where any
    assert by_trial.get_xlabel() == "trial" and "best val_bpb" in by_trial.get_ylabel()
    assert by_cost.get_xlabel().startswith("cost")
    assert [t.get_text() for t in failed.get_xticklabels()] == ["cmaes", "random"] or \
        [t.get_text() for t in failed.get_xticklabels()] == ["random", "cmaes"]
    labels = [t.get_text() for t in by_trial.get_legend().get_texts()]
    assert sorted(labels) == ["cmaes (2 seeds)", "random (2 seeds)"]
    assert one.get_xlabel() == "trial" and "random" in one.get_title()
    png = save(fig, tmp_path / "c.png")
    pixels = mpimg.imread(png)
    assert pixels.shape[0] > 500 and pixels.shape[1] > 800 and pixels.std() > 0.05
    notes = comparison.notes[comparison.rows[0]["run"]]
    single = progress_figure(notes, "one run")
    ax = single.axes[0]
    assert ax.get_xlabel() == "trial" and ax.get_ylabel() == "val_bpb"
    points = sum(len(c.get_offsets()) for c in ax.collections)
    assert points == len(notes)  # every trial is a point
    report = (tmp_path / "b" / "report.html").read_text()
    assert "compare.png" in report and "<table>" in report
    assert (tmp_path / "b" / "random-s0" / "progress.png").exists()


@pytest.mark.slow
def test_a_bench_resumes_after_kill_9(tmp_path, train_dir):
    exe = shutil.which("autoresearch", path=os.path.dirname(sys.executable))
    args = ["bench", "--methods", "random,cmaes", "--seeds", "2", "--trials", "4",
            "--sandbox", "local", "--train-dir", str(train_dir), "--time-budget", "0.3",
            "--quiet"]
    reference = tmp_path / "reference"
    done = subprocess.run([exe, *args, "--run-dir", str(reference)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "killed"
    proc = subprocess.Popen([exe, *args, "--run-dir", str(folder)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (folder / "cmaes-s0" / "trials" / "0002").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (folder / "report.html").exists()
    again = subprocess.run([exe, "bench", "--run-dir", str(folder), "--quiet"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    for name in ("random-s0", "cmaes-s0", "random-s1", "cmaes-s1"):
        ours = sorted(notes_of(folder / name), key=lambda n: n["trial"])
        theirs = sorted(notes_of(reference / name), key=lambda n: n["trial"])
        assert [n["trial"] for n in ours] == list(range(5))
        assert [n["config"] for n in ours] == [n["config"] for n in theirs]
    assert (folder / "report.html").exists() and (folder / "compare.png").exists()
    # a bench's folder stands for its runs in compare (and report, track)
    whole = runner.invoke(app, ["compare", str(folder), "--json"])
    named = runner.invoke(app, ["compare", *sorted(str(folder / n) for n in (
        "random-s0", "cmaes-s0", "random-s1", "cmaes-s1")), "--json"])
    assert whole.exit_code == 0 and json.loads(whole.stdout) == json.loads(named.stdout)
    empty = tmp_path / "empty-bench"
    empty.mkdir()
    (empty / "bench.toml").write_text((folder / "bench.toml").read_text())
    result = runner.invoke(app, ["compare", str(empty)])
    assert result.exit_code == 2 and "a bench folder without a run yet" in result.output
