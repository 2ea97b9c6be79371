"""`autoresearch sandbox ...`: build the image, check the backend, try a training folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from contextlib import nullcontext
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from agent.cli.common import (
    DISK,
    GPUS,
    ISOLATION,
    PREPARE,
    SANDBOX,
    SEED,
    TIME_BUDGET,
    TOKEN_BUDGET,
    config_or_fail,
    default,
    failing,
    gpu_ids,
)
from agent.config.runspec import load_runspec
from agent.errors import fail
from agent.text import markup, reason

console = Console()


def build(
    from_host: bool = typer.Option(
        False, "--from-host", help="Offline image: empty root file system + read-only host mounts."
    ),
    gpu: bool = typer.Option(False, "--gpu", help="GPU image from sandbox/images/Dockerfile."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the image exists."),
) -> None:
    """Build the image trials run in."""
    if from_host == gpu:
        raise fail("say which image: --from-host (offline) or --gpu (needs a registry)", 2)
    from sandbox.docker import GPU_IMAGE, connect

    client = connect()
    if from_host:
        from sandbox.images.host import build_host_image

        typer.echo(f"built {build_host_image(client, force=force)}")
        return
    import docker.errors

    context = Path(__file__).resolve().parents[2] / "sandbox" / "images"
    try:
        client.images.build(path=str(context), tag=GPU_IMAGE, rm=True, pull=force)
    except (docker.errors.BuildError, docker.errors.APIError) as e:
        raise fail(f"building {GPU_IMAGE} failed ({reason(e)}); without a registry use "
                   "--from-host") from None
    typer.echo(f"built {GPU_IMAGE}")


def _visible_gpus() -> tuple[list[str], str]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return [], "no nvidia-smi on this host (no NVIDIA driver)"
    out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    gpus = [ln for ln in out.stdout.splitlines() if ln.startswith("GPU ")]
    return gpus, "" if gpus else (out.stderr.strip() or "nvidia-smi lists no GPU")


def check_report(gpus: tuple[int, ...] = (), isolation: str = "auto") -> dict:
    """What a session started now would use, and why; the same facts `--json` prints. Under
    "local", what a local trial gets here (sandbox/probe.py), found by running one."""
    from sandbox import select_sandbox
    from sandbox.base import SandboxError
    from sandbox.docker import GPU_IMAGE, image_exists
    from sandbox.images.host import HOST_IMAGE

    report: dict = {"docker": {"engine": False}, "gpus": [], "gpu_note": ""}
    try:
        from sandbox.docker import connect

        client = connect(timeout=10)
        info = client.version()
        report["docker"] = {
            "engine": True, "version": info.get("Version"),
            "images": {HOST_IMAGE: image_exists(client, HOST_IMAGE),
                       GPU_IMAGE: image_exists(client, GPU_IMAGE)},
            "nvidia_runtime": "nvidia" in (client.info().get("Runtimes") or {}),
        }
    except SandboxError as e:
        report["docker"]["why_not"] = str(e)
    report["gpus"], report["gpu_note"] = _visible_gpus()
    from sandbox.memguard import cgroup_available

    cgroup = cgroup_available()
    report["local_memory_limit"] = cgroup or "watchdog"
    report["local_memory_why"] = (
        f"each local trial gets its own memory {cgroup}" if cgroup else
        "no writable memory cgroup here: a watchdog samples the trial's resident memory")
    from sandbox.probe import machine_report

    report["local"] = machine_report(gpus, isolation)
    try:
        backend, why = select_sandbox(default("sandbox"), isolation)
        report["backend"], report["why"] = backend.name, why
        report["image"] = getattr(backend, "image", None)
        if backend.name == "docker":
            mode, how = backend.gpu_mode()
            report["docker"]["gpu_mode"], report["docker"]["gpu_mode_why"] = mode, how
    except SandboxError as e:
        report["backend"], report["why"] = None, str(e)
    return report


def check(
    gpus: str = typer.Option("", "--gpus", help="GPU ids a local trial should reach (and "
                             "initialise CUDA on), e.g. 0."),
    isolation: str = ISOLATION,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Say which backend and image a session would use, whether GPUs are visible, and what a
    local trial gets here (isolation, memory limit, devices, compiler, CUDA), found by
    running one."""
    if isolation not in ("auto", "none"):
        raise fail(f"--isolation {isolation!r}: use auto or none", 2)
    report = check_report(tuple(gpu_ids(gpus)), isolation)
    if as_json:
        typer.echo(json.dumps(report, sort_keys=True))
        return
    d = report["docker"]
    table = Table(show_header=False, box=None)
    engine = f"answers (version {d['version']})" if d.get("engine") else f"no: {d['why_not']}"
    table.add_row("Docker engine", markup(engine))
    for tag, present in (d.get("images") or {}).items():
        table.add_row(f"image {markup(tag)}", "present" if present else "missing")
    table.add_row("GPUs", markup(", ".join(report["gpus"]) or f"none: {report['gpu_note']}"))
    if d.get("gpu_mode"):
        table.add_row("GPUs in Docker", markup(f"{d['gpu_mode']} ({d['gpu_mode_why']})"))
    table.add_row("local memory limit",
                  markup(f"{report['local_memory_limit']} ({report['local_memory_why']})"))
    local = report["local"]
    table.add_row("local trials run", markup(local["isolation"]))
    trial = local.get("trial") or {}
    if trial:
        devices = trial.get("devices") or {}
        table.add_row("  devices they open", markup(", ".join(
            f"{p} ({v})" for p, v in devices.items()) or "none"))
        table.add_row("  C compiler", markup(trial.get("compiler") or "none"))
        if "cuda" in trial:
            cuda = trial["cuda"]
            table.add_row("  CUDA", markup(cuda.get("error") or
                                           f"{cuda['count']} device(s) {cuda.get('name', '')}"))
    table.add_row("a local session", markup(local["session"]))
    table.add_row("a session would use", markup(f"{report['backend']} ({report['why']})"))
    console.print(table)


def try_(
    directory: Path = typer.Argument(..., help="Folder holding train.py (and prepare.py)."),
    sandbox: str = SANDBOX,
    timeout: float | None = typer.Option(
        None, "--timeout", help="Hard wall-clock limit, s (default: a session's)."),
    memory: str | None = typer.Option(
        None, "--memory", help="Host memory, e.g. 512m, 8g (default: the preset's)."),
    disk: str = DISK,
    time_budget: float | None = TIME_BUDGET,
    token_budget: int | None = TOKEN_BUDGET,
    seed: int = SEED,
    gpus: str = GPUS,
    gpu_mem_fraction: float | None = typer.Option(None, "--gpu-mem-fraction"),
    preset: str | None = typer.Option(
        None, "--preset", help="Whose limits (memory, budget): default gpu with --gpus where "
        "the folder has that preset, else its default; the block runs as the file holds it."),
    score: str | None = typer.Option(
        None, "--score", help="printed (the default), or harness: train.py exports its model "
        "and the harness scores it in a second sandbox, as a session's --score harness does."),
    out: Path | None = typer.Option(None, "--out", help="Keep train.log and out/ here."),
    cache: Path | None = typer.Option(None, "--cache", help="Compile cache (default: OUT/cache)."),
    env_vars: list[str] = typer.Option([], "--env", help="AR_NAME=VALUE for the trial; repeat."),
    prepare_network: bool = PREPARE,
    isolation: str = ISOLATION,
    as_json: bool = typer.Option(False, "--json", help="Print the result record as JSON."),
) -> None:
    """Run DIR/train.py once exactly as a session's trial runs (the folder's interpreter,
    variables and mounts, the session's limits, environment and data), and print the result
    record."""
    from sandbox import select_sandbox

    if not (directory / "train.py").is_file():
        raise fail(f"{directory} has no train.py: pass the folder that holds it", 2)
    if timeout is not None and not (timeout > 0):
        raise fail(f"--timeout {timeout}: must be a positive number of seconds", 2)
    extra = {}
    for item in env_vars:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("AR_"):
            raise fail(f"--env {item!r} must look like AR_NAME=VALUE", 2)
        extra[key] = value
    if out is not None and out.exists() and not out.is_dir():
        raise fail(f"--out {out} is a file: give a folder for train.log and out/", 2)
    ids = gpu_ids(gpus)
    # --gpus names the GPUs this one trial gets; the sandbox kind is judged by select_sandbox
    # (an unknown one is a failure to run, exit 1, as for `build`)
    config = config_or_fail(
        {"trial_timeout": "--timeout"}, seed=seed, trial_timeout=timeout, memory=memory,
        disk=disk, time_budget=time_budget, token_budget=token_budget, gpus=ids,
        gpus_per_trial=len(ids) or None, gpu_mem_fraction=gpu_mem_fraction,
        prepare_network=prepare_network, train_dir=str(directory), score=score,
        isolation=isolation)
    with failing(1):  # a backend that cannot start is a failure to run, as for `build`
        backend, why = select_sandbox(sandbox, config.isolation)
    # the kind it chose ("auto" resolved) is the one the preparation and the executor use
    config = config.model_copy(update={"sandbox": backend.name})
    with failing(2):
        spec, space = load_runspec(directory), _space(directory, preset, bool(ids))
    if not as_json:
        console.print(f"[dim]sandbox: {markup(why)}[/dim]")
    try:
        workdir = out or Path(tempfile.mkdtemp(prefix="autoresearch-try-"))
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fail(f"--out {out}: {e.strerror or e}", 2) from None
    status = console.status(f"running {markup(directory)}/train.py") if not as_json \
        else nullcontext()
    result = _run(directory, workdir, cache or workdir / "cache", extra, config, space, spec,
                  status)
    if as_json:
        typer.echo(result.to_json())
    else:
        console.print(result_table(result))
    raise typer.Exit(0 if result.ok else 1)


def _space(directory: Path, preset: str | None = None, gpus: bool = False):
    """The folder's search space under `preset`, whose budget and memory the try gets; no
    preset: `gpu` for a try given GPUs where the folder has that preset (a GPU trial under
    the cpu preset's 8 GB host limit is cut while it compiles), else the folder's default.
    No search space: an empty one (the fallbacks)."""
    from agent.edit.block import SpaceError
    from agent.edit.space import SearchSpace, load_space

    path = directory / "search_space.toml"
    if not path.is_file():
        if preset is not None:
            raise SpaceError(f"--preset {preset}: {directory} has no search_space.toml")
        return SearchSpace({})
    if preset is None and gpus:
        try:
            return load_space(path, "gpu")
        except SpaceError:
            pass  # no gpu preset there (or a broken file, which the line below reports)
    return load_space(path, preset)


def _run(directory: Path, workdir: Path, cache: Path, extra: dict[str, str], config, space,
         spec, status):
    """The folder's baseline as a session's trial 0 runs: its tree from a commit of the
    folder, its data prepared as the [run] table says, then one job through the session's
    executor (agent/loop/plan.py)."""
    from agent.analysis.repeats import Seeded
    from agent.config.data import prepare_data
    from agent.loop.plan import TrialPlan
    from agent.record.workspace import Workspace

    scratch = Path(tempfile.mkdtemp(prefix="autoresearch-try-"))
    try:
        ws = Workspace.create(scratch / "repo", directory)
        plan = TrialPlan(config, space, spec)
        data = prepare_data(spec, ws.path, directory, plan.preparation(workdir / "prepare"))
        plan = TrialPlan(config.model_copy(update={"data_dir": str(data) if data else None}),
                         space, spec)
        job = plan.job(0, ws.archive(ws.baseline), workdir, {**plan.env(), **extra}, cache)
        executor = plan.executor(scratch)
        try:
            executor.submit(Seeded(0), job)
            with status:
                [(_, result)] = executor.wait()
        finally:
            executor.close()
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def result_table(result) -> Table:
    table = Table(title=f"trial: {markup(result.status)}", show_header=False)
    for key, value in result.to_dict().items():
        if key == "metrics":
            continue
        if value not in (None, "", {}):
            table.add_row(key, markup(value))  # the reason is a line the trial printed
    for key, value in result.metrics.items():
        table.add_row(f"  {markup(key)}", markup(value))
    return table
