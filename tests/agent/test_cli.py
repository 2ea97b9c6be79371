import os
import shutil
import subprocess
import sys

from typer.testing import CliRunner

from agent.cli.main import app

runner = CliRunner()


def test_version_prints_package_version():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"autoresearch-sandbox {version('autoresearch-sandbox')}"


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "sandbox" in result.output


def test_console_script_is_installed():
    exe = shutil.which("autoresearch", path=os.path.dirname(sys.executable))
    assert exe, "the console script `autoresearch` is not installed beside this python"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("autoresearch-sandbox ")


def test_packaged_folders_are_found():
    from agent.paths import baseline_dir, prompts_dir

    assert (baseline_dir() / "train.py").is_file()
    assert (baseline_dir() / "prepare.py").is_file()
    assert (prompts_dir() / "README.md").is_file()


def test_one_handler_turns_a_user_error_into_one_line_and_its_exit_code():
    import typer

    from agent.cli.common import failing, handled
    from agent.errors import UserError

    def command(where: str = typer.Option("setup", "--where")) -> None:
        """Fails in setup or in its work."""
        if where == "setup":
            raise UserError("bad \x1b[31minput")
        with failing(1, "what is kept"):
            raise UserError("the work failed")

    cli = typer.Typer()
    cli.command()(handled(command, 2))
    cli.command("bug")(handled(lambda: 1 / 0))
    result = runner.invoke(cli, ["command"])
    assert result.exit_code == 2 and result.output == "error: bad input\n"
    result = runner.invoke(cli, ["command", "--where", "work"])
    assert result.exit_code == 1
    assert result.output == "error: the work failed (what is kept)\n"
    assert isinstance(runner.invoke(cli, ["bug"]).exception, ZeroDivisionError)  # our bug


def test_every_option_default_is_the_session_configs():
    """An option named like a SessionConfig field defaults to that field's default (seed 0 in
    `run` and `sandbox try` alike, sandbox auto, workers, disk ...)."""
    import click
    import typer.main

    from agent.cli.main import app
    from agent.config.settings import SessionConfig

    fields = SessionConfig.model_fields
    seen = set()

    def walk(command: click.Command, path: str) -> None:
        for sub in getattr(command, "commands", {}).values():
            walk(sub, f"{path} {sub.name}")
        for param in command.params:
            if param.name in fields and param.default is not None and param.default != "":
                assert param.default == fields[param.name].get_default(
                    call_default_factory=True), (path, param.name)
                seen.add(param.name)

    walk(typer.main.get_command(app), "autoresearch")
    assert {"seed", "sandbox", "workers", "disk", "method", "confirm"} <= seen
