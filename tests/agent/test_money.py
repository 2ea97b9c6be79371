"""--max-usd on the scripted LLM server (its replies carry a known cost: --llm-usd-per-mtok
prices its token counts): warnings at 50 and 80 %, a clean stop before a call that could cross
the cap, the pricing snapshot in the run folder, an exact continuation with a raised cap; and
--gpu-usd-per-hour for the sandbox's share."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.config.settings import SessionConfig
from agent.llm.pricing import cut_usd, load_snapshots, pricing_for
from agent.loop.progress import QuietReporter
from agent.loop.session import Session
from agent.testing.scripted_llm import ScriptedLLM
from tests.agent.test_llm_methods import edit

PRICES = [100.0, 10.0]  # USD per million prompt / answer tokens
runner = CliRunner()


class Said(QuietReporter):
    def __init__(self):
        self.lines: list[str] = []

    def note(self, text: str) -> None:
        self.lines.append(text)


def by_trial(request) -> str:
    """The same answer for the same trial, whenever it is asked (a resume asks again)."""
    n = int(re.search(r"Task: propose trial (\d+)", request["messages"][-1]["content"])[1])
    return edit({"MATRIX_LR": round(0.01 + 0.002 * n, 4)}, f"lr for trial {n}")


def session(tmp_path, train_dir, llm, name, said=None, **kw) -> Session:
    config = SessionConfig(**{"method": "llm-hpo", "trials": 60, "sandbox": "local",
                              "train_dir": str(train_dir), "time_budget": 0.001,
                              "model": llm.model, "api_base": llm.api_base,
                              "llm_usd_per_mtok": PRICES, **kw})
    return Session.create(tmp_path / name, config, said)


def records(run) -> list[dict]:
    return [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]


def calls(run) -> list[dict]:
    files = [run / "trials" / f"{r['trial']:04d}" / "llm.jsonl" for r in records(run)]
    return [json.loads(line) for f in files if f.exists() for line in f.read_text().splitlines()]


def test_the_session_stops_before_a_call_that_could_cross_the_cap(tmp_path, train_dir):
    with ScriptedLLM(default=by_trial) as llm:
        said = Said()
        outcome = session(tmp_path, train_dir, llm, "parts", said, max_usd=1.0).run()
        run = tmp_path / "parts"
        assert outcome.stopped_by == "money" and 3 < outcome.trials_run < 60
        spent = sum(r["cost_usd"] for r in records(run))
        assert 0.8 <= spent <= 1.0
        for call in calls(run):  # each cost is the snapshot's prices times its tokens
            assert call["cost_usd"] == pytest.approx(
                (call["prompt_tokens"] * PRICES[0] + call["completion_tokens"] * PRICES[1]) / 1e6)
        warned = [x for x in said.lines if "of --max-usd $1" in x and "%" in x]
        assert [x.split(": ")[1].split(" ")[0] for x in warned] == ["50%", "80%"]
        m = re.search(r"spent \$([\d.]+) of --max-usd \$1; the next LLM call could cost up to "
                      r"\$([\d.]+)", outcome.why)
        assert m and float(m[1]) == pytest.approx(spent, abs=1e-4)
        assert float(m[1]) + float(m[2]) > 1.0  # the refused call could have crossed it
        assert "--max-usd MORE" in outcome.why
        snapshot = load_snapshots(run / "pricing.json")
        assert len(snapshot) == 1 and snapshot[0]["from_trial"] == 1
        assert (snapshot[0]["input_usd_per_mtok"], snapshot[0]["output_usd_per_mtok"],
                snapshot[0]["source"]) == (100.0, 10.0, "--llm-usd-per-mtok")
        # a raised cap goes on exactly where one session with it would be
        path = run / "session.toml"
        SessionConfig(**{**SessionConfig.load(path).model_dump(), "max_usd": 2.0}).save(path)
        again = Session.open(run).run()
        assert again.stopped_by == "money" and again.trials_run > outcome.trials_run
        whole = session(tmp_path, train_dir, llm, "whole", max_usd=2.0).run()
        assert whole.trials_run == again.trials_run
        assert [r["config"] for r in records(run)] == \
            [r["config"] for r in records(tmp_path / "whole")]
        assert sum(r["cost_usd"] for r in records(run)) <= 2.0


def test_the_sandbox_share_counts_at_the_gpu_rate(tmp_path, train_dir):
    config = SessionConfig(method="random", trials=200, sandbox="local",
                           train_dir=str(train_dir), time_budget=0.05,
                           gpu_usd_per_hour=3600.0, max_usd=4.0)  # $1 a second
    outcome = Session.create(tmp_path / "r", config).run()
    notes = records(tmp_path / "r")
    spent = sum(r["cost_s"] for r in notes)  # in dollars at $1/s
    assert outcome.stopped_by == "money" and "a typical trial costs" in outcome.why
    assert 1 < outcome.trials_run < 200 and spent <= 4.0 + max(r["cost_s"] for r in notes)
    assert load_snapshots(tmp_path / "r" / "pricing.json")[0]["gpu_usd_per_hour"] == 3600.0
    result = runner.invoke(app, ["replay", str(tmp_path / "r")])
    assert f"(LLM $0.0000, sandbox ${spent:,.4f})" in " ".join(result.output.split())


def test_prices_come_from_the_option_litellms_list_or_are_free_on_this_machine():
    known = pricing_for("gpt-4o-mini", False, None, None)
    assert (known.input_usd_per_mtok, known.output_usd_per_mtok) == pytest.approx((0.15, 0.6))
    assert "litellm" in known.source
    assert pricing_for("openai/some-model", True, None, 2.0).source.endswith("free")
    unknown = pricing_for("openai/no-such-model-anywhere", False, None, None)
    assert unknown.input_usd_per_mtok == 0 and "--llm-usd-per-mtok" in unknown.source
    assert pricing_for("openai/x", False, [1.0, 2.0], None).call_usd(10**6, 10**6) == 3.0


@pytest.mark.parametrize("args,option", [
    (["--llm-usd-per-mtok", "cheap"], "--llm-usd-per-mtok"),
    (["--llm-usd-per-mtok", "1,2,3"], "--llm-usd-per-mtok"),
    (["--max-usd", "-1"], "--max-usd"),
    (["--gpu-usd-per-hour", "nan"], "--gpu-usd-per-hour")])
def test_bad_money_options_are_one_line(tmp_path, train_dir, args, option):
    result = runner.invoke(app, ["run", "--method", "random", "--trials", "1", "--sandbox",
                                 "local", "--train-dir", str(train_dir), "--run-dir",
                                 str(tmp_path / "r"), *args])
    assert result.exit_code == 2 and option in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_calls_of_an_ask_the_cap_cut_short_are_kept_and_counted(tmp_path, train_dir):
    """Every first answer needs a repair turn: the cap can fall between the two calls of one
    proposal; the first call was paid for and no trial records it."""
    def broken_then_good(request) -> str:
        if len(request["messages"]) == 2:  # the first turn of a proposal
            return "I would change things, but no JSON here."
        return by_trial({"messages": [request["messages"][1]]})

    for cap in (0.9, 1.0, 1.1, 1.2):
        with ScriptedLLM(default=broken_then_good) as llm:
            outcome = session(tmp_path, train_dir, llm, f"cut{cap}", max_usd=cap).run()
        run = tmp_path / f"cut{cap}"
        assert outcome.stopped_by == "money"
        said = float(re.search(r"spent \$([\d.]+) of", outcome.why)[1])
        recorded = sum(r["cost_usd"] for r in records(run))
        cut = cut_usd(run / "optimizer" / "cut-calls.jsonl")
        assert said == pytest.approx(recorded + cut, abs=1e-4) and said <= cap
        if cut:
            lines = (run / "optimizer" / "cut-calls.jsonl").read_text().splitlines()
            assert json.loads(lines[0])["trial"] == outcome.trials_run + 1
            result = runner.invoke(app, ["replay", str(run)], env={"COLUMNS": "400"})
            assert "on an ask the cap cut short" in " ".join(result.output.split())
            return
    pytest.fail("no cap fell between the two calls of a proposal")
