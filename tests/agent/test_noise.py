"""`autoresearch noise`: the baseline once per seed, each run as a trial runs."""

from __future__ import annotations

import json
import statistics

from typer.testing import CliRunner

from agent.cli.main import app

runner = CliRunner()


def test_noise_runs_each_seed_and_summarises(tmp_path, train_dir):
    text = (train_dir / "train.py").read_text()
    seeded = text.replace('print(f"val_bpb: {val:.6f}")',
                          'val += int(os.environ["AR_SEED"]) * 0.01\n'
                          'print(f"val_bpb: {val:.6f}")')
    assert seeded != text
    (train_dir / "train.py").write_text(seeded)
    out = tmp_path / "noise"
    result = runner.invoke(app, ["noise", "--train-dir", str(train_dir), "--seeds", "4",
                                 "--sandbox", "local", "--time-budget", "0.001",
                                 "--workers", "2", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    values = [r["val_bpb"] for r in summary["runs"]]
    assert [r["seed"] for r in summary["runs"]] == [0, 1, 2, 3]
    assert [round(b - a, 6) for a, b in zip(values, values[1:], strict=False)] == [0.01] * 3
    assert summary["mean"] == statistics.fmean(values)
    assert summary["std"] == statistics.stdev(values)
    assert summary["max"] - summary["min"] == max(values) - min(values)
    assert json.loads((out / "noise.json").read_text()) == summary
    for seed in range(4):
        assert f"seed: {seed}" in (out / f"seed-{seed}" / "train.log").read_text()
    table = runner.invoke(app, ["noise", "--train-dir", str(train_dir), "--seeds", "2",
                                "--sandbox", "local", "--time-budget", "0.001",
                                "--out", str(tmp_path / "n2")])
    assert table.exit_code == 0 and "std" in table.output


def test_noise_refuses_one_seed_and_a_full_folder(tmp_path, train_dir):
    result = runner.invoke(app, ["noise", "--train-dir", str(train_dir), "--seeds", "1"])
    assert result.exit_code == 2 and "at least 2" in result.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    result = runner.invoke(app, ["noise", "--train-dir", str(train_dir), "--out",
                                 str(tmp_path / "full")])
    assert result.exit_code == 2 and "not empty" in result.output
