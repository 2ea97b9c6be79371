"""Run folders are data (issue 21, point 3): a folder someone hands you runs none of its repo's
settings (hooks, fsmonitor, external diff, filter and diff drivers, signing), its ledger's ids
never reach git as options, a rebuild never empties a ledger, a row of the wrong shape is one
line, and `replay --diff` prints no file outside the folder."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.config.settings import SessionConfig
from agent.edit.actions import EditHyperparameters
from agent.errors import UserError
from agent.loop.session import Session
from agent.record.ledger import Ledger
from agent.record.note import TrialNote
from agent.record.workspace import Workspace, WorkspaceError
from agent.testing.synthetic import ScriptedOptimizer, make_train_dir
from sandbox.result import TrialResult

runner = CliRunner()
EDIT = {"MATRIX_LR": 0.04, "DEPTH": 5}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A session of one trial (baseline + one edit), built once per module."""
    root = tmp_path_factory.mktemp("finished")
    train_dir = make_train_dir(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("agent.loop.session.make_optimizer",
                   lambda *a, **k: ScriptedOptimizer([EditHyperparameters(EDIT, "two")]))
        config = SessionConfig(trials=1, sandbox="local", train_dir=str(train_dir),
                               time_budget=0.001, seed=7, preflight_steps=0)
        Session.create(root / "run", config).run()
    return root / "run"


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A copy of the finished session: the folder someone handed you."""
    copy = tmp_path / "received"
    shutil.copytree(finished, copy, symlinks=True)
    return copy


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout


def rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]


def write_rows(run: Path, records: list) -> None:
    (run / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def one_line(result) -> str:
    """The command failed with one line, no traceback; that line."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def fake_runs(monkeypatch) -> list:
    """Stand in for training: rerun and attribute get as far as the runs, then a result."""
    calls = []

    def run_trees(runs, *a, **k):
        calls.append(runs)
        assert all(tree[:5] and len(tree) % 512 == 0 for tree, _, _ in runs)  # a tar each
        return [TrialResult("ok", 0, val_bpb=2.0, wall_s=1.0) for _ in runs]

    monkeypatch.setattr("agent.analysis.reruns.run_trees", run_trees)
    return calls


# -- a repo whose config runs code ------------------------------------------------------------

def poison(run: Path) -> Path:
    """Point every setting of the run's repo that can run a program at a script that leaves a
    marker; the marker's path."""
    marker = run.parent / "marker"
    script = run.parent / "evil"
    script.write_text(f'#!/bin/sh\necho "$0 $*" >> {marker}\n'
                      '[ "$1" = filter ] && exec cat\nexit 0\n')
    script.chmod(0o755)
    dotgit = run / "repo" / ".git"
    settings = {"core.fsmonitor": str(script), "diff.external": str(script),
                "core.pager": str(script), "core.editor": str(script),
                "core.sshCommand": str(script),
                "filter.evil.clean": f"{script} filter", "filter.evil.smudge": f"{script} filter",
                "filter.evil.process": str(script), "filter.evil.required": "true",
                "diff.evil.textconv": str(script), "diff.evil.command": str(script),
                "log.showSignature": "true", "commit.gpgSign": "true",
                "gpg.program": str(script), "submodule.recurse": "true"}
    for key, value in settings.items():
        git(run / "repo", "config", key, value)
    (dotgit / "info").mkdir(exist_ok=True)
    (dotgit / "info" / "attributes").write_text("* filter=evil diff=evil\n")
    for hook in ("reference-transaction", "post-checkout", "pre-commit", "commit-msg",
                 "post-commit", "post-index-change", "pre-auto-gc", "post-rewrite"):
        (dotgit / "hooks" / hook).write_text(f"#!/bin/sh\necho {hook} >> {marker}\n")
        (dotgit / "hooks" / hook).chmod(0o755)
    return marker


def test_nothing_the_repo_configures_runs(run, monkeypatch):
    marker = poison(run)
    runs = fake_runs(monkeypatch)
    for args in (["replay", str(run)], ["replay", str(run), "--trial", "1", "--diff"],
                 ["replay", str(run), "--rebuild"], ["diff", str(run)],
                 ["diff", str(run), "0", "1"], ["rerun", str(run), "1"],
                 ["attribute", str(run), "--to", "1", "--seeds", "1"],
                 ["resume", str(run), "--quiet"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        assert not marker.exists(), (args, marker.read_text())
    assert len(runs) == 2  # rerun and attribute got as far as their runs
    result = runner.invoke(app, ["diff", str(run), "0", "1"])
    assert "MATRIX_LR" in result.output and "DEPTH" in result.output  # the real diff
    elsewhere = run.parent / "elsewhere"
    elsewhere.mkdir()
    git(run / "repo", "config", "core.worktree", str(elsewhere))
    ws = Workspace(run / "repo")
    best = ws.best
    ws.move_best(ws.baseline)  # a checkout: hooks, smudge filters, fsmonitor
    ws.move_best(best)
    assert not list(elsewhere.iterdir())  # the work tree is the repo's folder, always
    sha = ws.write_commit(best, "x", "print(1)\n")
    ws.add_note(sha, {"trial": 99})
    assert ws.source(sha) == "print(1)\n"
    assert ws.archive(best)
    assert not marker.exists(), marker.read_text()
    # and git itself, told nothing, would have run it: the poison is real
    subprocess.run(["git", "-C", str(run / "repo"), "diff", "baseline", sha],
                   capture_output=True)
    assert marker.exists()


def test_the_environment_does_not_reach_git(run, monkeypatch):
    marker = poison(run)
    monkeypatch.setenv("GIT_EXTERNAL_DIFF", str(run.parent / "evil"))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", f"'core.pager'='{run.parent / 'evil'}'")
    monkeypatch.setenv("GIT_DIR", str(run.parent))
    result = runner.invoke(app, ["diff", str(run), "0", "1"])
    assert result.exit_code == 0 and "MATRIX_LR" in result.output, result.output
    assert not marker.exists()


# -- ids from the ledger and the notes --------------------------------------------------------

def test_a_ledger_commit_that_is_an_option_is_refused(run, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    records = rows(run)
    records[1]["commit"] = f"--output={victim}"
    write_rows(run, records)
    for args in (["rerun", str(run), "1"], ["attribute", str(run), "--from", "1"]):
        line = one_line(runner.invoke(app, args))
        assert "trials.jsonl" in line and "commit" in line and "--rebuild" in line, line
        assert victim.read_text() == "keep me"
    ws = Workspace(run / "repo")
    for call in (lambda: ws.archive(f"--output={victim}"),
                 lambda: ws.source(f"--output={victim}"),
                 lambda: ws.write_commit(f"--index-output={victim}", "x", "y"),
                 lambda: ws.add_note(f"--output={victim}", {}),
                 lambda: ws.move_best("HEAD")):
        with pytest.raises(WorkspaceError, match="not a commit id"):
            call()
    assert victim.read_text() == "keep me"
    # a revision named on the command line is a revision, never an option
    line = one_line(runner.invoke(app, ["diff", str(run), "--", f"--output={victim}", "best"]))
    assert "no commit" in line
    assert victim.read_text() == "keep me"


def test_a_note_with_a_bad_commit_is_one_line(run):
    repo = run / "repo"
    baseline = git(repo, "rev-parse", "baseline").strip()
    note = json.loads(git(repo, "notes", "--ref=refs/notes/results", "show", baseline))
    note["commit"] = "--output=/tmp/nowhere"
    git(repo, "notes", "--ref=refs/notes/results", "add", "-f", "-m", json.dumps(note),
        baseline)
    before = {p: p.read_bytes() for p in (run / "trials.jsonl", run / "results.tsv")}
    line = one_line(runner.invoke(app, ["replay", str(run), "--rebuild"]))
    assert "commit" in line and baseline[:10] in line, line
    assert {p: p.read_bytes() for p in before} == before


# -- a rebuild never empties a ledger ---------------------------------------------------------

def corrupt(repo: Path) -> None:
    """Lose the notes' tree object: the notes ref points at a commit whose tree is gone."""
    tree = git(repo, "rev-parse", "refs/notes/results^{tree}").strip()
    obj = repo / ".git" / "objects" / tree[:2] / tree[2:]
    obj.chmod(0o644)
    obj.unlink()


def test_a_rebuild_when_git_fails_keeps_both_ledger_files(run):
    corrupt(run / "repo")
    before = {p: p.read_bytes() for p in (run / "trials.jsonl", run / "results.tsv")}
    line = one_line(runner.invoke(app, ["replay", str(run), "--rebuild"]))
    assert line.startswith("error:") and "git" in line, line
    assert {p: p.read_bytes() for p in before} == before
    assert not list(run.glob("*.tmp"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the folder to another user")
def test_a_repo_owned_by_another_user_is_refused_until_named(run, tmp_path, monkeypatch):
    before = {p: p.read_bytes() for p in (run / "trials.jsonl", run / "results.tsv")}
    for root, dirs, files in os.walk(run / "repo"):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.lchown(name, 65534, 65534)
    line = one_line(runner.invoke(app, ["replay", str(run), "--rebuild"]))
    assert "another user" in line and "safe.directory" in line, line
    assert {p: p.read_bytes() for p in before} == before
    # the user names it, as git asks: then it opens
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    subprocess.run(["git", "config", "--global", "--add", "safe.directory",
                    str((run / "repo").resolve())], check=True)
    result = runner.invoke(app, ["replay", str(run), "--rebuild"])
    assert result.exit_code == 0, result.output
    assert {p: p.read_bytes() for p in before} == before  # the same notes, the same ledger


def test_a_rebuild_keeps_the_old_files_and_never_writes_an_empty_ledger(run):
    ledger = Ledger(run)
    before = {p: p.read_bytes() for p in (ledger.jsonl, ledger.tsv)}
    notes = ledger.records()
    with pytest.raises(UserError, match="no trial"):
        ledger.rewrite([])
    assert {p: p.read_bytes() for p in before} == before
    ledger.rewrite(notes[:1])
    assert len(ledger.jsonl.read_text().splitlines()) == 1
    kept = {p.name.split(".")[0]: p for p in run.glob("*.replaced-*")}
    assert kept["trials"].read_bytes() == before[ledger.jsonl]
    assert kept["results"].read_bytes() == before[ledger.tsv]


# -- ledger rows of the wrong shape -----------------------------------------------------------

@pytest.mark.parametrize("field, value", [("trial", "one"), ("result", []), ("val_bpb", "x"),
                                          ("commit", 5), ("is_best", "yes"),
                                          ("result", {"peak_memory_mb": "big"}), (None, [1])])
def test_wrong_types_in_the_ledger_are_one_line(run, field, value):
    records = rows(run)
    if field is None:
        records[1] = value
    else:
        records[1][field] = value
    write_rows(run, records)
    line = one_line(runner.invoke(app, ["rerun", str(run), "1"]))
    assert "trials.jsonl line 2" in line and "--rebuild" in line, line
    # replay reads the notes instead, says so in one line and shows the trials
    result = runner.invoke(app, ["replay", str(run), "--json"])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "broken line" in result.output
    from agent.record.note import NoteError

    with pytest.raises(NoteError):
        TrialNote.from_dict(records[1])


def test_wrong_types_in_a_note_are_one_line(run):
    repo = run / "repo"
    best = git(repo, "rev-parse", "best").strip()
    note = json.loads(git(repo, "notes", "--ref=refs/notes/results", "show", best))
    note["tokens"] = "many"
    git(repo, "notes", "--ref=refs/notes/results", "add", "-f", "-m", json.dumps(note), best)
    (run / "trials.jsonl").unlink()
    line = one_line(runner.invoke(app, ["replay", str(run)]))
    assert "tokens" in line and best[:10] in line, line
    git(repo, "notes", "--ref=refs/notes/results", "add", "-f", "-m", "not json", best)
    line = one_line(runner.invoke(app, ["replay", str(run)]))
    assert "JSON" in line and best[:10] in line, line


# -- log paths --------------------------------------------------------------------------------

def test_replay_diff_prints_no_log_outside_the_folder(run, tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-LINE\n")
    log = run / "trials" / "0001" / "train.log"
    log.unlink()
    records = rows(run)
    records[1]["result"]["log_path"] = str(secret)
    write_rows(run, records)
    result = runner.invoke(app, ["replay", str(run), "--trial", "1", "--diff"])
    assert result.exit_code == 0, result.output
    assert "SECRET-LINE" not in result.output
    log.symlink_to(secret)  # a link inside the folder to a file outside it
    result = runner.invoke(app, ["replay", str(run), "--trial", "1", "--diff"])
    assert result.exit_code == 0 and "SECRET-LINE" not in result.output, result.output
    # a log the record names inside the folder is shown
    log.unlink()
    inside = run / "trials" / "0001" / "preflight.log"
    inside.write_text("INSIDE-LINE\n")
    records[1]["result"]["log_path"] = str(inside)
    write_rows(run, records)
    result = runner.invoke(app, ["replay", str(run), "--trial", "1", "--diff"])
    assert "INSIDE-LINE" in result.output, result.output
    # named relative to the folder, and the folder named relative to here
    records[1]["result"]["log_path"] = "trials/0001/preflight.log"
    write_rows(run, records)
    monkeypatch.chdir(run.parent)
    result = runner.invoke(app, ["replay", run.name, "--trial", "1", "--diff"])
    assert "INSIDE-LINE" in result.output, result.output
    (run / "trials" / "0001" / "train.log").write_text("OWN-LOG\n")
    result = runner.invoke(app, ["replay", run.name, "--trial", "1", "--diff"])
    assert "OWN-LOG" in result.output and "INSIDE-LINE" not in result.output, result.output


def test_a_repo_that_points_elsewhere_is_refused(run, tmp_path):
    (run / "repo" / ".git" / "commondir").write_text(str(tmp_path) + "\n")
    line = one_line(runner.invoke(app, ["diff", str(run), "0", "1"]))
    assert "points elsewhere" in line, line
    (run / "repo" / ".git" / "commondir").unlink()
    shutil.move(run / "repo" / ".git", tmp_path / "dotgit")
    (run / "repo" / ".git").symlink_to(tmp_path / "dotgit")
    line = one_line(runner.invoke(app, ["diff", str(run), "0", "1"]))
    assert "not a run repository" in line, line


def test_archive_holds_the_commit_as_git_archive_does(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "train.py").write_text("print('hi')\n")
    (src / "pkg" / "util.py").write_text("X = 1\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    ws = Workspace.create(tmp_path / "repo", src)
    (ws.path / "link.py").symlink_to("train.py")
    git(ws.path, "add", "link.py")
    git(ws.path, "commit", "-q", "-m", "a link")
    head = git(ws.path, "rev-parse", "HEAD").strip()
    ours = tarfile.open(fileobj=io.BytesIO(ws.archive(head)))
    theirs = tarfile.open(fileobj=io.BytesIO(subprocess.run(
        ["git", "-C", str(ws.path), "archive", "--format=tar", head],
        capture_output=True, check=True).stdout))

    def members(tar):  # git archive's modes are 0664/0775 before the umask: ours, 0644/0755
        return {m.name.rstrip("/"): (m.type, m.mode & 0o755, m.linkname, m.mtime,
                                     tar.extractfile(m).read() if m.isfile() else None)
                for m in tar.getmembers() if m.type != tarfile.XGLTYPE}

    assert members(ours) == members(theirs)
    assert set(members(ours)) >= {"train.py", "pkg", "pkg/util.py", "run.sh", "link.py"}
    assert members(ours)["link.py"][2] == "train.py" and members(ours)["run.sh"][1] == 0o755


def test_the_schema_names_every_field_of_a_record():
    from dataclasses import fields

    from agent.record.note import SCHEMA

    assert set(SCHEMA) == {f.name for f in fields(TrialNote)}
