"""How many tokens the code agent's first prompt costs on the packaged baseline (issue 22,
point 7): the messages the code agent really sends for trial 1 (system prompt, then its
template with the incumbent train.py in full), captured in front of the model, counted with
litellm's own counter (tiktoken's encoding for --count-model, bundled with litellm, so it
runs offline). Every prompt of a code-agent session repeats train.py, so its length is
the floor of what each proposal costs.

    python benchmarks/code_agent_prompt.py [--train-dir DIR] [--preset cpu] [--json]

To compare with another version, give --train-dir a folder holding that train.py and a
search_space.toml (`git show REV:baseline_train/train.py > DIR/train.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# litellm fetches its model price list on import unless told to use the bundled copy
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


from agent.edit.block import values  # noqa: E402  (after the litellm setting above)
from agent.edit.space import load_space  # noqa: E402
from agent.optimizers.code_agent import CodeAgent  # noqa: E402
from agent.paths import baseline_dir  # noqa: E402
from agent.protocols import TrialContext  # noqa: E402


class Captured(Exception):
    pass


class CaptureLLM:
    """Stands where the model client stands; keeps the first request and ends the ask."""

    def __init__(self, tools: bool):
        self.tools = tools
        self.config = argparse.Namespace(compact=False)
        self.request: dict = {}

    def supports_tools(self) -> bool:
        return self.tools

    def complete(self, messages, tools=None, schema=None):
        self.request = {"messages": messages, "tools": tools}
        raise Captured


def first_prompt(train_dir: Path, preset: str | None, tools: bool) -> dict:
    """The request of trial 1 right after the baseline: no history, the baseline incumbent."""
    space = load_space(train_dir / "search_space.toml", preset)
    source = (train_dir / "train.py").read_text()
    config = values(source, space.names)
    llm = CaptureLLM(tools)
    agent = CodeAgent(space, 0, config, llm=llm)
    ctx = TrialContext(trial=1, incumbent_source=source, incumbent_config=config,
                       device="cpu, 2 cores", memory="8g", budget="60 s of training",
                       preset=preset or "")
    try:
        agent.ask([], [], ctx)
    except Captured:
        pass
    return llm.request


def count(request: dict, model: str) -> int:
    import litellm

    return litellm.token_counter(model=model, messages=request["messages"],
                                 tools=request["tools"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-dir", type=Path, default=baseline_dir())
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--count-model", default="gpt-4o",
                        help="whose tokenizer litellm counts with")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import litellm

    source = (args.train_dir / "train.py").read_text()
    out = {"train_dir": str(args.train_dir), "count_model": args.count_model,
           "train_py_lines": len(source.splitlines()),
           "train_py_tokens": litellm.token_counter(model=args.count_model, text=source)}
    for tools in (True, False):
        request = first_prompt(args.train_dir, args.preset, tools)
        key = "prompt_tokens_tools" if tools else "prompt_tokens_text"
        out[key] = count(request, args.count_model)
        out[key.replace("tokens", "chars")] = sum(len(m["content"])
                                                  for m in request["messages"])
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{out['train_dir']}/train.py: {out['train_py_lines']} lines, "
          f"{out['train_py_tokens']} tokens ({args.count_model})")
    print(f"code-agent prompt, tool calls:  {out['prompt_tokens_tools']} tokens "
          f"({out['prompt_chars_tools']} characters of messages, tool schemas counted too)")
    print(f"code-agent prompt, text answer: {out['prompt_tokens_text']} tokens "
          f"({out['prompt_chars_text']} characters)")


if __name__ == "__main__":
    main()
