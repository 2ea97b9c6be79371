"""LLM methods end to end against a scripted model behind a real local HTTP server.

litellm is used for real (HTTP, JSON, tool calls, usage); only the model is scripted.
"""

from __future__ import annotations

import json
import math
import re
import threading

import numpy as np
import pytest

from agent.config.settings import SessionConfig
from agent.edit.actions import ApplyDiff, EditHyperparameters, NoAction
from agent.edit.space import load_space
from agent.llm.client import LLM, LLMConfig, LLMError
from agent.llm.window import MARGIN, estimate_tokens, message_tokens
from agent.loop.session import Session
from agent.optimizers.base import TrialContext, TrialRecord
from agent.optimizers.centaur import Centaur
from agent.optimizers.code_agent import CodeAgent
from agent.optimizers.llm_hpo import LLMHPO
from agent.testing.scripted_llm import ScriptedLLM
from tests.agent.test_session import git


def fenced(obj: dict) -> str:
    return "Here is my proposal.\n```json\n" + json.dumps(obj) + "\n```\n"


def edit(values: dict, why: str = "scripted") -> str:
    return fenced({"tool": "edit_hyperparameters", "values": values, "rationale": why})


def records(run) -> list[dict]:
    return [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]


def session(tmp_path, train_dir, llm: ScriptedLLM, **kw) -> Session:
    config = SessionConfig(**{"method": "llm-hpo", "trials": 3, "sandbox": "local",
                              "train_dir": str(train_dir), "time_budget": 0.001,
                              "model": llm.model, "api_base": llm.api_base, **kw})
    return Session.create(tmp_path / "run", config)


@pytest.fixture
def space():
    from agent.paths import baseline_dir

    return load_space(baseline_dir() / "search_space.toml", "cpu")


def context(space, trial=1) -> TrialContext:
    return TrialContext(trial=trial, incumbent_source="", incumbent_config=space.defaults(),
                        device="cpu, 2 cores", memory="8g", budget="60 s of training",
                        preset="cpu")


# -- llm.py ----------------------------------------------------------------------------------

def test_llm_records_tokens_latency_and_zero_cost_for_local_models():
    with ScriptedLLM(["hello there"]) as llm:
        call = LLM(LLMConfig(llm.model, llm.api_base)).complete([{"role": "user",
                                                                  "content": "x" * 400}])
    assert call.text == "hello there"
    assert call.prompt_tokens == 100 and call.completion_tokens == 2
    assert call.cost_usd == 0.0 and call.latency_s > 0


def test_a_dead_server_is_a_clear_error_after_retries():
    llm = ScriptedLLM([]).start()
    base = llm.api_base
    llm.stop()
    client = LLM(LLMConfig("openai/scripted", base, retries=1, backoff_s=0.01))
    with pytest.raises(LLMError, match=r"cannot reach model openai/scripted at .* after 2 "
                                       r"tries.*then resume"):
        client.complete([{"role": "user", "content": "hi"}])


# -- llm-hpo ---------------------------------------------------------------------------------

def test_llm_hpo_session_runs_the_scripted_proposals(tmp_path, train_dir):
    replies = [edit({"MATRIX_LR": 0.05, "DEPTH": 5}, "more depth"),
               edit({"WARMDOWN_RATIO": 0.6}, "longer warmdown"),
               edit({"WINDOW_PATTERN": "LLLL"}, "full attention")]
    with ScriptedLLM(replies) as llm:
        session(tmp_path, train_dir, llm).run()
    rs = records(tmp_path / "run")
    assert [r["status"] for r in rs] == ["ok"] * 4
    assert rs[1]["config"]["MATRIX_LR"] == 0.05 and rs[1]["config"]["DEPTH"] == 5
    assert rs[1]["rationale"] == "more depth"
    assert rs[3]["config"]["WINDOW_PATTERN"] == "LLLL"
    # tokens and cost per trial, the prompt and raw reply saved per trial
    assert rs[1]["tokens"]["prompt"] > 100 and rs[1]["tokens"]["completion"] > 5
    assert rs[1]["cost_usd"] == 0.0 and rs[1]["llm_calls"] == 1 and rs[1]["llm_valid"] is True
    saved = [json.loads(x) for x in
             (tmp_path / "run" / "trials" / "0001" / "llm.jsonl").read_text().splitlines()]
    assert saved[0]["text"] == replies[0]
    prompt = saved[0]["messages"][-1]["content"]
    assert "cpu, " in prompt and "memory limit of 8g" in prompt  # the trial's real resources
    assert "- MATRIX_LR: float 0.005..0.2, log scale" in prompt
    assert "MATRIX_LR=0.08" in prompt.split("Current best configuration")[1]


def test_malformed_answers_get_repair_turns_then_rejected(tmp_path, train_dir):
    replies = ["I think depth matters.",  # no JSON: repair
               edit({"DEPTH": 99}),  # out of range: repair quoting the bound
               edit({"DEPTH": 6}, "fixed it"),  # valid after two repairs
               "nonsense", "still nonsense", "more nonsense"]  # trial 2: rejected
    with ScriptedLLM(replies) as llm:
        session(tmp_path, train_dir, llm, trials=2).run()
        requests = llm.requests
    rs = records(tmp_path / "run")
    assert [r["status"] for r in rs] == ["ok", "ok", "rejected"]
    assert rs[1]["config"]["DEPTH"] == 6 and rs[1]["llm_calls"] == 3
    repair_1 = requests[1]["messages"][-1]["content"]
    repair_2 = requests[2]["messages"][-1]["content"]
    assert "no JSON object found" in repair_1
    assert "DEPTH = 99 is above the upper bound 8" in repair_2
    assert rs[2]["llm_valid"] is False and "after 2 repair turns" in rs[2]["result"]["reason"]
    assert not (tmp_path / "run" / "trials" / "0002" / "train.log").exists()


def test_tool_calls_are_parsed_by_the_same_path(space):
    reply = {"tool": "edit_hyperparameters",
             "arguments": {"values": {"HEAD_DIM": "64", "DEPTH": 6.0}, "rationale": "wider"}}
    with ScriptedLLM([reply]) as llm:
        opt = LLMHPO(space, 0, space.defaults(),
                     llm=LLM(LLMConfig(llm.model, llm.api_base, tools=True)))
        action = opt.ask([], [], context(space))
        assert llm.requests[0]["tools"][0]["function"]["name"] == "edit_hyperparameters"
        schema = llm.requests[0]["tools"][0]["function"]["parameters"]
    assert action == EditHyperparameters({"HEAD_DIM": 64, "DEPTH": 6}, "wider")
    props = schema["properties"]["values"]["properties"]
    assert props["DEPTH"] == {"type": "integer", "enum": [2, 3, 4, 5, 6, 7, 8],
                              "description": "number of transformer layers"}
    assert props["HEAD_DIM"]["enum"] == [16, 32, 64]
    lr = props["MATRIX_LR"]
    assert (lr["type"], lr["minimum"], lr["maximum"]) == ("number", 0.005, 0.2)
    assert schema["properties"]["values"]["properties"]["WINDOW_PATTERN"]["enum"][0] == "SSSL"


def test_a_server_that_dies_mid_session_stops_it_cleanly_and_resume_goes_on(
        tmp_path, train_dir):
    from typer.testing import CliRunner

    from agent.cli.main import app

    llm = ScriptedLLM([edit({"DEPTH": 5}, "first")]).start()

    def die(request):
        threading.Thread(target=llm.stop).start()
        return edit({"DEPTH": 6}, "last words")

    llm.replies.append(die)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "run", "--method", "llm-hpo", "--trials", "4", "--sandbox", "local", "--quiet",
        "--train-dir", str(train_dir), "--time-budget", "0.001", "--model", llm.model,
        "--api-base", llm.api_base, "--run-dir", str(run)])
    assert result.exit_code == 1
    assert "cannot reach model" in result.output and "autoresearch resume" in result.output
    assert [r["status"] for r in records(run)] == ["ok", "ok", "ok"]  # nothing lost
    with ScriptedLLM(default=edit({"DEPTH": 3}, "back")) as again:
        result = CliRunner().invoke(app, ["resume", str(run), "--api-base", again.api_base,
                                          "--quiet"])
    assert result.exit_code == 0, result.output
    rs = records(run)
    assert [r["trial"] for r in rs] == [0, 1, 2, 3, 4]
    assert [r["config"]["DEPTH"] for r in rs[1:]] == [5, 6, 3, 3]


# -- centaur ---------------------------------------------------------------------------------

def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def test_centaur_prompt_holds_cmaes_state_at_that_moment(space):
    with ScriptedLLM(default=edit({"MATRIX_LR": 0.03}, "lower lr")) as llm:
        opt = Centaur(space, 4, space.defaults(), llm=LLM(LLMConfig(llm.model, llm.api_base)),
                      ratio=0.5, warmup=2)
        history: list[TrialRecord] = []
        for n in range(6):
            if n == 0:
                action = EditHyperparameters(space.defaults(), "baseline")
            else:
                expect_llm = opt.is_llm_turn(n)
                mean, sigma, cov = opt.cmaes.mean, opt.cmaes.sigma, opt.cmaes.covariance
                candidate = opt.cmaes.peek()
                before = len(llm.requests)
                action = opt.ask(history, [], context(space, n))
                assert (len(llm.requests) > before) == expect_llm
                if expect_llm:
                    prompt = llm.requests[-1]["messages"][-1]["content"]
                    table = prompt.split("CMA-ES next candidate\n")[1].splitlines()
                    rows = {ln.split(" | ")[0]: ln.split(" | ") for ln in table
                            if " | " in ln}
                    names = opt.cmaes.encoding.names
                    shown_mean = [float(rows[n][1]) for n in names]
                    assert np.allclose(shown_mean, mean, rtol=1e-5, atol=1e-9)
                    real = opt.cmaes.mean_config()
                    assert all(rows[n][2] == _fmt(real[n]) for n in names)
                    assert all(rows[n][3] == _fmt(candidate[n]) for n in names)
                    assert f"Step size sigma (unit cube): {sigma:.6g}" in prompt
                    cov_rows = prompt.split("N(0, C)):\n")[1].splitlines()[:len(names)]
                    shown = np.array([[float(x) for x in r.split(": ", 1)[1].split()]
                                      for r in cov_rows])
                    assert np.allclose(shown, cov, rtol=1e-3, atol=1e-9)
                    assert action.values["MATRIX_LR"] == 0.03  # the LLM's, told to CMA-ES
                    assert action.proposer == "llm" and action.rationale == "lower lr"
            value = 2.0 + 0.01 * n
            record = TrialRecord(n, "ok", action.values, value)
            opt.tell(action, record)
            history.append(record)
    assert any(o.config.get("MATRIX_LR") == 0.03 for o in opt.cmaes.observations)


def test_centaur_ratio_is_a_fraction_not_every_kth():
    from agent.paths import baseline_dir

    space = load_space(baseline_dir() / "search_space.toml", "cpu")
    for ratio, warmup in ((0.3, 10), (0.15, 5), (0.5, 0), (1.0, 3)):
        opt = Centaur(space, 0, space.defaults(), ratio=ratio, warmup=warmup)
        turns = [opt.is_llm_turn(t) for t in range(1, warmup + 101)]
        assert not any(turns[:warmup])
        assert sum(turns[warmup:]) == round(100 * ratio)


def test_centaur_with_ratio_0_is_cmaes_trial_for_trial(tmp_path, train_dir):
    with ScriptedLLM([]) as llm:
        Session.create(tmp_path / "c", SessionConfig(
            method="centaur", llm_ratio=0.0, trials=5, seed=9, sandbox="local",
            train_dir=str(train_dir), time_budget=0.001, model=llm.model,
            api_base=llm.api_base)).run()
        assert llm.requests == []
    Session.create(tmp_path / "m", SessionConfig(
        method="cmaes", trials=5, seed=9, sandbox="local", train_dir=str(train_dir),
        time_budget=0.001)).run()
    assert [r["config"] for r in records(tmp_path / "c")] == \
        [r["config"] for r in records(tmp_path / "m")]


def test_centaur_session_with_llm_turns(tmp_path, train_dir):
    with ScriptedLLM(default=edit({"MATRIX_LR": 0.06}, "try 0.06")) as llm:
        session(tmp_path, train_dir, llm, method="centaur", trials=4, llm_warmup=1,
                llm_ratio=0.5).run()
    rs = records(tmp_path / "run")
    llm_trials = [r["trial"] for r in rs if r["llm_calls"]]
    assert llm_trials == [3]  # i = t - warmup - 1; ratio 0.5 gives the LLM i = 1, 3, ...
    assert rs[3]["config"]["MATRIX_LR"] == 0.06 and rs[3]["status"] == "ok"
    subject = git(tmp_path / "run" / "repo", "log", "-1", "--format=%s", "refs/trials/0003").strip()
    assert subject == "centaur llm: try 0.06", subject  # the method named once
    # what users read (the live line, replay) says which of Centaur's two proposed it
    from agent.analysis.report import replay_rows
    from agent.record.rundir import RunDir

    shown = [r["rationale"] for r in replay_rows(RunDir(tmp_path / "run").notes())]
    assert shown[3] == "llm: try 0.06" and shown[1].startswith("cmaes: generation 1"), shown


# -- code agent ------------------------------------------------------------------------------

def test_code_agent_applies_a_scripted_diff_and_repairs_a_broken_one(tmp_path, train_dir):
    source = (train_dir / "train.py").read_text()
    line = next(ln for ln in source.splitlines() if ln.startswith("print(\"step 1"))
    good = (f"Print more progress.\n```diff\n--- a/train.py\n+++ b/train.py\n@@ -1 +1,2 @@\n"
            f" {line}\n+print(\"step 2 loss 2.9\")\n```\n")
    broken = ("```diff\n--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-THIS LINE IS NOT THERE\n"
              "+x = 1\n```\n")
    with ScriptedLLM([broken, good, broken, broken, broken]) as llm:
        session(tmp_path, train_dir, llm, method="code-agent", trials=2,
                score="printed").run()
        repair = llm.requests[1]["messages"][-1]["content"]
    assert "THIS LINE IS NOT THERE" in repair  # the repair quotes the unmatched lines
    rs = records(tmp_path / "run")
    assert [r["status"] for r in rs] == ["ok", "ok", "rejected"]
    assert rs[1]["action"]["kind"] == "apply_diff"
    assert "step 2 loss 2.9" in (tmp_path / "run" / "trials" / "0001" / "train.log").read_text()
    assert "+print(\"step 2 loss 2.9\")" in rs[1]["diff"]


def test_a_code_agent_answer_without_diff_or_json_is_told_the_diff_format():
    """Issue 28: the built-in model's prose got "answer with one ```json block holding
    {"tool": "apply_diff"...}", a format the code agent's prompt never asks for."""
    from agent.llm.answers import AnswerError, parse_answer

    with pytest.raises(AnswerError) as info:
        parse_answer({"text": "I would change the schedule."}, ("apply_diff",
                                                                 "edit_hyperparameters"))
    assert str(info.value).startswith("no diff found: answer with a one-line rationale, then "
                                      "one unified diff of train.py in a ```diff block")
    with pytest.raises(AnswerError, match="no JSON object found"):
        parse_answer({"text": "nothing"}, ("edit_hyperparameters",))


def test_code_agent_prompt_shows_the_incumbent_and_recent_diffs(space, tmp_path):
    with ScriptedLLM(default=edit({"DEPTH": 3})) as llm:
        opt = CodeAgent(space, 0, space.defaults(), llm=LLM(LLMConfig(llm.model, llm.api_base)))
        ctx = context(space, 2)
        ctx.incumbent_source = "DEPTH = 4  # layers\nprint('hello')\n"
        history = [TrialRecord(0, "ok", space.defaults(), 2.5),
                   TrialRecord(1, "oom", None, None, reason="killed by the host memory limit",
                               rationale="bigger batch", diff="-DEPTH = 4\n+DEPTH = 8\n")]
        action = opt.ask(history, [], ctx)
        prompt = llm.requests[0]["messages"][-1]["content"]
    assert "print('hello')" in prompt and "+DEPTH = 8" in prompt
    assert "trial 1 oom" in prompt and "killed by the host memory limit" in prompt
    assert action == EditHyperparameters({"DEPTH": 3}, "scripted")
    assert not isinstance(action, (ApplyDiff, NoAction))


def test_code_agent_on_a_schema_holding_server_is_asked_for_json_of_either_tool(space):
    """Issue 28: the built-in model (no tool calls, a server that holds answers to a JSON
    schema) answered the code agent in prose, 3 trials of 3 rejected. Its server is now asked
    to hold the answer to either tool's schema, and the prompt shows that JSON, not a fence."""
    patch = "--- a/train.py\n+++ b/train.py\n@@\n DEPTH = 4  # layers\n+print('more')\n"
    answer = json.dumps({"tool": "apply_diff", "patch": patch, "rationale": "print more"})
    with ScriptedLLM([answer]) as llm:
        client = LLM(LLMConfig(llm.model, llm.api_base, tools=False, structured=True))
        opt = CodeAgent(space, 0, space.defaults(), llm=client)
        ctx = context(space, 1)
        ctx.incumbent_source = "DEPTH = 4  # layers\nprint('hello')\n"
        action = opt.ask([TrialRecord(0, "ok", space.defaults(), 2.5)], [], ctx)
        request = llm.requests[0]
    schema = request["response_format"]["schema"]
    assert [s["properties"]["tool"]["enum"] for s in schema["anyOf"]] == [
        ["apply_diff"], ["edit_hyperparameters"]]
    prompt = request["messages"][-1]["content"]
    assert 'Answer with one JSON object' in prompt and '{"tool": "apply_diff", "patch": ' in prompt
    assert "in a ```diff block" not in prompt
    assert isinstance(action, ApplyDiff) and "+print('more')" in action.patch


def test_a_repair_names_the_nearest_valid_values_and_a_repeat_stops(tmp_path, train_dir):
    """Issue 15: an invalid answer -> the repair quotes the error and names the valid values
    nearest to it (powers of two that keep TOTAL_BATCH_SIZE 4096 >= DEVICE_BATCH_SIZE * 256);
    the same answer back after that -> no further turn is wasted; a different invalid answer
    gets the next turn."""
    bad = edit({"DEVICE_BATCH_SIZE": 100})
    replies = [bad, edit({"DEVICE_BATCH_SIZE": 8}, "copied"),  # trial 1: fixed
               bad, bad,  # trial 2: stopped at the repeat
               bad, edit({"DEVICE_BATCH_SIZE": 200}), edit({"DEVICE_BATCH_SIZE": 4})]  # 3
    with ScriptedLLM(replies) as llm:
        session(tmp_path, train_dir, llm, trials=3, max_repairs=4).run()
        requests = llm.requests
    rs = records(tmp_path / "run")
    repair = requests[1]["messages"][-1]["content"]
    assert "above the upper bound 64" in repair
    assert "Valid values nearest to yours: DEVICE_BATCH_SIZE: 8 or 16" in repair
    assert "same answer" not in repair
    assert rs[1]["status"] == "ok" and rs[1]["config"]["DEVICE_BATCH_SIZE"] == 8
    assert rs[2]["status"] == "rejected" and rs[2]["llm_calls"] == 2  # not 5
    assert "the same invalid answer after a repair that named" in rs[2]["result"]["reason"]
    assert rs[3]["status"] == "ok" and rs[3]["llm_calls"] == 3, rs[3]["result"]["reason"]
    assert rs[3]["config"]["DEVICE_BATCH_SIZE"] == 4
    assert "DEVICE_BATCH_SIZE = 200 is above the upper bound 64" in \
        requests[6]["messages"][-1]["content"]


def test_an_echoed_rationale_is_not_the_trial_description(tmp_path, train_dir):
    with ScriptedLLM([edit({"DEPTH": 5}, "one line: why"),
                      edit({"DEPTH": 6}, "deeper nets fit this corpus")]) as llm:
        session(tmp_path, train_dir, llm, trials=2).run()
    rs = records(tmp_path / "run")
    assert rs[1]["rationale"] == "" and rs[2]["rationale"] == "deeper nets fit this corpus"
    calls = [json.loads(x) for x in
             (tmp_path / "run" / "trials" / "0001" / "llm.jsonl").read_text().splitlines()]
    assert calls[-1]["rationale_echo"] is True


@pytest.mark.parametrize("text, echo", [
    ("one line: why", True), ("One line: why this should help.", True), ("", True),
    ("Rationale", True), ("halve the batch: it ran out of memory", False),
    ("why not deeper", False)])
def test_the_echo_detector(text, echo):
    from agent.llm.answers import is_echo

    assert is_echo(text) is echo


def test_prompts_put_the_constant_part_first(tmp_path, train_dir):
    """Issue 15: what is the same for every call of a session (legend, rules, answer format)
    comes before what changes (current best, history, task), so llama.cpp evaluates only the
    tail of the second prompt: consecutive prompts share their whole constant prefix."""
    with ScriptedLLM([edit({"DEPTH": 5}, "deeper"), edit({"DEPTH": 6}, "deeper still"),
                      edit({"DEPTH": 3}, "shallower")]) as llm:
        session(tmp_path, train_dir, llm, trials=3).run()
        prompts = [r["messages"][-1]["content"] for r in llm.requests]
    constant = prompts[0].split("Current best configuration")[0]
    assert "Answer with one JSON object" in constant and "Rule:" in constant
    assert all(p.startswith(constant) for p in prompts)
    assert len(constant) > 0.5 * len(prompts[0])  # most of the prompt is reused
    assert prompts[1] != prompts[0]


@pytest.mark.parametrize("method", ["centaur", "llm-hpo"])
def test_a_small_models_prompt_is_the_last_one_plus_its_new_lines(space, method):
    """Issue 15, compact prompts (the built-in models): the history is one list in trial
    order, placed before what changes every call (CMA-ES's state, the current best, the
    best three, the task), so each prompt starts with the whole history of the one before;
    trial 0 is written in full, later trials as what they changed from it (3 digits)."""
    with ScriptedLLM(default=edit({"MATRIX_LR": 0.03125}, "lower lr")) as llm:
        client = LLM(LLMConfig(llm.model, llm.api_base, compact=True))
        opt = Centaur(space, 4, space.defaults(), llm=client, ratio=1.0, warmup=0) \
            if method == "centaur" else LLMHPO(space, 4, space.defaults(), llm=client)
        history = [TrialRecord(0, "ok", space.defaults(), 2.0)]
        opt.tell(EditHyperparameters(space.defaults(), "baseline"), history[0])
        prompts = []
        for n in range(1, 5):
            action = opt.ask(history, [], context(space, n))
            prompts.append(llm.requests[-1]["messages"][-1]["content"])
            record = TrialRecord(n, "ok", {**space.defaults(), **action.values}, 2.0 - n / 100)
            opt.tell(action, record)
            history.append(record)
    for before, after in zip(prompts, prompts[1:], strict=False):
        listed = before[:before.index("\n\n", before.index("Trials in order"))]
        assert after.startswith(listed)  # llama.cpp evaluates only what follows
    last = prompts[-1]
    baseline = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in space.defaults().items())
    assert f"- trial 0 ok 2.0000: {baseline}\n" in last
    line = next(x for x in last.splitlines() if x.startswith("- trial 2 ok 1.9800: "))
    assert "MATRIX_LR=0.0312" in line
    if method == "llm-hpo":  # it changed one value; CMA-ES's candidate changes them all
        assert line == "- trial 2 ok 1.9800: MATRIX_LR=0.0312"
    assert last.index("Trials in order") < last.index("4 trials so far, 0 failed.") \
        < last.index("Task:")
    assert "4 trials so far, 0 failed. Best (lowest val_bpb first): trial 3 1.9700; trial 2 " \
           "1.9800; trial 1 1.9900." in last
    if method == "centaur":
        assert "Covariance C" not in last and "spread (unit" in last
        assert last.index("Trials in order") < last.index("CMA-ES samples")


def test_a_long_history_window_moves_in_steps():
    from agent.llm.prompting import WINDOW, WINDOW_STEP, history_view

    class Small:
        config = LLMConfig("m", compact=True)

    history = [TrialRecord(n, "ok", {"DEPTH": n}, 3.0 - n / 1000) for n in range(40)]
    starts = []
    for count in range(2, 41):
        view = history_view(history[:count], Small())
        listed = [t.number for t in view["listed"]]
        assert listed[0] == 0 and listed[-1] == count - 1  # trial 0, then up to the newest
        assert len(listed) <= WINDOW + 1
        starts.append(listed[1])
    assert sorted(set(starts)) == [1, 1 + WINDOW_STEP, 1 + 2 * WINDOW_STEP]
    assert starts == sorted(starts)  # it only moves on, a step at a time


# -- a small context window (issue 28) -------------------------------------------------------

MARKER_LINE = re.compile(r"^# \.\.\. lines \d+-\d+ of train\.py are not shown here.*$", re.M)


def long_train_dir(train_dir):
    """The synthetic train.py made far longer than a 4096-token window by helpers it never
    calls (they read no hyperparameter: the excerpt leaves them out first)."""
    helpers = "".join(
        f"\n\ndef helper_{i}(values):\n    \"\"\"Never called: it only makes train.py long.\"\"\"\n"
        f"    total = 0\n    for v in values:\n        total += v * {i} + len(str(v))\n"
        "    return total\n" for i in range(120))
    path = train_dir / "train.py"
    path.write_text(path.read_text() + helpers)
    return train_dir


def shown_source(request) -> list[str]:
    prompt = request["messages"][1]["content"]
    return prompt.split("```python\n", 1)[1].split("\n```\n", 1)[0].splitlines()


def crossing_diff(request) -> str:
    """A hunk across the first marker after a shown line of the train.py the prompt shows."""
    lines = shown_source(request)
    at = next(i for i, line in enumerate(lines) if i and MARKER_LINE.match(line))
    return (f"Say more.\n```diff\n--- a/train.py\n+++ b/train.py\n@@\n {lines[at - 1]}\n"
            f" {lines[at]}\n+print('more')\n```\n")


def depth_diff(request) -> str:
    """A diff of the DEPTH line, copied from the train.py the prompt shows."""
    line = next(x for x in shown_source(request) if x.startswith("DEPTH = "))
    return (f"One more layer.\n```diff\n--- a/train.py\n+++ b/train.py\n@@\n-{line}\n"
            f"+{line.replace('DEPTH = 4', 'DEPTH = 5')}\n```\n")


def test_the_code_agent_fits_every_prompt_into_a_small_window(tmp_path, train_dir,
                                                              monkeypatch):
    """Issue 28, point 5: a train.py far over the model's 4096-token window; every request
    (first prompts and repair turns) fits by the server's own count, so none is refused; the
    prompt shows the hyperparameter block in full and marks what it leaves out; a hunk across
    a marker goes back to the model; the session ends normally (exit 0)."""
    from typer.testing import CliRunner

    from agent.cli.main import app
    from agent.llm import window

    # the window of this model, as litellm's model list says it for API models
    monkeypatch.setattr(window, "window_tokens", lambda config: 4096)
    train_dir = long_train_dir(train_dir)
    assert estimate_tokens((train_dir / "train.py").read_text()) > 2 * 4096
    run = tmp_path / "run"
    replies = [crossing_diff, depth_diff, edit({"WARMDOWN_RATIO": 0.6}, "longer warmdown")]
    with ScriptedLLM(replies, default=edit({"MATRIX_LR": 0.05}, "lower lr"),
                     context_window=4096) as llm:
        result = CliRunner().invoke(app, [
            "run", "--method", "code-agent", "--trials", "3", "--sandbox", "local", "--quiet",
            "--train-dir", str(train_dir), "--time-budget", "0.001", "--score", "printed",
            "--model", llm.model, "--api-base", llm.api_base, "--run-dir", str(run)])
        requests, refused = llm.requests, llm.refused
    assert result.exit_code == 0, result.output
    assert refused == []  # no request over the window
    assert all(message_tokens(r["messages"]) + r["max_tokens"] <= 4096 for r in requests)
    first = requests[0]["messages"][1]["content"]
    block = (train_dir / "train.py").read_text().split("# --- end hyperparameters ---")[0]
    assert block in first and MARKER_LINE.search(first)
    assert "helper_119" not in first
    assert "hunk 1 crosses the marker" in requests[1]["messages"][-1]["content"]
    rs = records(run)
    assert [r["status"] for r in rs] == ["ok", "ok", "ok", "ok"]
    assert rs[1]["config"]["DEPTH"] == 5 and rs[1]["action"]["kind"] == "apply_diff"
    assert rs[2]["config"]["WARMDOWN_RATIO"] == 0.6


def test_a_server_refusing_a_prompt_as_too_long_rejects_the_trial_and_the_session_goes_on(
        tmp_path, train_dir):
    """Issue 28: a model whose window the session does not know refuses the prompt (HTTP 400,
    llama.cpp's words): the trial is rejected with the server's reason, not the session."""
    from typer.testing import CliRunner

    from agent.cli.main import app

    run = tmp_path / "run"
    with ScriptedLLM(default=edit({"DEPTH": 5}), context_window=1024) as llm:
        result = CliRunner().invoke(app, [
            "run", "--method", "code-agent", "--trials", "2", "--sandbox", "local", "--quiet",
            "--train-dir", str(train_dir), "--time-budget", "0.001", "--score", "printed",
            "--model", llm.model, "--api-base", llm.api_base, "--run-dir", str(run)])
        refused = llm.refused
    assert result.exit_code == 0, result.output
    assert len(refused) == 2  # one per trial: the second was still asked
    rs = records(run)
    assert [r["status"] for r in rs] == ["ok", "rejected", "rejected"]
    reason = rs[1]["result"]["reason"]
    assert "refused the prompt as longer than its context window" in reason
    assert "This model's maximum context length is 1024 tokens" in reason
    assert rs[1]["rationale"] == "prompt too long for the model"


def test_the_window_is_the_sessions_else_litellms_else_unknown():
    from agent.llm.window import window_tokens

    assert window_tokens(LLMConfig("openai/smollm2-135m", context_window=8192)) == 8192
    assert window_tokens(LLMConfig("gpt-4o")) == 128000  # litellm's model list
    assert window_tokens(LLMConfig("openai/scripted")) is None


@pytest.mark.parametrize("method, window", [("code-agent", 8192), ("llm-hpo", 6144)])
def test_a_long_history_is_cut_to_fit_the_window(space, method, window):
    """60 trials (with their diffs, beside train.py, for the code agent) would not fit the
    window: the prompt lists fewer of them (the counts stay whole) and the server takes it."""
    from agent.paths import baseline_dir

    history = [TrialRecord(0, "ok", space.defaults(), 2.5)] + [
        TrialRecord(n, "ok" if n % 3 else "crash", {**space.defaults(), "DEPTH": 2 + n % 6},
                    2.5 - n / 1000 if n % 3 else None, reason="" if n % 3 else "exit 1",
                    rationale=f"attempt {n} with a rather long rationale " * 3,
                    diff=("-DEPTH = 4  # layers\n+DEPTH = 5  # layers\n" * 30))
        for n in range(1, 60)]
    ctx = context(space, 60)
    ctx.incumbent_source = (baseline_dir() / "train.py").read_text()
    with ScriptedLLM(default=edit({"DEPTH": 3}), context_window=window) as llm:
        client = LLM(LLMConfig(llm.model, llm.api_base, context_window=window))
        opt = CodeAgent(space, 0, space.defaults(), llm=client) if method == "code-agent" \
            else LLMHPO(space, 0, space.defaults(), llm=client)
        action = opt.ask(history, [], ctx)
        prompt = llm.requests[0]["messages"][-1]["content"]
        refused = llm.refused
    assert refused == [] and action == EditHyperparameters({"DEPTH": 3}, "scripted")
    assert "History: 60 trials, 19 failed." in prompt
    listed = re.findall(r"^- trial (\d+) ", prompt, re.M)
    assert 0 < len(listed) < 20 and "59" in listed  # the latest stay
    if method == "code-agent":
        assert "DEPTH = 4  # number of transformer layers" in prompt


def test_a_prompt_that_cannot_fit_is_no_proposal_and_no_call(space):
    """Not even the hyperparameter block fits 700 tokens beside the rest: NoAction with the
    reason (the trial is rejected), and the model is not called."""
    from agent.paths import baseline_dir

    ctx = context(space, 1)
    ctx.incumbent_source = (baseline_dir() / "train.py").read_text()
    with ScriptedLLM(default=edit({"DEPTH": 3})) as llm:
        client = LLM(LLMConfig(llm.model, llm.api_base, context_window=700, max_tokens=64))
        action = CodeAgent(space, 0, space.defaults(), llm=client).ask([], [], ctx)
        requests = llm.requests
    assert isinstance(action, NoAction) and requests == []
    assert action.reason.startswith("the prompt does not fit the model's context window even "
                                    "with train.py and the history cut down")
    assert action.rationale == "prompt too long for the model"


def test_repair_turns_past_the_window_drop_the_older_ones(space):
    """The window holds the first prompt and one answer-and-repair pair, not two: the third
    call carries the first prompt and the latest pair only, and the server takes every call."""
    history = [TrialRecord(0, "ok", space.defaults(), 2.5)]
    nonsense = "no idea at all " * 40
    with ScriptedLLM(default=nonsense) as llm:
        LLMHPO(space, 0, space.defaults(), llm=LLM(LLMConfig(llm.model, llm.api_base,
                                                             max_tokens=64))).ask(
            history, [], context(space))
        grown = [message_tokens(r["messages"]) for r in llm.requests]
    first, pair = grown[0], grown[1] - grown[0]
    usable = first + pair + pair // 2  # the room a window leaves for the messages
    window = math.ceil((usable + 64) / (1 - MARGIN)) + 1
    with ScriptedLLM(default=nonsense, context_window=window) as llm:
        client = LLM(LLMConfig(llm.model, llm.api_base, max_tokens=64, context_window=window))
        action = LLMHPO(space, 0, space.defaults(), llm=client).ask(history, [],
                                                                    context(space))
        requests, refused = llm.requests, llm.refused
    assert isinstance(action, NoAction) and refused == []
    assert [len(r["messages"]) for r in requests] == [2, 4, 4]
    assert "(attempt 2 of 2)" in requests[2]["messages"][-1]["content"]
