"""The `autoresearch` command line (DESIGN.md, "Command line")."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import typer

app = typer.Typer(
    help="Let classical optimizers and LLM agents tune a training script, one git commit "
    "and one sandboxed trial at a time.",
    no_args_is_help=True,
    add_completion=False,
)
sandbox_app = typer.Typer(help="Build and check the trial sandbox.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")


def package_version() -> str:
    try:
        return version("autoresearch-sandbox")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line error that says what to do, and return the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"autoresearch-sandbox {package_version()}")
        raise typer.Exit()


@app.callback()
def main(
    version_: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """autoresearch-sandbox."""


@sandbox_app.command("build")
def sandbox_build(
    from_host: bool = typer.Option(
        False, "--from-host", help="Offline image: empty root file system + read-only host mounts."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the image exists."),
) -> None:
    """Build the image trials run in."""
    if not from_host:
        raise fail("only --from-host is available in this version (the GPU image comes later)", 2)
    import docker
    import docker.errors

    from sandbox.images.host import build_host_image

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        raise fail(f"no Docker engine answers ({e.__class__.__name__}): start dockerd, "
                   "or run trials with --sandbox local") from None
    tag = build_host_image(client, force=force)
    typer.echo(f"built {tag}")
