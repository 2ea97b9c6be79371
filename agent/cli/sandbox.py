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

from agent.errors import fail
from agent.text import markup
from sandbox.base import Limits

sandbox_app = typer.Typer(help="Build, check and try the trial sandbox.", no_args_is_help=True)
console = Console()


@sandbox_app.command("build")
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
    from sandbox.base import SandboxError
    from sandbox.docker import GPU_IMAGE, connect

    try:
        client = connect()
    except SandboxError as e:
        raise fail(str(e)) from None
    if from_host:
        from sandbox.images.host import build_host_image

        typer.echo(f"built {build_host_image(client, force=force)}")
        return
    import docker.errors

    context = Path(__file__).resolve().parents[2] / "sandbox" / "images"
    try:
        client.images.build(path=str(context), tag=GPU_IMAGE, rm=True, pull=force)
    except (docker.errors.BuildError, docker.errors.APIError) as e:
        raise fail(f"building {GPU_IMAGE} failed ({e}); without a registry use --from-host") \
            from None
    typer.echo(f"built {GPU_IMAGE}")


def _visible_gpus() -> tuple[list[str], str]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return [], "no nvidia-smi on this host (no NVIDIA driver)"
    out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    gpus = [ln for ln in out.stdout.splitlines() if ln.startswith("GPU ")]
    return gpus, "" if gpus else (out.stderr.strip() or "nvidia-smi lists no GPU")


def check_report() -> dict:
    """What a session started now would use, and why; the same facts `--json` prints."""
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
    try:
        backend, why = select_sandbox("auto")
        report["backend"], report["why"] = backend.name, why
        report["image"] = getattr(backend, "image", None)
        if backend.name == "docker":
            mode, how = backend.gpu_mode()
            report["docker"]["gpu_mode"], report["docker"]["gpu_mode_why"] = mode, how
    except SandboxError as e:
        report["backend"], report["why"] = None, str(e)
    return report


@sandbox_app.command("check")
def check(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")):
    """Say which backend and image a session would use, and whether GPUs are visible."""
    report = check_report()
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
    table.add_row("a session would use", markup(f"{report['backend']} ({report['why']})"))
    console.print(table)


@sandbox_app.command("try")
def try_(
    directory: Path = typer.Argument(..., help="Folder holding train.py (and prepare.py)."),
    sandbox: str = typer.Option("auto", "--sandbox", help="auto, docker or local."),
    timeout: float = typer.Option(900.0, "--timeout", help="Hard wall-clock limit, seconds."),
    memory: str = typer.Option(Limits.memory, "--memory", help="Host memory, e.g. 512m, 8g."),
    disk: str = typer.Option(Limits.disk, "--disk", help="What the trial may write into out/."),
    time_budget: float | None = typer.Option(None, "--time-budget", help="TIME_BUDGET, s."),
    token_budget: int | None = typer.Option(None, "--token-budget", help="AR_TOKEN_BUDGET."),
    seed: int = typer.Option(42, "--seed", help="AR_SEED."),
    gpus: str = typer.Option("", "--gpus", help="GPU ids, e.g. 0,1."),
    gpu_mem_fraction: float | None = typer.Option(None, "--gpu-mem-fraction"),
    out: Path | None = typer.Option(None, "--out", help="Keep train.log and out/ here."),
    cache: Path | None = typer.Option(None, "--cache", help="Compile cache (default: OUT/cache)."),
    env_vars: list[str] = typer.Option([], "--env", help="AR_NAME=VALUE for the trial; repeat."),
    prepare_network: bool = typer.Option(
        False, "--prepare-network", help="Give DIR/prepare.py (sandboxed) the network."),
    as_json: bool = typer.Option(False, "--json", help="Print the result record as JSON."),
) -> None:
    """Run DIR/train.py once exactly as a trial would, and print the result record."""
    from sandbox import select_sandbox
    from sandbox.base import Limits, SandboxError, TrialRun, parse_memory

    if not (directory / "train.py").is_file():
        raise fail(f"{directory} has no train.py: pass the folder that holds it", 2)
    for option, value in (("--memory", memory), ("--disk", disk)):
        try:
            parse_memory(value)
        except ValueError as e:
            raise fail(f"{option} {e}", 2) from None
    if not (timeout > 0):
        raise fail(f"--timeout {timeout}: must be a positive number of seconds", 2)
    if not all(g.strip().isdigit() for g in gpus.split(",") if g.strip()):
        raise fail(f"--gpus {gpus!r}: give GPU ids as nvidia-smi numbers them, like 0,1", 2)
    gpu_ids = tuple(int(g) for g in gpus.split(",") if g.strip())
    try:
        backend, why = select_sandbox(sandbox)
    except SandboxError as e:
        raise fail(str(e)) from None
    if not as_json:
        console.print(f"[dim]sandbox: {markup(why)}[/dim]")
    env = {"AR_SEED": str(seed)}
    for item in env_vars:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("AR_"):
            raise fail(f"--env {item!r} must look like AR_NAME=VALUE", 2)
        env[key] = value
    if time_budget is not None:
        env["TIME_BUDGET"] = str(time_budget)
    if token_budget is not None:
        env["AR_TOKEN_BUDGET"] = str(token_budget)
    if out is not None and out.exists() and not out.is_dir():
        raise fail(f"--out {out} is a file: give a folder for train.log and out/", 2)
    try:
        workdir = out or Path(tempfile.mkdtemp(prefix="autoresearch-try-"))
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fail(f"--out {out}: {e.strerror or e}", 2) from None
    limits = Limits(timeout_s=timeout, memory=memory, gpus=gpu_ids, disk=disk,
                    gpu_mem_fraction=gpu_mem_fraction)
    data = _data(directory, backend, workdir / "prepare", prepare_network, limits)
    run = TrialRun(tree=directory.resolve(), workdir=workdir, data_dir=data,
                   env=env, cache_dir=cache or workdir / "cache")
    try:
        status = console.status(f"running {markup(directory)}/train.py") if not as_json \
            else nullcontext()
        with status:
            result = backend.run(run, limits)
    except SandboxError as e:
        raise fail(str(e)) from None
    if as_json:
        typer.echo(result.to_json())
    else:
        console.print(result_table(result))
    raise typer.Exit(0 if result.ok else 1)


def _data(directory: Path, backend, workdir: Path, network: bool, limits) -> Path | None:
    """DIR/prepare.py's data folder: prepared in the same sandbox as the trial (the packaged
    baseline's own prepare.py on the host)."""
    from agent.config.data import DataError, Preparation, prepare_default_data
    from sandbox.base import SandboxError

    try:
        return prepare_default_data(directory, Preparation(backend, workdir, network,
                                                           limits.memory, limits.disk))
    except (DataError, SandboxError) as e:
        raise fail(str(e)) from None


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
