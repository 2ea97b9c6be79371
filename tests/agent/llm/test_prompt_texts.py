"""Model-facing texts live in prompts/, once each; the LLM methods are LLMMethods by class;
an optimizer's rationale is bare and the session alone writes the trial's subject."""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import pytest

from agent import paths
from agent.edit.space import load_space
from agent.llm import answers, prompting
from agent.llm.answers import AnswerError, is_echo, parse_answer
from agent.llm.client import LLM, LLMConfig
from agent.optimizers import METHODS
from agent.optimizers.centaur import Centaur
from agent.optimizers.code_agent import CodeAgent
from agent.optimizers.llm_hpo import LLMHPO
from agent.protocols import LLMMethod, TrialRecord
from agent.testing.scripted_llm import ScriptedLLM
from tests.agent.test_llm_methods import context, edit, records, session
from tests.agent.test_session import git

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def space():
    return load_space(paths.baseline_dir() / "search_space.toml", "cpu")


@pytest.fixture
def own_prompts(tmp_path, monkeypatch):
    """A copy of prompts/ that the session reads instead of the packaged one."""
    folder = tmp_path / "prompts"
    shutil.copytree(paths.prompts_dir(), folder)
    monkeypatch.setattr(paths, "prompts_dir", lambda: folder)
    monkeypatch.setattr(prompting, "_ENV", None)
    return folder


def test_the_placeholder_has_one_definition(own_prompts, space):
    """Edit the placeholder in prompts/tools.j2 alone: every answer example shows the new
    one and echo detection follows it (the old text is no longer taken for an echo)."""
    tools = own_prompts / "tools.j2"
    old = '{% set placeholder = "one line: why" %}'
    assert old in tools.read_text()
    tools.write_text(tools.read_text().replace(old, '{% set placeholder = "say why briefly" %}'))
    assert is_echo("Say why, briefly.") and not is_echo("one line: why")
    with ScriptedLLM(default=edit({"DEPTH": 5}, "say why briefly")) as llm:
        client = LLM(LLMConfig(llm.model, llm.api_base))
        for method in (LLMHPO, CodeAgent, lambda *a, **k: Centaur(*a, ratio=1.0, warmup=0, **k)):
            action = method(space, 0, space.defaults(), llm=client).ask([], [], context(space))
            prompt = llm.requests[-1]["messages"][-1]["content"]
            assert '"rationale": "say why briefly"}' in prompt
            assert "one line: why\"" not in prompt
            assert action.rationale == ""  # the echo is not a description


def test_tool_descriptions_come_from_prompts(own_prompts, space):
    tools = own_prompts / "tools.j2"
    tools.write_text(tools.read_text().replace("the others stay.", "the rest stay put."))
    assert prompting.edit_tool(space)["function"]["description"].endswith("the rest stay put.")


def test_no_model_facing_text_is_spelled_in_python():
    said = prompting.texts("tools.j2")
    texts = [said.placeholder, said.rationale, said.edit_description, said.diff_description,
             said.patch_description]
    sources = {p: p.read_text() for p in (ROOT / "agent").rglob("*.py")}
    for text in texts:
        assert not [p for p, s in sources.items() if text in s], text
    with pytest.raises(AnswerError, match="no JSON object found"):
        parse_answer({"text": "nothing"}, ("edit_hyperparameters",))
    for phrase in ("no JSON object found", "is running this very configuration",
                   "no usable answer after", "llm answer invalid"):
        assert not [p for p, s in sources.items() if phrase in s], phrase


def test_every_message_answers_py_says_is_defined():
    used = set(re.findall(r'say\("(\w+)"', Path(answers.__file__).read_text()))
    errors = prompting.texts("answer_errors.j2")
    assert used and all(callable(getattr(errors, name, None)) for name in used), used


def test_llm_methods_are_llm_methods_by_class(space):
    llm_methods = {Centaur, LLMHPO, CodeAgent}
    for cls in METHODS.values():
        assert issubclass(cls, LLMMethod) is (cls in llm_methods), cls
    for cls in llm_methods:
        opt = cls(space, 0, space.defaults())
        assert isinstance(opt, LLMMethod)
        assert not {"attach", "take_calls"} & set(vars(opt))  # nothing patched on instances
        again = pickle.loads(pickle.dumps(opt))
        again.attach("client")
        assert again.seat.llm == "client" and again.take_calls() == []


def test_centaur_returns_bare_rationales_and_names_its_proposer(space):
    with ScriptedLLM(default=edit({"MATRIX_LR": 0.03}, "lower lr")) as llm:
        opt = Centaur(space, 0, space.defaults(), llm=LLM(LLMConfig(llm.model, llm.api_base)),
                      ratio=0.5, warmup=1)
        history = [TrialRecord(0, "ok", space.defaults(), 2.0)]
        opt.tell(opt.cmaes.ask([]), history[0])
        actions = [opt.ask(history, [], context(space, n)) for n in (1, 2, 3)]
    assert [a.proposer for a in actions] == ["cmaes", "cmaes", "llm"]  # i = t - warmup - 1
    assert actions[0].rationale.startswith("generation ")
    assert actions[2].rationale == "lower lr"


def test_an_echoed_rationale_falls_back_in_one_place(tmp_path, train_dir):
    """Centaur's LLM turn and llm-hpo alike: an echoed rationale is recorded empty and the
    subject shows the action's kind, written by the session alone."""
    with ScriptedLLM(default=edit({"MATRIX_LR": 0.06}, "one line: why")) as llm:
        session(tmp_path, train_dir, llm, method="centaur", trials=2, llm_warmup=0,
                llm_ratio=0.5).run()
    rs = records(tmp_path / "run")
    assert rs[2]["llm_calls"] and rs[2]["rationale"] == ""
    assert rs[2]["action"]["proposer"] == "llm"
    subject = git(tmp_path / "run" / "repo", "log", "-1", "--format=%s", "refs/trials/0002")
    assert subject.strip() == "centaur llm: edit_hyperparameters", subject
    subject = git(tmp_path / "run" / "repo", "log", "-1", "--format=%s", "refs/trials/0001")
    assert subject.startswith("centaur cmaes: generation 1, candidate "), subject
