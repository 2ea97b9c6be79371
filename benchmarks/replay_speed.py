"""How long `autoresearch replay` takes on a long session (issue 4: 1,000 trials in < 2 s).

Builds a synthetic run folder with N trials — a git repo whose commits, then result notes
(each naming its commit's id, as a session's do), are written by two `git fast-import` streams,
plus the ledger — then times, in one run:
  * `autoresearch replay RUN --json` (the ledger path, whole process),
  * `autoresearch replay RUN` (the rich table, whole process),
  * `autoresearch replay RUN --json --rebuild` (reads every git note, rewrites the ledger).

    python benchmarks/replay_speed.py [--trials 1000 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config.settings import SessionConfig  # noqa: E402
from agent.record.ledger import Ledger  # noqa: E402
from agent.record.note import TrialNote  # noqa: E402

TRAIN = "DEPTH = {d}  # layers\nMATRIX_LR = {lr}  # muon\n"


def make_run(root: Path, n: int) -> Path:
    run = root / f"run{n}"
    (run / "repo").mkdir(parents=True)
    SessionConfig(method="tpe", trials=n).save(run / "session.toml")
    subprocess.run(["git", "init", "-q", "-b", "best", str(run / "repo")], check=True)
    stream, records = [], []
    for i in range(n + 1):
        text = TRAIN.format(d=2 + i % 6, lr=round(0.01 + (i % 17) / 100, 4))
        ok = i % 5 != 3
        val = 2.0 + ((i * 7919) % 1000) / 1000 if ok else None
        records.append({
            "v": 1, "trial": i, "commit": "", "parent": None, "method": "tpe", "seed": 0,
            "action": {"kind": "edit_hyperparameters", "values": {"DEPTH": 2 + i % 6},
                       "rationale": f"tpe: sample {i}"},
            "rationale": f"tpe: sample {i}", "config": {"DEPTH": 2 + i % 6},
            "diff": f"--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-DEPTH = 4\n+DEPTH = {i}\n",
            "status": "ok" if ok else "oom", "val_bpb": val,
            "result": {"status": "ok" if ok else "oom", "wall_s": 75.0, "reason": ""},
            "is_best": False, "best_val_bpb": None, "tokens": {"prompt": 0, "completion": 0},
            "cost_usd": 0.0, "started_at": "2026-01-01T00:00:00+00:00", "wall_s": 75.0})
        data = text.encode()
        stream.append(f"blob\nmark :{2 * i + 1}\ndata {len(data)}\n".encode() + data + b"\n")
        msg = f"tpe: sample {i}\n\nTrial: {i}\n".encode()
        ref = "refs/heads/best" if i == 0 else f"refs/trials/{i:04d}"
        parent = "" if i == 0 else "from :2\n"
        stream.append(f"commit {ref}\nmark :{2 * i + 2}\ncommitter a <a@b> 0 +0000\n"
                      f"data {len(msg)}\n".encode() + msg + parent.encode()
                      + f"M 100644 :{2 * i + 1} train.py\n\n".encode())
    _fast_import(run / "repo", stream)
    # A session's note names the commit it is attached to (agent/loop/trial.py), so the notes are
    # written once the commits exist and their ids are known.
    marks = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(objectname)"],
                           cwd=run / "repo", capture_output=True, text=True, check=True).stdout
    for line in marks.splitlines():
        name, sha = line.split()
        if name == "refs/heads/best":
            records[0]["commit"] = sha
        elif name.startswith("refs/trials/"):
            records[int(name.rsplit("/", 1)[1])]["commit"] = sha
    stream = []
    for record in records:
        note = json.dumps(record).encode()
        stream.append(f"commit refs/notes/results\ncommitter a <a@b> 0 +0000\ndata 5\nnotes"
                      f"\nN inline {record['commit']}\ndata {len(note)}\n".encode() + note
                      + b"\n\n")
    _fast_import(run / "repo", stream)
    Ledger(run).rewrite([TrialNote.from_dict(r) for r in records])
    return run


def _fast_import(repo: Path, stream: list[bytes]) -> None:
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=b"".join(stream),
                   check=True)


def timed(args: list[str], repeat: int) -> float:
    exe = shutil.which("autoresearch", path=os.path.dirname(sys.executable)) or "autoresearch"
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([exe, *args], capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ar-replay-"))
    rows = []
    for n in args.trials:
        run = make_run(root, n)
        rows.append((n, timed(["replay", str(run), "--json"], args.repeat),
                     timed(["replay", str(run)], args.repeat),
                     timed(["replay", str(run), "--json", "--rebuild"], args.repeat)))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"autoresearch replay, median of {args.repeat} (whole process)")
    for col in ("trials", "--json s", "table s", "--rebuild s"):
        table.add_column(col, justify="right")
    for n, a, b, c in rows:
        table.add_row(str(n), f"{a:.2f}", f"{b:.2f}", f"{c:.2f}")
    Console().print(table)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
