"""Training throughput of baseline_train/train.py: tokens/s, peak memory and MFU.

Runs train.py from a temporary copy with the hyperparameter block of a preset of
search_space.toml (cpu: the packaged values; gpu: the paper's values, SEQ_LEN 2048) for
--seconds of training, --runs times, and prints the figures of each run's summary block.
The environment passes through (AR_DEVICE, AR_DATA_DIR, AR_EVAL_TOKENS, ...).

    python benchmarks/train_throughput.py [--preset cpu|gpu] [--seconds 60 | --tokens N]
                                          [--runs 1] [--json]

--tokens trains a fixed number of tokens instead (AR_TOKEN_BUDGET): the same steps on the same
batches, so two variants (AR_ATTENTION=sdpa / flex) can be compared in val_bpb as well.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

BASELINE = Path(__file__).resolve().parent.parent / "baseline_train"
COLUMNS = [("val_bpb", "val_bpb", "{:.4f}"), ("tokens_per_second", "tokens/s", "{:,.0f}"),
           ("peak_memory_mb", "peak MB", "{:,.0f}"), ("mfu_percent", "MFU %", "{:.2f}"),
           ("num_steps", "steps", "{:.0f}"), ("num_params_M", "params M", "{:.3f}"),
           ("training_seconds", "train s", "{:.1f}"), ("total_seconds", "total s", "{:.1f}")]


def preset_values(preset: str) -> dict:
    space = tomllib.loads((BASELINE / "search_space.toml").read_text())
    if preset not in space["presets"]:
        sys.exit(f"unknown preset {preset!r}; search_space.toml has {sorted(space['presets'])}")
    values = {name: spec["default"] for name, spec in space["params"].items()}
    values.update(space["presets"][preset].get("defaults", {}))
    values.update(space["presets"][preset].get("fixed", {}))
    return values


def set_line(text: str, name: str, value) -> str:
    """Rewrite the `NAME = value  # comment` line of a train.py source."""
    pattern = re.compile(rf"^({name} = )[^#\n]*?(\s*#.*)?$", re.M)
    text, count = pattern.subn(lambda m: f"{m.group(1)}{value!r}{m.group(2) or ''}", text,
                               count=1)
    if count != 1:
        sys.exit(f"train.py has no `{name} = ...` line")
    return text


def write_tree(folder: Path, values: dict) -> None:
    text = (BASELINE / "train.py").read_text()
    for name, value in values.items():
        text = set_line(text, name, value)
    (folder / "train.py").write_text(text)
    shutil.copy(BASELINE / "prepare.py", folder / "prepare.py")


def run_once(folder: Path, seconds: float, tokens: int | None = None) -> dict:
    env = {**os.environ, "TIME_BUDGET": str(seconds)}
    env.pop("AR_TOKEN_BUDGET", None)  # a throughput run is timed, unless --tokens
    if tokens:
        env["AR_TOKEN_BUDGET"] = str(tokens)
    proc = subprocess.run([sys.executable, str(folder / "train.py")], env=env,
                          capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or "---" not in lines:
        sys.exit(f"train.py failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}"
                 f"{proc.stderr[-2000:]}")
    start = len(lines) - 1 - lines[::-1].index("---")
    summary = {}
    for line in lines[start + 1:]:
        key, _, value = line.partition(":")
        try:
            summary[key.strip()] = float(value)
        except ValueError:
            summary[key.strip()] = value.strip()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="a preset of search_space.toml")
    parser.add_argument("--seconds", type=float, default=60.0, help="TIME_BUDGET of each run")
    parser.add_argument("--tokens", type=int, help="AR_TOKEN_BUDGET of each run instead")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.tokens is not None and args.tokens <= 0:
        parser.error(f"--tokens {args.tokens}: give a positive number of tokens")

    values = preset_values(args.preset)
    budget = f"AR_TOKEN_BUDGET={args.tokens}" if args.tokens else f"TIME_BUDGET={args.seconds:g}"
    with tempfile.TemporaryDirectory(prefix="ar-throughput-") as tmp:
        write_tree(Path(tmp), values)
        runs = []
        for i in range(args.runs):
            print(f"run {i + 1}/{args.runs}: preset {args.preset}, {budget} ...",
                  file=sys.stderr, flush=True)
            runs.append(run_once(Path(tmp), args.seconds, args.tokens))

    if args.json:
        print(json.dumps({"preset": args.preset,
                          "seconds": None if args.tokens else args.seconds, "tokens": args.tokens,
                          "values": values,
                          "runs": runs}, indent=2))
        return
    rows = [[str(i + 1), str(r.get("device", "?"))]
            + [fmt.format(r[key]) if isinstance(r.get(key), float) else "-"
               for key, _, fmt in COLUMNS] for i, r in enumerate(runs)]
    if len(runs) > 1:
        rows.append(["median", ""] + [
            fmt.format(statistics.median(r[key] for r in runs))
            if all(isinstance(r.get(key), float) for r in runs) else "-"
            for key, _, fmt in COLUMNS])
    headers = ["run", "device"] + [title for _, title, _ in COLUMNS]
    title = f"train.py throughput, preset {args.preset}, {budget}"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        print(title)
        for row in [headers, *rows]:
            print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
        return
    table = Table(title=title)
    for h in headers:
        table.add_column(h, justify="left" if h in ("run", "device") else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 140).print(table)


if __name__ == "__main__":
    main()
