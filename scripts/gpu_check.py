"""`make gpu-check`: does the GPU path work on this machine? One row per check, written as it
finishes (gpu-check/rows.jsonl and gpu-check/table.txt), exit 1 if a row fails.

Sized for one short visit to a GPU machine (no network, no Docker, minutes of device time):
every row has its own time cap (estimates for one H100/H200 from a cold machine in brackets,
about 8.5 min in all; the caps of the rows that run without Docker sum to 14 min, so a
visit whose commands may run 10 min each runs it as two: `--rows probe,session,cache,cuda-oom,
host-oom` and `--rows harness,mfu-sdpa,mfu-flex,repair`), runs configurations chosen for its point
(never whatever a seed draws) and is written out the moment it ends, so an interrupted check
(SIGINT, SIGTERM, a row over its cap) still reports what it did. `--rows` picks some, `--dry`
walks every row with canned results (no GPU needed, seconds).

  probe      `autoresearch sandbox check --gpus G --json`: the GPUs, the backend a session
             picks, and from inside a probe trial: its isolation, memory limit, device nodes,
             compiler and CUDA; a problem there fails the row [20 s]
  session    3 trials (baseline + 2) on the check folder: the gpu preset's sizes fixed, only
             learning rates and schedule searched, so every trial is a baseline-sized model;
             local isolation as the session picks it: >= 2 ok [2.5 min]
  cache      from that session: overhead_s (wall - training) of trial 2, which reuses the
             kernels trial 1 compiled (same shapes), against trial 0, the first compile [0 s]
  cuda-oom   the baseline under a 2 % GPU memory share: `cuda_oom` [30 s]
  host-oom   8 GiB of host memory written beside a live CUDA context under --memory 2g:
             `oom`, after CUDA initialised under that limit [20 s]
  harness    one token budget trained twice: val_bpb printed, and scored by the harness
             (torch.export, fp32 on the trial's GPU): equal within 1e-3 [1.5 min]
  mfu-sdpa   the gpu preset outside any sandbox: tokens/s, MFU, peak, a profile of a step
  mfu-flex   the same with FlexAttention for the sliding windows (reported, never failed)
             [1.5 min both]
  repair     a session whose GPU share fits 64 sequences of the baseline but not 128: the
             preflight fails `cuda_oom`, DEVICE_BATCH_SIZE is halved once, the trial trains
             [2 min]
  docker-ok, docker-oom   a GPU trial `ok` and a CUDA OOM `cuda_oom` in Docker, where an
             engine answers (skipped otherwise)

    python scripts/gpu_check.py [--gpu 0] [--out gpu-check] [--rows session,cache] [--dry]

On an offline GPU machine without a venv, carry the project and its wheels (README, "GPUs"):
    PYTHONPATH=.site:$PWD python3 scripts/gpu_check.py
The logs of every row stay under --out (the CUDA OOM's log is a real fixture for
tests/sandbox/logs).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from rowdriver import Context, Got, Row, drive  # noqa: E402

# what the check folder fixes at the gpu preset's defaults: every trial is the baseline's size
SIZES = ("DEPTH", "ASPECT_RATIO", "HEAD_DIM", "DEVICE_BATCH_SIZE", "TOTAL_BATCH_SIZE",
         "WINDOW_PATTERN")
HARNESS_TOLERANCE = 1e-3
REPAIR_SHARE_GB = 36  # the baseline peaked at ~47 GB with 128 sequences, so ~24 GB with 64


def last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith(("{", "[")):
            return json.loads(line)
    raise ValueError(f"no JSON in the output: {text[-300:]}")


def tail(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1][-200:] if lines else f"exit {proc.returncode}, no output"


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


# -- the folders the rows run ---------------------------------------------------------------

def gpu_tree(folder: Path) -> Path:
    """The check folder: the baseline train.py with the gpu preset's block, prepare.py, and a
    search space whose sizes (SIZES) are fixed at the gpu preset's defaults, so any draw of
    the session's optimizer is a baseline-sized model (shapes, memory and compile as the
    baseline's) and only learning rates and schedule vary."""
    from agent.edit.block import apply_preset
    from agent.edit.space import load_space
    from agent.paths import baseline_dir

    folder.mkdir(parents=True, exist_ok=True)
    packaged = baseline_dir() / "search_space.toml"
    space = load_space(packaged, "gpu")
    (folder / "train.py").write_text(apply_preset((baseline_dir() / "train.py").read_text(),
                                                  space))
    shutil.copy(baseline_dir() / "prepare.py", folder / "prepare.py")
    (folder / "search_space.toml").write_text(check_space(packaged.read_text(),
                                                          space.defaults()))
    return folder


def check_space(text: str, defaults: dict) -> str:
    """The packaged search_space.toml with SIZES moved from [params.*] to the gpu preset's
    fixed values, the other presets left out, gpu the default preset."""
    sections = re.split(r"(?m)^(?=\[)", text)
    kept = []
    for section in sections:
        header = section.split("\n", 1)[0].strip()
        if any(header == f"[params.{name}]" for name in SIZES):
            continue
        if header.startswith("[presets.") and not header.startswith("[presets.gpu"):
            continue
        kept.append(section)
    text = "".join(kept).replace('default_preset = "cpu"', 'default_preset = "gpu"')
    fixed = ", ".join(f"{name} = {json.dumps(defaults[name])}" for name in SIZES)
    text, count = re.subn(r"(?m)^(\[presets\.gpu\]\n(?:(?!\[).*\n)*?fixed = \{ )",
                          lambda m: m.group(1) + fixed + ", ", text, count=1)
    if count != 1:
        raise ValueError("the packaged gpu preset has no `fixed = { ... }` line")
    return text


HOG = """import torch
torch.zeros(1, device="cuda")
print("cuda ok", flush=True)
chunks = []
for _ in range(128):
    chunks.append(b"x" * (64 * 2**20))  # 8 GiB in all, every page written
print("survived", flush=True)
"""


def tree(ctx: Context) -> Path:
    if "tree" not in ctx.shared:
        ctx.shared["tree"] = gpu_tree(ctx.out / "gpu-tree")
    return ctx.shared["tree"]


# -- the rows -------------------------------------------------------------------------------

def row_probe(ctx: Context) -> Got:
    """`sandbox check --gpus G`: the GPUs, the backend, and what a local trial gets here,
    found from inside one (sandbox/probe.py)."""
    proc = ctx.cli("sandbox", "check", "--gpus", ctx.gpu, "--json")
    try:
        report = last_json(proc.stdout)
    except ValueError:
        return Got(tail(proc), False)
    ctx.shared["probe"] = report
    gpus = report.get("gpus") or []
    local = report.get("local") or {}
    trial = local.get("trial") or {}
    cuda = trial.get("cuda") or {}
    got = (f"{len(gpus)} GPU(s); backend {report.get('backend')}; local trials: "
           f"{local.get('isolation')}, memory by {local.get('memory_guard')}; in a trial: "
           f"{len(trial.get('devices') or {})} /dev/nvidia* nodes, CUDA "
           f"{cuda.get('error') or cuda.get('name') or '-'}, compiler "
           f"{trial.get('compiler') or 'none'}")
    problems = local.get("problems") or []
    if problems:
        got += "; problems: " + "; ".join(problems)
    return Got(got, bool(gpus) and report.get("backend") is not None and not problems, report)


def row_session(ctx: Context) -> Got:
    run_dir = ctx.out / "session"
    shutil.rmtree(run_dir, ignore_errors=True)
    t = time.monotonic()
    proc = ctx.cli("run", "--method", "random", "--train-dir", str(tree(ctx)), "--preset",
                   "gpu", "--gpus", ctx.gpu, "--trials", "2", "--time-budget",
                   f"{ctx.budget:g}", "--seed", "0", "--sandbox", "local",
                   # a random point of the gpu space may take over 1.5 s a step: the default
                   # --min-steps 10 would refuse it in a 15-s budget, and the row wants two
                   "--min-steps", "0", "--run-dir", str(run_dir), "--quiet")
    wall = time.monotonic() - t
    (ctx.out / "session.out").write_text(proc.stdout + proc.stderr)
    if not (run_dir / "session.toml").exists():
        return Got(tail(proc), False)
    rows = last_json(ctx.cli("replay", str(run_dir), "--json").stdout)
    records = [last_json(ctx.cli("replay", str(run_dir), "--trial", str(r["trial"]),
                                 "--json").stdout) for r in rows]
    ctx.shared["session"] = records
    statuses = [r["status"] for r in rows]
    ok = sum(s == "ok" for s in statuses)
    return Got(f"{' '.join(statuses)} in {wall:.0f} s", ok >= 2,
               {"statuses": statuses, "wall_s": round(wall, 1)})


def row_cache(ctx: Context) -> Got:
    records = ctx.shared.get("session")
    if records is None:
        return Got("needs the session row", None)
    over = [(r.get("result") or {}).get("overhead_s") for r in records]
    shown = ", ".join("-" if o is None else f"{o:.1f}" for o in over)
    if len(over) < 3 or over[0] is None or over[2] is None:
        return Got(f"overhead_s {shown} (a trial failed)", False)
    return Got(f"overhead_s {shown}: trial 2 {over[0] - over[2]:.1f} s below the first "
               "compile", over[2] < over[0], {"overhead_s": over})


def try_row(ctx: Context, name: str, expected: str, folder: Path, *args: str,
            must_log: str | None = None) -> Got:
    work = ctx.out / slug(name)
    shutil.rmtree(work, ignore_errors=True)
    proc = ctx.cli("sandbox", "try", str(folder), "--json", "--out", str(work), *args)
    try:
        result = last_json(proc.stdout)
    except ValueError:
        return Got(tail(proc), False)
    log = (work / "train.log").read_text(errors="replace") if (work / "train.log").exists() \
        else ""
    got = f"{result['status']} in {result['wall_s']:.1f} s: {result.get('reason') or '-'}"
    if must_log is not None and must_log not in log:
        got += f" (log lacks {must_log!r})"
    passed = result["status"] == expected and (must_log is None or must_log in log)
    return Got(got[:160], passed, result)


def row_cuda_oom(ctx: Context) -> Got:
    got = try_row(ctx, "forced CUDA OOM (local)", "cuda_oom", tree(ctx), "--sandbox", "local",
                  "--gpus", ctx.gpu, "--gpu-mem-fraction", "0.02", "--time-budget", "5",
                  "--env", "AR_COMPILE=0")
    log = ctx.out / slug("forced CUDA OOM (local)") / "train.log"
    if log.exists():
        shutil.copy(log, ctx.out / "cuda_oom.log")
    return got


def row_host_oom(ctx: Context) -> Got:
    hog = ctx.out / "hog-tree"
    hog.mkdir(exist_ok=True)
    (hog / "train.py").write_text(HOG)
    return try_row(ctx, "host memory hog (local)", "oom", hog, "--sandbox", "local",
                   "--gpus", ctx.gpu, "--memory", "2g", must_log="cuda ok")


def row_harness(ctx: Context) -> Got:
    """The same token budget and seed trained twice (the session's compile cache): once
    scored as train.py prints it, once by the harness."""
    from benchmarks.train_throughput import preset_values

    tokens = 8 * preset_values("gpu")["TOTAL_BATCH_SIZE"]
    cache = ctx.out / "session" / "cache"
    scores = {}
    for score in ("printed", "harness"):
        got = try_row(ctx, f"score {score}", "ok", tree(ctx), "--sandbox", "local", "--gpus",
                      ctx.gpu, "--token-budget", str(tokens), "--score", score,
                      *(["--cache", str(cache)] if cache.is_dir() else []))
        if not got.passed:
            return Got(f"{score}: {got.got}", False)
        scores[score] = got.data.get("val_bpb")
    gap = abs(scores["harness"] - scores["printed"])
    return Got(f"printed {scores['printed']:.6f}, harness {scores['harness']:.6f}, "
               f"|diff| {gap:.2e}", gap <= HARNESS_TOLERANCE, scores)


def row_throughput(attention: str) -> Callable[[Context], Got]:
    def run(ctx: Context) -> Got:
        """The gpu preset outside any sandbox with AR_ATTENTION=attention for
        ctx.throughput_steps steps (the same batches each time); the third step's ops, most
        GPU time first, go to out/profile-ATTENTION.txt. `flex` is the candidate for a higher
        MFU, its val_bpb the check that it computes the same: reported, never failed."""
        from benchmarks.train_throughput import preset_values

        tokens = ctx.throughput_steps * preset_values("gpu")["TOTAL_BATCH_SIZE"]
        proc = ctx.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"),
                        "--preset", "gpu", "--tokens", str(tokens), "--json"],
                       {"AR_DEVICE": f"cuda:{ctx.gpu}", "AR_ATTENTION": attention,
                        "AR_PROFILE_OUT": str(ctx.out / f"profile-{attention}.txt")})
        (ctx.out / f"throughput-{attention}.out").write_text(proc.stdout + proc.stderr)
        gating = attention == "sdpa"
        try:
            run = json.loads(proc.stdout)["runs"][0]
        except (ValueError, KeyError, IndexError):
            return Got(tail(proc) if gating else f"FAILED (not gating): {tail(proc)}",
                       False if gating else None)
        return Got(f"{run['tokens_per_second']:,.0f} tok/s, MFU {run['mfu_percent']:.1f} %, "
                   f"peak {run['peak_memory_mb']:,.0f} MB, val_bpb {run['val_bpb']:.4f}",
                   True, run)
    return run


def gpu_memory(ctx: Context) -> int:
    """The GPU's memory in bytes, from nvidia-smi (this process holds no CUDA context)."""
    proc = ctx.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits",
                    "-i", ctx.gpu])
    return int(proc.stdout.split()[0]) * 2**20  # MiB


def row_repair(ctx: Context) -> Got:
    run_dir = ctx.out / "repair"
    shutil.rmtree(run_dir, ignore_errors=True)
    share = min(REPAIR_SHARE_GB * 2**30 / gpu_memory(ctx), 1.0)
    proc = ctx.cli("run", "--method", "random", "--train-dir", str(tree(ctx)), "--preset",
                   "gpu", "--gpus", ctx.gpu, "--trials", "1", "--time-budget",
                   f"{ctx.budget:g}", "--seed", "0", "--gpu-mem-fraction", f"{share:.3f}",
                   "--repair-oom", "--min-steps", "0", "--sandbox", "local", "--run-dir",
                   str(run_dir), "--quiet")
    (ctx.out / "repair.out").write_text(proc.stdout + proc.stderr)
    try:
        trial = last_json(ctx.cli("replay", str(run_dir), "--trial", "1", "--json").stdout)
    except ValueError:
        return Got(tail(proc), False)
    probes = trial.get("probes") or []
    failed = [p for p in probes if p["status"] != "ok"]
    got = (f"{trial['status']}; probes " + ", ".join(
        f"{p['DEVICE_BATCH_SIZE']}: {p['status']} {p['wall_s']:.1f} s" for p in probes) +
        f"; failed probes cost {sum(p['wall_s'] for p in failed):.1f} s of "
        f"{trial.get('cost_s', 0):.1f} s")
    return Got(got, trial["status"] == "ok" and bool(trial.get("repairs")),
               {"probes": probes, "share": share})


def docker_row(expected: str, *args: str) -> Callable[[Context], Got]:
    def run(ctx: Context) -> Got:
        docker = (ctx.shared.get("probe") or {}).get("docker") or {}
        if not docker.get("engine"):
            return Got(f"not run: {docker.get('why_not', 'no Docker engine')}", None)
        return try_row(ctx, f"docker {expected}", expected, tree(ctx), "--sandbox", "docker",
                       "--gpus", ctx.gpu, *args)
    return run


ROWS = [
    Row("probe", "sandbox check", "GPUs listed; a backend picked", 60, row_probe,
        Got("1 GPU(s); backend local; local trials: uid 65534 in mount and network "
            "namespaces of its own, memory by cgroup v2; in a trial: 5 /dev/nvidia* nodes, "
            "CUDA NVIDIA H200, compiler /usr/bin/gcc (dry)", True)),
    Row("session", "session, 3 trials (local)", ">= 2 ok", 200, row_session,
        Got("ok ok ok in 150 s (dry)", True)),
    Row("cache", "compile cache: overhead_s", "trial 2 < trial 0", 10, row_cache,
        Got("overhead_s 52.0, 14.1, 13.8: trial 2 38.2 s below the first compile (dry)",
            True)),
    Row("cuda-oom", "forced CUDA OOM (local)", "cuda_oom", 60, row_cuda_oom,
        Got("cuda_oom in 21.0 s: CUDA out of memory (dry)", True)),
    Row("host-oom", "host memory hog (local)", "oom", 45, row_host_oom,
        Got("oom in 6.0 s: host memory limit 2g reached (dry)", True)),
    Row("harness", "harness score = printed", f"within {HARNESS_TOLERANCE:g}", 150,
        row_harness, Got("printed 1.234567, harness 1.234602, |diff| 3.50e-05 (dry)", True)),
    Row("mfu-sdpa", "throughput, gpu preset, sdpa", "tokens/s, MFU, peak", 90,
        row_throughput("sdpa"),
        Got("1,300,000 tok/s, MFU 28.0 %, peak 47,000 MB, val_bpb 1.4000 (dry)", True)),
    Row("mfu-flex", "throughput, gpu preset, flex", "reported", 90, row_throughput("flex"),
        Got("1,400,000 tok/s, MFU 30.0 %, peak 45,000 MB, val_bpb 1.4001 (dry)", True)),
    Row("repair", "OOM repair under preflight", "one halving, then ok", 150, row_repair,
        Got("ok; probes 128: cuda_oom 30.0 s, 64: ok 0.0 s; failed probes cost 30.0 s of "
            "80.0 s (dry)", True)),
    Row("docker-ok", "GPU trial (docker)", "ok", 120,
        docker_row("ok", "--token-budget", str(4 * 524288), "--memory", "48g"),
        Got("not run: no Docker engine (dry)", None)),
    Row("docker-oom", "forced CUDA OOM (docker)", "cuda_oom", 90,
        docker_row("cuda_oom", "--gpu-mem-fraction", "0.02", "--time-budget", "5", "--env",
                   "AR_COMPILE=0", "--memory", "48g"),
        Got("not run: no Docker engine (dry)", None)),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="0", help="the GPU id to check (nvidia-smi's index)")
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-check")
    parser.add_argument("--rows", help="comma-separated row keys (default: all): "
                        + ", ".join(r.key for r in ROWS))
    parser.add_argument("--time-budget", type=float, default=15.0,
                        help="training seconds of each session trial")
    parser.add_argument("--throughput-steps", type=int, default=40,
                        help="optimizer steps of each throughput run")
    parser.add_argument("--dry", action="store_true",
                        help="walk every row with canned results: no GPU, no trial")
    parser.add_argument("--dry-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    rows = ROWS
    if args.rows:
        keys = [k.strip() for k in args.rows.split(",") if k.strip()]
        unknown = [k for k in keys if k not in {r.key for r in ROWS}]
        if unknown or not keys:
            print(f"gpu-check: --rows {args.rows!r}: unknown row {', '.join(unknown) or '-'}; "
                  f"pick from {', '.join(r.key for r in ROWS)}", file=sys.stderr)
            return 2
        rows = [r for r in ROWS if r.key in keys]
    sys.path.insert(0, str(ROOT))
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM as Ctrl-C
    ctx = Context(out, args.gpu, args.time_budget, args.throughput_steps)
    try:
        records = drive(rows, ctx, args.dry, args.dry_delay,
                        say=lambda line: print(line, file=sys.stderr, flush=True),
                        keep=bool(args.rows))  # a check in parts keeps the other part's rows
    except KeyboardInterrupt:
        print(f"gpu-check: interrupted; the rows so far are in {out / 'rows.jsonl'} and "
              f"{out / 'table.txt'}", file=sys.stderr)
        return 130
    print((out / "table.txt").read_text(), end="")
    every = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines() if x.strip()]
    (out / "gpu-check.json").write_text(json.dumps({"rows": every}, indent=2) + "\n")
    return 1 if any(r["passed"] is False for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
