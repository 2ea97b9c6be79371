"""`autoresearch run --estimate`: the trial count a budget comes to, from the baseline timed
as a session runs it (no run folder made), within 20 % of what the real session then runs;
and from a previous run's trials, with dollars."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from agent.cli.main import app

runner = CliRunner()


def test_estimate_predicts_the_trial_count_of_a_real_run(tmp_path, train_dir):
    run = tmp_path / "r"
    args = ["run", "--method", "random", "--budget", "15s", "--sandbox", "local",
            "--train-dir", str(train_dir), "--time-budget", "0.3", "--run-dir", str(run)]
    result = runner.invoke(app, [*args, "--estimate"])
    assert result.exit_code == 0, result.output
    assert not run.exists()  # no session was started
    predicted = int(re.search(r"trials:\s+(\d+) after the baseline \(the limit: --budget 15 s",
                              result.output)[1])
    result = runner.invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    real = int(re.search(r"done: (\d+) trials", result.output)[1])
    print(f"--estimate: {predicted} trials; the real run: {real}")
    assert abs(predicted - real) <= 0.2 * real


def test_estimate_from_a_previous_run_counts_dollars(tmp_path, train_dir):
    run = tmp_path / "r"
    result = runner.invoke(app, ["run", "--method", "random", "--trials", "4", "--sandbox",
                                 "local", "--train-dir", str(train_dir), "--time-budget", "0.2",
                                 "--run-dir", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["run", "--method", "centaur", "--trials", "30", "--sandbox",
                                 "local", "--train-dir", str(train_dir),
                                 "--model", "openai/gpt-4o-mini", "--gpu-usd-per-hour", "3600",
                                 "--estimate-from", str(run), "--run-dir", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "(5 trials of" in out and "trials: 30 after the baseline (the limit: --trials 30)" \
        in out
    trial_s = float(re.search(r"a trial: ([\d.]+) s", out)[1])
    llm = 0.2 * (30 - 10) * (3000 * 0.15 + 250 * 0.6) / 1e6  # ratio x calls x tokens x prices
    sandbox = 31 * trial_s  # $1 a second
    total = float(re.search(r"dollars: \$([\d,.]+) =", out)[1].replace(",", ""))
    assert abs(total - (llm + sandbox)) <= 31 * 0.005 + 0.01  # "a trial" has 2 decimals
    assert "4 calls x 3000 + 250 tokens, assumed" in out and "litellm" in out
    assert not (tmp_path / "x").exists()
