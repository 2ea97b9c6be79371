"""`make gpu-check`: does the GPU path work on this machine? One table, exit 1 if a row fails.

Runs, in about six minutes on one H100/H200 (estimated: no GPU has run it yet), offline:
  1. `autoresearch sandbox check`: the backend `auto` picks, the GPUs, how they reach trials;
  2. a 3-trial `cmaes` session (baseline + 2) on `--preset gpu --gpus G` with that backend:
     at least 2 trials ok, and the second trial's overhead (wall - training seconds) below the
     first's, because the session's compile cache is warm by then;
  3. a forced CUDA OOM (the gpu preset under a 2 % GPU memory cap) that must be `cuda_oom`;
  4. a host-memory hog beside a live CUDA context under `--memory 2g` that must be `oom`
     (and CUDA must initialise under that limit);
  5. the Docker rows, where an engine answers: a GPU trial `ok` and a CUDA OOM `cuda_oom`;
  6. the gpu preset's throughput outside any sandbox (tokens/s, MFU, peak memory), with the
     attention trials use (SDPA: a masked full attention for the sliding-window layers) and
     with FlexAttention for those layers (AR_ATTENTION=flex), same seed: MFU before/after,
     and a profile of one step of each (gpu-check/profile-sdpa.txt, profile-flex.txt);
  7. OOM repair under preflight: a session capped at 10 GB of the GPU's memory, where no
     micro-batch of the gpu preset's range (32..256 sequences, ~47 GB at 128) fits: trial 1's
     preflight fails `cuda_oom`, DEVICE_BATCH_SIZE is halved until it fits, and the trial
     trains (the seconds the failed probes cost).

    python scripts/gpu_check.py [--gpu 0] [--out gpu-check] [--time-budget 20]

On an offline GPU machine without a venv, carry the project and its wheels (README, "GPUs"):
    PYTHONPATH=.site:$PWD python3 scripts/gpu_check.py
The logs of every row stay under --out (the CUDA OOM's log is a real fixture for
tests/sandbox/logs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from agent.cli.main import app; app()"]


class Check:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, bool | None]] = []  # check, expected, got, pass

    def add(self, name: str, expected: str, got: str, passed: bool | None) -> None:
        mark = {True: "ok", False: "FAIL", None: "skipped"}[passed]
        print(f"[{mark}] {name}: {got}", file=sys.stderr, flush=True)
        self.rows.append((name, expected, got, passed))

    @property
    def failed(self) -> bool:
        return any(p is False for *_, p in self.rows)


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH", ""), str(ROOT)) if p)}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith(("{", "[")):
            return json.loads(line)
    raise ValueError(f"no JSON in the output: {text[-500:]}")


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def gpu_tree(folder: Path) -> Path:
    """The baseline train.py with the gpu preset's block, and prepare.py, in `folder`."""
    from agent.edit.block import apply_preset
    from agent.edit.space import load_space
    from agent.paths import baseline_dir

    folder.mkdir(parents=True, exist_ok=True)
    space = load_space(baseline_dir() / "search_space.toml", "gpu")
    (folder / "train.py").write_text(apply_preset((baseline_dir() / "train.py").read_text(),
                                                  space))
    shutil.copy(baseline_dir() / "prepare.py", folder / "prepare.py")
    return folder


HOG = """import torch
torch.zeros(1, device="cuda")
print("cuda ok", flush=True)
chunks = []
for _ in range(128):
    chunks.append(b"x" * (64 * 2**20))  # 8 GiB in all, every page written
print("survived", flush=True)
"""


def check_sandbox(check: Check) -> dict:
    out = cli("sandbox", "check", "--json", timeout=120)
    try:
        report = last_json(out.stdout)
    except ValueError:
        check.add("sandbox check", "a report", out.stderr.strip()[-200:], False)
        return {}
    gpus = report.get("gpus") or []
    how = report["docker"].get("gpu_mode") or "-"
    check.add("sandbox check", "GPUs listed; a backend picked",
              f"{len(gpus)} GPU(s); backend {report.get('backend')}; docker GPUs: {how}; "
              f"local memory limit: {report.get('local_memory_limit')}",
              bool(gpus) and report.get("backend") is not None)
    return report


def check_session(check: Check, out: Path, gpu: str, budget: float) -> None:
    run_dir = out / "session"
    shutil.rmtree(run_dir, ignore_errors=True)
    t = time.monotonic()
    proc = cli("run", "--method", "cmaes", "--preset", "gpu", "--gpus", gpu, "--trials", "2",
               "--time-budget", f"{budget:g}", "--seed", "0", "--run-dir", str(run_dir),
               "--quiet", timeout=3 * (3 * budget + 240))
    wall = time.monotonic() - t
    (out / "session.out").write_text(proc.stdout + proc.stderr)
    rows = last_json(cli("replay", str(run_dir), "--json").stdout) if (
        run_dir / "session.toml").exists() else []
    statuses = [r["status"] for r in rows]
    ok = sum(s == "ok" for s in statuses)
    check.add("cmaes session, 3 trials", ">= 2 ok",
              f"{' '.join(statuses) or proc.stderr.strip()[-200:]} in {wall:.0f} s", ok >= 2)
    records = [last_json(cli("replay", str(run_dir), "--trial", str(r["trial"]), "--json")
                         .stdout) for r in rows]
    over = [(r.get("result") or {}).get("overhead_s") for r in records]
    shown = ", ".join("-" if o is None else f"{o:.1f}" for o in over)
    if len(over) >= 2 and over[0] is not None and over[1] is not None:
        check.add("compile cache: overhead_s per trial", "trial 1 < trial 0", shown,
                  over[1] < over[0])
    else:
        check.add("compile cache: overhead_s per trial", "trial 1 < trial 0",
                  shown + " (a trial failed)", False)


def check_repair(check: Check, out: Path, gpu: str, budget: float) -> None:
    import torch

    run_dir = out / "repair"
    shutil.rmtree(run_dir, ignore_errors=True)
    share = 10 * 2**30 / torch.cuda.get_device_properties(int(gpu)).total_memory
    proc = cli("run", "--method", "cmaes", "--preset", "gpu", "--gpus", gpu, "--trials", "1",
               "--time-budget", f"{budget:g}", "--seed", "0", "--gpu-mem-fraction",
               f"{share:.3f}",
               "--repair-oom", "--run-dir", str(run_dir), "--quiet", timeout=900)
    (out / "repair.out").write_text(proc.stdout + proc.stderr)
    try:
        trial = last_json(cli("replay", str(run_dir), "--trial", "1", "--json").stdout)
    except ValueError:
        check.add("OOM repair under preflight", "repaired, ok", proc.stderr.strip()[-200:],
                  False)
        return
    probes = trial.get("probes") or []
    failed = [p for p in probes if p["status"] != "ok"]
    got = (f"{trial['status']}; probes " + ", ".join(
        f"{p['DEVICE_BATCH_SIZE']}: {p['status']} {p['wall_s']:.1f} s" for p in probes) +
        f"; failed probes cost {sum(p['wall_s'] for p in failed):.1f} s of "
        f"{trial.get('cost_s', 0):.1f} s")
    check.add("OOM repair under preflight", "repaired, ok", got,
              trial["status"] == "ok" and bool(trial.get("repairs")))


def check_try(check: Check, name: str, expected: str, tree: Path, out: Path, *args: str,
              must_log: str | None = None) -> None:
    work = out / slug(name)
    shutil.rmtree(work, ignore_errors=True)
    proc = cli("sandbox", "try", str(tree), "--json", "--out", str(work), *args, timeout=600)
    try:
        result = last_json(proc.stdout)
    except ValueError:
        check.add(name, expected, proc.stderr.strip()[-200:] or "no result", False)
        return
    log = (work / "train.log").read_text(errors="replace") if (work / "train.log").exists() \
        else ""
    passed = result["status"] == expected and (must_log is None or must_log in log)
    got = f"{result['status']} in {result['wall_s']:.1f} s: {result.get('reason') or '-'}"
    if must_log is not None and must_log not in log:
        got += f" (log lacks {must_log!r})"
    check.add(name, expected, got[:160], passed)


def check_throughput(check: Check, out: Path, steps: int, gpu: str, attention: str) -> dict:
    """The gpu preset outside any sandbox with AR_ATTENTION=attention, for `steps` steps
    (the same batches each time). `sdpa` is what trials run; `flex`
    (FlexAttention for the sliding windows, which SDPA can only run as a masked full
    attention) is the candidate for a higher MFU, its val_bpb the check that it computes the
    same: its row is reported, never failed. Its third step's ops, most GPU time first,
    go to out/profile-ATTENTION.txt: where a step's time goes."""
    from benchmarks.train_throughput import preset_values

    name = f"throughput, gpu preset, {attention}"
    tokens = steps * preset_values("gpu")["TOTAL_BATCH_SIZE"]
    try:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--preset",
             "gpu", "--tokens", str(tokens), "--json"],
            capture_output=True, text=True, timeout=600, cwd=ROOT,
            env={**os.environ, "AR_DEVICE": f"cuda:{gpu}", "AR_ATTENTION": attention,
                 "AR_PROFILE_OUT": str(out / f"profile-{attention}.txt")})
        stdout, stderr = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:  # its output so far, as bytes or text
        stdout, stderr = ("" if x is None else x if isinstance(x, str) else x.decode(
            errors="replace") for x in (e.stdout, e.stderr))
        stderr += "\nno summary within 600 s"
    (out / f"throughput-{attention}.out").write_text(stdout + stderr)
    try:
        run = json.loads(stdout)["runs"][0]
    except (ValueError, KeyError, IndexError):
        last = (stderr.strip().splitlines() or ["no output"])[-1][-200:]
        gating = attention == "sdpa"
        check.add(name, "a summary", last if gating else f"FAILED (not gating): {last}",
                  False if gating else None)
        return {}
    check.add(name, "tokens/s, MFU, peak",
              f"{run['tokens_per_second']:,.0f} tok/s, MFU {run['mfu_percent']:.1f} %, "
              f"peak {run['peak_memory_mb']:,.0f} MB, val_bpb {run['val_bpb']:.4f}", True)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="0", help="the GPU id to check (nvidia-smi's index)")
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-check")
    parser.add_argument("--time-budget", type=float, default=20.0,
                        help="training seconds of each session trial")
    parser.add_argument("--throughput-steps", type=int, default=60,
                        help="optimizer steps of each throughput run (60: ~25 s on an H200)")
    parser.add_argument("--attention", nargs="+", default=["sdpa", "flex"],
                        choices=["sdpa", "flex"], help="AR_ATTENTION of the throughput rows")
    parser.add_argument("--skip-docker", action="store_true")
    parser.add_argument("--skip-repair", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    check = Check()
    started = time.monotonic()

    report = check_sandbox(check)
    check_session(check, out, args.gpu, args.time_budget)
    tree = gpu_tree(out / "gpu-tree")
    check_try(check, "forced CUDA OOM (local)", "cuda_oom", tree, out, "--sandbox", "local",
              "--gpus", args.gpu, "--gpu-mem-fraction", "0.02", "--time-budget", "5",
              "--env", "AR_COMPILE=0", "--memory", "48g")
    hog = out / "hog-tree"
    hog.mkdir(exist_ok=True)
    (hog / "train.py").write_text(HOG)
    check_try(check, "host memory hog (local)", "oom", hog, out, "--sandbox", "local",
              "--gpus", args.gpu, "--memory", "2g", must_log="cuda ok")
    engine = (report.get("docker") or {}).get("engine")
    if engine and not args.skip_docker:
        check_try(check, "GPU trial (docker)", "ok", tree, out, "--sandbox", "docker",
                  "--gpus", args.gpu, "--token-budget", str(4 * 524288), "--memory", "48g")
        check_try(check, "forced CUDA OOM (docker)", "cuda_oom", tree, out, "--sandbox",
                  "docker", "--gpus", args.gpu, "--gpu-mem-fraction", "0.02",
                  "--time-budget", "5", "--env", "AR_COMPILE=0", "--memory", "48g")
    else:
        why = "--skip-docker" if args.skip_docker else (report.get("docker") or {}).get(
            "why_not", "no Docker engine")
        check.add("docker rows", "ok / cuda_oom", f"not run: {why}", None)
    runs = {attention: check_throughput(check, out, args.throughput_steps, args.gpu,
                                        attention) for attention in args.attention}
    if not args.skip_repair:
        check_repair(check, out, args.gpu, args.time_budget)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"gpu-check: GPU {args.gpu}, {time.monotonic() - started:.0f} s")
    for col in ("check", "expected", "got", "result"):
        table.add_column(col, overflow="fold")
    for name, expected, got, passed in check.rows:
        mark = {True: "[green]ok[/green]", False: "[red]FAIL[/red]",
                None: "[yellow]skipped[/yellow]"}[passed]
        table.add_row(name, expected, got, mark)
    Console(width=160).print(table)
    (out / "gpu-check.json").write_text(json.dumps(
        {"rows": check.rows, "throughput": runs, "sandbox": report}, indent=2))
    oom_log = out / slug("forced CUDA OOM (local)") / "train.log"
    if oom_log.exists():
        shutil.copy(oom_log, out / "cuda_oom.log")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
