"""Text is data (issue 21, point 6): what a trial, a model or a run folder wrote never steers
the terminal, the markup, git or the session's own process.

One session through the CLI carries the hostile text everywhere it can go: a rationale and a
code comment with rich markup (`[/dim]`), OSC 52 (clipboard write), OSC 8 (a link), CSI and
NUL, then a trial that crashes printing the same. The session, its resume, replay, diff and
attribute must finish and print the text literally, without one control byte.
"""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.config.settings import SessionConfig
from agent.edit.actions import ApplyDiff, EditHyperparameters
from agent.edit.block import non_literal, read_block
from agent.edit.space import load_space
from agent.llm.client import LLM, LLMConfig
from agent.loop.session import Session
from agent.optimizers.base import TrialContext
from agent.optimizers.code_agent import CodeAgent
from agent.paths import baseline_dir
from agent.testing.scripted_llm import ScriptedLLM
from agent.testing.synthetic import ScriptedOptimizer, make_train_dir
from agent.text import clean, markup
from tests.agent.test_session import git

runner = CliRunner()
ENV = {"COLUMNS": "200"}

OSC52 = "\x1b]52;c;ZXZpbA==\x07"  # write "evil" to the clipboard
OSC8 = "\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\"  # a link
CSI = "\x1b[2J\x1b[31m"  # clear the screen, red
HOSTILE = f"[batch, seq] [/dim] osc52 {OSC52} osc8 {OSC8} csi {CSI} nul\x00 bel\x07 c1\x9b1m end"
# bytes that must never reach stdout: ESC, BEL, NUL, the 8-bit CSI / OSC / ST
FORBIDDEN = [b"\x1b", b"\x07", b"\x00", "\x9b".encode(), "\x9d".encode(), "\x9c".encode()]
# the same text as Python escapes in train.py: printed raw by the crashing trial
CRASH = ('raise SystemExit("[/dim] crash [batch, seq] \\x1b]52;c;ZXZpbA==\\x07 '
         '\\x1b]8;;http://evil.example\\x1b\\\\link\\x1b]8;;\\x1b\\\\ \\x1b[31m nul\\x00 end")')
MARKER = "# --- end hyperparameters ---"


def fenced(obj: dict) -> str:
    return "Here it is.\n```json\n" + json.dumps(obj) + "\n```\n"


def diff_after_marker(added: str, why: str) -> str:
    patch = (f"--- a/train.py\n+++ b/train.py\n@@ -1,1 +1,2 @@\n {MARKER}\n+{added}\n")
    return fenced({"tool": "apply_diff", "patch": patch, "rationale": why})


def assert_clean(output: bytes) -> None:
    found = [b for b in FORBIDDEN if b in output]
    assert not found, f"control bytes {found} reached stdout: {output[:400]!r}"


@pytest.fixture(scope="module")
def dirty_run(tmp_path_factory):
    """A code-agent session: trial 1 an ok trial whose rationale and code comment are hostile,
    then (on resume) trial 2, which crashes printing hostile text."""
    root = tmp_path_factory.mktemp("dirty")
    train_dir = make_train_dir(root)
    run = root / "run"
    comment = f"# [/dim] [batch, seq] {OSC52} {OSC8} {CSI} code"
    replies = [diff_after_marker(comment, HOSTILE), diff_after_marker(CRASH, "crash " + HOSTILE)]
    with ScriptedLLM(replies) as llm:
        common = ["--model", llm.model, "--api-base", llm.api_base]
        first = runner.invoke(app, ["run", "--method", "code-agent", "--trials", "1",
                                    "--sandbox", "local", "--train-dir", str(train_dir),
                                    "--time-budget", "0.001", "--score", "printed",
                                    "--preflight-steps", "0", "--run-dir", str(run), *common],
                              env=ENV)
        again = runner.invoke(app, ["resume", str(run), "--trials", "2", *common], env=ENV)
    return run, first, again


def test_hostile_rationale_and_crash_reason_do_not_kill_the_session_nor_its_resume(dirty_run):
    run, first, again = dirty_run
    assert first.exit_code == 0, (first.output, first.exception)
    assert again.exit_code == 0, (again.output, again.exception)
    rows = [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "ok", "crash"]
    assert "[/dim]" in first.output and "[/dim] crash" in again.output  # shown, literally
    assert "[batch, seq]" in first.output
    assert_clean(first.stdout_bytes)
    assert_clean(again.stdout_bytes)


def test_replay_prints_hostile_text_literally_and_no_control_bytes(dirty_run):
    run, *_ = dirty_run
    table = runner.invoke(app, ["replay", str(run)], env=ENV)
    assert table.exit_code == 0, (table.output, table.exception)
    assert "[batch, seq]" in table.output and "[/dim]" in table.output
    assert_clean(table.stdout_bytes)
    for trial in ("1", "2"):
        one = runner.invoke(app, ["replay", str(run), "--trial", trial, "--diff"], env=ENV)
        assert one.exit_code == 0, (one.output, one.exception)
        assert "[/dim]" in one.output
        assert_clean(one.stdout_bytes)
    crashed = runner.invoke(app, ["replay", str(run), "--trial", "2", "--diff"], env=ENV)
    assert "crash [batch, seq]" in crashed.output  # the crash line of train.log, in the tail


def test_replay_of_a_long_session_strips_control_bytes(dirty_run, tmp_path):
    from agent.analysis.report import replay_text

    row = {"trial": 1, "commit": "abcdef0", "method": "code-agent", "status": "crash",
           "val_bpb": None, "best_val_bpb": None, "is_best": False, "added": 1, "removed": 0,
           "rationale": HOSTILE, "reason": "crash " + HOSTILE}
    text = replay_text([row], "t", 200)
    assert "[batch, seq] [/dim]" in text
    assert_clean(text.encode())


def test_diff_strips_control_bytes(dirty_run):
    run, *_ = dirty_run
    out = runner.invoke(app, ["diff", str(run), "0", "1"], env=ENV)
    assert out.exit_code == 0, (out.output, out.exception)
    assert "+# [/dim] [batch, seq]" in out.output
    assert_clean(out.stdout_bytes)


def test_attribute_survives_markup_in_the_code(dirty_run):
    run, *_ = dirty_run
    out = runner.invoke(app, ["attribute", str(run), "--to", "1", "--seeds", "1",
                              "--sandbox", "local"], env=ENV)
    assert out.exit_code == 0, (out.output, out.exception)
    assert "[/dim] [batch, seq]" in out.output  # the change is named by its code line
    assert_clean(out.stdout_bytes)


def test_a_nul_in_a_rationale_commits_without_it(tmp_path, monkeypatch):
    train_dir = make_train_dir(tmp_path)
    scripted = ScriptedOptimizer([EditHyperparameters({"DEPTH": 5}, "deeper\x00 still\x1b[2J")])
    monkeypatch.setattr("agent.loop.session.make_optimizer", lambda *a, **k: scripted)
    config = SessionConfig(trials=1, sandbox="local", train_dir=str(train_dir),
                           time_budget=0.001, preflight_steps=0)
    Session.create(tmp_path / "run", config).run()
    message = git(tmp_path / "run" / "repo", "log", "-1", "--format=%B", "refs/trials/0001")
    assert message.startswith("tpe: deeper still") and "\x00" not in message
    assert "\x1b" not in message
    note = json.loads((tmp_path / "run" / "trials.jsonl").read_text().splitlines()[1])
    assert note["rationale"] == "deeper still" and note["status"] == "ok"


# -- the code agent reads constants, it never computes them ------------------------------------

INCUMBENT = "DEPTH = 4  # layers\nTOTAL_BATCH_SIZE = 2**12\nprint('hello')\n"
BOMBS = {
    "huge string": '"a" * 10**11',
    "deep unary": "-" * 100_000 + "4",
    "long chain": "+".join(["1"] * 200_000),
    "power tower": "((((9**64)**64)**64)**64)**64",
}


def code_agent_diff(new_line: str, old_line: str = "DEPTH = 4  # layers") -> str:
    patch = f"--- a/train.py\n+++ b/train.py\n@@ -1,1 +1,1 @@\n-{old_line}\n+{new_line}\n"
    return fenced({"tool": "apply_diff", "patch": patch, "rationale": "try it"})


def ask_code_agent(replies: list[str]):
    space = load_space(baseline_dir() / "search_space.toml", "cpu")
    with ScriptedLLM(replies) as llm:
        agent = CodeAgent(space, 0, space.defaults(),
                          llm=LLM(LLMConfig(llm.model, llm.api_base)))
        ctx = TrialContext(trial=1, incumbent_source=INCUMBENT,
                           incumbent_config=space.defaults(), device="cpu", memory="8g",
                           budget="60 s", preset="cpu")
        t0 = time.monotonic()
        action = agent.ask([], [], ctx)
        return action, time.monotonic() - t0, llm.requests


@pytest.mark.parametrize("what", list(BOMBS))
def test_a_code_agent_constant_is_refused_quickly_with_a_one_line_reason(what):
    fallback = fenced({"tool": "edit_hyperparameters", "values": {"DEPTH": 3},
                       "rationale": "plain"})
    action, seconds, requests = ask_code_agent([code_agent_diff("DEPTH = " + BOMBS[what]),
                                                fallback])
    assert action == EditHyperparameters({"DEPTH": 3}, "plain")  # after one repair turn
    assert seconds < 10
    repair = requests[1]["messages"][-1]["content"]
    assert "DEPTH" in repair or "train.py" in repair
    reason = next(ln for ln in repair.splitlines() if "DEPTH" in ln or "train.py" in ln)
    assert len(reason) < 400


def test_a_code_agent_may_still_write_powers_of_two():
    action, _, _ = ask_code_agent([code_agent_diff("TOTAL_BATCH_SIZE = 2**13",
                                                   "TOTAL_BATCH_SIZE = 2**12")])
    assert isinstance(action, ApplyDiff)


def test_block_constants_are_read_within_bounds():
    block = read_block("A = 2**19\nB = -1e-3\nC = 'SSSL'\nD = 3 * 2**10\nE = 10**400\n"
                       "F = 'a' * 10**11\n")
    assert {n: a.value for n, a in block.items()} == {"A": 2**19, "B": -1e-3, "C": "SSSL",
                                                      "D": 3072}
    assert block["A"].text == "2**19"
    bad = non_literal("DEPTH = 'a' * 10**11\n", ["DEPTH"])
    assert len(bad) == 1 and "\n" not in bad[0]


# -- the helper itself -------------------------------------------------------------------------

def test_clean_and_markup():
    assert clean(HOSTILE) == "[batch, seq] [/dim] osc52  osc8 click csi  nul bel c1 end"
    assert clean("a\tb\nc\r\n") == "a\tb\nc\n"
    assert clean("a\tb\nc", one_line=True) == "a b c"
    assert clean("lone \ud800 surrogate") == "lone ? surrogate"
    from rich.console import Console

    console = Console(width=200, record=True, color_system=None)
    slash = "ends with a backslash\\"
    console.print(f"[dim]{markup(HOSTILE)}[/dim] then [dim]{markup(slash)}[/dim] after")
    shown = console.export_text()
    assert "[batch, seq] [/dim] osc52" in shown and shown.rstrip().endswith("backslash\\ after")
    assert markup("x" * 50, 10) == "x" * 9 + "…"
