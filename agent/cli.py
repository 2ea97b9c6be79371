"""The `autoresearch` command line (DESIGN.md, "Command line")."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import typer

from agent.cli_sandbox import sandbox_app

app = typer.Typer(
    help="Let classical optimizers and LLM agents tune a training script, one git commit "
    "and one sandboxed trial at a time.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(sandbox_app, name="sandbox")


def package_version() -> str:
    try:
        return version("autoresearch-sandbox")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


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
