"""Per-trial overhead of the sandbox backends over a bare subprocess, measured in one run.

A trivial train.py (prints a summary block and exits) runs N times through (a) a bare
`subprocess.run`, (b) the local backend and (c) the Docker backend, interleaved so that load
on the machine hits all three alike. Prints the medians and the overhead of (b) and (c) over
(a). Targets (issue 3): Docker adds under 1.0 s, local under 0.2 s.

    python benchmarks/sandbox_overhead.py [--repeat 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.base import Limits, TrialRun  # noqa: E402
from sandbox.local import LocalSandbox  # noqa: E402

TRIVIAL = 'print("---")\nprint("val_bpb: 1.000000")\nprint("training_seconds: 0.0")\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="ar-overhead-"))
    tree = root / "tree"
    tree.mkdir()
    (tree / "train.py").write_text(TRIVIAL)
    tree.chmod(0o755)
    limits = Limits(timeout_s=60, memory="1g")
    backends = {"local": LocalSandbox()}
    try:
        from sandbox.docker import DockerSandbox

        backends["docker"] = DockerSandbox()
    except Exception as e:  # report, do not hide: the Docker column is then missing
        print(f"docker backend unavailable: {e}", file=sys.stderr)

    times: dict[str, list[float]] = {"subprocess": [], **{k: [] for k in backends}}
    for i in range(args.repeat + 1):  # round 0 warms caches and is not counted
        t = time.perf_counter()
        subprocess.run([sys.executable, str(tree / "train.py")], capture_output=True, check=True)
        bare = time.perf_counter() - t
        if i:
            times["subprocess"].append(bare)
        for name, backend in backends.items():
            run = TrialRun(tree=tree, workdir=root / f"{name}-{i}")
            t = time.perf_counter()
            result = backend.run(run, limits)
            elapsed = time.perf_counter() - t
            if result.status != "ok":
                sys.exit(f"{name} trial failed: {result.status} {result.reason}")
            if i:
                times[name].append(elapsed)

    med = {k: statistics.median(v) for k, v in times.items()}
    report = {"repeat": args.repeat, "median_s": med,
              "overhead_s": {k: med[k] - med["subprocess"] for k in backends}}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sandbox overhead, median of {args.repeat} trivial trials")
    for col in ("path", "median s", "overhead s", "target"):
        table.add_column(col, justify="right" if col != "path" else "left")
    targets = {"local": 0.2, "docker": 1.0}
    for name, m in med.items():
        over = "" if name == "subprocess" else f"{m - med['subprocess']:+.3f}"
        target = f"< {targets[name]:.1f}" if name in targets else ""
        table.add_row(name, f"{m:.3f}", over, target)
    Console().print(table)


if __name__ == "__main__":
    main()
