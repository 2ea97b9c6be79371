"""The number to publish: a run's best, and its baseline, scored on the test split
(`autoresearch report RUN...`).

The best val_bpb of a long search is the least of many noisy draws on the same val windows:
an optimistic number. The default corpus keeps a test split back (baseline_train/prepare.py:
held-out documents in neither train nor val, in FOLDER.test beside the data folder), which
no trial and no gate reads (sandbox/local.py covers it, Docker never mounts it). Here
the best commit (the incumbent the run ended with) and the baseline are trained again at the
session's seed, exactly as their trials ran but with val hidden and AR_SCORE=harness, and
the harness scores the exported model on val and on test with the same code
(sandbox/harness.py): the gap between the two is the run's optimism, measured like with like.
(A local trial that is not isolated, a session run as a user or with --isolation none, can
read what that user can, the test split included, as it can val: README, "Sandbox".)
A training folder whose train.py does not export its model (AR_SCORE=harness) gets no test
score. Results are kept in RUN/test/ (one JSON per trial and seed, with the test split's
fingerprint) and read back when asked again.
"""

from __future__ import annotations

import json
from pathlib import Path

from agent.analysis.reruns import RecordedRun
from agent.errors import UserError
from agent.record.ledger import atomic_write
from sandbox.base import held_out_test


def held_out_folder(rec: RecordedRun) -> Path:
    """The test split of the run's data, built once by the packaged prepare.py (our own code,
    on the host: it reads the private held-out archive, as the session's preparation did);
    for a corpus without a held-out source prepare.py says, in one line, that it has none."""
    from agent.config.data import packaged_prepare

    data = rec.data()
    if data is None:
        raise UserError(f"{rec.rd.root} has no prepared data folder: its train.py prepares "
                        "its own data, so there is no test split to score on")
    test = held_out_test(data)
    if all((test / f).is_file() for f in ("val.bin", "meta.json")):
        return test
    return packaged_prepare("--test", "--out", str(data))


def fingerprint(test: Path) -> str:
    meta = json.loads((test / "meta.json").read_text())
    return f"{meta.get('corpus')}:{meta.get('fingerprint')}"


def report(run_dir: Path, sandbox: str | None = None, again: bool = False,
           prepare_network: bool = False, isolation: str = "auto") -> dict:
    """The run's baseline and best, each with its recorded val_bpb and, from one run at the
    session's seed scored by the harness, val and test bpb."""
    with RecordedRun.open(run_dir, sandbox, prepare_network, isolation) as rec:
        ok = {n.commit: n for n in sorted(rec.notes.values(), key=lambda n: n.trial)
              if n.status == "ok" and n.val_bpb is not None}
        if 0 not in rec.notes:
            raise UserError(f"{rec.rd.root} holds no trial yet: nothing to score")
        best = ok.get(rec.ws.best)
        if best is None:
            raise UserError(f"branch best of {rec.rd.root} names no ok trial: `autoresearch "
                            f"resume {rec.rd.root}` puts it back on the best one")
        test = held_out_folder(rec)
        split, seed = fingerprint(test), rec.config.seed
        out = rec.rd.root / "test"
        wanted = [("baseline", rec.notes[0])] + ([("best", best)] if best.trial else [])
        rows: dict[int, dict] = {}
        todo = []
        for _, note in wanted:
            kept = out / f"{note.trial:04d}-seed{seed}.json"
            if kept.is_file() and not again:
                row = json.loads(kept.read_text())
                if row.get("test_split") == split and row.get("commit") == note.commit \
                        and row.get("status") == "ok":  # a failure is tried again
                    rows[note.trial] = row
                    continue
            todo.append(note)
        if todo:
            results = rec.run([(n.commit, out / f"{n.trial:04d}-seed{seed}", seed)
                               for n in todo], scoring="harness", test_data=test)
            for note, r in zip(todo, results, strict=True):
                test_bpb = r.metrics.get("test_bpb") if r.status == "ok" else None
                row = {"trial": note.trial, "commit": note.commit, "seed": seed,
                       "test_split": split, "recorded_val_bpb": note.val_bpb,
                       "status": r.status, "reason": r.reason,
                       "val_bpb": r.val_bpb if r.status == "ok" else None,
                       "test_bpb": test_bpb if isinstance(test_bpb, float) else None,
                       "wall_s": r.wall_s}
                out.mkdir(parents=True, exist_ok=True)
                atomic_write(out / f"{note.trial:04d}-seed{seed}.json",
                             (json.dumps(row, indent=2) + "\n").encode())
                rows[note.trial] = row
        listed = []
        for role, note in wanted:
            row = dict(rows[note.trial], role="baseline = best" if role == "baseline" and
                       note is best else role)
            if row["val_bpb"] is not None and row["test_bpb"] is not None:
                row["gap"] = row["test_bpb"] - row["val_bpb"]
            listed.append(row)
        return {"run": str(rec.rd.root), "method": rec.config.method, "seed": seed,
                "test_split": split, "rows": listed}
