"""Nothing lost, nothing forged in the run folder (issue 9, points 1, 5 and 6): one process
per folder, resume checks its state against git, and bad options write nothing."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.config.settings import SessionConfig
from agent.loop.session import Session
from agent.record.ledger import LedgerError
from agent.record.rundir import RunDir, RunDirBusy
from agent.record.workspace import Workspace

runner = CliRunner()


def autoresearch(*args: str, **kw) -> subprocess.Popen:
    exe = shutil.which("autoresearch", path=os.path.dirname(sys.executable))
    return subprocess.Popen([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def settings(train_dir, **kw) -> SessionConfig:
    return SessionConfig(**{"method": "cmaes", "seed": 3, "trials": 4, "sandbox": "local",
                            "train_dir": str(train_dir), "time_budget": 0.001, **kw})


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.fixture
def finished(tmp_path, train_dir) -> Path:
    run = tmp_path / "run"
    Session.create(run, settings(train_dir)).run()
    return run


# -- 1. one process per folder ----------------------------------------------------------------

def test_a_second_process_on_a_live_folder_is_refused(tmp_path, train_dir):
    run = tmp_path / "run"
    first = autoresearch("run", "--method", "random", "--trials", "6", "--sandbox", "local",
                         "--train-dir", str(train_dir), "--time-budget", "1",
                         "--run-dir", str(run), "--quiet")
    deadline = time.monotonic() + 60
    while not (run / "trials" / "0001").exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    second = autoresearch("resume", str(run), "--quiet")
    out, err = second.communicate(timeout=60)
    assert second.returncode == 2
    assert f"is in use by pid {first.pid} on {socket.gethostname()}" in err
    assert len(err.strip().splitlines()) == 1
    assert first.wait(timeout=120) == 0
    records = [json.loads(x) for x in lines(run / "trials.jsonl")]
    assert [r["trial"] for r in records] == list(range(7))  # no row twice
    assert len(lines(run / "results.tsv")) == 8


def test_the_lock_is_released_and_a_dead_holders_lock_taken_over(finished):
    session = Session.open(finished)
    with pytest.raises(RunDirBusy, match="is in use by pid"):
        Session.open(finished)
    session.close()
    Session.open(finished).close()
    # a holder killed with -9 releases its lock with its life
    root = str(Path(__file__).resolve().parents[2])
    holder = subprocess.Popen([sys.executable, "-c", (
        f"import sys, time; sys.path.insert(0, {root!r})\n"
        f"from agent.record.rundir import RunDir\nRunDir({str(finished)!r}).lock()\n"
        "print('held', flush=True)\ntime.sleep(600)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunDirBusy, match=f"pid {holder.pid}"):
        Session.open(finished)
    holder.kill()
    holder.wait()
    Session.open(finished).close()


# -- 5. resume checks its state against git -----------------------------------------------------

def resume(run: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("autoresearch", path=os.path.dirname(sys.executable))
    return subprocess.run([exe, "resume", str(run), "--trials", "6", "--quiet"],
                          capture_output=True, text=True, timeout=300)


def reference(tmp_path, train_dir) -> list[dict]:
    run = tmp_path / "reference"
    Session.create(run, settings(train_dir, trials=6)).run()
    return [json.loads(x)["config"] for x in lines(run / "trials.jsonl")]


@pytest.mark.parametrize("damage", ["torn jsonl", "half tsv", "garbage pickle",
                                    "garbage clock"])
def test_resume_repairs_what_git_can_rebuild(tmp_path, train_dir, finished, damage):
    jsonl, tsv = finished / "trials.jsonl", finished / "results.tsv"
    good_rows = lines(jsonl)
    if damage == "torn jsonl":
        jsonl.write_text("\n".join(good_rows[:-1]) + "\n" + good_rows[-1][:40])
    elif damage == "half tsv":
        tsv.write_text("\n".join(lines(tsv)[:3]) + "\n")
    elif damage == "garbage pickle":
        (finished / "optimizer" / "state.pkl").write_bytes(os.urandom(300))
    else:
        (finished / "optimizer" / "clock.json").write_bytes(os.urandom(40))
    if damage == "torn jsonl":  # replay still answers, from git, and says so
        shown = runner.invoke(app, ["replay", str(finished), "--json"])
        assert shown.exit_code == 0 and "broken line" in shown.stderr
        assert len(json.loads(shown.stdout)) == 5
    done = resume(finished)
    assert done.returncode == 0, done.stderr
    records = [json.loads(x) for x in lines(jsonl)]
    assert [r["trial"] for r in records] == list(range(7))
    assert len(lines(tsv)) == 8
    # the optimizer continued its own sequence, as if nothing had happened
    assert [r["config"] for r in records] == reference(tmp_path, train_dir)
    if damage in ("torn jsonl", "half tsv"):  # the damaged file is kept, not dropped
        assert list(finished.glob("*.replaced-*"))


def test_best_moved_by_hand_is_moved_back(finished):
    records = [json.loads(x) for x in lines(finished / "trials.jsonl")]
    best = min((r for r in records if r["status"] == "ok"), key=lambda r: r["val_bpb"])
    worst = max((r for r in records if r["status"] == "ok"), key=lambda r: r["val_bpb"])
    assert best["commit"] != worst["commit"]
    subprocess.run(["git", "-C", str(finished / "repo"), "update-ref", "refs/heads/best",
                    worst["commit"]], check=True)
    done = resume(finished)
    assert done.returncode == 0, done.stderr
    records = [json.loads(x) for x in lines(finished / "trials.jsonl")]
    ok = [r for r in records if r["status"] == "ok"]
    expected = min(ok, key=lambda r: (r["val_bpb"], r["trial"]))["commit"]
    head = subprocess.run(["git", "-C", str(finished / "repo"), "rev-parse", "best"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert head == expected
    for r in records[5:]:  # trials after the repair build on the real incumbent
        assert r["parent"] in {x["commit"] for x in ok}


def test_lost_notes_are_refused_and_nothing_is_overwritten(finished):
    before = (finished / "trials.jsonl").read_text()
    subprocess.run(["git", "-C", str(finished / "repo"), "update-ref", "-d",
                    "refs/notes/results"], check=True)
    done = resume(finished)
    assert done.returncode == 2
    assert "lost its trial notes" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert (finished / "trials.jsonl").read_text() == before


def test_an_invalid_session_toml_is_one_line_naming_the_key(finished):
    toml = finished / "session.toml"
    toml.write_text(toml.read_text().replace("trials = 4", 'trials = "many"'))
    done = resume(finished)
    assert done.returncode == 2 and "trials" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    toml.write_text("this is [not toml")
    done = resume(finished)
    assert done.returncode == 2 and "not valid TOML" in done.stderr


def test_a_folder_killed_during_creation_is_taken_by_run(tmp_path, train_dir):
    run = tmp_path / "run"
    for sub in ("repo", "optimizer", "trials"):  # what an old creation left when killed
        (run / sub).mkdir(parents=True)
    done = resume(run)
    assert done.returncode == 2 and "killed while it was being created" in done.stderr
    result = runner.invoke(app, ["run", "--trials", "1", "--sandbox", "local", "--train-dir",
                                 str(train_dir), "--time-budget", "0.001", "--run-dir",
                                 str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(lines(run / "trials.jsonl")) == 2
    # and a creation killed before its rename leaves only a hidden staging folder, removed
    (tmp_path / ".other.creating-abc").mkdir()
    result = runner.invoke(app, ["run", "--trials", "0", "--sandbox", "local", "--train-dir",
                                 str(train_dir), "--time-budget", "0.001", "--run-dir",
                                 str(tmp_path / "other"), "--quiet"])
    assert result.exit_code == 0 and not (tmp_path / ".other.creating-abc").exists()


# -- 6. every option validated before anything is written ---------------------------------------

@pytest.mark.parametrize("args, named", [
    (["--trials", "-1"], "--trials"),
    (["--time-budget", "-1"], "--time-budget"),
    (["--time-budget", "nan"], "--time-budget"),
    (["--time-budget", "0"], "--time-budget"),
    (["--trial-timeout", "-5"], "--trial-timeout"),
    (["--memory", "0"], "--memory"),
    (["--memory", "lots"], "--memory"),
    (["--disk", "0"], "--disk"),
    (["--gpus", "-1"], "--gpus"),
    (["--gpus", "a,b"], "--gpus"),
    (["--token-budget", "-5"], "--token-budget"),
    (["--max-repairs", "-3"], "--max-repairs"),
    (["--llm-ratio", "2"], "--llm-ratio"),
    (["--sandbox", "bogus"], "--sandbox"),
    (["--budget", "soon"], "soon"),
])
def test_bad_options_are_one_line_and_write_nothing(tmp_path, train_dir, args, named):
    run = tmp_path / "run"
    result = runner.invoke(app, ["run", "--train-dir", str(train_dir), "--run-dir", str(run),
                                 "--quiet", *args])
    assert result.exit_code == 2, result.output
    assert named in result.output and len(result.output.strip().splitlines()) == 1, \
        result.output
    assert not run.exists()


def test_unusable_run_folders_are_one_line(tmp_path, train_dir):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for target, message in ((a_file, "is a file"), (Path("/proc/ar-run"), "cannot create")):
        result = runner.invoke(app, ["run", "--train-dir", str(train_dir), "--run-dir",
                                     str(target), "--quiet", "--trials", "1"])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    out = runner.invoke(app, ["sandbox", "try", str(train_dir), "--out", str(a_file)])
    assert out.exit_code == 2 and "is a file" in out.output


def test_a_constraint_no_candidate_meets_is_one_line(tmp_path, train_dir):
    space = train_dir / "search_space.toml"
    # the baseline meets it; no sampled learning rate ever equals it exactly
    space.write_text(space.read_text() + '\n[[constraints]]\nexpr = "MATRIX_LR == 0.08"\n'
                     'message = "only the baseline"\n')
    result = runner.invoke(app, ["run", "--method", "random", "--train-dir", str(train_dir),
                                 "--run-dir", str(tmp_path / "run"), "--quiet", "--trials", "2",
                                 "--sandbox", "local", "--time-budget", "0.001"])
    assert result.exit_code != 0
    assert "MATRIX_LR == 0.08" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


# -- 4. the record: one reader of a commit's trailers, one of a folder's trials ---------------

def test_trailers_are_the_last_paragraph_only(tmp_path, train_dir):
    ws = Workspace.create(tmp_path / "repo", train_dir)
    trailers = {"Trial": 1, "Method": "tpe", "Seed": 0, "Reason": "a\nConfirms: 9"}
    # a rationale that looks like trailers, in the subject and in a paragraph of its own
    sha = ws.write_commit(ws.baseline, "tpe: Method: confirm\n\nSeed: 99\nConfirms: 7",
                          None, trailers)
    assert ws.trailers(sha) == {"Trial": "1", "Method": "tpe", "Seed": "0",
                                "Reason": "a Confirms: 9"}  # a value stays one line
    assert ws.message(sha).endswith("\n\nTrial: 1\nMethod: tpe\nSeed: 0\nReason: a Confirms: 9\n")
    # no trailers: the subject, or a last paragraph with a line of prose, is not read as any
    for message in ("Seed: 5", "tpe: x\n\nSeed: 5\nbecause it helped", "x\n\nSeed 5 did better"):
        assert ws.trailers(ws.write_commit(ws.baseline, message, None)) == {}, message
    with pytest.raises(ValueError, match="not trailer keys"):
        ws.write_commit(ws.baseline, "x", None, {"Seed: 1\nTrial": 2})


def test_a_session_commits_its_trials_with_trailers(finished):
    ws = Workspace(finished / "repo")
    assert ws.trailers(ws.trial_commit(1)) == {"Trial": "1", "Method": "cmaes", "Seed": "3"}
    assert ws.trailers(ws.baseline) == {}


def test_notes_come_from_git_when_the_ledger_is_broken_or_missing(finished):
    rd = RunDir(finished)
    ledger = rd.notes()
    assert [n.trial for n in ledger] == list(range(len(ledger))) and len(ledger) == 5
    from_git = rd.notes(from_git=True)
    assert [n.to_dict() for n in from_git] == [n.to_dict() for n in ledger]
    jsonl = finished / "trials.jsonl"
    rows = lines(jsonl)
    jsonl.write_text("\n".join([rows[0], '{"trial": 1, "commit": "--output=x"}', *rows[2:]]))
    heard = []
    assert [n.to_dict() for n in rd.notes(broken=heard.append)] == \
        [n.to_dict() for n in from_git]
    assert len(heard) == 1 and "line 2" in str(heard[0])
    with pytest.raises(LedgerError, match="line 2.*--rebuild"):  # unless the caller says
        rd.notes()
    assert jsonl.read_text().count("--output=x") == 1  # nothing was written
    jsonl.unlink()
    assert [n.trial for n in rd.notes()] == [n.trial for n in from_git]
