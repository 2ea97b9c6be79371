"""Early stopping (issue 23): learning curves recorded as they come, Optuna's pruners asked at
decision points, the divergence guard, `pruned` trials in notes, ledger and replay, how the
optimizers are told one, and the in-process preflight's one process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.config.settings import SessionConfig
from agent.edit.actions import EditHyperparameters
from agent.loop.session import Session
from agent.protocols import TrialRecord
from agent.testing.synthetic import CURVE, ScriptedOptimizer, add_after_block
from agent.watch import Told, Watch, WatchSpec, parse_rule

GOOD = [0.06, 0.07, 0.05]  # MATRIX_LR: final losses near the best (0.0398)
BAD = 0.008  # final 2.6: its curve is clearly above the others' at 25 %
FLAT = 0.005  # learns nothing: the loss stays at 5.5
BEST = 0.04


@pytest.fixture
def curving(train_dir) -> Path:
    return add_after_block(train_dir, CURVE)


def lr(value: float) -> EditHyperparameters:
    return EditHyperparameters({"MATRIX_LR": value}, f"MATRIX_LR {value}")


def session(tmp_path, train_dir, actions, monkeypatch, **kw) -> tuple[Path, ScriptedOptimizer]:
    scripted = ScriptedOptimizer(actions)
    monkeypatch.setattr("agent.loop.session.make_optimizer", lambda *a, **k: scripted)
    config = SessionConfig(**{"trials": len(actions), "sandbox": "local",
                              "train_dir": str(train_dir), "time_budget": 0.001,
                              "preflight_steps": 0, "min_steps": 0, **kw})
    run = tmp_path / "run"
    Session.create(run, config).run()
    return run, scripted


def ledger(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]
    return sorted(rows, key=lambda r: r["trial"])


@pytest.mark.parametrize("rule", ["median", "percentile", "hyperband", "threshold:3.0"])
def test_each_rule_stops_a_bad_curve_at_the_first_point_and_never_a_good_one(
        tmp_path, curving, monkeypatch, rule):
    actions = [lr(v) for v in (*GOOD, BAD, BEST)]
    run, scripted = session(tmp_path, curving, actions, monkeypatch, prune=rule,
                            prune_min_trials=3)
    rows = ledger(run)
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "ok", "pruned", "ok"], \
        [(r["status"], r["result"]["reason"]) for r in rows]
    pruned = rows[4]
    assert 0.25 <= pruned["result"]["stopped_at"] < 0.3  # killed at the first decision point
    assert pruned["val_bpb"] is None and pruned["cost_s"] > 0
    assert f"by {parse_rule(rule)[0]}" in pruned["result"]["reason"]
    curve = [json.loads(x) for x in (run / "trials" / "0004" / "curve.jsonl").read_text()
             .splitlines()]
    assert curve[-1]["progress"] < 0.3 and len(curve) < 16  # nothing ran on after the kill
    assert pruned["result"]["curve"][-1][0] == curve[-1]["progress"]
    assert all(len(r["result"]["curve"]) == 50 for r in rows if r["status"] == "ok")
    # the optimizer is told the pruned trial as pruned, with its curve
    told = {record.number: record for _, record in scripted.told}
    assert told[4].status == "pruned" and told[4].curve[-1][0] < 0.3


def test_no_rule_decides_before_min_trials_completed(tmp_path, curving, monkeypatch):
    run, _ = session(tmp_path, curving, [lr(0.06), lr(BAD)], monkeypatch, prune="median",
                     prune_min_trials=3)
    assert [r["status"] for r in ledger(run)] == ["ok", "ok", "ok"]


def test_pruned_rows_in_notes_ledger_and_replay(tmp_path, curving, monkeypatch):
    run, _ = session(tmp_path, curving, [lr(v) for v in (*GOOD, BAD)], monkeypatch,
                     prune="median")
    note = json.loads(subprocess.run(
        ["git", "-C", str(run / "repo"), "notes", "--ref", "results", "show", "refs/trials/0004"],
        capture_output=True, text=True, check=True).stdout)
    assert note["status"] == "pruned" and note["result"]["stopped_at"] < 0.3
    tsv = (run / "results.tsv").read_text().splitlines()
    assert tsv[-1].split("\t")[3] == "pruned"
    exe = shutil.which("autoresearch", path=os.path.dirname(sys.executable))
    out = subprocess.run([exe, "replay", str(run)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "pruned" in out.stdout


def test_the_guard_stops_a_nan_loss_at_its_first_progress_line(tmp_path, curving, monkeypatch):
    run, _ = session(tmp_path, curving, [lr(0.15)], monkeypatch)
    row = ledger(run)[1]
    assert row["status"] == "diverged"
    assert "nan" in row["result"]["reason"].lower()
    assert row["result"]["stopped_at"] == 0.02  # the first line: 2 % of the budget
    assert row["result"]["curve"] == [[0.02, None]]


def test_the_guard_stops_a_far_worse_curve_without_a_rule(tmp_path, curving, monkeypatch):
    run, _ = session(tmp_path, curving, [lr(BAD), lr(FLAT), lr(0.1)], monkeypatch,
                     prune="none")
    rows = ledger(run)
    # BAD ends at 2.6 (worse, within the margin) and 0.1 is fine; FLAT never learns
    assert [r["status"] for r in rows] == ["ok", "ok", "pruned", "ok"]
    assert "divergence guard" in rows[2]["result"]["reason"]
    assert 0.25 <= rows[2]["result"]["stopped_at"] < 0.3  # at the guard's first point
    watch = Watch(WatchSpec(number=3, guard=True, incumbent=rows[0]["result"]["curve"]))
    assert watch.point({"progress": 0.2, "step": 10, "loss": 9.0}) is None  # before 25 %: none


def test_the_guard_margin_grows_with_the_baselines_seed_spread():
    incumbent = [[0.4, 3.0], [0.6, 2.8], [1.0, 2.5]]
    narrow = Watch(WatchSpec(incumbent=incumbent)).ceiling(0.4)
    wide = Watch(WatchSpec(incumbent=incumbent, spread=[[0.4, 0.2]])).ceiling(0.4)
    assert narrow == pytest.approx(4.5) and wide == pytest.approx(5.0)
    # the guard stops nothing once the warm-down began (guard_until), nor at the end
    assert Watch(WatchSpec(incumbent=incumbent)).ceiling(0.6) is None
    assert Watch(WatchSpec(incumbent=incumbent, guard_until=0.9)).ceiling(1.0) is None


def test_a_watch_replays_history_into_optuna_and_decides_like_it():
    history = [Told([3.0, 2.8], "complete", 2.5), Told([3.1, 2.9], "complete", 2.6),
               Told([2.9, 2.7], "complete", 2.4), Told([4.0, None], "pruned")]
    spec = WatchSpec(number=5, rule="median", points=[0.25, 0.45], min_trials=3,
                     history=history, guard=False)
    assert Watch(spec).point({"progress": 0.26, "step": 13, "loss": 2.95}) is None
    stop = Watch(spec).point({"progress": 0.26, "step": 13, "loss": 3.05})
    assert stop is not None and "median" in stop.reason
    # the second point: a value below the median at 0.25, above it at 0.45
    watch = Watch(spec)
    assert watch.point({"progress": 0.25, "step": 13, "loss": 2.9}) is None
    assert watch.point({"progress": 0.46, "step": 23, "loss": 2.85}) is not None


def test_tpe_is_told_a_pruned_trial_as_optunas_pruned_trial():
    from optuna.trial import TrialState

    from agent.edit.space import load_space
    from agent.optimizers.tpe import TPE
    from agent.paths import baseline_dir

    space = load_space(baseline_dir() / "search_space.toml", "cpu")
    tpe = TPE(space, 0, space.defaults())
    action = tpe.ask([])
    record = TrialRecord(1, "pruned", action.values, curve=((0.1, 4.0), (0.26, 3.5)))
    tpe.tell(action, record)
    trials = tpe.study().get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED]
    assert trials[0].intermediate_values == {260: 3.5}


def test_cmaes_ranks_a_pruned_trial_last_and_never_tells_its_early_loss():
    from agent.edit.space import load_space
    from agent.optimizers.cmaes import CMAES
    from agent.paths import baseline_dir

    space = load_space(baseline_dir() / "search_space.toml", "cpu")
    cma = CMAES(space, 0, space.defaults())
    first, second = cma.ask([]), cma.ask([])
    cma.tell(first, TrialRecord(1, "ok", first.values, val_bpb=2.5))
    cma.tell(second, TrialRecord(2, "pruned", second.values, curve=((0.26, 1.0),)))
    told = {o.trial: o.value for o in cma.memory.observations if o.trial is not None}
    assert told[1] == 2.5 and told[2] > 2.5  # ranked below the success, not told 1.0


def test_in_process_preflight_starts_one_process_and_a_repaired_one_two(tmp_path, curving,
                                                                          monkeypatch):
    big = EditHyperparameters({"DEVICE_BATCH_SIZE": 64, "TOTAL_BATCH_SIZE": 16384},
                              "too big")  # 64 * DEPTH 4 = 256: out of memory
    run, _ = session(tmp_path, curving, [lr(0.06), big], monkeypatch, preflight_steps=2,
                     repair_oom=True)
    rows = ledger(run)
    trial = run / "trials"
    starts = [len((f / "out" / "runs.txt").read_text().split())
              for f in [trial / "0001"]]
    assert starts == [1]  # the probe passed inside the trial's own process
    assert rows[1]["status"] == "ok" and rows[1]["preflight"]["in_process"] is True
    assert rows[1]["probes"] == [{"status": "ok", "wall_s": 0.0, "in_process": True,
                                  "DEVICE_BATCH_SIZE": 16}]
    # the OOM: its probe failed (process 1); the repaired batch, 32, passed its probe in
    # process 2 and trained on in it: two starts in all
    runs = sorted((trial / "0002").glob("preflight-*")) + [trial / "0002"]
    assert [len((f / "out" / "runs.txt").read_text().split()) for f in runs] == [1, 1]
    assert rows[2]["status"] == "ok" and len(rows[2]["repairs"]) == 1


@pytest.mark.slow
def test_kill_9_during_a_pruned_trial_then_resume_equals_an_uninterrupted_run(tmp_path,
                                                                               curving):
    exe = shutil.which("autoresearch", path=os.path.dirname(sys.executable))
    common = ["--method", "tpe", "--seed", "3", "--trials", "8", "--prune", "median",
              "--prune-min-trials", "2", "--sandbox", "local", "--train-dir", str(curving),
              "--preflight-steps", "0", "--quiet"]
    ref = subprocess.run([exe, "run", *common, "--time-budget", "0.001", "--run-dir",
                          str(tmp_path / "ref")], capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    expected = ledger(tmp_path / "ref")
    pruned = [r["trial"] for r in expected if r["status"] == "pruned"]
    assert pruned, [r["status"] for r in expected]
    k = pruned[0]

    run = tmp_path / "killed"
    proc = subprocess.Popen([exe, "run", *common, "--time-budget", "3", "--run-dir", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    curve = run / "trials" / f"{k:04d}" / "curve.jsonl"
    deadline = time.monotonic() + 240
    while not curve.exists() or len(curve.read_text().splitlines()) < 8:  # at 16 %: before
        assert proc.poll() is None, proc.stdout.read()  # its first decision point
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(ledger(run)) == k  # trial k was cut
    resumed = subprocess.run([exe, "resume", str(run), "--quiet"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    def essence(rows):
        return [(r["trial"], r["status"], r["config"], r["val_bpb"],
                 (r["result"] or {}).get("stopped_at")) for r in rows]

    assert essence(ledger(run)) == essence(expected)


def test_docker_stops_a_pruned_trial_at_once(tmp_path, curving, monkeypatch, request):
    request.getfixturevalue("docker_client")
    request.getfixturevalue("host_image")
    run, _ = session(tmp_path, curving, [lr(v) for v in (*GOOD, BAD)], monkeypatch,
                     prune="median", sandbox="docker")
    rows = ledger(run)
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "ok", "pruned"]
    assert rows[4]["result"]["backend"] == "docker"
    assert 0.25 <= rows[4]["result"]["stopped_at"] < 0.3
    curve = (run / "trials" / "0004" / "curve.jsonl").read_text().splitlines()
    assert len(curve) < 16  # the container was killed at the decision


def test_prune_check_replays_a_rule_over_recorded_curves(tmp_path, curving, monkeypatch):
    run, _ = session(tmp_path, curving, [lr(v) for v in (*GOOD, BAD, FLAT, BEST)],
                     monkeypatch, prune="none", guard=False)
    assert [r["status"] for r in ledger(run)] == ["ok"] * 7  # recorded without any rule
    exe = shutil.which("autoresearch", path=os.path.dirname(sys.executable))
    out = subprocess.run([exe, "prune-check", str(run), "--prune", "median,threshold:3.0",
                          "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    checks = {c["rule"]: c for c in json.loads(out.stdout)}
    median = checks["median"]
    # BAD at its first point; FLAT by the guard (5.5 against ~2.9) at a quarter of its budget
    assert [(s["trial"], s["status"]) for s in median["stopped"]] == [(4, "pruned"),
                                                                      (5, "pruned")]
    assert median["stopped"][0]["at"] == pytest.approx(0.26)
    assert median["stopped"][1]["at"] < 0.3 and "guard" in median["stopped"][1]["reason"]
    assert median["best"] == 6 and median["stopped_best"] is False
    assert median["top3"] == [6, 3, 1] and median["stopped_top3"] == 0
    assert checks["threshold:3.0"]["stopped_best"] is False
    table = subprocess.run([exe, "prune-check", str(run), "--prune", "median"],
                           capture_output=True, text=True)
    assert table.returncode == 0 and "best stopped" in table.stdout
    bad = subprocess.run([exe, "prune-check", str(run), "--prune", "sometimes"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_a_confirmation_run_is_never_stopped():
    from agent.loop.watching import watch_spec

    config = SessionConfig(prune="median", prune_min_trials=0)
    assert watch_spec(config, {}, 5, {}, 1) is not None
    assert watch_spec(config, {}, 5, {}, 1, repeat=True) is None  # stopping it would refuse
