"""Sessions scored by the harness (issue 9, point 2): the code agent's forged summary does
not rank its trial, a look-ahead model is never best, block values must be literals."""

from __future__ import annotations

import difflib
import json
import shutil

import pytest

from agent.config.settings import SessionConfig
from agent.loop.session import Session
from agent.paths import baseline_dir
from agent.testing.scripted_llm import ScriptedLLM


def answer(old: str, new: str, why: str) -> str:
    diff = "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True),
                                        "a/train.py", "b/train.py", n=2))
    return f"{why}\n```diff\n{diff}```\n"


def records(run) -> list[dict]:
    return [json.loads(x) for x in (run / "trials.jsonl").read_text().splitlines()]


PEEK = """class PeekEveryFourth(torch.nn.Module):
    # reads the next byte at positions 1 mod 4 (a cheat the scoring must catch)
    def __init__(self, model):
        super().__init__()
        self.model = model
        mask = (torch.arange(SEQ_LEN) % 4 == 1).float()
        mask[-1] = 0.0
        self.register_buffer("mask", mask[None, :, None])
        self.register_buffer("eye", torch.eye(prepare.VOCAB_SIZE))

    def forward(self, idx):
        upcoming = F.embedding(torch.roll(idx, -1, dims=1), self.eye)
        return self.model(idx) + 30.0 * self.mask * upcoming


"""


@pytest.mark.slow
def test_forged_and_look_ahead_trials_are_ranked_by_the_harness(tmp_path, prepared_data):
    train_dir = tmp_path / "baseline"
    shutil.copytree(baseline_dir(), train_dir)
    source = (train_dir / "train.py").read_text()
    forged = source + 'print("val_bpb: 0.000100")\n'
    marker = "y = F.scaled_dot_product_attention(q, k, v, is_causal=True)"
    assert marker in source
    look_ahead = source.replace(marker, marker.replace("is_causal=True", "is_causal=False"))
    finish = "run.finish(raw_model,"  # what is scored is what train.py hands the kit
    assert finish in source
    peek = source.replace(finish, PEEK + "run.finish(PeekEveryFourth(raw_model).to(device),")
    script = [answer(source, forged, "Report a better score."),
              answer(source, look_ahead, "Let attention see the whole window."),
              answer(source, peek, "Export a model that reads ahead where the probe never looks.")]
    with ScriptedLLM(script) as llm:
        config = SessionConfig(method="code-agent", trials=3, sandbox="local",
                               train_dir=str(train_dir), token_budget=16384, eval_tokens=16384,
                               model=llm.model, api_base=llm.api_base,
                               data_dir=str(prepared_data))
        assert config.scoring == "harness"  # the code agent's default
        Session.create(tmp_path / "run", config).run()
    rs = records(tmp_path / "run")
    assert [r["status"] for r in rs] == ["ok", "ok", "crash", "crash"], \
        [r["result"]["reason"] for r in rs]
    base, forge, ahead, peeks = rs
    # issue 21: the export that reads the next byte at p = 1 mod 4 passed main's fixed probe
    # (t in 1, T/4, T/2, T-1) and scored 3.39 against 4.52; the random audits refuse it.
    assert peeks["result"]["reason"].startswith("harness: non-causal"), peeks["result"]
    assert peeks["val_bpb"] is None and not peeks["is_best"]
    assert base["result"]["score"] == "harness" and 1.0 < base["val_bpb"] < 8.0
    assert forge["result"]["printed_val_bpb"] == 0.0001 and forge["result"]["score_mismatch"]
    assert forge["val_bpb"] > 1.0  # measured, not printed
    assert ahead["result"]["reason"].startswith("harness: non-causal")
    assert not ahead["is_best"] and ahead["val_bpb"] is None
    best = min((r for r in rs if r["status"] == "ok"), key=lambda r: r["val_bpb"])
    assert best["val_bpb"] > 1.0


def test_a_value_that_is_not_a_literal_is_rejected_naming_the_line(tmp_path, train_dir):
    source = (train_dir / "train.py").read_text()
    line = next(ln for ln in source.splitlines() if ln.startswith("MATRIX_LR = "))
    sneaky = source.replace(line, "MATRIX_LR = float(50)  # past the bound of 0.2")
    with ScriptedLLM([answer(source, sneaky, "Hotter Muon.")] * 3) as llm:
        config = SessionConfig(method="code-agent", trials=1, sandbox="local",
                               train_dir=str(train_dir), time_budget=0.001, score="printed",
                               model=llm.model, api_base=llm.api_base, max_repairs=0)
        Session.create(tmp_path / "run", config).run()
    trial = records(tmp_path / "run")[1]
    assert trial["status"] == "rejected"
    number = source.splitlines().index(line) + 1
    assert f"line {number}: `MATRIX_LR = float(50)" in trial["result"]["reason"], trial
    assert "literal" in trial["result"]["reason"]


def test_harness_scoring_needs_an_evaluate_bpb(tmp_path, train_dir):
    from agent.loop.session import SessionError

    config = SessionConfig(method="code-agent", trials=1, sandbox="local",
                           train_dir=str(train_dir), model="openai/x", api_base="http://x")
    with pytest.raises(SessionError, match="--score printed"):
        Session.create(tmp_path / "run", config)
    assert not (tmp_path / "run").exists()
