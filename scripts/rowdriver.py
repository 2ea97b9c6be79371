"""The row driver of `make gpu-check` (scripts/gpu_check.py): each row under its own time cap,
its processes stopped past it, its record written the moment it ends (rows.jsonl, and the
table so far in table.txt), so an interrupted check still reports what it did."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from agent.cli.main import app; app()"]
sys.path.insert(0, str(ROOT))
from agent.text import clean, markup  # noqa: E402


@dataclass
class Got:
    got: str
    passed: bool | None  # None: skipped or reported only
    data: dict = field(default_factory=dict)


class OverCap(Exception):
    """A row ran past its time cap; what it started was stopped."""


@dataclass
class Context:
    out: Path
    gpu: str
    budget: float  # training seconds of each session trial
    throughput_steps: int
    deadline: float = float("inf")  # the running row's cap, time.monotonic()
    shared: dict = field(default_factory=dict)  # what one row leaves for a later one

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 1.0)

    def run(self, cmd: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
        """`cmd` in a process group of its own, stopped (SIGTERM, then SIGKILL) when the row's
        cap is reached: a session stops its trial on SIGTERM as on Ctrl-C."""
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT, env={**os.environ, **(env or {})},
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=self.remaining())
        except subprocess.TimeoutExpired:
            stop(proc)
            raise OverCap from None
        except KeyboardInterrupt:
            stop(proc)
            raise
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(ROOT)) if p)
        return self.run([*CLI, *args], {"PYTHONPATH": path})


def stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.communicate(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Row:
    key: str
    title: str
    expected: str
    cap_s: float
    run: Callable[[Context], Got]
    canned: Got  # what --dry reports


def table_text(records: list[dict], title: str) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("row", "check", "expected", "got", "result", "s"):
        table.add_column(col, overflow="fold")
    for r in records:
        mark = {True: "ok", False: "FAIL", None: "skipped"}[r["passed"]]
        # a row's text quotes trials' own lines (reasons, errors): escaped, never rich markup
        table.add_row(r["key"], r["title"], r["expected"], markup(r["got"]), mark,
                      f"{r['seconds']:.0f}")
    buffer = io.StringIO()
    Console(file=buffer, width=160).print(table)
    return buffer.getvalue()


def drive(rows: list[Row], ctx: Context, dry: bool = False, dry_delay: float = 0.0,
          say=print, keep: bool = False) -> list[dict]:
    """Each row in order under its cap; its record appended to out/rows.jsonl and the table
    so far written to out/table.txt as soon as it ends. An interrupt records the row it cut
    and re-raises; a row that raises is a failed row and the check goes on. With `keep` the
    records already in rows.jsonl of rows not run now stay (a check run in parts, or a row
    run again); the returned records are this run's."""
    jsonl, table = ctx.out / "rows.jsonl", ctx.out / "table.txt"
    ours = {row.key for row in rows}
    before = [json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()] \
        if keep and jsonl.is_file() else []
    kept = [r for r in before if r.get("key") not in ours]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in kept))
    records: list[dict] = []
    started = time.monotonic()

    def record(row: Row, got: Got, t: float) -> None:
        records.append({"key": row.key, "title": row.title, "expected": row.expected,
                        **asdict(got), "seconds": round(time.monotonic() - t, 1),
                        "cap_s": row.cap_s})
        with jsonl.open("a") as f:
            f.write(json.dumps(records[-1]) + "\n")
            f.flush()
            os.fsync(f.fileno())
        mark = {True: "ok", False: "FAIL", None: "skipped"}[got.passed]
        say(f"[{mark}] {row.key}: {clean(got.got, one_line=True)}")
        table.write_text(table_text(kept + records, f"gpu-check: GPU {ctx.gpu}"
                                    f"{' (dry)' if dry else ''}, "
                                    f"{time.monotonic() - started:.0f} s"))

    for row in rows:
        t = time.monotonic()
        ctx.deadline = t + row.cap_s
        try:
            if dry:
                time.sleep(dry_delay)
                got = row.canned
            else:
                got = row.run(ctx)
        except OverCap:
            got = Got(f"over its cap of {row.cap_s:g} s: stopped", False)
        except KeyboardInterrupt:
            record(row, Got("interrupted", False), t)
            raise
        except Exception as e:  # noqa: BLE001 - one broken row must not hide the others
            got = Got(f"error: {type(e).__name__}: {e}"[:200], False)
        record(row, got, t)
    return records
