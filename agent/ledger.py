"""results.tsv and trials.jsonl: conveniences beside the git repo, rebuilt from it on demand.

One record per trial (trial 0 is the baseline), the same JSON as the trial's git note.
`results.tsv` starts with karpathy/autoresearch's five columns (commit, val_bpb, memory_gb,
status, description) so existing notebooks read it; more columns follow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TSV_COLUMNS = ["commit", "val_bpb", "memory_gb", "status", "description", "trial", "method",
               "wall_s", "training_s", "best_val_bpb", "reason"]


class Ledger:
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.tsv = self.run_dir / "results.tsv"
        self.jsonl = self.run_dir / "trials.jsonl"

    def records(self) -> list[dict]:
        if not self.jsonl.exists():
            return []
        with self.jsonl.open() as f:
            return [json.loads(line) for line in f if line.strip()]

    def append(self, record: dict) -> None:
        new = not self.tsv.exists()
        with self.tsv.open("a") as f:
            if new:
                f.write("\t".join(TSV_COLUMNS) + "\n")
            f.write(tsv_row(record) + "\n")
        with self.jsonl.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def render(self, records: list[dict]) -> dict[Path, str]:
        """The text of both files for `records`, sorted by trial."""
        records = sorted(records, key=lambda r: r["trial"])
        return {self.tsv: "\t".join(TSV_COLUMNS) + "\n"
                + "".join(tsv_row(r) + "\n" for r in records),
                self.jsonl: "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)}

    def rewrite(self, records: list[dict]) -> None:
        """Replace both files with `records` (atomic per file)."""
        for path, text in self.render(records).items():
            atomic_write(path, text)


def tsv_row(record: dict) -> str:
    result = record.get("result") or {}
    peak = result.get("peak_memory_mb")
    cells = {
        "commit": record["commit"][:7],
        "val_bpb": _num(record.get("val_bpb"), 6),
        "memory_gb": _num(peak / 1024 if peak else None, 2),
        "status": record["status"],
        "description": record.get("rationale") or "",
        "trial": str(record["trial"]),
        "method": record.get("method", ""),
        "wall_s": _num(result.get("wall_s"), 1),
        "training_s": _num(result.get("training_s"), 1),
        "best_val_bpb": _num(record.get("best_val_bpb"), 6),
        "reason": result.get("reason") or "",
    }
    return "\t".join(_clean(cells[c]) for c in TSV_COLUMNS)


def _num(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write beside `path`, then rename: a kill leaves the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
