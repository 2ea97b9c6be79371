"""The layers of DESIGN.md's map hold (import-linter's contracts in pyproject.toml), and they
are not a formality: an upward import, an import of agent/ from sandbox/ and a cycle inside a
package each break them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(where: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=where, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def tree(tmp_path):
    """A copy of the two packages and the contracts, to break on purpose."""
    for name in ("agent", "sandbox"):
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_contracts_hold():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 kept, 0 broken" in result.stdout


def test_the_copy_holds_them_too(tree):
    # the copy is what the tests below break: unbroken, it must pass (else they prove nothing)
    result = lint(tree)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize("module, line, expected", [
    ("agent/edit/patching.py", "import agent.loop.session", "agent.edit is not allowed to "
     "import agent.loop"),
    ("agent/record/note.py", "from agent.analysis import report", "agent.record is not "
     "allowed to import agent.analysis"),
    ("sandbox/result.py", "import agent.text", "sandbox is not allowed to import agent"),
])
def test_an_upward_import_breaks_them(tree, module, line, expected):
    with (tree / module).open("a") as f:
        f.write(f"\n{line}  # noqa\n")
    result = lint(tree)
    assert result.returncode != 0
    assert expected in result.stdout, result.stdout[-3000:]


def test_a_cycle_inside_a_package_breaks_them(tree):
    # the loop's trial module importing its session: each imports the other
    with (tree / "agent/loop/trial.py").open("a") as f:
        f.write("\nimport agent.loop.session  # noqa\n")
    result = lint(tree)
    assert result.returncode != 0
    assert "No cycles are allowed in agent.loop" in result.stdout, result.stdout[-3000:]
