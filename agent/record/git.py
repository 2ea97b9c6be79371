"""git on a run repository, which may come from someone else (DESIGN.md, "Trust": folders
are data). git runs on one only through `Git`: its repo's config, hooks, fsmonitor, external
diff, filter and diff drivers and signing run nothing; ids read from the ledger or the notes
pass `object_id` before they reach git; a repo owned by another user opens only when the user
named it, as git asks (`check_owner`).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from agent.errors import UserError
from agent.record.note import OBJECT_ID
from agent.text import clean

IDENTITY = {"GIT_AUTHOR_NAME": "autoresearch", "GIT_AUTHOR_EMAIL": "autoresearch@localhost",
            "GIT_COMMITTER_NAME": "autoresearch", "GIT_COMMITTER_EMAIL": "autoresearch@localhost"}
# Every setting with which a repo could make git run a program, sign, fetch or page is
# overridden on each call. Filter and diff drivers are named per repo, so those found in its
# config are blanked too (_drivers).
OVERRIDES = ("core.fsmonitor=false", "core.hooksPath=/dev/null", "core.pager=cat",
             "core.editor=false", "core.sshCommand=false", "core.askPass=",
             "core.attributesFile=/dev/null", "core.autocrlf=false", "commit.gpgSign=false",
             "tag.gpgSign=false", "log.showSignature=false", "submodule.recurse=false",
             "protocol.allow=never", "gc.auto=0", "maintenance.auto=false")
NO_PROGRAMS = ("--no-ext-diff", "--no-textconv", "--no-color")  # for diff and log
DRIVER = re.compile(r"(filter|diff|merge)\.(.+)\.(clean|smudge|process|required|command"
                    r"|textconv|driver)", re.IGNORECASE | re.DOTALL)
CREATED: set[Path] = set()  # repos this process made: trusted whoever owns them


class WorkspaceError(UserError):
    """The run repository is missing or broken; the message says what to do."""


class Git:
    """git on one run repository, and the only way this project runs git on one: a clean
    environment (no system or global config, no HOME, no GIT_* of the caller's), the repo
    named explicitly (no discovery upwards) and OVERRIDES on every call."""

    def __init__(self, path: Path, drivers: bool = True):
        self.path = path
        self.options = [arg for setting in OVERRIDES for arg in ("-c", setting)]
        if drivers:  # a repo not yet made has none
            self.options += [arg for setting in self._drivers() for arg in ("-c", setting)]

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: os.environ[k] for k in ("PATH", "TZ", "SYSTEMROOT") if k in os.environ}
        return {**env, "LC_ALL": "C", "GIT_DIR": str(self.path / ".git"),
                "GIT_WORK_TREE": str(self.path), "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": os.devnull, "GIT_ATTR_NOSYSTEM": "1",
                "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", **IDENTITY, **(extra or {})}

    def run(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        """`git ARGS` in the repo; GitError (one line) when it fails and `check`."""
        out = subprocess.run(["git", "--no-pager", *self.options, *args], cwd=self.path,
                             input=input, capture_output=True, env=self.environment(env))
        if check and out.returncode != 0:
            raise GitError(self.path, args[0], out.stderr)
        return out

    def text(self, *args: str, **kw) -> str:
        """stdout as text, its last newline removed."""
        out = self.run(*args, **kw).stdout.decode(errors="replace")
        return out[:-1] if out.endswith("\n") else out

    # what agent/loop/trial.py reads through `ws.git`
    def log(self, *args: str) -> str:
        return self.text("log", *NO_PROGRAMS, *args)

    def rev_parse(self, *args: str) -> str:
        return self.text("rev-parse", *args)

    def rev_list(self, *args: str) -> str:
        return self.text("rev-list", *args)

    def _drivers(self) -> list[str]:
        """Each filter, diff or merge driver the repo's config defines, blanked: attributes
        (in-tree .gitattributes included) can then name it but it runs nothing."""
        out = self.run("config", "--list", "--name-only", "-z", check=False)
        blank = []
        for name in out.stdout.decode(errors="surrogateescape").split("\0"):
            m = DRIVER.fullmatch(name)
            if m:
                value = "false" if m[3].lower() == "required" else ""
                blank.append(f"{m[1]}.{m[2]}.{m[3]}={value}")
        return blank


class GitError(WorkspaceError):
    """git failed on the run repository (damaged, or not one of ours)."""

    def __init__(self, path: Path, command: str, stderr: bytes):
        lines = [x for x in stderr.decode(errors="replace").splitlines() if x.strip()]
        why = clean((lines or ["no message"])[-1], one_line=True)
        super().__init__(f"git {command} failed in {path}: {why[:200]}: the repository is "
                         f"damaged or changed by hand (`git -C {path} fsck` says more)")


def object_id(value) -> str:
    """`value` if it is a full hex object id. Ids come from the ledger and the notes, which
    may come from someone else: none reaches git as an option or a revision expression."""
    if isinstance(value, str) and OBJECT_ID.fullmatch(value):
        return value
    text = repr(value)
    raise WorkspaceError(f"{text[:60]} is not a commit id (40 hex digits): the ledger or the "
                         "notes were edited; check the run folder")


def check_owner(path: Path) -> None:
    """git's safe.directory rule, kept by us (git skips it when GIT_DIR is given, as here):
    a repo owned by another user opens only when this process made it or the user named it
    in git's own config (safe.directory, as git asks)."""
    uid = os.geteuid()
    allowed = {uid}
    if uid == 0 and os.environ.get("SUDO_UID", "").isdigit():
        allowed.add(int(os.environ["SUDO_UID"]))
    owner = next((o for o in (path.stat().st_uid, (path / ".git").stat().st_uid)
                  if o not in allowed), None)
    if owner is None or path in CREATED or _named_safe(path):
        return
    raise WorkspaceError(f"{path} belongs to another user (uid {owner}) and its repo's "
                         "settings are theirs: if you trust it, run `git config --global --add "
                         f"safe.directory {path}`, or copy the run folder to make it yours")


def _named_safe(path: Path) -> bool:
    """Whether the user's own git config (global or system, never the repo's) names `path`
    in safe.directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    named = []
    for scope in ("--global", "--system"):
        out = subprocess.run(["git", "config", scope, "--get-all", "safe.directory"], cwd="/",
                             env=env, capture_output=True, text=True)
        named += out.stdout.splitlines()
    for value in named:
        if value == "*" or value.endswith("/*") and str(path).startswith(value[:-1]):
            return True
        if value and os.path.realpath(os.path.expanduser(value)) == str(path):
            return True
    return False
