"""Output that fits (issue 28, point 3): replay, compare, the live trial lines and the closing
line are read at 80 columns and in pipes. No line is longer than the width, no word of a
rationale or a reason is cut (it wraps, or its column is left out and the table says so),
every header shown is whole, and --wide shows every column with each row on one line."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest
from rich.console import Console
from typer.testing import CliRunner

from agent.analysis.report import REPLAY_COLUMNS, replay_rows, replay_text
from agent.cli.main import app
from agent.loop.progress import RichReporter
from agent.record.rundir import RunDir
from agent.testing.scripted_llm import ScriptedLLM
from agent.testing.synthetic import make_train_dir
from agent.text import clean, markup, reason
from tests.agent.test_text_is_data import diff_after_marker

runner = CliRunner()
PIPE = {"COLUMNS": None}  # unset: a pipe without COLUMNS is 80 columns wide
# under the 120 characters a note keeps of a rationale (agent/loop/trial.py, one_line)
RATIONALE = ("Raise the peak learning rate and shorten the warmup: the loss flattened early "
             "while gradients stayed well-conditioned")
CRASHING = ('raise SystemExit("the attention mask and the sequence length disagree once the '
            'warmup schedule changed shape")')
CRASH_WORDS = "the attention mask and the sequence length disagree".split()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A code-agent session whose trial 1 has a long rationale and whose trial 2 crashes with
    a long reason (its live output as the CLI printed it in a pipe), and a random session to
    compare it with."""
    root = tmp_path_factory.mktemp("width")
    train_dir = make_train_dir(root)
    agent_run, random_run = root / "runs" / "code-agent-long", root / "runs" / "random-short"
    replies = [diff_after_marker("# a comment", RATIONALE),
               diff_after_marker(CRASHING, "crash it " + RATIONALE)]
    with ScriptedLLM(replies) as llm:
        live = runner.invoke(app, ["run", "--method", "code-agent", "--trials", "2",
                                   "--sandbox", "local", "--train-dir", str(train_dir),
                                   "--time-budget", "0.001", "--score", "printed",
                                   "--preflight-steps", "0", "--run-dir", str(agent_run),
                                   "--model", llm.model, "--api-base", llm.api_base], env=PIPE)
    assert live.exit_code == 0, (live.output, live.exception)
    other = runner.invoke(app, ["run", "--method", "random", "--trials", "2", "--sandbox",
                                "local", "--train-dir", str(train_dir), "--time-budget",
                                "0.001", "--run-dir", str(random_run), "--quiet"], env=PIPE)
    assert other.exit_code == 0, other.output
    return agent_run, random_run, live.output


def assert_fits(text: str, width: int = 80) -> None:
    long = [line for line in text.splitlines() if len(line) > width]
    assert not long, f"lines wider than {width}: {long}"


def assert_whole(words: list[str], text: str) -> None:
    shown = set(text.split())
    cut = [w for w in words if w not in shown]
    assert not cut, f"words cut or lost: {cut}\n{text}"


def header_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.lstrip().startswith("trial"))


def test_live_lines_and_the_done_line_fit_a_pipe_and_keep_every_word(runs):
    _, _, live = runs
    assert_fits(live)
    assert_whole(RATIONALE.split() + CRASH_WORDS, live)
    done = live[live.index("done: "):]
    assert_whole("lost to failed trials next: autoresearch replay diff resume".split(), done)
    # a command too long for a line is continued with a backslash, as a shell reads it
    assert re.search(r"autoresearch resume \\\n +\S+code-agent-long --trials 4", done), done
    # a wrapped line is indented under its start, not at the margin
    after = live.splitlines()[live.splitlines().index(
        next(line for line in live.splitlines() if line.startswith("trial    1"))) + 1]
    assert after.startswith(" " * 12) and after.strip()


def test_live_lines_fit_an_80_column_console(runs):
    agent_run, *_ = runs
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, width=80))
    reporter.start(0, 2)
    for note in RunDir(agent_run).notes():
        reporter.finished(note)
    reporter.stop()
    assert_fits(out.getvalue())
    assert_whole(RATIONALE.split() + CRASH_WORDS, out.getvalue())


@pytest.mark.parametrize("how", ["cli-runner", "subprocess pipe"])
def test_replay_fits_80_columns_and_cuts_no_word(runs, how):
    agent_run, *_ = runs
    if how == "cli-runner":
        result = runner.invoke(app, ["replay", str(agent_run)], env=PIPE)
        assert result.exit_code == 0, (result.output, result.exception)
        text = result.output
    else:  # the real CLI writing into a pipe, as `autoresearch replay RUN | less` does
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
        text = subprocess.run([sys.executable, "-c", "from agent.cli.main import app; app()",
                               "replay", str(agent_run)], capture_output=True, text=True,
                              env=env, check=True).stdout
    assert_fits(text)
    header = header_line(text)
    shown = [name for name, *_ in REPLAY_COLUMNS if name in header]
    assert shown[0] == "trial" and "rationale / reason" in shown  # whole, on one line
    left = [name for name, *_ in REPLAY_COLUMNS if name not in shown]
    assert left, "80 columns cannot hold all eight: some are left out"
    assert f"left out to fit 80 columns: {', '.join(left)}" in " ".join(text.split())
    assert_whole(RATIONALE.split() + CRASH_WORDS, text)


def test_replay_wide_shows_every_column_and_each_row_on_one_line(runs):
    agent_run, *_ = runs
    result = runner.invoke(app, ["replay", str(agent_run), "--wide"], env=PIPE)
    assert result.exit_code == 0, (result.output, result.exception)
    header = header_line(result.output)
    assert all(name in header for name, *_ in REPLAY_COLUMNS)
    rows = json.loads(runner.invoke(app, ["replay", str(agent_run), "--json"]).output)
    for r in rows:
        line = next(x for x in result.output.splitlines() if x.lstrip().startswith(
            f"{r['trial']}  {r['commit'][:7]}"))
        said = r["rationale"] if r["status"] == "ok" else r["reason"]
        assert clean(said, one_line=True) in line
    assert "left out" not in result.output


def test_long_session_text_fits_80_columns_and_wide_keeps_rows_whole(runs):
    """replay's plain text, printed for sessions over 200 trials, fits as the table does."""
    agent_run, *_ = runs
    rows = replay_rows(RunDir(agent_run).notes())
    text = replay_text(rows, f"{agent_run}: 3 trials (* = new best)", 80)
    assert_fits(text)
    assert_whole(RATIONALE.split() + CRASH_WORDS, text)
    assert "left out to fit 80 columns" in text
    wide = replay_text(rows, "t", None)
    assert RATIONALE in wide and "left out" not in wide
    assert all(name in wide.splitlines()[1] for name, *_ in REPLAY_COLUMNS)


def test_compare_fits_80_columns_and_wide_shows_every_column(runs):
    agent_run, random_run, _ = runs
    narrow = runner.invoke(app, ["compare", str(agent_run), str(random_run)], env=PIPE)
    assert narrow.exit_code == 0, (narrow.output, narrow.exception)
    assert_fits(narrow.output)
    wide = runner.invoke(app, ["compare", str(agent_run), str(random_run), "--wide"], env=PIPE)
    assert wide.exit_code == 0, (wide.output, wide.exception)
    headers = [line for line in wide.output.splitlines()
               if line.startswith(("run ", "method "))]
    assert len(headers) == 2 and "overhead s" in headers[0] and "95% CI of mean" in headers[1]
    assert "left out" not in wide.output
    for full, left in zip(headers, [line for line in narrow.output.splitlines()
                                    if line.startswith(("run ", "method "))], strict=True):
        names = [n for n in full.split("  ") if n.strip()]
        shown = [n.strip() for n in names if n.strip() in left]
        gone = [n.strip() for n in names if n.strip() not in left]
        assert shown[0] in ("run", "method")  # the first header, whole
        assert gone, "80 columns hold neither table whole"
    said = " ".join(narrow.output.split())
    assert said.count("left out to fit 80 columns:") == 2 and "(--wide shows them)" in said
    assert "code-agent-long" in narrow.output and "random-short" in narrow.output


def test_no_docker_engine_with_an_empty_message_still_says_why(monkeypatch):
    import docker
    import docker.errors

    from sandbox import SandboxError, select_sandbox

    def silent(*args, **kwargs):
        raise docker.errors.DockerException()  # str() is ""

    monkeypatch.setattr(docker, "from_env", silent)
    backend, why = select_sandbox("auto", "none")
    assert backend.name == "local"
    assert why == ("local backend (no Docker engine answers: DockerException; start dockerd "
                   "for the docker backend)")
    with pytest.raises(SandboxError) as asked:
        select_sandbox("docker", "none")
    assert str(asked.value) == ("no Docker engine answers (DockerException): start dockerd, "
                                "or use --sandbox local")


def test_reason_and_markup_never_say_nothing_nor_cut_a_word():
    assert reason(TimeoutError()) == "TimeoutError"
    assert reason(ValueError("  two\nlines ")) == "two lines"
    assert markup("alpha beta gamma", 12) == "alpha beta…"
    assert markup("alphabetagamma", 6) == "alpha…"  # one word longer than the limit: cut
