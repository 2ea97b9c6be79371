"""The run's git repository (DESIGN.md, "The run folder"; git is the source of truth).

Tag `baseline` is the starting point, `refs/trials/NNNN` one commit per trial whose parent is
the incumbent (best so far), `refs/notes/results` holds each trial's record as JSON on its
commit, and branch `best` (checked out) follows the incumbent. A rejected trial is an empty
commit, so even an edit that never ran stays in the history with its reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import git

from agent.errors import UserError

NOTES_REF = "refs/notes/results"
TRIAL_REF = "refs/trials/{:04d}"
IGNORED = {".git", "__pycache__", ".ipynb_checkpoints"}


class WorkspaceError(UserError):
    """The run repository is missing or broken; the message says what to do."""


class Workspace:
    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()
        try:
            self.repo = git.Repo(self.path)
        except (git.NoSuchPathError, git.InvalidGitRepositoryError):
            raise WorkspaceError(f"{self.path} is not a run repository: check the run folder") \
                from None
        self.git = self.repo.git

    # -- creation ----------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, train_dir: str | Path,
               train_py: str | None = None) -> Workspace:
        """New repo holding a copy of `train_dir` (train.py replaced by `train_py` if given,
        e.g. rewritten for a preset), committed and tagged `baseline`; `best` points there."""
        path, train_dir = Path(path), Path(train_dir)
        if not (train_dir / "train.py").is_file():
            raise WorkspaceError(f"{train_dir} has no train.py: pass the folder that holds it")
        path.mkdir(parents=True, exist_ok=False)
        _copy_tree(train_dir, path)
        if train_py is not None:
            (path / "train.py").write_text(train_py)
        repo = git.Repo.init(path, initial_branch="best")
        with repo.config_writer() as cfg:
            cfg.set_value("user", "name", "autoresearch")
            cfg.set_value("user", "email", "autoresearch@localhost")
            cfg.set_value("commit", "gpgsign", "false")
        repo.git.add("-A")
        repo.git.commit("-q", "-m", f"baseline: {train_dir.name}/ as the session's start")
        repo.git.tag("baseline")
        return cls(path)

    # -- reading -------------------------------------------------------------------------
    def rev(self, name: str) -> str:
        try:
            return self.git.rev_parse("--verify", "-q", f"{name}^{{commit}}")
        except git.GitCommandError:
            raise WorkspaceError(f"no commit {name!r} in {self.path}") from None

    @property
    def baseline(self) -> str:
        return self.rev("baseline")

    @property
    def best(self) -> str:
        return self.rev("refs/heads/best")

    def source(self, rev: str, path: str = "train.py") -> str:
        return self.git.show(f"{rev}:{path}", strip_newline_in_stdout=False)

    def trial_commit(self, number: int) -> str | None:
        if number == 0:
            return self.baseline
        try:
            return self.git.rev_parse("--verify", "-q", TRIAL_REF.format(number))
        except git.GitCommandError:
            return None

    def trial_refs(self) -> dict[int, str]:
        out = self.git.for_each_ref("--format=%(refname) %(objectname)", "refs/trials/")
        refs = {}
        for line in out.splitlines():
            name, sha = line.split()
            refs[int(name.rsplit("/", 1)[1])] = sha
        return refs

    def notes(self) -> dict[str, dict]:
        """Every trial record, keyed by commit, read in one pass (linear in the trials)."""
        try:
            listing = self.git.notes(f"--ref={NOTES_REF}", "list")
        except git.GitCommandError:
            return {}
        pairs = [line.split() for line in listing.splitlines() if line.strip()]
        if not pairs:
            return {}
        blobs = "\n".join(note for note, _ in pairs) + "\n"
        out = subprocess.run(["git", "cat-file", "--batch"], cwd=self.path, input=blobs.encode(),
                             capture_output=True, check=True).stdout
        records, pos = {}, 0
        for _, commit in pairs:
            header_end = out.index(b"\n", pos)
            size = int(out[pos:header_end].split()[2])
            body = out[header_end + 1: header_end + 1 + size]
            pos = header_end + 1 + size + 1
            records[commit] = json.loads(body)
        return records

    def note(self, commit: str) -> dict | None:
        try:
            return json.loads(self.git.notes(f"--ref={NOTES_REF}", "show", commit))
        except git.GitCommandError:
            return None

    # -- writing -------------------------------------------------------------------------
    def commit_trial(self, number: int, parent: str, message: str,
                     train_py: str | None) -> str:
        """Commit `train_py` on top of `parent` without touching the work tree, and point
        refs/trials/NNNN at it. `None` makes an empty commit (a rejected trial)."""
        sha = self.write_commit(parent, message, train_py)
        self.set_ref(TRIAL_REF.format(number), sha)
        return sha

    def write_commit(self, parent: str, message: str, train_py: str | None) -> str:
        """The commit object only (no ref points at it yet)."""
        env = {**os.environ, "GIT_INDEX_FILE": str(self.path / ".git" / "trial-index")}
        run = lambda *a, **kw: subprocess.run(  # noqa: E731
            ["git", *a], cwd=self.path, env=env, capture_output=True, check=True, **kw)
        run("read-tree", parent)
        if train_py is not None:
            blob = run("hash-object", "-w", "--stdin", input=train_py.encode()).stdout
            run("update-index", "--add", "--cacheinfo",
                f"100644,{blob.decode().strip()},train.py")
        tree = run("write-tree").stdout.decode().strip()
        return run("commit-tree", tree, "-p", parent, "-F", "-",
                   input=message.encode()).stdout.decode().strip()

    def set_ref(self, name: str, sha: str) -> None:
        self.git.update_ref(name, sha)

    def has_notes_ref(self) -> bool:
        try:
            self.git.rev_parse("--verify", "-q", NOTES_REF)
            return True
        except git.GitCommandError:
            return False

    def add_note(self, commit: str, record: dict) -> None:
        self.git.notes(f"--ref={NOTES_REF}", "add", "-f", "-m",
                       json.dumps(record, sort_keys=True), commit)

    def move_best(self, commit: str) -> None:
        """Point `best` at `commit` and bring the checked-out files along."""
        self.set_ref("refs/heads/best", commit)
        self.git.reset("-q", "--hard", "refs/heads/best")

    def set_aside(self, number: int) -> str:
        """Move an interrupted trial's ref to refs/interrupted/NNNN (kept, never deleted)."""
        sha = self.trial_commit(number)
        self.git.update_ref(f"refs/interrupted/{number:04d}", sha)
        self.git.update_ref("-d", TRIAL_REF.format(number))
        return sha

    def materialize(self, commit: str, dest: Path) -> Path:
        """The commit's files in `dest`, world-readable (the trial user must read them)."""
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=self.path,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        for root, _dirs, files in os.walk(dest):
            os.chmod(root, 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        return dest

    def archive(self, commit: str) -> bytes:
        """The commit's files as an uncompressed tar (what a trial runs)."""
        return subprocess.run(["git", "archive", "--format=tar", commit], cwd=self.path,
                              capture_output=True, check=True).stdout

    def diff(self, a: str, b: str, stat: bool = False) -> str:
        args = ["--stat"] if stat else []
        return self.git.diff(*args, a, b)

    def temp_tree(self, commit: str, parent: Path | None = None) -> Path:
        """The commit's files in a new folder `<tmp>/ar-trial-*/src`; remove its parent."""
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        return self.materialize(commit, Path(tempfile.mkdtemp(prefix="ar-trial-",
                                                              dir=parent)) / "src")


def _copy_tree(src: Path, dest: Path) -> None:
    def ignore(folder, names):
        return [n for n in names if n in IGNORED or n.startswith(".") or n.endswith(".pyc")]

    shutil.copytree(src, dest, ignore=ignore, dirs_exist_ok=True)
