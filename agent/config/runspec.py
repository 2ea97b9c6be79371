"""How a training folder runs: the optional `[run]` table of its search_space.toml, or of an
`autoresearch.toml` beside train.py (DESIGN.md, "Training-folder config").

    [run]
    python = ".venv/bin/python"      # the interpreter trials use (default: this one)
    prepare = "once"                 # "auto" (default): run prepare.py, it prints the data
                                     # folder; "none"/"once": the folder finds its own data
                                     # (you ran prepare.py yourself); or a shell command
    mounts = ["~/.cache/autoresearch"]   # host folders trials read (read-only, same place
                                         # under the trial's HOME; inside the home, never it,
                                         # no credential store nor a folder holding one)
    env = { HF_HUB_OFFLINE = "1" }   # extra variables; secrets (by name, or a URL with a
                                     # password) and loader/interpreter paths refused
    time_budget = "prepare.py:TIME_BUDGET"  # or seconds; what train.py really trains for

Relative paths are the training folder's; `~` is the user's home. Every problem is one line
that names the key.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from agent.errors import UserError

# Names of variables that carry credentials: refused, whatever their value.
SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSW|PWD|CRED|AUTH|COOKIE|SESSION|(^|_)PAT(_|$)", re.I)
# A value with user:password@ in a URL (DATABASE_URL, REDIS_URL, ...) is a credential too.
USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]*@")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED = ("HOME", "PATH", "USER", "TIME_BUDGET")
# Prefixes that change how programs load code (the loader, the interpreter's own paths).
LOADER = ("LD_", "PYTHON", "DYLD_")
# Where credentials live under a home folder: a mount may be none of these, nor hold one.
CREDENTIAL_STORES = (".ssh", ".aws", ".gnupg", ".azure", ".kube", ".docker", ".password-store",
                     ".config/gcloud", ".config/gh", ".config/hub", ".local/share/keyrings",
                     ".netrc", ".git-credentials", ".pypirc", ".npmrc")
CREDENTIAL_FILES = {"token", "stored_tokens", "credentials", ".netrc", ".git-credentials",
                    ".pypirc", "id_rsa", "id_ed25519", "id_ecdsa", "id_dsa"}
KEYS = ("python", "prepare", "mounts", "env", "time_budget")


class RunSpecError(UserError):
    """The [run] table cannot be used; the message names the key."""


@dataclass(frozen=True)
class RunSpec:
    python: str | None = None  # absolute path of the trials' interpreter; None: this one
    prepare: str = "auto"
    mounts: tuple[str, ...] = ()  # absolute host paths, each under the user's home
    env: dict[str, str] = field(default_factory=dict)
    time_budget: float | None = None
    source: str = ""  # the file it came from ("" when the folder has no [run])

    @property
    def home(self) -> str:
        return str(Path.home())

    def relative_mounts(self) -> list[tuple[str, str]]:
        """(host path, path relative to HOME) of each mount."""
        return [(m, os.path.relpath(m, self.home)) for m in self.mounts]

    def job(self) -> dict:
        """What each trial's job carries of it (plain data: it travels to Ray workers)."""
        return {"python": self.python, "env": dict(self.env),
                "mounts": [list(m) for m in self.relative_mounts()]}


def load_runspec(train_dir: Path) -> RunSpec:
    """The folder's [run] table (RunSpec() when it has none)."""
    train_dir = Path(train_dir)
    found = []
    for name in ("autoresearch.toml", "search_space.toml"):
        path = train_dir / name
        if path.is_file():
            try:
                table = tomllib.loads(path.read_text()).get("run")
            except tomllib.TOMLDecodeError as e:
                raise RunSpecError(f"{path} is not valid TOML: {e}") from None
            if table is not None:
                found.append((path, table))
    if not found:
        return RunSpec()
    if len(found) > 1:
        raise RunSpecError(f"both {found[0][0]} and {found[1][0]} have a [run] table: keep one")
    path, table = found[0]
    return _parse(path, train_dir, table)


def _parse(path: Path, train_dir: Path, table: dict) -> RunSpec:
    where = f"{path} [run]"
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise RunSpecError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    spec = {"source": str(path)}
    if "python" in table:
        python = _path(train_dir, table["python"], f"{where} python")
        if not (os.path.isfile(python) and os.access(python, os.X_OK)):
            raise RunSpecError(f"{where} python = {table['python']!r}: {python} is not an "
                               "executable file (create the folder's venv first)")
        spec["python"] = python
    prepare = table.get("prepare", "auto")
    if not isinstance(prepare, str) or not prepare.strip():
        raise RunSpecError(f"{where} prepare: say auto, none, once or a command")
    spec["prepare"] = prepare.strip()
    mounts = table.get("mounts", [])
    if not isinstance(mounts, list):
        raise RunSpecError(f"{where} mounts: a list of folders, e.g. [\"~/.cache/NAME\"]")
    resolved = []
    for m in mounts:
        host = _path(train_dir, m, f"{where} mounts")
        if not os.path.exists(host):
            raise RunSpecError(f"{where} mounts: {host} does not exist (run the folder's "
                               "prepare step first, or drop the entry)")
        problem = mount_problem(host)
        if problem:
            raise RunSpecError(f"{where} mounts: {m!r}: {problem}")
        resolved.append(host)
    spec["mounts"] = tuple(resolved)
    env = table.get("env", {})
    if not isinstance(env, dict):
        raise RunSpecError(f"{where} env: a table of NAME = \"value\"")
    for name, value in env.items():
        if not NAME.fullmatch(name) or name in RESERVED or name.startswith("AR_"):
            raise RunSpecError(f"{where} env: {name!r} cannot be set by a folder")
        if name.upper().startswith(LOADER):
            raise RunSpecError(f"{where} env: {name} changes which code the interpreter or "
                               "the loader runs; a folder cannot set it")
        if SECRET.search(name):
            raise RunSpecError(f"{where} env: {name} looks like a secret (its name); secrets "
                               "never enter a trial")
        if not isinstance(value, (str, int, float, bool)):
            raise RunSpecError(f"{where} env: {name} must be a string or a number")
        if USERINFO.match(str(value)):
            raise RunSpecError(f"{where} env: {name} holds a URL with a user name or password "
                               "in it; secrets never enter a trial")
    spec["env"] = {k: str(v) for k, v in env.items()}
    if "time_budget" in table:
        spec["time_budget"] = _time_budget(train_dir, table["time_budget"], where)
    return RunSpec(**spec)


def mount_problem(host: str, home: str | None = None) -> str:
    """Why `host` may not be mounted into trials ("" when it may): it must lie strictly inside
    the home folder once links and `..` are resolved, and be no credential store nor hold one."""
    home, real = os.path.realpath(home or Path.home()), os.path.realpath(host)
    if _inside(home, real):
        return (f"{real} is your home folder or holds it: name the cache folder itself "
                "(e.g. ~/.cache/NAME)")
    if not _inside(real, home):
        return f"{real} is outside your home ({home}): trials see mounts under their HOME"
    ours = os.path.realpath(own_cache())
    if _inside(real, ours) or _inside(ours, real):  # val's and test's source, the test split
        return (f"{real} is or holds {ours}, this tool's own cache (the held-out validation "
                "and test text live there): mount a folder beside it")
    problem = _credentials(real, home)
    if problem.startswith("it holds"):
        problem += ": mount the folder beside it (~/.cache/huggingface/hub, not its parent)"
    return problem


def own_cache() -> str:
    """autoresearch-sandbox's cache folder, as baseline_train/prepare.py's cache_dir() finds
    it: the held-out archive, the prepared data and its test split."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "autoresearch-sandbox")


SYSTEM = ("/etc", "/proc", "/sys", "/dev", "/boot", "/root", "/run", "/var/run", "/usr", "/bin",
          "/sbin", "/lib", "/lib64")


def data_problem(folder: str, home: str | None = None) -> str:
    """Why a data folder named by a session.toml (which may be someone else's) may not be
    given to trials ("" when it may): it may not hold the home folder, lie in a system folder
    or a credential store, or hold a credential file."""
    home, real = os.path.realpath(home or Path.home()), os.path.realpath(folder)
    if _inside(home, real):
        return f"{real} is your home folder or holds it"
    if any(_inside(real, s) for s in SYSTEM) and not _inside(real, home):
        return f"{real} is a system folder"
    return _credentials(real, home)


def _inside(path: str, folder: str) -> bool:
    """`path` is `folder` or lies below it (both resolved)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _credentials(real: str, home: str) -> str:
    """A credential store `real` is, lies in or holds, or a credential file it holds ("")."""
    if _inside(real, home):
        rel = os.path.relpath(real, home)
        for store in CREDENTIAL_STORES:
            if _inside(rel, store) or store.startswith(rel + "/"):
                return f"~/{store} holds credentials: trials never see it"
    found = _credential_file(real)
    return f"it holds {found}, a credential file" if found else ""


def _credential_file(folder: str, depth: int = 4, budget: int = 100_000) -> str:
    """The first credential-named file within `depth` levels of folder ("" if none)."""
    if os.path.isfile(folder):
        return folder if os.path.basename(folder) in CREDENTIAL_FILES else ""
    base = folder.rstrip("/").count("/")
    for root, dirs, files in os.walk(folder):
        budget -= len(dirs) + len(files)
        for name in files:
            if name in CREDENTIAL_FILES:
                return os.path.join(root, name)
        if root.count("/") - base >= depth or budget <= 0:
            dirs[:] = []
    return ""


def _path(train_dir: Path, value, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise RunSpecError(f"{what}: a path, not {value!r}")
    path = Path(os.path.expanduser(value))
    return os.path.normpath(path if path.is_absolute() else train_dir.resolve() / path)


def _time_budget(train_dir: Path, value, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    if not isinstance(value, str) or ":" not in value:
        raise RunSpecError(f"{where} time_budget: seconds, or FILE:CONSTANT such as "
                           "\"prepare.py:TIME_BUDGET\"")
    file, name = value.split(":", 1)
    path = train_dir / file
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError) as e:
        raise RunSpecError(f"{where} time_budget: cannot read {path}: {e}") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets):
            try:
                seconds = ast.literal_eval(node.value)
            except ValueError:
                break
            if isinstance(seconds, (int, float)) and seconds > 0:
                return float(seconds)
            break
    raise RunSpecError(f"{where} time_budget: {path} has no `{name} = <seconds>` at its top "
                       "level")
