"""`make gpu-check`'s row driver on this CPU machine (issue 24): --dry walks every row with
canned results, rows are written as they finish and survive an interrupt, a row over its cap
is stopped and failed, and the check folder makes every session trial baseline-sized."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def check(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, **kw)


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]


def test_dry_walks_every_row_with_canned_results(tmp_path):
    gc = load()
    t = time.monotonic()
    done = check("--dry", "--out", str(tmp_path / "g"))
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - t < 60
    rows = rows_of(tmp_path / "g")
    assert [r["key"] for r in rows] == [r.key for r in gc.ROWS]
    assert all(r["got"].endswith("(dry)") for r in rows)
    table = (tmp_path / "g" / "table.txt").read_text()
    assert all(r.key in table for r in gc.ROWS) and "(dry)" in table
    assert table in done.stdout
    assert json.loads((tmp_path / "g" / "gpu-check.json").read_text())["rows"] == rows


def test_rows_picks_some_and_refuses_an_unknown_one(tmp_path):
    done = check("--dry", "--rows", "cache, probe", "--out", str(tmp_path / "g"))
    assert done.returncode == 0, done.stderr
    assert [r["key"] for r in rows_of(tmp_path / "g")] == ["probe", "cache"]  # check order
    # a check in parts (a GPU visit's commands are capped): the other part's rows stay, a
    # row run again replaces its old record
    assert check("--dry", "--rows", "session,cache", "--out", str(tmp_path / "g")).returncode == 0
    assert [r["key"] for r in rows_of(tmp_path / "g")] == ["probe", "session", "cache"]
    every = json.loads((tmp_path / "g" / "gpu-check.json").read_text())["rows"]
    assert [r["key"] for r in every] == ["probe", "session", "cache"]
    assert "probe" in (tmp_path / "g" / "table.txt").read_text()
    assert check("--dry", "--out", str(tmp_path / "g")).returncode == 0  # all rows: anew
    assert len(rows_of(tmp_path / "g")) == len(load().ROWS)
    bad = check("--dry", "--rows", "probe,warp", "--out", str(tmp_path / "h"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "unknown row warp" in bad.stderr and "pick from probe, session" in bad.stderr
    assert not (tmp_path / "h").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_check_keeps_the_rows_it_finished(tmp_path, sig):
    out = tmp_path / "g"
    # Ctrl-C's disposition as in a terminal: a test run started in the background (`make test
    # &`) hands its children SIGINT ignored, and the interrupt would never arrive
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--dry", "--dry-delay", "0.4",
                             "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not ((out / "rows.jsonl").exists() and
               len((out / "rows.jsonl").read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted; the rows so far are in" in err
    rows = rows_of(out)
    assert rows[0]["key"] == "probe" and rows[0]["passed"] is True
    assert rows[-1]["got"] == "interrupted" and rows[-1]["passed"] is False
    assert 3 <= len(rows) < len(load().ROWS)
    assert rows[-2]["key"] in (out / "table.txt").read_text()


def test_a_row_over_its_cap_is_stopped_and_the_check_goes_on(tmp_path):
    gc = load()
    pidfile = tmp_path / "sleeper.pid"

    def slow(ctx):
        ctx.run(["bash", "-c", f"echo $$ > {pidfile}; sleep 60"])
        return gc.Got("finished", True)

    def broken(ctx):
        raise RuntimeError("a bug in one row")

    rows = [gc.Row("slow", "slow", "ok", 1.5, slow, gc.Got("-", True)),
            gc.Row("broken", "broken", "ok", 5, broken, gc.Got("-", True)),
            gc.Row("fine", "fine", "ok", 5, lambda ctx: gc.Got("fine", True), gc.Got("-", True))]
    ctx = gc.Context(tmp_path, "0", 1.0, 1)
    t = time.monotonic()
    records = gc.drive(rows, ctx, say=lambda line: None)
    assert time.monotonic() - t < 30
    assert [(r["key"], r["passed"]) for r in records] == [
        ("slow", False), ("broken", False), ("fine", True)]
    assert records[0]["got"] == "over its cap of 1.5 s: stopped"
    assert records[1]["got"] == "error: RuntimeError: a bug in one row"
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the row's process group was stopped
    assert rows_of(tmp_path) == records


def test_the_check_folder_makes_every_trial_baseline_sized(tmp_path):
    gc = load()
    from agent.edit.block import values as block_values
    from agent.edit.space import load_space
    from agent.optimizers.random import RandomSearch
    from agent.paths import baseline_dir

    folder = gc.gpu_tree(tmp_path / "tree")
    packaged = load_space(baseline_dir() / "search_space.toml", "gpu")
    space = load_space(folder / "search_space.toml")
    assert space.preset == "gpu" and space.time_budget == packaged.time_budget
    assert not set(gc.SIZES) & set(space.names)
    assert {n: space.fixed[n] for n in gc.SIZES} == {n: packaged.defaults()[n]
                                                      for n in gc.SIZES}
    assert set(space.names) == set(packaged.names) - set(gc.SIZES)
    values = block_values((folder / "train.py").read_text(), list(gc.SIZES))
    assert {n: values[n] for n in gc.SIZES} == {n: packaged.defaults()[n] for n in gc.SIZES}
    optimizer = RandomSearch(space, 0, space.defaults())
    for _ in range(5):
        config = optimizer.ask([]).values
        assert not set(gc.SIZES) & set(config) and not space.errors(config)


def test_a_rows_text_from_a_trial_is_escaped(tmp_path):
    """A reason is a line a trial printed: it reaches the table as text, not rich markup, and
    the terminal without its escape sequences."""
    gc = load()
    said = []
    rows = [gc.Row("evil", "evil", "ok", 5,
                   lambda ctx: gc.Got("crash: [bold red]FORGED[/] \x1b]52;c;eA==\x07 ok", False),
                   gc.Got("-", True))]
    gc.drive(rows, gc.Context(tmp_path, "0", 1.0, 1), say=said.append)
    table = (tmp_path / "table.txt").read_text()
    assert "[bold red]FORGED[/]" in table and "\x1b" not in table
    assert "\x1b" not in said[0] and "FORGED" in said[0]
