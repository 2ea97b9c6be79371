"""What a model is shown: the Jinja templates of prompts/, the tools, the bounded history
with the learning curves of a few trials (agent/curves.py).

Every model-facing text lives under prompts/ (prompts/README.md): the methods' templates, the
tools' descriptions and the rationale's placeholder (tools.j2), the repair errors
(answer_errors.j2). The tools are offered as function-calling tools where the model supports
them; otherwise the same JSON schema goes into the prompt and the model answers with a fenced
JSON object (or a fenced diff), read by agent/llm/answers.py.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from agent import curves, paths
from agent.edit.space import SearchSpace
from agent.protocols import TrialRecord

EDIT, DIFF = "edit_hyperparameters", "apply_diff"

_ENV: Environment | None = None


def environment() -> Environment:
    """The one Jinja environment over prompts/ (made on first use, so that a test can point
    prompts_dir elsewhere and reset `_ENV`)."""
    global _ENV
    if _ENV is None:
        _ENV = Environment(loader=FileSystemLoader(str(paths.prompts_dir())),
                           undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                           keep_trailing_newline=True)
        _ENV.filters["num"] = num
        _ENV.filters["short"] = _short
        _ENV.filters["repr"] = repr
        _ENV.filters["curve"] = curves.summary
        _ENV.filters["ended"] = _ended
        _ENV.globals["changes"] = changes
    return _ENV


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)


def texts(template: str) -> Any:
    """A template of prompts/ as a module: its top-level `set` values and its macros."""
    return environment().get_template(template).module


RATIONALE_CHARS = 200


def edit_tool(space: SearchSpace) -> dict:
    """edit_hyperparameters with a JSON schema generated from the space: types, bounds, enums."""
    said = texts("tools.j2")
    props: dict[str, Any] = {}
    for name, p in space.params.items():
        if p.type == "categorical":
            props[name] = {"type": "string", "enum": list(p.choices), "description": p.help}
            continue
        help_ = str(said.param_help(p.help, p.log))
        if p.type == "int" and (p.power_of_two or p.high - p.low <= 64):
            # the allowed integers themselves: a constrained decoder can then only pick these
            props[name] = {"type": "integer", "enum": list(p.grid()), "description": help_}
            continue
        props[name] = {"type": "integer" if p.type == "int" else "number",
                       "minimum": p.low, "maximum": p.high, "description": help_}
    return {"type": "function", "function": {
        "name": EDIT,
        "description": said.edit_description,
        "parameters": {"type": "object", "properties": {
            "values": {"type": "object", "properties": props, "additionalProperties": False},
            # an answer keeps 200 characters of it; the bound also ends a small model's
            # run-on sentence before the answer's token limit cuts its JSON
            "rationale": {"type": "string", "description": said.rationale,
                          "maxLength": RATIONALE_CHARS}},
            "required": ["values", "rationale"]}}}


def diff_tool() -> dict:
    said = texts("tools.j2")
    return {"type": "function", "function": {
        "name": DIFF,
        "description": said.diff_description,
        "parameters": {"type": "object", "properties": {
            "patch": {"type": "string", "description": said.patch_description},
            "rationale": {"type": "string", "description": said.rationale}},
            "required": ["patch", "rationale"]}}}


def answer_schema(tool: dict) -> dict:
    """The JSON answer of the prompt path as a schema: {"tool": name, ...its arguments}."""
    fn = tool["function"]
    params = fn["parameters"]
    # no key beyond these: with room for more, SmolLM2 followed its rationale with invented
    # keys ("time_range_sec_min": ...) until the token limit cut the JSON
    return {"type": "object",
            "properties": {"tool": {"type": "string", "enum": [fn["name"]]},
                           **params["properties"]},
            "required": ["tool", *params.get("required", [])], "additionalProperties": False}


def num(value: Any, digits: int = 6) -> str:
    """A value as prompts and repair hints write it: floats to `digits` significant digits."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


# the trials whose learning curve a prompt summarises: the best one and the last few with a
# curve, one line each (about 40 tokens); a small local model's prompt shows one fewer
CURVES = 3

# a small local model's history: at most this many trials in order, the window moving on in
# steps of WINDOW_STEP so that consecutive prompts of a session share their first lines
WINDOW, WINDOW_STEP = 24, 12


def history_view(history: list[TrialRecord], llm=None, keep: int | None = None) -> dict:
    """The bounded slice of history a prompt shows (constant size, whatever the session's
    length): the best 5 successes and the last 20 trials, failures included. `keep` cuts
    every list to at most that many trials, where the prompt must fit a small context window
    (agent/llm/seat.py); the counts stay whole.

    For a small local model (`compact`: slow prompt processing, short attention) it is one
    list in trial order instead, each trial written as what it changed from trial 0 with 3
    digits: the list of the previous call is the start of the next one, which llama.cpp then
    does not evaluate again. The best 3 follow it.

    `curves` are the trials whose learning curve is summarised, in the varying part of the
    prompt (a list that changes as trials come, so never inside the compact list): the best
    trial, then the last `CURVES` with a curve."""
    ok = sorted((t for t in history if t.ok), key=lambda t: t.val_bpb)
    compact = bool(llm is not None and getattr(llm.config, "compact", False))
    recent = [t for t in history if t.curve][-(CURVES - 1 if compact else CURVES):]
    best = [ok[0]] if ok and ok[0].curve and not any(t is ok[0] for t in recent) else []
    pruned = sum(t.status == "pruned" for t in history)  # stopped on purpose: not failed
    view = {"count": len(history), "failed": sum(not t.ok for t in history) - pruned,
            "pruned": pruned,
            "compact": compact, "best": ok[0] if ok else None, "curves": best + recent}
    cut = 1_000_000 if keep is None else keep
    view["curves"] = view["curves"][:cut]
    if not compact:
        return {**view, "top": ok[:min(5, cut)], "recent": history[len(history) - min(20, cut):]}
    first = history[0] if history and history[0].number == 0 and history[0].config else None
    rest = history[1:] if first else history
    skip = 0 if len(rest) < WINDOW else ((len(rest) - WINDOW) // WINDOW_STEP + 1) * WINDOW_STEP
    skip = max(skip, len(rest) - cut)
    return {**view, "top": ok[:min(3, cut)], "base": first, "skipped": skip,
            "listed": ([first] if first else []) + rest[skip:]}


def changes(config: dict | None, base: TrialRecord | None) -> str:
    """A configuration as `NAME=value` pairs (3 digits), only those that differ from the
    base trial's when there is one ("" when none does: the template says so in words)."""
    before = (base.config or {}) if base is not None else {}
    return " ".join(f"{k}={_short(v)}" for k, v in (config or {}).items()
                    if k not in before or before[k] != v)


def _short(value: Any) -> str:
    return num(value, 3)


def _ended(curve) -> str:
    return curves.percent(curves.ended_at(curve))


def example_values(space: SearchSpace, k: int = 2) -> dict:
    """A concrete `values` object for the answer format: small models copy examples, so it
    holds real names with valid values (the space's defaults: the same in every prompt of a
    session, so the prompt's constant prefix stays constant)."""
    defaults = space.defaults()
    return {n: defaults[n] for n in space.names[:k]}
