"""Text is data beyond the terminal's tables (issue 21, point 6, follow-ups): a line of code,
a method's name or an error message that reaches matplotlib, a commit message or stderr is
shown as written, never parsed (mathtext), never refused (a NUL in commit-tree) and never
obeyed (an OSC 52 clipboard write on stderr)."""

from __future__ import annotations

import subprocess

import pytest
import typer
from typer.testing import CliRunner

from agent.analysis.attribution import split_changes
from agent.cli.main import app
from agent.edit.space import load_space
from agent.errors import fail
from agent.paths import baseline_dir
from agent.plots import attribution_figure, compare_figure, progress_figure, save
from agent.record.note import TrialNote
from agent.record.workspace import Workspace
from agent.testing.synthetic import make_train_dir

runner = CliRunner()
OSC52 = "\x1b]52;c;ZXZpbA==\x07"  # write "evil" to the clipboard
MATH = r"x = r'$\frob$' + '$5 and $6'"  # mathtext, an unknown command: ValueError on save


# -- matplotlib ----------------------------------------------------------------------------

def notes(n: int = 4) -> list[TrialNote]:
    return [TrialNote(trial=i, commit="0" * 40, method="m", status="ok" if i % 3 else "crash",
                      val_bpb=3.0 - 0.1 * i if i % 3 else None, cost_s=1.0) for i in range(n)]


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.findobj(lambda a: hasattr(a, "get_text"))]


def test_an_attribution_plot_shows_code_with_dollars_as_written(tmp_path):
    change = f"insert line 9: {MATH} {OSC52}\x00end"
    table = {"from": "baseline", "to": "$\\frob$", "seeds": [0, 1], "changes": [
        {"change": change, "leave_one_out": 0.1, "leave_one_out_std": 0.01, "add_one": None,
         "add_one_std": None, "unappliable": {"only": "train.py does not parse"}}]}
    fig = attribution_figure(table)
    path = save(fig, tmp_path / "attribution.png")
    assert path.stat().st_size > 1000
    shown = texts(fig)
    # the label reads as written: '\$' is matplotlib's literal dollar, no control byte left
    assert f"insert line 9: {MATH} end".replace("$", r"\$") in shown, shown
    assert not any(c in "".join(shown) for c in "\x1b\x07\x00")


def test_progress_and_compare_plots_take_any_method_or_run_name(tmp_path):
    save(progress_figure(notes(), f"run {MATH}"), tmp_path / "progress.png")
    save(compare_figure({MATH: [notes(), notes(5)], "plain": [notes()]}, MATH),
         tmp_path / "compare.png")
    assert (tmp_path / "progress.png").is_file() and (tmp_path / "compare.png").is_file()


# -- commit messages -----------------------------------------------------------------------

@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace.create(tmp_path / "repo", make_train_dir(tmp_path))


def message(ws: Workspace, sha: str) -> bytes:
    return subprocess.run(["git", "-C", str(ws.path), "cat-file", "commit", sha],
                          capture_output=True, check=True).stdout.split(b"\n\n", 1)[1]


def test_any_commit_message_reaches_git_without_bytes_it_refuses(ws):
    text = ws.source(ws.baseline)
    hostile = f"attribute: only x\x00y {OSC52} bidi\u202e lone \ud800 end\r\n\nTrial: 1\n"
    sha = ws.write_commit(ws.baseline, hostile, text + "# changed\n")
    assert message(ws, sha) == b"attribute: only xy  bidi lone ? end\n\nTrial: 1\n"


def test_an_attribution_change_named_by_a_line_of_hostile_code_commits_clean(ws):
    """What `attribute` commits: a variant named by its line of code, here one holding raw
    OSC 52 and BEL bytes in a string (valid Python; a NUL is not, so split_changes refuses
    that train.py before any commit)."""
    space = load_space(baseline_dir() / "search_space.toml", "cpu")
    before = ws.source(ws.baseline)
    changes = split_changes(space, before, before + f"print('a{OSC52}b')\n")
    assert len(changes) == 1 and OSC52 in changes[0].name and changes[0].without is not None
    sha = ws.write_commit(ws.baseline, f"attribute: without {changes[0].name}",
                          changes[0].without)
    shown = message(ws, sha).decode()
    assert shown.startswith("attribute: without insert line ") and shown.endswith(
        ": print('ab')"), shown


# -- error lines -----------------------------------------------------------------------------

def test_fail_prints_one_clean_line(capsys):
    exit_ = fail(f"no train.py in /tmp/x{OSC52}\x1b[2J\nsecond line\x00", 2)
    assert isinstance(exit_, typer.Exit) and exit_.exit_code == 2
    err = capsys.readouterr().err
    assert err == "error: no train.py in /tmp/x second line\n"


def test_a_path_with_escapes_in_a_cli_error_does_not_reach_stderr_raw(tmp_path):
    folder = tmp_path / f"train{OSC52}dir"
    folder.mkdir()
    result = runner.invoke(app, ["run", "--train-dir", str(folder), "--sandbox", "local",
                                 "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "has no train.py" in result.stderr
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "traindir" in result.stderr
