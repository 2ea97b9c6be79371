"""A model's answer: parse it, validate it the way the session will use it, repair it.

Both answer paths (function calls, or fenced JSON / a fenced diff in the text) end in
`parse_answer`. An invalid answer is an AnswerError whose one-line message (from
prompts/answer_errors.j2) goes back to the model in a repair turn with the valid values
nearest to its own; after `max_repairs` turns the method returns NoAction and the trial is
recorded as rejected.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from typing import Any

from agent.edit.actions import Action, ApplyDiff, EditHyperparameters, NoAction
from agent.edit.block import Value
from agent.edit.space import SearchSpace
from agent.llm.client import PromptTooLong
from agent.llm.prompting import DIFF, EDIT, RATIONALE_CHARS, answer_schema, num, render, texts
from agent.llm.window import message_tokens, room
from agent.protocols import TrialRecord


def say(message: str, *args: Any) -> str:
    """The model-facing text `message` of prompts/answer_errors.j2, filled with `args`."""
    return str(getattr(texts("answer_errors.j2"), message)(*args))


class AnswerError(ValueError):
    """The model's answer cannot be used; the one-line message goes back to it, with `hints`
    (the nearest valid values, when known) for a small model to copy."""

    def __init__(self, message: str, hints: str = ""):
        super().__init__(message)
        self.hints = hints


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z ]+", " ", str(text).lower()).split())


def is_echo(rationale: str) -> bool:
    """The rationale only repeats the schema's description or the example's placeholder
    (prompts/tools.j2 defines both, and what else small models write instead of a reason)."""
    said = texts("tools.j2")
    text = _words(rationale)
    return not text or any(text == _words(p)
                           for p in (said.placeholder, said.rationale, *said.echoes))


# how many of a parameter's nearest values the hints search for two that keep the constraints
HINT_POOL = 64


def nearest_valid(space: SearchSpace, values: dict, base: dict) -> str:
    """For each value outside the space, the valid values nearest to it: within its own
    bounds and grid, and keeping the constraints with the rest of the configuration."""
    bad = {n for n, v in values.items() if n in space.params
           and space.params[n].check(v, space.preset) is not None}
    fine = {**base, **{n: v for n, v in values.items() if n not in bad}}
    out = []
    for name in sorted(bad):
        p, v = space.params[name], values[name]
        if p.type == "categorical":
            out.append(say("one_of", name, p.choices))
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        near = p.nearest(v, HINT_POOL)
        near = [g for g in near if not space.errors({**fine, name: g})] or near
        out.append(say("nearest", name, [num(g) for g in sorted(near[:2])]))
    return "; ".join(out)


# -- parsing ---------------------------------------------------------------------------------

_FENCE = re.compile(r"```(\w*)[ \t]*\n(.*?)```", re.S)


def parse_answer(call: dict, allowed: tuple[str, ...]) -> dict:
    """{"tool": EDIT, "values": {...}, "rationale": ...} or {"tool": DIFF, "patch": ...}."""
    for tc in call.get("tool_calls") or []:
        if tc["name"] not in allowed:
            raise AnswerError(say("unknown_tool", tc["name"], allowed))
        try:
            args = json.loads(tc["arguments"] or "{}")
        except json.JSONDecodeError as e:
            raise AnswerError(say("bad_arguments", tc["name"], e.msg)) from None
        return {"tool": tc["name"], **_as_dict(args)}
    text = call.get("text") or ""
    if DIFF in allowed:
        for lang, body in _FENCE.findall(text):
            if lang in ("diff", "patch", "udiff") or body.lstrip().startswith(("---", "@@")):
                return {"tool": DIFF, "patch": body, "rationale": _prose(text)}
    obj = _first_json(text)
    if obj is None:
        if DIFF in allowed and re.search(r"^(---|\+\+\+|@@)", text, re.M):
            return {"tool": DIFF, "patch": text, "rationale": _prose(text)}
        raise AnswerError(say("no_diff") if DIFF in allowed else say("no_json", allowed[0]))
    tool = obj.get("tool") or obj.get("name") or (DIFF if "patch" in obj else EDIT)
    if tool not in allowed:
        raise AnswerError(say("unknown_tool", tool, allowed))
    if "arguments" in obj and isinstance(obj["arguments"], dict):
        obj = {**obj["arguments"], "tool": tool}
    if tool == EDIT and "values" not in obj:  # a flat {"DEPTH": 6, ...} from a small model
        values = {k: v for k, v in obj.items() if k not in ("tool", "name", "rationale")}
        obj = {"values": values, "rationale": obj.get("rationale", "")}
    return {**obj, "tool": tool}


def _as_dict(args: Any) -> dict:
    if not isinstance(args, dict):
        raise AnswerError(say("not_an_object"))
    return args


def _first_json(text: str) -> dict | None:
    candidates = [body for lang, body in _FENCE.findall(text) if lang in ("json", "", "JSON")]
    candidates += _balanced_objects(text)
    for c in candidates:
        c = c.strip()
        for load in (json.loads, _lenient):
            try:
                obj = load(c)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(obj, dict):
                return obj
    return None


def _lenient(text: str) -> Any:
    """JSON as small models write it: trailing commas, single quotes, True/False/None."""
    text = re.sub(r",\s*([}\]])", r"\1", text)
    text = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b",
                                                                              "None", text)))
    return ast.literal_eval(text)


def _balanced_objects(text: str) -> list[str]:
    out, depth, start = [], 0, None
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0 and start is not None:
                out.append(text[start: i + 1])
    return out


def _prose(text: str) -> str:
    rest = _FENCE.sub("", text).strip()
    return rest.splitlines()[0][:200] if rest else ""


def coerce_values(space: SearchSpace, values: Any) -> dict[str, Value]:
    """The answer's values with obvious type slips fixed ("6" -> 6, 6.0 -> 6); anything else
    (unknown names, out of range, not a power of two) is an AnswerError naming the problem."""
    if not isinstance(values, dict) or not values:
        raise AnswerError(say("no_values"))
    unknown = [k for k in values if k not in space.params]
    if unknown:
        raise AnswerError(say("unknown_names", unknown, space.names))
    out: dict[str, Value] = {}
    for name, v in values.items():
        p = space.params[name]
        if p.type == "categorical":
            out[name] = str(v).strip()
            continue
        if isinstance(v, str):
            try:
                v = float(v.strip())
            except ValueError:
                raise AnswerError(say("not_a_number", name, v)) from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise AnswerError(say("not_a_number", name, v))
        if p.type == "int":
            if not float(v).is_integer():
                raise AnswerError(say("not_an_integer", name, v))
            v = int(v)
        out[name] = float(v) if p.type == "float" else v
    return out


def edit_validator(space: SearchSpace, base: dict[str, Value],
                   pending: list[TrialRecord] = ()) -> Callable[[dict], Action]:
    """Answers to edit_hyperparameters: coerced, merged over `base`, checked against the
    space's bounds and constraints (the errors name the bound), and refused when a running
    trial already tries that very configuration."""
    running = {tuple(sorted(t.config.items())): t.number for t in pending if t.config}

    def validate(answer: dict) -> Action:
        if answer["tool"] != EDIT:
            raise AnswerError(say("wrong_tool", EDIT))
        values = coerce_values(space, answer.get("values"))
        full = {**base, **values}
        errors = space.errors(full)
        if errors:
            raise AnswerError("; ".join(errors), nearest_valid(space, values, base))
        same = running.get(tuple(sorted(full.items())))
        if same is not None:
            raise AnswerError(say("running", same))
        return EditHyperparameters(values, _rationale(answer))
    return validate


def _rationale(answer: dict) -> str:
    """The answer's one-line reason; "" when it only echoes the prompt's placeholder (the
    call is marked `rationale_echo` in llm.jsonl)."""
    text = " ".join(str(answer.get("rationale") or "").split())[:RATIONALE_CHARS]
    return "" if is_echo(text) else text


def diff_action(answer: dict) -> ApplyDiff:
    patch = answer.get("patch")
    if not isinstance(patch, str) or not patch.strip():
        raise AnswerError(say("no_patch"))
    return ApplyDiff(patch, _rationale(answer))


# -- the conversation ------------------------------------------------------------------------

def converse(llm, messages: list[dict], tools: list[dict], allowed: tuple[str, ...],
             validate: Callable[[dict], Action], max_repairs: int, calls: list[dict]) -> Action:
    """Ask, validate, and on an invalid answer repair up to `max_repairs` times quoting the
    error and naming the valid values nearest to the answer; the same answer back after that
    ends the turns (another would get it again). Every call (prompt, raw reply, tokens) is
    appended to `calls`; NoAction when the turns are spent. A model without tool calls on a
    server that can is asked to hold the answer to the tools' schema (any one of them)."""
    use_tools = llm.supports_tools()
    schema = None if use_tools else (answer_schema(tools[0]) if len(tools) == 1 else
                                     {"anyOf": [answer_schema(t) for t in tools]})
    messages = list(messages)
    error, answers, hinted = "", [], False
    limit = room(llm)
    for attempt in range(max_repairs + 1):
        if attempt and limit is not None:  # a repair turn within the window: the last one
            messages = _within(messages, limit, tools if use_tools else None)
            if messages is None:
                return NoAction(say("no_usable_answer", attempt - 1, error), say("invalid"))
        try:
            call = llm.complete(messages, tools=tools if use_tools else None, schema=schema)
        except PromptTooLong as e:
            return NoAction(str(e), say("too_long"))
        calls.append(call.to_dict())
        try:
            answer = parse_answer(call.to_dict(), allowed)
            answers.append(_key(answer))
            calls[-1]["rationale_echo"] = is_echo(answer.get("rationale") or "")
            return validate(answer)
        except AnswerError as e:
            error, hints = str(e), e.hints
        repeated = len(answers) > 1 and answers[-1] == answers[-2]
        if repeated and hinted:  # the same answer after the repair that named valid values
            return NoAction(say("same_again", error), say("invalid"))
        hinted = bool(hints)  # every repair names the valid values nearest to the answer
        calls[-1]["repair_hints"] = hints
        messages = messages + [
            {"role": "assistant", "content": call.text or json.dumps(call.tool_calls)},
            {"role": "user", "content": render("repair.j2", error=error, allowed=allowed,
                                              attempt=attempt + 1, max_repairs=max_repairs,
                                              hints=hints, repeated=repeated)}]
    return NoAction(say("no_usable_answer", max_repairs, error), say("invalid"))


def _within(messages: list[dict], limit: int, tools: list[dict] | None) -> list[dict] | None:
    """The conversation within `limit` tokens: the first prompt and as many of the latest
    answer-and-repair pairs as fit (the last one at least); None when not even that fits."""
    first, turns = messages[:2], messages[2:]
    while turns and message_tokens(first + turns, tools) > limit:
        turns = turns[2:] if len(turns) > 2 else []
    return first + turns if turns else None


def _key(answer: dict) -> str:
    """An answer without its rationale, to notice one that comes back unchanged."""
    return json.dumps({k: v for k, v in answer.items() if k != "rationale"}, sort_keys=True,
                      default=str)
