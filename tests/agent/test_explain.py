"""Know what helped (issue 13): `rerun` reproduces a trial from its record, `attribute` splits
best vs baseline into changes and measures each by leave-one-out and add-one.

The objective is the synthetic train.py: val_bpb = 2 + (log10(MATRIX_LR) + 1.4)^2
+ 0.1 (DEPTH - 5)^2 + ... plus seeded noise (sd 0.002), so each change's worth is known."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from agent.analysis.attribution import attribute, split_changes
from agent.analysis.reruns import rerun
from agent.cli.main import app
from agent.config.settings import SessionConfig
from agent.edit.actions import EditHyperparameters
from agent.edit.space import load_space
from agent.loop.session import Session
from agent.paths import baseline_dir
from agent.testing.synthetic import ScriptedOptimizer, make_train_dir

runner = CliRunner()
NOISE = 0.002
# From the cpu defaults (MATRIX_LR 0.08, DEPTH 4, DEVICE_BATCH_SIZE 16, TOTAL_BATCH_SIZE 4096):
# two changes that help by known amounts, one pair that only changes memory, not the value.
EDIT = {"MATRIX_LR": 10 ** -1.4, "DEPTH": 5, "DEVICE_BATCH_SIZE": 32, "TOTAL_BATCH_SIZE": 8192}
WORTH = {"MATRIX_LR": (math.log10(0.08) + 1.4) ** 2, "DEPTH": 0.1,
         "DEVICE_BATCH_SIZE": 0.0, "TOTAL_BATCH_SIZE": 0.0}


@pytest.fixture
def session_run(tmp_path, monkeypatch):
    train_dir = make_train_dir(tmp_path, noise=NOISE)
    scripted = ScriptedOptimizer([EditHyperparameters(EDIT, "four changes")])
    monkeypatch.setattr("agent.loop.session.make_optimizer", lambda *a, **k: scripted)
    config = SessionConfig(trials=1, sandbox="local", train_dir=str(train_dir),
                           time_budget=0.001, seed=7, preflight_steps=0)
    Session.create(tmp_path / "run", config).run()
    return tmp_path / "run"


def test_rerun_reproduces_the_trial_and_shows_other_seeds(session_run):
    recorded = [json.loads(x) for x in (session_run / "trials.jsonl").read_text().splitlines()]
    summary = rerun(session_run, 1, k=3)
    same, *others = summary["runs"]
    assert same["seed"] == 7 and same["same_seed"] and others[0]["seed"] == 8
    assert same["val_bpb"] == pytest.approx(recorded[1]["val_bpb"], abs=1e-6)
    assert summary["same_seed_delta"] == pytest.approx(0.0, abs=1e-6)
    assert all(abs(o["val_bpb"] - same["val_bpb"]) > 1e-6 for o in others)  # seeds move it
    assert 0 < summary["std"] < 5 * NOISE
    folder = session_run / "reruns"
    assert [p.name for p in folder.iterdir()][0].startswith("0001-")
    assert (next(folder.iterdir()) / "seed-8" / "train.log").is_file()
    # nothing of the session changed: still one baseline and one trial
    assert len((session_run / "trials.jsonl").read_text().splitlines()) == 2


def test_rerun_errors_are_one_line(session_run, tmp_path):
    result = runner.invoke(app, ["rerun", str(session_run), "9"])
    assert result.exit_code == 2 and "trial 9 is not in" in result.output
    assert "replay" in result.output
    result = runner.invoke(app, ["rerun", str(tmp_path / "nowhere"), "1"])
    assert result.exit_code == 2 and "not a session folder" in result.output


def test_split_names_each_value_and_marks_unappliable_variants():
    space = load_space(baseline_dir() / "search_space.toml", "cpu")
    train_dir_source = (baseline_dir() / "train.py").read_text()
    from agent.edit.block import render_block

    before = render_block(train_dir_source, space.defaults())
    after = render_block(before, EDIT)
    changes = {c.name.split()[0]: c for c in split_changes(space, before, after)}
    assert sorted(changes) == sorted(EDIT)
    # TOTAL_BATCH_SIZE back at 4096 with 32 sequences of 256: less than one micro-batch
    assert changes["TOTAL_BATCH_SIZE"].without is None
    assert "TOTAL_BATCH_SIZE" in changes["TOTAL_BATCH_SIZE"].why_not["without"]
    assert changes["DEVICE_BATCH_SIZE"].only is None
    assert changes["DEPTH"].without is not None and changes["DEPTH"].only is not None
    # a code edit: one change per changed stretch; one that breaks the syntax is unappliable
    code = after.replace("import math\n", "import math  # tidy\n", 1)
    code = code.replace("def norm(x):", "def norm(x):  # RMSNorm", 1)
    split = split_changes(space, after, code)
    assert len(split) == 2 and all(c.without and c.only for c in split)


def test_a_variant_that_sets_a_hyperparameter_to_a_non_literal_is_unappliable():
    """The session refuses such a trial (SearchSpace.check_source), so attribution does too."""
    space = load_space(baseline_dir() / "search_space.toml", "cpu")
    from agent.edit.block import render_block

    before = render_block((baseline_dir() / "train.py").read_text(), space.defaults())
    [change] = split_changes(space, before, before + "DEPTH = DEPTH * 1\n")
    assert change.without == before
    assert change.only is None and "literal" in change.why_not["only"]


def test_attribution_finds_the_known_contributions(session_run):
    table = attribute(session_run, "baseline", "best", k=3)
    rows = {r["change"].split()[0]: r for r in table["changes"]}
    assert sorted(rows) == sorted(EDIT)
    tolerance = 4 * NOISE  # a paired difference of 3 seeds: sd ~ 0.002 * sqrt(2 / 3)
    for name in ("MATRIX_LR", "DEPTH"):
        assert rows[name]["leave_one_out"] == pytest.approx(WORTH[name], abs=tolerance)
        assert rows[name]["add_one"] == pytest.approx(-WORTH[name], abs=tolerance)
        assert rows[name]["leave_one_out_std"] < tolerance
    assert rows["DEVICE_BATCH_SIZE"]["leave_one_out"] == pytest.approx(0.0, abs=tolerance)
    assert rows["TOTAL_BATCH_SIZE"]["leave_one_out"] is None  # unappliable, and said why
    assert "TOTAL_BATCH_SIZE" in rows["TOTAL_BATCH_SIZE"]["unappliable"]["without"]
    assert rows["TOTAL_BATCH_SIZE"]["add_one"] == pytest.approx(0.0, abs=tolerance)
    # every variant is a commit whose parent is the endpoint it changes
    repo = session_run / "repo"
    refs = subprocess.run(["git", "-C", str(repo), "for-each-ref", "--format=%(refname)",
                           "refs/attribution/"], capture_output=True, text=True).stdout.split()
    assert len(refs) == 6  # 4 changes x 2 variants, less the 2 unappliable
    loo = rows["DEPTH"]["commits"]["without"]
    parent = subprocess.run(["git", "-C", str(repo), "rev-parse", f"{loo}^"],
                            capture_output=True, text=True).stdout.strip()
    assert parent == table["to_commit"]
    # the bar plot: read back, one row of bars per change
    image = imread(table["plot"])
    assert image.shape[0] > 200 and image.shape[1] > 600
    assert json.loads((session_run / "attribution" / table["folder"].rsplit("/", 1)[1]
                       / "attribution.json").read_text())["changes"][0]["change"]


def test_attribute_cli_prints_the_table(session_run):
    result = runner.invoke(app, ["attribute", str(session_run), "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert "leave-one-out" in result.output and "MATRIX_LR" in result.output
    result = runner.invoke(app, ["attribute", str(session_run), "--from", "best"])
    assert result.exit_code == 2 and "the same commit" in result.output
