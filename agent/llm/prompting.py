"""What the LLM methods share: tool schemas from the space, prompts, parsing, repair turns.

Both tools are offered as function-calling tools where the model supports them; otherwise the
same JSON schema goes into the prompt and the model answers with a fenced JSON object (or a
fenced diff). Both paths end in `parse_answer`, and every answer is validated the way the
session will use it. An invalid answer gets up to `max_repairs` turns that quote the error;
after that the method returns NoAction and the trial is recorded as rejected.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from agent.edit.actions import Action, ApplyDiff, EditHyperparameters, NoAction
from agent.edit.block import SearchSpace, Value
from agent.optimizers.base import TrialRecord

EDIT, DIFF = "edit_hyperparameters", "apply_diff"


class AnswerError(ValueError):
    """The model's answer cannot be used; the one-line message goes back to it, with `hints`
    (the nearest valid values, when known) for a small model to copy."""

    def __init__(self, message: str, hints: str = ""):
        super().__init__(message)
        self.hints = hints


# what a model writes when it copies the prompt's placeholder instead of a reason
PLACEHOLDERS = ("one line: why this should help", "one line: why", "why this should help",
                "rationale", "one line", "why", "reason", "...", "your rationale here")


def is_echo(rationale: str) -> bool:
    """The rationale only repeats the schema's description or the example's placeholder."""
    text = re.sub(r"[^a-z ]+", " ", str(rationale).lower())
    text = " ".join(text.split())
    return not text or any(text == " ".join(re.sub(r"[^a-z ]+", " ", p).split())
                           for p in PLACEHOLDERS)


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
            out.append(f"{name}: one of {', '.join(p.choices)}")
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if p.power_of_two:
            grid = [2 ** k for k in range(0, 40) if p.low <= 2 ** k <= p.high]
        elif p.type == "int":
            grid = sorted({int(p.low), int(p.high), int(min(max(v, p.low), p.high))})
        else:
            grid = [float(min(max(v, p.low), p.high))]
        grid = [g for g in grid if not space.errors({**fine, name: g})] or grid
        near = sorted(sorted(grid, key=lambda g: (abs(g - v), g))[:2])
        out.append(f"{name}: {' or '.join(_num(g) for g in near)}")
    return "; ".join(out)


def edit_tool(space: SearchSpace) -> dict:
    """edit_hyperparameters with a JSON schema generated from the space: types, bounds, enums."""
    props: dict[str, Any] = {}
    for name, p in space.params.items():
        if p.type == "categorical":
            props[name] = {"type": "string", "enum": list(p.choices), "description": p.help}
            continue
        help_ = p.help + (" (log scale)" if p.log else "")
        if p.type == "int" and (p.power_of_two or p.high - p.low <= 64):
            # the allowed integers themselves: a constrained decoder can then only pick these
            allowed = ([2 ** e for e in range(int(p.low).bit_length() - 1,
                                             int(p.high).bit_length())]
                       if p.power_of_two else list(range(int(p.low), int(p.high) + 1)))
            props[name] = {"type": "integer", "enum": allowed, "description": help_}
            continue
        props[name] = {"type": "integer" if p.type == "int" else "number",
                       "minimum": p.low, "maximum": p.high, "description": help_}
    return {"type": "function", "function": {
        "name": EDIT,
        "description": "Set hyperparameters of train.py to new values; the others stay.",
        "parameters": {"type": "object", "properties": {
            "values": {"type": "object", "properties": props, "additionalProperties": False},
            "rationale": {"type": "string", "description": "one line: why this should help"}},
            "required": ["values", "rationale"]}}}


def diff_tool() -> dict:
    return {"type": "function", "function": {
        "name": DIFF,
        "description": "Change train.py with a unified diff (train.py only).",
        "parameters": {"type": "object", "properties": {
            "patch": {"type": "string", "description": "a unified diff of train.py"},
            "rationale": {"type": "string", "description": "one line: why this should help"}},
            "required": ["patch", "rationale"]}}}


_ENV: Environment | None = None


def render(template: str, **context) -> str:
    global _ENV
    if _ENV is None:
        from agent.paths import prompts_dir

        _ENV = Environment(loader=FileSystemLoader(str(prompts_dir())), undefined=StrictUndefined,
                           trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        _ENV.filters["num"] = _num
        _ENV.filters["short"] = _short
        _ENV.globals["changes"] = changes
    return _ENV.get_template(template).render(**context)


def _num(value: Any, digits: int = 6) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


# a small local model's history: at most this many trials in order, the window moving on in
# steps of WINDOW_STEP so that consecutive prompts of a session share their first lines
WINDOW, WINDOW_STEP = 24, 12


def history_view(history: list[TrialRecord], llm=None) -> dict:
    """The bounded slice of history a prompt shows (constant size, whatever the session's
    length): the best 5 successes and the last 20 trials, failures included.

    For a small local model (`compact`: slow prompt processing, short attention) it is one
    list in trial order instead, each trial written as what it changed from trial 0 with 3
    digits: the list of the previous call is the start of the next one, which llama.cpp then
    does not evaluate again. The best 3 follow it."""
    ok = sorted((t for t in history if t.ok), key=lambda t: t.val_bpb)
    view = {"count": len(history), "failed": sum(not t.ok for t in history),
            "compact": bool(llm is not None and getattr(llm.config, "compact", False))}
    if not view["compact"]:
        return {**view, "top": ok[:5], "recent": history[-20:]}
    first = history[0] if history and history[0].number == 0 and history[0].config else None
    rest = history[1:] if first else history
    skip = 0 if len(rest) < WINDOW else ((len(rest) - WINDOW) // WINDOW_STEP + 1) * WINDOW_STEP
    return {**view, "top": ok[:3], "base": first, "skipped": skip,
            "listed": ([first] if first else []) + rest[skip:]}


def changes(config: dict | None, base: TrialRecord | None) -> str:
    """A configuration as `NAME=value` pairs (3 digits), only those that differ from the
    base trial's when there is one."""
    before = (base.config or {}) if base is not None else {}
    pairs = [f"{k}={_short(v)}" for k, v in (config or {}).items()
             if k not in before or before[k] != v]
    return " ".join(pairs) if pairs or base is None else "as trial 0"


def _short(value: Any) -> str:
    return _num(value, 3)


def example_values(space: SearchSpace, k: int = 2) -> dict:
    """A concrete `values` object for the answer format: small models copy examples, so it
    holds real names with valid values (the space's defaults: the same in every prompt of a
    session, so the prompt's constant prefix stays constant)."""
    defaults = space.defaults()
    return {n: defaults[n] for n in space.names[:k]}


# -- parsing ---------------------------------------------------------------------------------

_FENCE = re.compile(r"```(\w*)[ \t]*\n(.*?)```", re.S)


def parse_answer(call: dict, allowed: tuple[str, ...]) -> dict:
    """{"tool": EDIT, "values": {...}, "rationale": ...} or {"tool": DIFF, "patch": ...}."""
    for tc in call.get("tool_calls") or []:
        if tc["name"] not in allowed:
            raise AnswerError(f"unknown tool {tc['name']!r}: use {' or '.join(allowed)}")
        try:
            args = json.loads(tc["arguments"] or "{}")
        except json.JSONDecodeError as e:
            raise AnswerError(f"the {tc['name']} arguments are not valid JSON: {e.msg}") from None
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
        raise AnswerError("no JSON object found: answer with one ```json block holding "
                          '{"tool": "' + allowed[0] + '", ...} as described')
    tool = obj.get("tool") or obj.get("name") or (DIFF if "patch" in obj else EDIT)
    if tool not in allowed:
        raise AnswerError(f"unknown tool {tool!r}: use {' or '.join(allowed)}")
    if "arguments" in obj and isinstance(obj["arguments"], dict):
        obj = {**obj["arguments"], "tool": tool}
    if tool == EDIT and "values" not in obj:  # a flat {"DEPTH": 6, ...} from a small model
        values = {k: v for k, v in obj.items() if k not in ("tool", "name", "rationale")}
        obj = {"values": values, "rationale": obj.get("rationale", "")}
    return {**obj, "tool": tool}


def _as_dict(args: Any) -> dict:
    if not isinstance(args, dict):
        raise AnswerError("the tool arguments must be a JSON object")
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
        raise AnswerError('"values" must be a non-empty object of NAME: value')
    unknown = [k for k in values if k not in space.params]
    if unknown:
        raise AnswerError(f"unknown hyperparameters {', '.join(map(str, unknown))}: use only "
                          + ", ".join(space.names))
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
                raise AnswerError(f"{name} = {v!r} is not a number") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise AnswerError(f"{name} = {v!r} is not a number")
        if p.type == "int":
            if not float(v).is_integer():
                raise AnswerError(f"{name} = {v!r} must be an integer")
            v = int(v)
        out[name] = float(v) if p.type == "float" else v
    return out


# -- the conversation ------------------------------------------------------------------------

@dataclass
class Proposal:
    action: Action
    valid: bool
    repairs: int


def answer_schema(tool: dict) -> dict:
    """The JSON answer of the prompt path as a schema: {"tool": name, ...its arguments}."""
    fn = tool["function"]
    params = fn["parameters"]
    return {"type": "object",
            "properties": {"tool": {"type": "string", "enum": [fn["name"]]},
                           **params["properties"]},
            "required": ["tool", *params.get("required", [])]}


def converse(llm, messages: list[dict], tools: list[dict], allowed: tuple[str, ...],
             validate: Callable[[dict], Action], max_repairs: int, calls: list[dict]) -> Proposal:
    """Ask, validate, and on an invalid answer repair up to `max_repairs` times quoting the
    error and naming the valid values nearest to the answer; the same answer back after that
    ends the turns (another would get it again). Every call (prompt, raw reply, tokens) is
    appended to `calls`. With one tool and a model without tool calls, a server that can is
    asked to hold the answer to its schema."""
    use_tools = llm.supports_tools()
    schema = answer_schema(tools[0]) if len(tools) == 1 and not use_tools else None
    messages = list(messages)
    error, answers, hinted = "", [], False
    for attempt in range(max_repairs + 1):
        call = llm.complete(messages, tools=tools if use_tools else None, schema=schema)
        calls.append(call.to_dict())
        try:
            answer = parse_answer(call.to_dict(), allowed)
            answers.append(_key(answer))
            calls[-1]["rationale_echo"] = is_echo(answer.get("rationale") or "")
            return Proposal(validate(answer), True, attempt)
        except AnswerError as e:
            error, hints = str(e), e.hints
        repeated = len(answers) > 1 and answers[-1] == answers[-2]
        if repeated and hinted:  # the same answer after the repair that named valid values
            return Proposal(NoAction(f"the same invalid answer after a repair that named "
                                     f"the valid values: {error}", "llm answer invalid"),
                            False, attempt)
        hinted = bool(hints)  # every repair names the valid values nearest to the answer
        calls[-1]["repair_hints"] = hints
        messages = messages + [
            {"role": "assistant", "content": call.text or json.dumps(call.tool_calls)},
            {"role": "user", "content": render("repair.j2", error=error, allowed=allowed,
                                              attempt=attempt + 1, max_repairs=max_repairs,
                                              hints=hints, repeated=repeated)}]
    return Proposal(NoAction(f"no usable answer after {max_repairs} repair turns: {error}",
                             "llm answer invalid"), False, max_repairs)


def _key(answer: dict) -> str:
    """An answer without its rationale, to notice one that comes back unchanged."""
    return json.dumps({k: v for k, v in answer.items() if k != "rationale"}, sort_keys=True,
                      default=str)


def edit_validator(space: SearchSpace, base: dict[str, Value],
                   pending: list[TrialRecord] = ()) -> Callable[[dict], Action]:
    """Answers to edit_hyperparameters: coerced, merged over `base`, checked against the
    space's bounds and constraints (the errors name the bound), and refused when a running
    trial already tries that very configuration."""
    running = {tuple(sorted(t.config.items())): t.number for t in pending if t.config}

    def validate(answer: dict) -> Action:
        if answer["tool"] != EDIT:
            raise AnswerError(f"use {EDIT} here")
        values = coerce_values(space, answer.get("values"))
        full = {**base, **values}
        errors = space.errors(full)
        if errors:
            raise AnswerError("; ".join(errors), nearest_valid(space, values, base))
        same = running.get(tuple(sorted(full.items())))
        if same is not None:
            raise AnswerError(f"trial {same} is running this very configuration now: propose "
                              "a different one")
        return EditHyperparameters(values, _rationale(answer))
    return validate


def _rationale(answer: dict) -> str:
    """The answer's one-line reason; "" when it only echoes the prompt's placeholder (the
    call is marked `rationale_echo` in llm.jsonl)."""
    text = " ".join(str(answer.get("rationale") or "").split())[:200]
    return "" if is_echo(text) else text


def diff_action(answer: dict) -> ApplyDiff:
    patch = answer.get("patch")
    if not isinstance(patch, str) or not patch.strip():
        raise AnswerError('"patch" must be a unified diff of train.py')
    return ApplyDiff(patch, _rationale(answer))
