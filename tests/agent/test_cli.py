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
