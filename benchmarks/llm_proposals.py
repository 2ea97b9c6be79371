"""How well a model proposes, in the prompts Centaur and llm-hpo really send (issue 15).

The prompt set is a fixed list of real histories (benchmarks/data/llm_histories.json: the
trials of real cpu-preset sessions, cut at several points). For each cut, a fresh Centaur
(every trial an LLM turn) or llm-hpo is told the history so far and asked for the next
trial through today's templates, with up to --max-repairs repair turns. Per model:

- valid_share: first replies that parse as an answer at all (JSON with a tool and values);
- in_space_share after 0, 1, 2 repairs: answers inside the space by then (in_space_share:
  after all repairs);
- differs_share (Centaur): the final configuration differs from CMA-ES's own candidate;
- distinct_share: distinct final answers over prompts (does it repeat one answer?);
- echo_share: rationales that only echo the schema's placeholder;
- latency per call (median; first call and fifth call: the prompt cache's effect), prompt
  and completion tokens.

    python benchmarks/llm_proposals.py                  # every installed built-in model
    python benchmarks/llm_proposals.py --models builtin:smollm2-135m --limit 10 --json
    python benchmarks/llm_proposals.py --models openai/gpt-4o-mini   # any litellm model
    python benchmarks/llm_proposals.py --collect runs/bench-cpu      # (re)build the set
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.edit.actions import EditHyperparameters, NoAction  # noqa: E402
from agent.edit.space import load_space  # noqa: E402
from agent.llm.answers import AnswerError, parse_answer  # noqa: E402
from agent.optimizers.centaur import Centaur  # noqa: E402
from agent.optimizers.llm_hpo import LLMHPO  # noqa: E402
from agent.paths import baseline_dir  # noqa: E402
from agent.protocols import TrialContext, TrialRecord  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "llm_histories.json"
# the default first; each built-in model on each engine (`@llama.cpp` where it is installed)
BUILTIN = ["builtin:smollm2-135m", "builtin:smollm2-135m@llama.cpp", "builtin:gemma3-270m",
           "builtin:gemma3-270m@llama.cpp"]


def collect(folder: Path, cuts: tuple[int, ...] = (3, 5, 7)) -> list[dict]:
    """Histories of the sessions under `folder` (trials.jsonl), with where to cut them."""
    out = []
    for ledger in sorted(folder.glob("*/trials.jsonl")):
        notes = sorted((json.loads(x) for x in ledger.read_text().splitlines()),
                       key=lambda r: r["trial"])
        history = [{"number": r["trial"], "status": r["status"], "config": r["config"],
                    "val_bpb": r["val_bpb"], "reason": (r.get("result") or {}).get("reason",
                                                                                    "")}
                   for r in notes if r.get("method") != "confirm"]
        at = [k for k in cuts if k <= len(history)] or [len(history)]
        out.append({"run": ledger.parent.name, "history": history, "at": at})
    return out


def prompts(data: list[dict], limit: int | None) -> list[tuple[str, list[dict], int]]:
    """(method, history, cut) for each prompt: the cuts of one history in order, as one
    session asks them (its later prompts can reuse the earlier one's evaluated prefix),
    the histories alternating between the two methods."""
    out = []
    for i, entry in enumerate(data):
        for k in entry["at"]:
            out.append(("centaur" if i % 2 == 0 else "llm-hpo", entry["history"], k))
    return out[:limit] if limit else out


def ask_one(llm, method: str, history: list[dict], k: int, max_repairs: int) -> dict:
    space = load_space(baseline_dir() / "search_space.toml", "cpu")
    base = space.defaults()
    records = [TrialRecord(h["number"], h["status"], h["config"], h["val_bpb"],
                           reason=h.get("reason", "")) for h in history[:k]]
    if method == "centaur":
        opt = Centaur(space, 0, base, llm=llm, max_repairs=max_repairs, ratio=1.0, warmup=0)
    else:
        opt = LLMHPO(space, 0, base, llm=llm, max_repairs=max_repairs)
    for r in records:
        action = EditHyperparameters(r.config, "history") if r.config else NoAction("none")
        opt.tell(action, r)
    ok = [r for r in records if r.status == "ok" and r.config]
    incumbent = min(ok, key=lambda r: r.val_bpb).config if ok else base
    candidate = opt.cmaes.peek() if method == "centaur" else None
    ctx = TrialContext(trial=k, incumbent_source="", incumbent_config=incumbent,
                       device="cpu, 2 cores", memory="8g", budget="32768 training tokens",
                       preset="cpu")
    action = opt.ask(records, [], ctx)
    calls = opt.take_calls()
    try:
        parse_answer(calls[0], ("edit_hyperparameters",))
        parsed = True
    except (AnswerError, IndexError):
        parsed = False
    valid = not isinstance(action, NoAction)
    final = {**incumbent, **action.values} if valid else None
    return {"method": method, "valid_json": parsed, "in_space": valid,
            "repairs": len(calls) - 1 if valid else None,
            "differs": None if candidate is None or final is None else final != candidate,
            "answer": json.dumps(final, sort_keys=True) if final else None,
            "error": action.reason if isinstance(action, NoAction) else "",
            "echo": bool(calls and calls[-1].get("rationale_echo")),
            "latencies": [c.get("latency_s", 0.0) for c in calls],
            "prompt_tokens": sum(c.get("prompt_tokens", 0) for c in calls),
            "completion_tokens": sum(c.get("completion_tokens", 0) for c in calls)}


def measure(model: str, items, max_repairs: int, log: Path) -> dict:
    from agent.config.settings import SessionConfig
    from agent.llm.local import connect

    config = SessionConfig(method="centaur", model=model)
    llm, server = connect(config, log)
    try:
        rows = []
        for i, (method, history, k) in enumerate(items, 1):
            rows.append(ask_one(llm, method, history, k, max_repairs))
            print(f"{model}: prompt {i}/{len(items)} {method} -> "
                  f"{'ok' if rows[-1]['in_space'] else 'invalid'} "
                  f"{sum(rows[-1]['latencies']):.1f} s", file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.stop()
    calls = [t for r in rows for t in r["latencies"]]
    n = len(rows)
    answers = [r["answer"] for r in rows if r["answer"]]
    differ = [r["differs"] for r in rows if r["differs"] is not None]
    return {
        "model": model, "default": model == BUILTIN[0], "prompts": n,
        "valid_share": sum(r["valid_json"] for r in rows) / n,
        "in_space_after": [sum(r["repairs"] is not None and r["repairs"] <= j for r in rows) / n
                           for j in range(max_repairs + 1)],
        "in_space_share": sum(r["in_space"] for r in rows) / n,
        "differs_share": sum(differ) / len(differ) if differ else None,
        "distinct_share": len(set(answers)) / n,
        "echo_share": sum(r["echo"] for r in rows) / n,
        # the first call pays for the prompt prefix; the cache serves it from the second on
        "median_latency_s": statistics.median(calls[1:]) if len(calls) > 1 else None,
        "first_call_latency_s": calls[0] if calls else None,
        "fifth_call_latency_s": calls[4] if len(calls) > 4 else None,
        "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
        "completion_tokens": sum(r["completion_tokens"] for r in rows),
        "rows": rows}  # each prompt: method, repairs, answer, error, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(
        m for m in BUILTIN if "@llama.cpp" not in m or importlib.util.find_spec("llama_cpp")))
    parser.add_argument("--limit", type=int, help="at most this many prompts")
    parser.add_argument("--max-repairs", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", type=Path, help="also keep the JSON list in this file")
    parser.add_argument("--collect", type=Path, help="rebuild the prompt set from a folder of "
                        "sessions (e.g. a bench) and exit")
    args = parser.parse_args()
    if args.collect:
        data = collect(args.collect)
        DATA.parent.mkdir(parents=True, exist_ok=True)
        DATA.write_text(json.dumps(data, indent=1) + "\n")
        print(f"{DATA}: {len(data)} histories, {len(prompts(data, None))} prompts")
        return 0
    items = prompts(json.loads(DATA.read_text()), args.limit)
    log = Path(tempfile.mkdtemp(prefix="ar-llm-bench-")) / "server.log"
    results = [measure(m.strip(), items, args.max_repairs, log)
               for m in args.models.split(",") if m.strip()]
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"proposal quality on {len(items)} prompts (Centaur and llm-hpo)")
    for col in ("model", "valid JSON", "in space (0 / 1 / 2 repairs)", "differs from CMA-ES",
                "distinct", "echo", "median s/call (2nd on)", "call 1 s", "call 5 s",
                "prompt / completion tokens"):
        table.add_column(col, justify="right")
    pct = lambda x: "-" if x is None else f"{100 * x:.0f} %"  # noqa: E731
    sec = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
    for r in results:
        table.add_row(r["model"] + (" (default)" if r["default"] else ""), pct(r["valid_share"]),
                      " / ".join(pct(x) for x in r["in_space_after"]), pct(r["differs_share"]),
                      pct(r["distinct_share"]), pct(r["echo_share"]),
                      sec(r["median_latency_s"]), sec(r["first_call_latency_s"]),
                      sec(r["fifth_call_latency_s"]),
                      f"{r['prompt_tokens']:,} / {r['completion_tokens']:,}")
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
