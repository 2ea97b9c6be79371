"""results.tsv and trials.jsonl: conveniences beside the git repo, rebuilt from it on demand.

One record per trial (trial 0 is the baseline), the same JSON as the trial's git note.
`results.tsv` starts with karpathy/autoresearch's five columns (commit, val_bpb, memory_gb,
status, description) so existing notebooks read it; more columns follow.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from agent.errors import UserError
from agent.record.note import NoteError, TrialNote
from agent.text import clean

TSV_COLUMNS = ["commit", "val_bpb", "memory_gb", "status", "description", "trial", "method",
               "wall_s", "training_s", "best_val_bpb", "reason"]


class LedgerError(UserError, ValueError):
    """A ledger line that is not a trial record, or a rewrite that would lose the ledger."""


class Ledger:
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.tsv = self.run_dir / "results.tsv"
        self.jsonl = self.run_dir / "trials.jsonl"

    def records(self) -> list[TrialNote]:
        """The notes in trials.jsonl, sorted by trial; LedgerError (a ValueError) naming the
        first line that is not a trial record."""
        if not self.jsonl.exists():
            return []
        notes = []
        with self.jsonl.open(errors="replace") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    notes.append(TrialNote.from_dict(json.loads(line)))
                except json.JSONDecodeError as e:
                    raise self._broken(i, f"not JSON ({e.msg})") from None
                except NoteError as e:
                    raise self._broken(i, str(e)) from None
        return sorted(notes, key=lambda n: n.trial)

    def _broken(self, line: int, why: str) -> LedgerError:
        return LedgerError(f"{self.jsonl} line {line}: {why}: `autoresearch replay "
                           f"{self.run_dir} --rebuild` rebuilds it from the git notes")

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

    def rewrite(self, notes: list[TrialNote]) -> list[Path]:
        """Replace both files with `notes` (atomic per file); a file whose text changes is
        kept beside it as NAME.replaced-TIME first. Never to nothing: the notes always hold
        the baseline, so no notes means git could not be read. The kept files."""
        if not notes:
            raise LedgerError(f"no trial records to write to {self.jsonl}: the ledger is left "
                              "as it is; check the run's repo (refs/notes/results)")
        stamp, kept = time.strftime("%Y%m%d-%H%M%S"), []
        for path, text in self.render(notes).items():
            if path.exists() and path.read_bytes() != text.encode():
                kept.append(_keep(path, stamp))
            atomic_write(path, text)
        return kept


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
    return "\t".join(clean(cells[c], one_line=True) for c in TSV_COLUMNS)


def _num(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _keep(path: Path, stamp: str) -> Path:
    """A copy of `path` beside it, under a name no earlier copy holds."""
    keep, n = path.with_name(f"{path.name}.replaced-{stamp}"), 1
    while keep.exists():
        keep, n = path.with_name(f"{path.name}.replaced-{stamp}-{n}"), n + 1
    try:
        os.link(path, keep)  # the old inode stays under this name when `path` is replaced
    except OSError:
        shutil.copyfile(path, keep)
    return keep


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write beside `path`, then rename: a kill leaves the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
