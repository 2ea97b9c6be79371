"""Steering a running session from another shell: `autoresearch steer RUN "text"` reaches the
LLM's next prompt (the scripted server keeps every request) and llm.jsonl; `autoresearch stop
RUN` ends it cleanly, the trials in flight recorded."""

from __future__ import annotations

import json
import os
import time

from agent.record.workspace import Workspace
from agent.testing.scripted_llm import ScriptedLLM
from tests.agent.processes import autoresearch
from tests.agent.test_llm_methods import edit

TEXT = "prefer a MATRIX_LR below 0.02; leave DEPTH alone"


def wait_for(check, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.2)
    return found


def lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_steer_reaches_the_next_prompt_and_stop_records_the_trials_in_flight(tmp_path,
                                                                            train_dir):
    llm = ScriptedLLM(default=lambda request: edit(
        {"MATRIX_LR": round(0.01 + 0.001 * len(llm.requests), 4)}, "step the lr")).start()
    run = tmp_path / "r"
    try:
        proc = autoresearch(
            "run", "--method", "llm-hpo", "--trials", "500", "--sandbox", "local",
            "--train-dir", str(train_dir), "--time-budget", "0.3", "--workers", "2",
            "--model", llm.model, "--api-base", llm.api_base, "--run-dir", str(run),
            wait=False, env={**os.environ, "COLUMNS": "300"})
        wait_for(lambda: len(lines(run / "trials.jsonl")) >= 2, "two trials")
        asked_before = len(llm.requests)
        code, out = autoresearch("steer", str(run), TEXT)
        assert code == 0 and "the next LLM prompt shows it" in out, out
        prompts = [r["messages"][-1]["content"] for r in llm.requests]
        steered = wait_for(lambda: [p for p in [r["messages"][-1]["content"]
                                                for r in llm.requests][asked_before:]
                                    if TEXT in p], "a prompt with the guidance")
        assert not any(TEXT in p for p in prompts[:asked_before])
        assert "Guidance from the researcher running this search" in steered[0]
        assert steered[0].index(TEXT) < steered[0].index("Task: propose")
        code, out = autoresearch("stop", str(run), "--wait")
        assert code == 0 and "asked the session" in out and "it has stopped" in out, out
        out, _ = proc.communicate(timeout=120)
    finally:
        llm.stop()
    flat = " ".join(out.split())
    assert proc.returncode == 0, out
    assert f"guidance for the next LLM prompts: {TEXT}" in flat
    assert "stopping: asked by `autoresearch stop`" in flat and "stopped by stop" in flat, flat
    records = [json.loads(x) for x in lines(run / "trials.jsonl")]
    refs = Workspace(run / "repo").trial_refs()
    assert 3 <= len(records) < 501
    assert sorted(r["trial"] for r in records) == sorted({0, *refs})  # none left unrecorded
    calls = [json.loads(x) for r in records
             for x in lines(run / "trials" / f"{r['trial']:04d}" / "llm.jsonl")]
    assert {c["guidance"] for c in calls} == {"", TEXT}  # before the steer, and after it
    assert not (run / "stop.request").exists()
    code, out = autoresearch("stop", str(run))
    assert code == 1 and "no session runs in" in out and len(out.strip().splitlines()) == 1


def test_steer_and_stop_refuse_bad_input_in_one_line(tmp_path, train_dir):
    code, out = autoresearch("steer", str(tmp_path / "nowhere"), "text")
    assert code == 2 and "not a session folder" in out and len(out.strip().splitlines()) == 1
    code, out = autoresearch("run", "--method", "random", "--trials", "1", "--sandbox",
                             "local", "--train-dir", str(train_dir), "--time-budget", "0.001",
                             "--run-dir", str(tmp_path / "r"), "--quiet")
    assert code == 0, out
    code, out = autoresearch("steer", str(tmp_path / "r"))
    assert code == 2 and "give the guidance text, or --clear" in out
    code, out = autoresearch("steer", str(tmp_path / "r"), "x" * 5000)
    assert code == 2 and "at most 4000" in out
    code, out = autoresearch("steer", str(tmp_path / "r"), "go deeper")
    assert code == 0 and "random asks no LLM" in out and "no session runs there now" in out
    assert (tmp_path / "r" / "guidance.md").read_text() == "go deeper\n"
    code, out = autoresearch("steer", str(tmp_path / "r"), "--clear")
    assert code == 0 and not (tmp_path / "r" / "guidance.md").exists()
    code, out = autoresearch("stop", str(tmp_path / "r"))
    assert code == 1 and "nothing to stop" in out
