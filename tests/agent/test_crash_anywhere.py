"""kill -9 after each write step of a trial, then `autoresearch resume` (issue 9): the ledger,
the notes and the proposals equal an uninterrupted run's every time.

A trial writes, in order: the commit object, its ref refs/trials/NNNN, the optimizer's pickle
(the proposal is made), the git note, the ledger lines, branch best (when it is a new best),
the optimizer's pickle (the result is told). The session runs
in a child process whose Workspace / Ledger / Session methods are wrapped to SIGKILL the
process right after the step under test, for one trial."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["commit", "ref", "asked", "note", "ledger", "best", "pickle"]

DRIVER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from agent.config.settings import SessionConfig
from agent.record.ledger import Ledger
from agent.loop.standing import Progress
from agent.loop.session import Session
from agent.record.workspace import Workspace

STEP, K = {step!r}, {k}
last = {{"trial": None}}

def wrap(cls, name, step, trial_of):
    original = getattr(cls, name)
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        trial = trial_of(args, result)  # always: the note's wrapper remembers its trial
        if step == STEP and trial == K:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    setattr(cls, name, wrapper)

def noted(args, result):
    last["trial"] = args[2]["trial"]
    return last["trial"]

wrap(Workspace, "write_commit", "commit",
     lambda a, r: int(a[0].trailers(r)["Trial"]))
wrap(Workspace, "set_ref", "ref",
     lambda a, r: int(a[1].rsplit("/", 1)[1]) if a[1].startswith("refs/trials/") else None)
wrap(Workspace, "add_note", "note", noted)
wrap(Ledger, "append", "ledger", lambda a, r: a[1].trial)
wrap(Workspace, "move_best", "best", lambda a, r: last["trial"])
# the optimizer's pickle is saved after a proposal is committed ("asked") and after each tell
wrap(Progress, "save", "asked",
     lambda a, r: a[0].asked - 1 if a[0].told == a[0].asked - 1 else None)
wrap(Progress, "save", "pickle", lambda a, r: a[0].told - 1)
config = SessionConfig(**{config!r})
Session.create({run!r}, config).run()
"""


def settings(train_dir: Path) -> dict:
    return {"method": "cmaes", "seed": 5, "trials": 5, "sandbox": "local",
            "train_dir": str(train_dir), "time_budget": 0.001}


def cli(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("autoresearch", path=os.path.dirname(sys.executable))
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def normalized(run: Path) -> list[dict]:
    """What must not depend on the kill: everything but times and commit ids (the commits'
    timestamps differ between runs), with parents as trial numbers."""
    records = [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]
    number = {r["commit"]: r["trial"] for r in records}
    return [{"trial": r["trial"], "status": r["status"], "config": r["config"],
             "val_bpb": r["val_bpb"], "is_best": r["is_best"], "diff": r["diff"],
             "best_val_bpb": r["best_val_bpb"], "method": r["method"],
             "parent": number.get(r["parent"]), "rationale": r["rationale"]}
            for r in records]


def git(run: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(run / "repo"), *args], capture_output=True,
                          text=True, check=True).stdout


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from tests.agent.conftest import make_train_dir

    root = tmp_path_factory.mktemp("ref")
    train_dir = make_train_dir(root)
    from agent.config.settings import SessionConfig
    from agent.loop.session import Session

    Session.create(root / "run", SessionConfig(**settings(train_dir))).run()
    records = normalized(root / "run")
    k = next(r["trial"] for r in records if r["trial"] >= 2 and r["is_best"])
    return train_dir, records, k


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_kill_after_each_write_step_then_resume(tmp_path, reference, step):
    train_dir, expected, k = reference
    run = tmp_path / "run"
    code = DRIVER.format(root=str(ROOT), step=step, k=k, config=settings(train_dir),
                         run=str(run))
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    resumed = cli("resume", str(run), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert normalized(run) == expected
    notes = git(run, "notes", "--ref=results", "list").splitlines()
    assert len(notes) == len(expected)  # one note per trial, none twice
    refs = git(run, "for-each-ref", "--format=%(refname)", "refs/trials/").split()
    assert refs == [f"refs/trials/{n:04d}" for n in range(1, len(expected))]
    best = min((r for r in expected if r["status"] == "ok"), key=lambda r: r["val_bpb"])
    records = [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]
    assert git(run, "rev-parse", "best").strip() == records[best["trial"]]["commit"]
    tsv = (run / "results.tsv").read_text().splitlines()
    assert len(tsv) == 1 + len(expected)
