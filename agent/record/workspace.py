"""The run's git repository (DESIGN.md, "The run folder"; git is the source of truth).

Tag `baseline` is the starting point, `refs/trials/NNNN` one commit per trial whose parent is
the incumbent (best so far), `refs/notes/results` holds each trial's record as JSON on its
commit, and branch `best` (checked out) follows the incumbent. A rejected trial is an empty
commit, so even an edit that never ran stays in the history with its reason.

A run folder may come from someone else (DESIGN.md, "Trust": folders are data), so git runs
here only through agent/record/git.py's `Git`, and every id passes `object_id`.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from pathlib import Path

from agent.record.git import (
    CREATED,
    IDENTITY,
    NO_PROGRAMS,
    Git,
    GitError,
    WorkspaceError,
    check_owner,
    object_id,
)
from agent.record.note import NoteError, check_record
from agent.text import clean

NOTES_REF = "refs/notes/results"
TRIAL_REF = "refs/trials/{:04d}"
IGNORED = {".git", "__pycache__", ".ipynb_checkpoints"}
# A trailer as `trailers_text` writes it: `Trial: 3`, `Confirms: 1` (git's own shape)
TRAILER_KEY = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
TRAILER = re.compile(rf"({TRAILER_KEY.pattern}): ?(.*)")
PARAGRAPH = re.compile(r"\n[ \t]*\n")


class Workspace:
    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()
        dotgit = self.path / ".git"
        if not dotgit.is_dir() or dotgit.is_symlink() or not (dotgit / "HEAD").is_file():
            raise WorkspaceError(f"{self.path} is not a run repository: check the run folder")
        links = [p.name for p in dotgit.iterdir() if p.is_symlink() or p.name == "commondir"]
        if links:
            raise WorkspaceError(f"{self.path}/.git points elsewhere ({', '.join(links)}): a "
                                 "run repository is self-contained; use a plain copy")
        check_owner(self.path)
        self.git = Git(self.path)

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
        CREATED.add(path.resolve())
        _copy_tree(train_dir, path)
        if train_py is not None:
            (path / "train.py").write_text(train_py)
        git = Git(path.resolve(), drivers=False)
        git.run("init", "-q", "--initial-branch=best")
        for key, value in (("user.name", IDENTITY["GIT_AUTHOR_NAME"]),
                           ("user.email", IDENTITY["GIT_AUTHOR_EMAIL"]),
                           ("commit.gpgsign", "false")):
            git.run("config", key, value)
        git.run("add", "-A")
        git.run("commit", "-q", "-m",
                f"baseline: {clean(train_dir.name, one_line=True)}/ as the session's start")
        git.run("tag", "baseline")
        return cls(path)

    # -- reading -------------------------------------------------------------------------
    def rev(self, name: str) -> str:
        """The commit a name the user gave (a tag, branch or rev) points at."""
        out = self.git.run("rev-parse", "--verify", "-q", "--end-of-options",
                           f"{name}^{{commit}}", check=False)
        if out.returncode != 0:
            raise WorkspaceError(f"no commit {name!r} in {self.path}")
        return object_id(out.stdout.decode().strip())

    @property
    def baseline(self) -> str:
        return self.rev("refs/tags/baseline")

    @property
    def best(self) -> str:
        return self.rev("refs/heads/best")

    def source(self, rev: str, path: str = "train.py") -> str:
        """A file of a commit, as stored (no filter or conversion)."""
        return self.git.run("cat-file", "blob", f"{object_id(rev)}:{path}").stdout.decode(
            errors="replace")

    def message(self, commit: str) -> str:
        return self.git.log("-1", "--format=%B", "--end-of-options", object_id(commit))

    def trailers(self, commit: str) -> dict[str, str]:
        """The commit's trailers (`Trial`, `Method`, `Seed`, `Confirms`, `Repair`, ...): its
        last paragraph, when every line of it is `Key: value` and it is not the subject.
        Anything above it (the subject quotes a rationale) is never read as one."""
        paragraphs = [p for p in PARAGRAPH.split(self.message(commit).strip()) if p.strip()]
        if len(paragraphs) < 2:
            return {}
        found = [TRAILER.fullmatch(line) for line in paragraphs[-1].strip().splitlines()]
        return {m[1]: m[2] for m in found} if all(found) else {}

    def trial_commit(self, number: int) -> str | None:
        if number == 0:
            return self.baseline
        out = self.git.run("rev-parse", "--verify", "-q", TRIAL_REF.format(number), check=False)
        return object_id(out.stdout.decode().strip()) if out.returncode == 0 else None

    def trial_refs(self) -> dict[int, str]:
        """refs/trials/NNNN by number (refs there with other names are not ours: skipped)."""
        out = self.git.text("for-each-ref", "--format=%(refname) %(objectname)", "refs/trials/")
        refs = {}
        for line in out.splitlines():
            name, sha = line.rsplit(" ", 1)
            number = name.rsplit("/", 1)[1]
            if number.isdigit() and number.isascii():
                refs[int(number)] = object_id(sha)
        return refs

    def notes(self) -> dict[str, dict]:
        """Every trial record, keyed by commit, read in one pass (linear in the trials);
        WorkspaceError when git cannot read them or one is not a trial record."""
        pairs = [line.split() for line in self.git.text("notes", f"--ref={NOTES_REF}",
                                                        "list").splitlines() if line.strip()]
        if not pairs:
            return {}
        blobs = self._objects([object_id(note) for note, _ in pairs])
        return {object_id(commit): self._record(commit, blobs[note]) for note, commit in pairs}

    def note(self, commit: str) -> dict | None:
        out = self.git.run("notes", f"--ref={NOTES_REF}", "show", "--end-of-options",
                           object_id(commit), check=False)
        return self._record(commit, out.stdout) if out.returncode == 0 else None

    def _record(self, commit: str, body: bytes) -> dict:
        try:
            return check_record(json.loads(body))
        except (ValueError, UnicodeDecodeError) as e:
            why = str(e) if isinstance(e, NoteError) else "not JSON"
            raise WorkspaceError(f"the note on commit {commit[:10]} in {self.path}: {why}: the "
                                 f"notes ({NOTES_REF}) were edited; restore them from a copy "
                                 "of the run folder") from None

    # -- writing -------------------------------------------------------------------------
    def commit_trial(self, number: int, parent: str, message: str, train_py: str | None,
                     trailers: dict[str, object] | None = None) -> str:
        """Commit `train_py` on top of `parent` without touching the work tree, and point
        refs/trials/NNNN at it. `None` makes an empty commit (a rejected trial)."""
        sha = self.write_commit(parent, message, train_py, trailers)
        self.set_ref(TRIAL_REF.format(number), sha)
        return sha

    def write_commit(self, parent: str, message: str, train_py: str | None,
                     trailers: dict[str, object] | None = None) -> str:
        """The commit object only (no ref points at it yet); `trailers` end its message
        (`trailers_text`). Every caller's message is cleaned here: it may quote a rationale or
        a line of code, and git refuses a NUL (a lone surrogate cannot even be encoded), while
        an escape would reach whoever runs git log."""
        if trailers:
            message = f"{message}\n\n{trailers_text(trailers)}"
        parent = object_id(parent)
        index = {"GIT_INDEX_FILE": str(self.path / ".git" / "trial-index")}
        run = lambda *a, **kw: self.git.text(*a, env=index, **kw)  # noqa: E731
        run("read-tree", "--end-of-options", parent)
        if train_py is not None:
            blob = run("hash-object", "-w", "--no-filters", "--stdin", input=train_py.encode())
            run("update-index", "--add", "--cacheinfo", f"100644,{object_id(blob)},train.py")
        tree = object_id(run("write-tree"))
        return object_id(run("commit-tree", tree, "-p", parent, "-F", "-",
                             input=clean(message).encode()))

    def set_ref(self, name: str, sha: str) -> None:
        self.git.run("update-ref", name, object_id(sha))

    def add_note(self, commit: str, record: dict) -> None:
        self.git.run("notes", f"--ref={NOTES_REF}", "add", "-f", "-F", "-", "--end-of-options",
                     object_id(commit), input=json.dumps(record, sort_keys=True).encode())

    def move_best(self, commit: str) -> None:
        """Point `best` at `commit` and bring the checked-out files along."""
        self.set_ref("refs/heads/best", commit)
        self.git.run("reset", "-q", "--hard", "refs/heads/best")

    def set_aside(self, number: int) -> str:
        """Move an interrupted trial's ref to refs/interrupted/NNNN (kept, never deleted)."""
        sha = self.trial_commit(number)
        self.set_ref(f"refs/interrupted/{number:04d}", sha)
        self.git.run("update-ref", "-d", TRIAL_REF.format(number))
        return sha

    def archive(self, commit: str) -> bytes:
        """The commit's files as an uncompressed tar (what a trial runs), read from git's
        objects as stored: no attribute (filter, export-subst, eol) applies. Submodules and
        names git itself would refuse to check out (.., .git) are left out."""
        commit = object_id(commit)
        listing = self.git.run("ls-tree", "-r", "-t", "-z", "--full-tree", "--end-of-options",
                               commit).stdout.decode(errors="surrogateescape").split("\0")
        entries = []
        for item in filter(None, listing):
            meta, name = item.split("\t", 1)
            mode, kind, oid = meta.split()
            parts = name.split("/")
            if kind == "commit" or any(p in ("", ".", "..") or p.lower() == ".git"
                                       for p in parts):
                continue
            entries.append((mode, kind, object_id(oid), name))
        wanted = [commit] + [oid for _, kind, oid, _ in entries if kind == "blob"]
        objects = self._objects(wanted)
        mtime = _commit_time(objects[commit])
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for mode, kind, oid, name in entries:
                info = tarfile.TarInfo(name)
                info.mtime, info.uname, info.gname = mtime, "root", "root"
                if kind == "tree":
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                elif mode == "120000":
                    info.type, info.mode = tarfile.SYMTYPE, 0o777
                    info.linkname = objects[oid].decode(errors="surrogateescape")
                    tar.addfile(info)
                else:
                    info.mode, info.size = (0o755 if mode == "100755" else 0o644), len(objects[oid])
                    tar.addfile(info, io.BytesIO(objects[oid]))
        return buf.getvalue()

    def _objects(self, oids: list[str]) -> dict[str, bytes]:
        """The raw contents of `oids`, read in one `cat-file --batch`."""
        out = self.git.run("cat-file", "--batch", input="".join(o + "\n" for o in oids).encode())
        found, pos, data = {}, 0, out.stdout
        for oid in oids:
            header_end = data.index(b"\n", pos)
            header = data[pos:header_end].split()
            if len(header) != 3 or not header[2].isdigit():
                raise GitError(self.path, "cat-file", b"object " + oid.encode() + b" is missing")
            size = int(header[2])
            found[oid] = data[header_end + 1: header_end + 1 + size]
            pos = header_end + 1 + size + 1
        return found

    def diff(self, a: str, b: str, stat: bool = False) -> str:
        args = ["--stat"] if stat else []
        return self.git.text("diff", *NO_PROGRAMS, *args, "--end-of-options", object_id(a),
                             object_id(b))


def trailers_text(trailers: dict[str, object]) -> str:
    """`Key: value` lines, the only way trailers are written (`Workspace.trailers` reads
    them back): each value one clean line, so none can start a trailer of its own."""
    bad = [k for k in trailers if not TRAILER_KEY.fullmatch(k)]
    if bad:
        raise ValueError(f"not trailer keys: {bad}")
    return "".join(f"{k}: {clean(v, one_line=True)}\n" for k, v in trailers.items())


def _commit_time(raw: bytes) -> int:
    for line in raw.split(b"\n\n", 1)[0].splitlines():
        if line.startswith(b"committer "):
            stamp = line.rsplit(b" ", 2)[-2]
            return int(stamp) if stamp.isdigit() else 0
    return 0


def _copy_tree(src: Path, dest: Path) -> None:
    def ignore(folder, names):
        return [n for n in names if n in IGNORED or n.startswith(".") or n.endswith(".pyc")]

    shutil.copytree(src, dest, ignore=ignore, dirs_exist_ok=True)
