"""`autoresearch init --train-dir K`: write the search_space.toml a training folder needs,
[run] table included, from what its files say (karpathy/autoresearch's layout recognised).

- The searched constants: every hyperparameter of the paper's space (our packaged
  search_space.toml, gpu scale) that train.py defines at module level, with train.py's own
  value as the default (a range is widened to hold it, and the line says so).
- A `gpu` preset, the folder's default, fixing SEQ_LEN from prepare.py's MAX_SEQ_LEN (the
  constraints need it) and the time budget from its TIME_BUDGET.
- [run]: the folder's venv when it has one; `prepare = "once"` when prepare.py downloads or
  caches under the home folder; read-only mounts of the caches it names (~/.cache/NAME, and
  ~/.cache/huggingface/hub when train.py loads hub kernels, with HF_HUB_OFFLINE=1); time_budget
  from prepare.py's constant.
Each line carries a comment that says why it is there.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import tomllib

from agent.config.runspec import mount_problem
from agent.edit.block import read_block
from agent.errors import UserError
from agent.paths import baseline_dir


class InitError(UserError):
    """The folder cannot be described; the message says what is missing."""


def constants(path: Path) -> dict[str, object]:
    """Module-level NAME = literal constants of a Python file."""
    out = {}
    if not path.is_file():
        return out
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                pass
    return out


def _toml(value) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def describe(folder: Path) -> tuple[str, list[str]]:
    """(the search_space.toml text, what was found: one line each)."""
    train, prepare = folder / "train.py", folder / "prepare.py"
    if not train.is_file():
        raise InitError(f"{folder} has no train.py: --train-dir takes the folder that holds it")
    source = train.read_text()
    ours = tomllib.loads((baseline_dir() / "search_space.toml").read_text())
    block = read_block(source)
    names = [n for n in ours["params"] if n in block]
    if not names:
        raise InitError(f"{train} defines none of the space's hyperparameters at module level "
                        f"({', '.join(ours['params'])}): nothing to search")
    prep = constants(prepare)
    prep_text = prepare.read_text() if prepare.is_file() else ""
    found = [f"train.py defines {len(names)} of the space's {len(ours['params'])} "
             f"hyperparameters: {', '.join(names)}"]
    lines = ["# Written by `autoresearch init` from what this folder's files say; edit freely.",
             'default_preset = "gpu"  # a session without --preset judges train.py by these '
             "ranges", ""]
    lines += _run_table(folder, source, prep, prep_text, found)
    for name in names:
        spec = dict(ours["params"][name])
        value = block[name].value
        note = ""
        if spec["type"] != "categorical" and isinstance(value, (int, float)):
            if value < spec["low"] or value > spec["high"]:
                note = (f"  # widened from [{spec['low']}, {spec['high']}] to hold "
                        f"train.py's {value}")
                spec["low"], spec["high"] = min(spec["low"], value), max(spec["high"], value)
                found.append(f"{name} = {value} lies outside the paper's range: widened")
        elif spec["type"] == "categorical" and value not in spec["choices"]:
            spec["choices"] = [*spec["choices"], value]
            note = "  # train.py's own value added to the choices"
        spec["default"] = value
        lines.append(f"[params.{name}]{note}")
        lines += [f"{k} = {_toml(v)}" for k, v in spec.items()]
        lines.append("")
    fixed = {}
    if isinstance(prep.get("MAX_SEQ_LEN"), int):
        fixed["SEQ_LEN"] = prep["MAX_SEQ_LEN"]
    elif isinstance(seq := constants(train).get("SEQ_LEN"), int):
        fixed["SEQ_LEN"] = seq
    for c in ours.get("constraints", []):
        mentioned = set(re.findall(r"[A-Z_][A-Z0-9_]*", c["expr"]))
        if mentioned <= set(names) | set(fixed):
            lines += ["[[constraints]]", f"expr = {_toml(c['expr'])}",
                      f"message = {_toml(c['message'])}", ""]
    lines.append("[presets.gpu]  # ranges above; defaults are train.py's values")
    if isinstance(prep.get("TIME_BUDGET"), (int, float)):
        lines.append(f"time_budget = {prep['TIME_BUDGET']}  # prepare.py's TIME_BUDGET")
    if fixed:
        lines.append(f"fixed = {{ SEQ_LEN = {fixed['SEQ_LEN']} }}  # prepare.py's "
                     "MAX_SEQ_LEN: not searched")
        found.append(f"SEQ_LEN fixed at {fixed['SEQ_LEN']} (prepare.py's MAX_SEQ_LEN)")
    return "\n".join(lines) + "\n", found


# what says a folder loads from the Hugging Face hub (and so wants its cache, offline)
HUB_SIGNS = ("get_kernel(", "from_pretrained(", "hf_hub_download(", "snapshot_download(",
             "HF_HUB_OFFLINE")


def named_caches(text: str) -> list[str]:
    """The folders under ~/.cache that `text` names (os.path.join(os.path.expanduser("~"),
    ".cache", NAME) or "~/.cache/NAME"), in order, once each."""
    caches = sorted(set(re.findall(r'expanduser\("~"\),\s*"\.cache",\s*"(\w[\w.-]*)"',
                                   text)))
    return caches + [c for c in dict.fromkeys(re.findall(r'~/\.cache/(\w[\w.-]*)', text))
                     if c not in caches]


def _run_table(folder: Path, source: str, prep: dict, prep_text: str,
               found: list[str]) -> list[str]:
    lines = ["[run]"]
    venv = folder / ".venv" / "bin" / "python"
    if venv.exists():
        lines.append('python = ".venv/bin/python"  # the folder\'s own venv (uv sync / pip)')
        found.append("its venv: .venv/bin/python")
    else:
        lines.append('# python = ".venv/bin/python"  # after `uv sync` in this folder; until '
                     "then trials use autoresearch's interpreter")
        found.append("no .venv yet: trials use autoresearch's interpreter until you create one")
    caches = named_caches(prep_text)
    if prep_text and (caches or "download" in prep_text):
        lines.append('prepare = "once"  # prepare.py downloads and caches: run it once '
                     "yourself (`python prepare.py`)")
        found.append("prepare.py prepares its own data: prepare = \"once\"")
    caches += [c for c in named_caches(source) if c not in caches]  # train.py's own too
    # the hub's cache is mounted as its hub/ folder alone (below), never the folder above
    hub = "huggingface" in caches or any(sign in text for text in (source, prep_text)
                                         for sign in HUB_SIGNS)
    mounts = [f"~/.cache/{c}" for c in caches if c != "huggingface"]
    if hub:  # the hub's cache, not the folder above it: that one holds the login token
        mounts.append("~/.cache/huggingface/hub")
    # Only what [run] accepts: never the home folder, a folder outside it or one holding
    # credentials.
    home = os.path.expanduser("~")
    mounts = [m for m in mounts if not mount_problem(os.path.join(home, m[2:]))]
    if mounts:
        lines.append(f"mounts = {_toml(mounts)}  # read-only in each trial, under its HOME")
        found.append(f"caches read by trials: {', '.join(mounts)}")
    if hub:
        lines.append('env = { HF_HUB_OFFLINE = "1" }  # train.py loads from the Hugging Face '
                     "hub: read the cache, trials have no network")
    if isinstance(prep.get("TIME_BUDGET"), (int, float)):
        lines.append('time_budget = "prepare.py:TIME_BUDGET"  # train.py imports it; the '
                     "TIME_BUDGET variable is ignored")
        found.append(f"time budget {prep['TIME_BUDGET']} s (prepare.py's TIME_BUDGET)")
    return lines + [""]


def init_folder(folder: Path, force: bool = False) -> tuple[Path, str, list[str]]:
    """Write folder/search_space.toml; (its path, its text, what was found)."""
    text, found = describe(folder)
    path = folder / "search_space.toml"
    if path.exists() and not force:
        raise InitError(f"{path} exists: pass --force to replace it (the old one is kept as "
                        "search_space.toml.bak)")
    if path.exists():
        path.replace(path.with_name("search_space.toml.bak"))
    path.write_text(text)
    return path, text, found
