"""--warm-start OLD_RUN: a new session's optimizer starts from an earlier run's trials on the
same baseline (TPE: added to its study; CMA-ES: the cmaes library's warm start; LLM methods:
shown as earlier in the prompt), copied into RUN/warm_start.json; another baseline is refused
with what differs."""

from __future__ import annotations

import json
import shutil
import statistics

import numpy as np
import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.config.settings import SessionConfig
from agent.edit.space import load_space
from agent.loop.session import Session
from agent.optimizers.cmaes import CMAES
from agent.paths import baseline_dir
from agent.protocols import TrialRecord
from agent.record.warmstart import WarmStartError
from agent.testing.scripted_llm import ScriptedLLM
from tests.agent.test_llm_methods import edit

runner = CliRunner()


def run(tmp_path, train_dir, name, seed, trials, warm=(), **kw) -> list[dict]:
    config = SessionConfig(**{"method": "tpe", "seed": seed, "trials": trials,
                              "sandbox": "local", "train_dir": str(train_dir),
                              "time_budget": 0.001, "preflight_steps": 0,
                              "warm_start": [str(w) for w in warm], **kw})
    Session.create(tmp_path / name, config).run()
    return [json.loads(x) for x in (tmp_path / name / "trials.jsonl").read_text().splitlines()]


def test_tpe_warm_started_proposes_differently_and_reaches_the_old_best_sooner(tmp_path,
                                                                              train_dir):
    old = run(tmp_path, train_dir, "old", 100, 20)
    best = min(r["val_bpb"] for r in old if r["val_bpb"] is not None)

    def reached(rows) -> int:  # the first trial at least as good as the old best (21: none)
        return next((r["trial"] for r in rows[1:] if r["val_bpb"] is not None
                     and r["val_bpb"] <= best), 21)

    cold, warm = [], []
    for seed in range(5):
        c = run(tmp_path, train_dir, f"cold{seed}", seed, 20)
        w = run(tmp_path, train_dir, f"warm{seed}", seed, 20, [tmp_path / "old"])
        assert c[1]["config"] != w[1]["config"]  # the same seed, another first proposal
        cold.append(reached(c))
        warm.append(reached(w))
    print(f"trials to reach the old best {best:.6f}: cold {cold} (median "
          f"{statistics.median(cold)}), warm-started {warm} (median {statistics.median(warm)})")
    assert statistics.median(warm) < statistics.median(cold)
    saved = json.loads((tmp_path / "warm0" / "warm_start.json").read_text())
    assert saved["from"][0]["run"] == str((tmp_path / "old").resolve())
    assert saved["from"][0]["trials"] == len(saved["trials"]) == 21
    assert SessionConfig.load(tmp_path / "warm0" / "session.toml").warm_start == \
        [str((tmp_path / "old").resolve())]


def test_a_resume_needs_only_the_copy_in_the_run_folder(tmp_path, train_dir):
    run(tmp_path, train_dir, "old", 1, 6)
    whole = run(tmp_path, train_dir, "whole", 2, 6, [tmp_path / "old"])
    run(tmp_path, train_dir, "parts", 2, 3, [tmp_path / "old"])
    shutil.rmtree(tmp_path / "old")
    path = tmp_path / "parts" / "session.toml"
    path.write_text(path.read_text().replace("trials = 3", "trials = 6"))
    Session.open(tmp_path / "parts").run()
    parts = [json.loads(x) for x in (tmp_path / "parts" / "trials.jsonl").read_text()
             .splitlines()]
    assert [r["config"] for r in parts] == [r["config"] for r in whole]


def test_another_baseline_is_refused_with_what_differs(tmp_path, train_dir):
    run(tmp_path, train_dir, "old", 0, 2)
    other = tmp_path / "other"
    shutil.copytree(train_dir, other)
    text = (other / "train.py").read_text()
    (other / "train.py").write_text(text.replace("0.1 * (DEPTH - 5) ** 2",
                                                 "0.2 * (DEPTH - 5) ** 2"))
    with pytest.raises(WarmStartError, match=r"differs from this one outside the searched "
                                             r"values: -.*0\.1 \* \(DEPTH - 5\).*\+.*0\.2 \*"):
        run(tmp_path, other, "new", 0, 2, [tmp_path / "old"])
    assert not (tmp_path / "new").exists()
    result = runner.invoke(app, ["run", "--method", "tpe", "--trials", "1", "--sandbox",
                                 "local", "--train-dir", str(other), "--warm-start",
                                 str(tmp_path / "old"), "--run-dir", str(tmp_path / "n")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "--warm-start" in result.output and "differs" in result.output
    result = runner.invoke(app, ["run", "--trials", "1", "--sandbox", "local", "--train-dir",
                                 str(train_dir), "--warm-start", str(tmp_path / "nowhere"),
                                 "--run-dir", str(tmp_path / "m")])
    assert result.exit_code == 2 and "not a session folder" in result.output
    # a searched value of the baseline changed is the same baseline: accepted
    same = tmp_path / "same"
    shutil.copytree(train_dir, same)
    text = (same / "train.py").read_text()
    (same / "train.py").write_text(text.replace("MATRIX_LR = 0.08", "MATRIX_LR = 0.05"))
    assert len(run(tmp_path, same, "ok", 0, 1, [tmp_path / "old"])) == 2


def test_cmaes_starts_from_a_gaussian_fitted_to_the_best_earlier_trials():
    space = load_space(baseline_dir() / "search_space.toml", "cpu")
    base = space.defaults()
    cold = CMAES(space, 0, base)
    rng = np.random.default_rng(0)
    target = rng.uniform(0.2, 0.8, cold.encoding.dim)  # the earlier runs' good region
    earlier = []
    for n in range(30):
        x = np.clip(target + rng.normal(0, 0.05, cold.encoding.dim), 0, 1)
        config = cold.encoding.decode(x)
        if not space.errors(config):
            value = float(np.sum((cold.encoding.encode(config) - target) ** 2))
            earlier.append(TrialRecord(n, "ok", config, 2.0 + value))
    earlier.append(TrialRecord(99, "oom", base))
    warm = CMAES(space, 0, base)
    warm.warm_start(earlier)
    assert np.linalg.norm(warm.mean - target) < 0.5 * np.linalg.norm(cold.mean - target)
    assert warm.sigma != cold.sigma
    assert len(warm.memory.seen) == len(earlier)  # counted for the failure value


def test_llm_methods_see_the_earlier_trials_as_such(tmp_path, train_dir):
    run(tmp_path, train_dir, "old", 0, 4)
    with ScriptedLLM(default=edit({"MATRIX_LR": 0.03}, "lower")) as llm:
        run(tmp_path, train_dir, "llm", 0, 1, [tmp_path / "old"], method="llm-hpo",
            model=llm.model, api_base=llm.api_base)
        prompt = llm.requests[-1]["messages"][-1]["content"]
    assert "Earlier sessions on this same train.py ran 5 trials" in prompt
    assert "they are not trials of this session" in prompt
    assert prompt.index("Earlier sessions") < prompt.index("Task: propose")
