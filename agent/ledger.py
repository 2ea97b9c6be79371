"""results.tsv and trials.jsonl: conveniences beside the git repo, rebuilt from it on demand.

One record per trial (trial 0 is the baseline), the same JSON as the trial's git note.
`results.tsv` starts with karpathy/autoresearch's five columns (commit, val_bpb, memory_gb,
status, description) so existing notebooks read it; more columns follow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from agent.note import TrialNote

TSV_COLUMNS = ["commit", "val_bpb", "memory_gb", "status", "description", "trial", "method",
               "wall_s", "training_s", "best_val_bpb", "reason"]


class Ledger:
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.tsv = self.run_dir / "results.tsv"
        self.jsonl = self.run_dir / "trials.jsonl"

    def records(self) -> list[TrialNote]:
        """The notes in trials.jsonl, sorted by trial; ValueError on a broken line."""
        if not self.jsonl.exists():
            return []
        with self.jsonl.open() as f:
            notes = [TrialNote.from_dict(json.loads(line)) for line in f if line.strip()]
        return sorted(notes, key=lambda n: n.trial)

    def append(self, note: TrialNote) -> None:
        new = not self.tsv.exists()
        with self.tsv.open("a") as f:
            if new:
                f.write("\t".join(TSV_COLUMNS) + "\n")
            f.write(tsv_row(note) + "\n")
        with self.jsonl.open("a") as f:
            f.write(json.dumps(note.to_dict(), sort_keys=True) + "\n")

    def render(self, notes: list[TrialNote]) -> dict[Path, str]:
        """The text of both files for `notes`, sorted by trial."""
        notes = sorted(notes, key=lambda n: n.trial)
        return {self.tsv: "\t".join(TSV_COLUMNS) + "\n"
                + "".join(tsv_row(n) + "\n" for n in notes),
                self.jsonl: "".join(json.dumps(n.to_dict(), sort_keys=True) + "\n"
                                    for n in notes)}

    def rewrite(self, notes: list[TrialNote]) -> None:
        """Replace both files with `notes` (atomic per file)."""
        for path, text in self.render(notes).items():
            atomic_write(path, text)


def tsv_row(note: TrialNote) -> str:
    result = note.result or {}
    peak = result.get("peak_memory_mb")
    cells = {
        "commit": note.commit[:7],
        "val_bpb": _num(note.val_bpb, 6),
        "memory_gb": _num(peak / 1024 if peak else None, 2),
        "status": note.status,
        "description": note.rationale or "",
        "trial": str(note.trial),
        "method": note.method,
        "wall_s": _num(result.get("wall_s"), 1),
        "training_s": _num(result.get("training_s"), 1),
        "best_val_bpb": _num(note.best_val_bpb, 6),
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
