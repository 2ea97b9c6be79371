"""The surrogate's data set: real trials of the packaged baseline on the cpu preset (issue 25).

Each configuration trains at one fixed token budget (--token-budget, machine-independent:
the same steps on any host) and is scored on --eval-tokens of val, exactly as a session's
trial runs (agent/analysis/repeats.run_trees: the same sandbox, limits and environment).
Configurations come from the whole space and from where optimizers look:

  random  --random draws of RandomSearch (uniform over the unit cube of the space);
  tpe     --guided trials of TPE, asked and told with these real results;
  cmaes   --guided trials of CMA-ES, the same way;
  repeat  the first --repeat random configurations again at seeds 1 .. --seeds-1: the noise.

Failures are kept (status oom, timeout, diverged, crash with the reason): the surrogate learns
where configurations fail. Every row is appended to --out (JSON lines) as it finishes, and a
second run of the same command skips the rows already there: it resumes.

    python benchmarks/surrogate/collect.py [--random 120] [--guided 40] [--repeat 12]
        [--seeds 3] [--token-budget 65536] [--eval-tokens 32768]
        [--out benchmarks/surrogate/data.jsonl] [--sandbox auto]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.analysis.repeats import run_trees, tar_folder  # noqa: E402
from agent.config.data import prepare_default_data  # noqa: E402
from agent.config.settings import SessionConfig  # noqa: E402
from agent.edit.actions import EditHyperparameters  # noqa: E402
from agent.edit.block import render_block  # noqa: E402
from agent.edit.space import load_space  # noqa: E402
from agent.optimizers import make_optimizer  # noqa: E402
from agent.optimizers.base import TrialRecord  # noqa: E402
from agent.paths import baseline_dir  # noqa: E402

HERE = Path(__file__).resolve().parent


def rows_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] \
        if path.is_file() else []


class Collector:
    def __init__(self, args):
        self.args, self.out = args, args.out
        self.space = load_space(baseline_dir() / "search_space.toml", "cpu")
        self.source = (baseline_dir() / "train.py").read_text()
        self.config = SessionConfig(method="random", preset="cpu", sandbox=args.sandbox,
                                    token_budget=args.token_budget,
                                    eval_tokens=args.eval_tokens)
        self.data = prepare_default_data(baseline_dir())
        self.work = Path(tempfile.mkdtemp(prefix="ar-surrogate-"))
        self.done = {r["key"]: r for r in rows_of(self.out)}

    def trial(self, key: str, source: str, config: dict, seed: int) -> dict:
        """One configuration at one seed: read back if the data set holds it, else run."""
        if key in self.done:
            if self.done[key]["config"] != config or self.done[key]["seed"] != seed:
                sys.exit(f"{self.out}: row {key} holds another configuration than this run "
                         "draws (other code or options?): pass another --out")
            return self.done[key]
        tree = self.work / "tree"
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir()
        full = {**self.space.fixed, **config}
        (tree / "train.py").write_text(render_block(self.source, full))
        shutil.copy(baseline_dir() / "prepare.py", tree / "prepare.py")
        shutil.copy(baseline_dir() / "search_space.toml", tree / "search_space.toml")
        t = time.monotonic()
        [r] = run_trees([(tar_folder(tree), self.work / "trial", seed)], self.config,
                        self.space, self.data, self.work / "cache")
        row = {"key": key, "source": source, "seed": seed, "config": config,
               "status": r.status, "val_bpb": r.val_bpb, "reason": r.reason[:200],
               "training_s": r.training_s, "num_steps": r.metrics.get("num_steps"),
               "peak_memory_mb": r.metrics.get("peak_memory_mb"),
               "wall_s": round(time.monotonic() - t, 2),
               "token_budget": self.args.token_budget, "eval_tokens": self.args.eval_tokens}
        with self.out.open("a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        self.done[key] = row
        shown = "-" if row["val_bpb"] is None else f"{row['val_bpb']:.4f}"
        print(f"{len(self.done):4} {key:14} {row['status']:8} {shown} {row['wall_s']:6.1f} s",
              file=sys.stderr, flush=True)
        return row

    def random(self) -> list[dict]:
        opt = make_optimizer("random", self.space, 0, self.space.defaults())
        configs = [self.space.defaults()] + [opt.ask([]).values
                                             for _ in range(self.args.random)]
        return [(f"random-{i}", c) for i, c in enumerate(configs)]

    def guided(self, method: str) -> None:
        """`method` asked and told with real results, as in a session of --guided trials."""
        opt = make_optimizer(method, self.space, 1, self.space.defaults())
        history: list[TrialRecord] = []
        for n in range(self.args.guided + 1):
            action = EditHyperparameters(self.space.defaults(), "baseline") if n == 0 \
                else opt.ask(history, [])
            config = {**self.space.defaults(), **action.values}
            # trial 0 is the baseline, which random-0 already ran at this seed
            row = self.trial("random-0" if n == 0 else f"{method}-{n}", method, config, 0)
            record = TrialRecord(n, row["status"], config, row["val_bpb"])
            opt.tell(action, record)
            history.append(record)

    def run(self) -> None:
        drawn = self.random()
        for key, config in drawn:
            self.trial(key, "random", config, 0)
        for method in ("tpe", "cmaes"):
            self.guided(method)
        for key, config in drawn[: self.args.repeat]:
            for seed in range(1, self.args.seeds):
                self.trial(f"{key}-s{seed}", "repeat", config, seed)
        shutil.rmtree(self.work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=120)
    parser.add_argument("--guided", type=int, default=40, help="trials of TPE and of CMA-ES")
    parser.add_argument("--repeat", type=int, default=12, help="random configs run again")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of a repeated config")
    # 16 optimizer steps at the cpu preset's default batch (4096 tokens), 2 to 32 over its
    # range: far fewer than a 60-s trial's ~100, at a cost a data set of hundreds can pay
    parser.add_argument("--token-budget", type=int, default=65536)
    parser.add_argument("--eval-tokens", type=int, default=32768)
    parser.add_argument("--sandbox", default="auto")
    parser.add_argument("--out", type=Path, default=HERE / "data.jsonl")
    args = parser.parse_args()
    rows = rows_of(args.out)
    if rows and (rows[0]["token_budget"], rows[0]["eval_tokens"]) != (args.token_budget,
                                                                     args.eval_tokens):
        sys.exit(f"{args.out} holds trials of --token-budget {rows[0]['token_budget']} "
                 f"--eval-tokens {rows[0]['eval_tokens']}: pass those, or another --out")
    Collector(args).run()
    print(f"{args.out}: {len(rows_of(args.out))} trials", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
