import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from agent.cli.main import app

runner = CliRunner()
SUMMARY = 'print("---"); print("val_bpb: 2.500000")\n'


def write(tmp_path, script):
    d = tmp_path / "trainer"
    d.mkdir()
    (d / "train.py").write_text(script)
    d.chmod(0o755)
    return d


def test_try_prints_the_result_record_as_json(tmp_path):
    d = write(tmp_path, SUMMARY)
    result = runner.invoke(app, ["sandbox", "try", str(d), "--sandbox", "local", "--json",
                                 "--out", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["status"] == "ok" and record["val_bpb"] == 2.5 and record["backend"] == "local"
    assert (tmp_path / "w" / "train.log").is_file()


def test_try_exits_nonzero_on_a_failed_trial(tmp_path):
    d = write(tmp_path, "raise SystemExit('boom')\n")
    result = runner.invoke(app, ["sandbox", "try", str(d), "--sandbox", "local", "--json",
                                 "--out", str(tmp_path / "w")])
    assert result.exit_code == 1
    assert json.loads(result.output)["status"] == "crash"


def test_try_in_docker(tmp_path, docker_client, host_image):
    d = write(tmp_path, SUMMARY)
    result = runner.invoke(app, ["sandbox", "try", str(d), "--sandbox", "docker", "--json",
                                 "--memory", "512m", "--timeout", "60",
                                 "--out", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["backend"] == "docker"


def test_try_bad_input_is_one_line(tmp_path):
    result = runner.invoke(app, ["sandbox", "try", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "has no train.py" in result.output
    d = write(tmp_path, SUMMARY)
    result = runner.invoke(app, ["sandbox", "try", str(d), "--memory", "lots"])
    assert result.exit_code == 2 and "not a size" in result.output
    result = runner.invoke(app, ["sandbox", "try", str(d), "--sandbox", "vm"])
    assert result.exit_code == 1 and "unknown sandbox 'vm'" in result.output


def test_check_reports_the_backend(docker_client, host_image):
    result = runner.invoke(app, ["sandbox", "check", "--json"])
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["backend"] == "docker" and report["docker"]["engine"] is True
    assert report["docker"]["images"][host_image] is True
    # this machine has no NVIDIA toolkit, and as root a writable cgroup v1 memory controller
    assert report["docker"]["gpu_mode"] == "device-nodes"
    assert "no NVIDIA container toolkit" in report["docker"]["gpu_mode_why"]
    assert report["local_memory_limit"] == "cgroup v1"
    human = runner.invoke(app, ["sandbox", "check"])
    assert "a session would use" in human.output and "GPUs in Docker" in human.output


def test_try_passes_ar_variables_and_refuses_others(tmp_path):
    d = write(tmp_path, "import os; print('flag', os.environ.get('AR_FLAG'))\n" + SUMMARY)
    result = runner.invoke(app, ["sandbox", "try", str(d), "--sandbox", "local", "--json",
                                 "--env", "AR_FLAG=on", "--out", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert "flag on" in (tmp_path / "w" / "train.log").read_text()
    result = runner.invoke(app, ["sandbox", "try", str(d), "--env", "OPENAI_API_KEY=x"])
    assert result.exit_code == 2 and "must look like AR_NAME=VALUE" in result.output


def test_build_needs_a_kind():
    result = runner.invoke(app, ["sandbox", "build"])
    assert result.exit_code == 2 and "--from-host" in result.output


@pytest.mark.parametrize("sandbox", ["local", "docker"])
def test_try_runs_the_folder_as_a_sessions_trial(tmp_path, sandbox, request):
    """`sandbox try` builds its trial as a session does: the [run] table's interpreter (a
    wrapper that says it ran), its variables and time budget, and the session's seed (0)."""
    if sandbox == "docker":
        request.getfixturevalue("host_image")
    d = write(tmp_path, "import os\nfor k in ('FOLDER_FLAG', 'AR_SEED', 'TIME_BUDGET'):\n"
                        "    print(k, os.environ.get(k))\n" + SUMMARY)
    bin_ = d / ".venv" / "bin"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(d / ".venv")],
                   check=True)
    (bin_ / "python-real").symlink_to(os.path.realpath(bin_ / "python"))
    (bin_ / "python").unlink()
    (bin_ / "python").write_text("#!/bin/sh\necho \"the folder's interpreter ran\"\n"
                                 'exec "$(dirname "$0")/python-real" "$@"\n')
    (bin_ / "python").chmod(0o755)
    (d / "autoresearch.toml").write_text('[run]\npython = ".venv/bin/python"\n'
                                         'env = { FOLDER_FLAG = "on" }\ntime_budget = 7\n')
    out = tmp_path / "w"
    result = runner.invoke(app, ["sandbox", "try", str(d), "--sandbox", sandbox, "--json",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["status"] == "ok"
    log = (out / "train.log").read_text()
    assert "the folder's interpreter ran" in log, log
    assert "FOLDER_FLAG on" in log and "AR_SEED 0" in log and "TIME_BUDGET 7" in log, log


def test_try_refuses_a_broken_run_table_as_bad_input(tmp_path):
    d = write(tmp_path, SUMMARY)
    (d / "autoresearch.toml").write_text('[run]\nenv = { HF_TOKEN = "x" }\n')
    result = runner.invoke(app, ["sandbox", "try", str(d), "--sandbox", "local"])
    assert result.exit_code == 2 and "HF_TOKEN looks like a secret" in result.output


def test_try_with_gpus_gets_the_gpu_presets_limits(tmp_path):
    """A GPU try under the cpu preset's 8 GB host limit is cut while Inductor compiles
    (issue 24): with --gpus and no --preset the folder's gpu preset sets memory and budget."""
    from agent.cli.sandbox import _space
    from agent.paths import baseline_dir

    assert (_space(baseline_dir()).preset, _space(baseline_dir()).memory) == ("cpu", "8g")
    gpu = _space(baseline_dir(), gpus=True)
    assert (gpu.preset, gpu.memory, gpu.time_budget) == ("gpu", "48g", 300)
    assert _space(baseline_dir(), "cpu", gpus=True).preset == "cpu"  # --preset wins
    only_cpu = tmp_path / "only-cpu"
    only_cpu.mkdir()
    text = (baseline_dir() / "search_space.toml").read_text()
    (only_cpu / "search_space.toml").write_text(text.replace("[presets.gpu]", "[presets.big]"))
    assert _space(only_cpu, gpus=True).preset == "cpu"  # no gpu preset: the default one
    result = runner.invoke(app, ["sandbox", "try", str(write(tmp_path, SUMMARY)), "--preset",
                                 "gpu", "--sandbox", "local"])
    assert result.exit_code == 2 and "has no search_space.toml" in result.output
    result = runner.invoke(app, ["sandbox", "try", str(baseline_dir()), "--preset", "tpu",
                                 "--sandbox", "local"])
    assert result.exit_code == 2 and "unknown preset 'tpu'" in result.output
