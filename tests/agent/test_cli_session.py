"""run / resume / replay / diff / compare through the CLI, with their --json contracts."""

from __future__ import annotations

import json
import statistics

import pytest
from typer.testing import CliRunner

from agent.cli.main import app

runner = CliRunner()

REPLAY_KEYS = {"trial", "commit", "method", "status", "val_bpb", "best_val_bpb", "is_best",
               "added", "removed", "rationale", "reason", "wall_s", "overhead_s", "config"}
COMPARE_KEYS = {"run", "method", "seed", "trials", "best_val_bpb", "best_trial",
                "baseline_val_bpb", "failed_share", "statuses", "wall_s", "prompt_tokens",
                "completion_tokens", "cost_usd", "llm_proposals", "llm_valid",
                "overhead_first_s", "overhead_s", "cost_s", "failed_cost_share",
                "method_stats", "pruned", "pruned_cost_s", "spend_usd"}


@pytest.fixture
def finished_run(tmp_path, train_dir):
    run = tmp_path / "runs" / "r"
    result = runner.invoke(app, ["run", "--method", "random", "--trials", "4", "--seed", "7",
                                 "--sandbox", "local", "--train-dir", str(train_dir),
                                 "--time-budget", "0.001", "--run-dir", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    return run


def test_replay_json_is_stable(finished_run):
    result = runner.invoke(app, ["replay", str(finished_run), "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert [r["trial"] for r in rows] == [0, 1, 2, 3, 4]
    assert all(set(r) == REPLAY_KEYS for r in rows)
    assert rows[0]["method"] == "baseline" and rows[1]["method"] == "random"
    for r in rows:  # the synthetic train.py reports 0.1 s of training
        if r["status"] == "ok":
            assert r["overhead_s"] == pytest.approx(max(r["wall_s"] - 0.1, 0.0), abs=1e-3)
        else:
            assert r["overhead_s"] is None
    one = json.loads(runner.invoke(app, ["replay", str(finished_run), "--trial", "2",
                                         "--json"]).output)
    assert one["trial"] == 2 and one["diff"].startswith("--- a/train.py")


def test_replay_rebuilds_the_ledger_from_git(finished_run):
    before = (finished_run / "results.tsv").read_text()
    (finished_run / "results.tsv").unlink()
    (finished_run / "trials.jsonl").unlink()
    result = runner.invoke(app, ["replay", str(finished_run), "--json", "--rebuild"])
    assert result.exit_code == 0
    assert (finished_run / "results.tsv").read_text() == before


def test_replay_table_and_trial_diff(finished_run):
    result = runner.invoke(app, ["replay", str(finished_run)])
    assert result.exit_code == 0 and "baseline" in result.output
    result = runner.invoke(app, ["replay", str(finished_run), "--trial", "1", "--diff"])
    assert result.exit_code == 0 and "train.log" in result.output and "+++ b/train.py" in \
        result.output
    result = runner.invoke(app, ["replay", str(finished_run), "--trial", "9"])
    assert result.exit_code == 2 and "has no trial 9" in result.output


def test_diff_defaults_to_baseline_best_and_takes_trial_numbers(finished_run):
    records = [json.loads(x) for x in (finished_run / "trials.jsonl").read_text().splitlines()]
    result = runner.invoke(app, ["diff", str(finished_run), "0", "2"])
    assert result.exit_code == 0
    assert result.output.strip() == "\n".join(records[2]["diff"].splitlines()[2:]).strip() or \
        "+++ b/train.py" in result.output
    result = runner.invoke(app, ["diff", str(finished_run)])
    assert result.exit_code == 0
    result = runner.invoke(app, ["diff", str(finished_run), "0", "77"])
    assert result.exit_code == 2 and "no trial 77" in result.output


def test_compare_json_is_stable(finished_run, tmp_path, train_dir):
    other = tmp_path / "runs" / "s"
    assert runner.invoke(app, ["run", "--method", "tpe", "--trials", "2", "--sandbox", "local",
                               "--train-dir", str(train_dir), "--time-budget", "0.001",
                               "--run-dir", str(other), "--quiet"]).exit_code == 0
    result = runner.invoke(app, ["compare", str(finished_run), str(other), "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert [set(r) for r in rows] == [COMPARE_KEYS, COMPARE_KEYS]
    assert [r["method"] for r in rows] == ["random", "tpe"] and rows[0]["seed"] == 7
    assert rows[0]["trials"] == 4 and rows[1]["trials"] == 2
    assert 0.0 <= rows[0]["failed_share"] <= 1.0
    replayed = json.loads(runner.invoke(app, ["replay", str(finished_run), "--json"]).output)
    overheads = [r["overhead_s"] for r in replayed if r["overhead_s"] is not None]
    assert rows[0]["overhead_first_s"] == overheads[0]
    assert rows[0]["overhead_s"] == pytest.approx(statistics.median(overheads[1:]))
    table = runner.invoke(app, ["compare", str(finished_run), str(other)])
    assert table.exit_code == 0 and "random" in table.output and "overhead" in table.output


def test_bad_input_is_one_line_and_nonzero(tmp_path, train_dir):
    cases = [
        (["resume", str(tmp_path / "missing")], "not a session folder"),
        (["replay", str(tmp_path / "missing")], "not a session folder"),
        (["run", "--method", "nope"], "unknown method 'nope'"),
        (["run", "--budget", "soon"], "not a duration"),
        (["run", "--memory", "lots"], "not a size"),
        (["run", "--train-dir", str(tmp_path), "--run-dir", str(tmp_path / "x")],
         "has no train.py"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_replay_reads_a_thousand_trial_ledger(tmp_path):
    """Correctness on a long synthetic ledger; its speed is benchmarks/replay_speed.py's job."""
    from benchmarks.replay_speed import make_run

    run = make_run(tmp_path, 1000)
    result = runner.invoke(app, ["replay", str(run), "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert len(rows) == 1001 and rows[-1]["trial"] == 1000
    rebuild = runner.invoke(app, ["replay", str(run), "--json", "--rebuild"])
    assert rebuild.exit_code == 0, rebuild.output
    # the notes name their commits, as a session's do, so the rebuilt ledger is the same
    assert json.loads(rebuild.output) == rows
    table = runner.invoke(app, ["replay", str(run)])
    assert table.exit_code == 0
    body = [ln for ln in table.output.splitlines() if ln.strip()[:1].isdigit()]
    assert len(body) == 1001 and body[-1].split()[0] == "1000"


def test_a_gpu_block_under_the_cpu_default_names_the_preset_it_fits(tmp_path, train_dir):
    """A folder whose train.py holds gpu-scale values beside a space whose default preset is
    cpu: one line that says which preset judged it and which one it fits."""
    from agent.edit.block import apply_preset
    from agent.edit.space import load_space

    gpu = load_space(train_dir / "search_space.toml", "gpu")
    path = train_dir / "train.py"
    path.write_text(apply_preset(path.read_text(), gpu))
    run = tmp_path / "r"
    result = runner.invoke(app, ["run", "--train-dir", str(train_dir), "--sandbox", "local",
                                 "--run-dir", str(run)])
    assert result.exit_code == 2
    assert "(the cpu preset, search_space.toml's default)" in result.output
    assert "it fits the gpu preset: pass --preset gpu" in result.output
    assert not run.exists()


def test_run_ends_with_what_to_run_next(tmp_path, train_dir, monkeypatch):
    """Issue 28: after `done:` the user reads the exact replay, diff and resume commands for
    the folder (they run as printed) and where the README goes on; no line over 80 columns."""
    import shlex

    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "--method", "random", "--trials", "2", "--sandbox",
                                 "local", "--train-dir", str(train_dir), "--time-budget",
                                 "0.001", "--run-dir", "runs/r", "--quiet"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    ending = lines[lines.index("next:"):]
    assert lines.index("next:") > [i for i, x in enumerate(lines) if x.startswith("done:")][0]
    commands = [x.strip() for x in ending if x.startswith("  autoresearch ")]
    assert commands == ["autoresearch replay runs/r", "autoresearch diff runs/r",
                        "autoresearch resume runs/r --trials 4"]
    assert '"Leaving it alone overnight"' in " ".join(ending)
    assert all(len(x) <= 80 for x in ending), ending
    for command in commands[:2]:  # as printed, they work
        done = runner.invoke(app, shlex.split(command)[1:])
        assert done.exit_code == 0, done.output
    assert "baseline" in runner.invoke(app, shlex.split(commands[0])[1:]).output


def test_what_next_quotes_a_folder_and_keeps_to_80_columns():
    from pathlib import Path

    from agent.cli.main import what_next

    long = Path("/home/someone/experiments/a folder with spaces/runs/centaur-20261130-021529")
    lines = what_next(long)
    quoted = "'/home/someone/experiments/a folder with spaces/runs/centaur-20261130-021529'"
    # wider than 80 columns: continued with a backslash, so pasted it is still one command
    # and the folder one argument
    i = lines.index("  autoresearch replay \\")
    assert lines[i + 1] == f"    {quoted}"
    said = lines.index("  autoresearch diff \\") + 2
    assert lines[said].strip() == "the best train.py against the baseline"  # below it
    assert all(len(x) <= 80 for x in lines if x.strip() != quoted)  # one word: kept whole
    import shlex

    assert shlex.split(" ".join(x.rstrip("\\") for x in lines[i:i + 2])) == [
        "autoresearch", "replay", str(long)]
    assert not any("resume" in x for x in what_next(long, None))  # stopped by a rule: none
