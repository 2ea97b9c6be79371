"""A session on a machine without matplotlib (issue 24): a GPU box may have only torch,
numpy, rich, typer and jinja2. The session runs every trial, draws no progress.png and says
so once; `compare --plot` refuses in one line; the same session with matplotlib draws it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from agent.loop.progress import NO_PLOT

EXE = shutil.which("autoresearch", path=os.path.dirname(sys.executable))


def autoresearch(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def session(run: Path, train_dir: Path, env: dict | None = None):
    return autoresearch("run", "--method", "random", "--trials", "3", "--sandbox", "local",
                        "--train-dir", str(train_dir), "--time-budget", "0.001",
                        "--run-dir", str(run), env=env)


def test_a_session_without_matplotlib_runs_every_trial_and_says_so_once(tmp_path, train_dir):
    hidden = tmp_path / "hidden"
    (hidden / "matplotlib").mkdir(parents=True)
    (hidden / "matplotlib" / "__init__.py").write_text(
        'raise ImportError("matplotlib is hidden by this test")\n')
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(hidden),
                                                       os.environ.get("PYTHONPATH")]))}
    probe = subprocess.run([sys.executable, "-c", "import matplotlib"], env={**os.environ, **env},
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "hidden by this test" in probe.stderr

    run = tmp_path / "run"
    done = session(run, train_dir, env)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert out.count(NO_PLOT) == 1, out
    assert len((run / "trials.jsonl").read_text().splitlines()) == 4  # the baseline + 3
    assert not (run / "progress.png").exists()

    plot = autoresearch("compare", str(run), "--plot", str(tmp_path / "c.png"), env=env)
    assert plot.returncode == 2
    assert plot.stderr.strip().count("\n") == 0 and "pip install matplotlib" in plot.stderr
    assert not (tmp_path / "c.png").exists()

    with_it = tmp_path / "with"
    done = session(with_it, train_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert NO_PLOT not in done.stdout + done.stderr
    assert (with_it / "progress.png").stat().st_size > 0
