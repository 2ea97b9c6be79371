"""Runs of recorded commits outside the optimizer's loop: `autoresearch rerun RUN N` (is this
trial reproducible? how far do other seeds move it?) and the runs behind `attribute`.

Each run is the commit's tree run exactly as the session ran its trials (agent/analysis/repeats.py:
the session's sandbox, limits and environment, AR_SEED set), with the folder's lock held so
no session writes beside it. Seeds are the session's own seed, then the next ones: seed
`config.seed` reproduces the recorded trial.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from agent.analysis.repeats import run_trees
from agent.config.settings import SessionConfig
from agent.edit.space import SearchSpace, load_space
from agent.errors import UserError
from agent.record.ledger import atomic_write
from agent.record.newrun import require_session
from agent.record.note import TrialNote
from agent.record.rundir import RunDir
from agent.record.workspace import Workspace
from sandbox.result import TrialResult


@dataclass
class RecordedRun:
    """A session folder opened (and locked) for runs beside its trials."""

    rd: RunDir
    config: SessionConfig
    ws: Workspace
    space: SearchSpace
    notes: dict[int, TrialNote]

    @classmethod
    def open(cls, run_dir: Path, sandbox: str | None = None,
             prepare_network: bool = False, isolation: str = "auto") -> RecordedRun:
        rd = RunDir(run_dir)
        require_session(rd)
        rd.lock()
        try:
            config = SessionConfig.load(rd.session_toml)
            # --prepare-network and --isolation of this command: never what the folder says
            update = {"prepare_network": prepare_network, "isolation": isolation}
            if sandbox is not None:
                update |= {"sandbox": sandbox, "workers": 1}
            config = config.model_copy(update=update)
            space = load_space(rd.repo / "search_space.toml", config.preset)
            notes = {n.trial: n for n in rd.notes()}
            return cls(rd, config, Workspace(rd.repo), space, notes)
        except BaseException:
            rd.unlock()
            raise

    def close(self) -> None:
        self.rd.unlock()

    def __enter__(self) -> RecordedRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def seeds(self, k: int) -> list[int]:
        if k < 1:
            raise UserError(f"--seeds {k}: at least 1")
        return [self.config.seed + i for i in range(k)]

    def trial(self, n: int) -> TrialNote:
        note = self.notes.get(n)
        if note is None:
            last = max(self.notes, default=-1)
            raise UserError(f"trial {n} is not in {self.rd.root} (its trials are 0..{last}): "
                            f"`autoresearch replay {self.rd.root}` lists them")
        if note.status == "rejected":
            raise UserError(f"trial {n} was rejected ({note.reason}): nothing of it ever ran")
        return note

    def resolve(self, name: str) -> str:
        """`baseline`, `best` or a trial number: its commit."""
        if name == "baseline":
            return self.ws.baseline
        if name == "best":
            return self.ws.best
        if name.isdigit():
            return self.trial(int(name)).commit
        raise UserError(f"{name!r}: say baseline, best or a trial number")

    def data(self) -> Path | None:
        """The session's prepared data (prepared again the session's way if it is gone)."""
        from agent.config.data import prepare_data
        from agent.config.runspec import load_runspec
        from agent.loop.plan import TrialPlan
        from agent.paths import baseline_dir

        if self.config.data_dir:
            return Path(self.config.data_dir)
        train_dir = Path(self.config.train_dir or baseline_dir())
        spec = load_runspec(train_dir)
        return prepare_data(spec, self.rd.repo, train_dir, TrialPlan(
            self.config, self.space, spec).preparation(self.rd.root / "prepare"))

    def run(self, runs: list[tuple[str, Path, int]], scoring: str | None = None,
            test_data: Path | None = None) -> list[TrialResult]:
        """Each (commit, folder, seed) once; results in order. `scoring` and `test_data`:
        another scoring than the session's, and the test split too (agent/analysis/testsplit.py)."""
        from agent.config.runspec import load_runspec
        from agent.paths import baseline_dir

        train_dir = Path(self.config.train_dir or baseline_dir())
        spec = load_runspec(train_dir)
        config = self.config.model_copy(update={"score": scoring}) if scoring else self.config
        trees = {c: self.ws.archive(c) for c, _, _ in runs}
        return run_trees([(trees[c], folder, seed) for c, folder, seed in runs], config,
                         self.space, self.data(), self.rd.cache, spec, test_data)


def rerun(run_dir: Path, n: int, k: int = 1, sandbox: str | None = None,
          prepare_network: bool = False, isolation: str = "auto") -> dict:
    """Trial n of run_dir again with K seeds, in reruns/NNNN-TIME/; the comparison."""
    with RecordedRun.open(run_dir, sandbox, prepare_network, isolation) as rec:
        note, seeds = rec.trial(n), rec.seeds(k)
        out = rec.rd.root / "reruns" / f"{n:04d}-{time.strftime('%Y%m%d-%H%M%S')}"
        results = rec.run([(note.commit, out / f"seed-{s}", s) for s in seeds])
        recorded = note.result or {}
        rows = [{"seed": s, "status": r.status, "val_bpb": r.val_bpb, "wall_s": r.wall_s,
                 "reason": r.reason, "image": r.image, "backend": r.backend,
                 "same_seed": s == note.seed} for s, r in zip(seeds, results, strict=True)]
        same = [r["val_bpb"] for r in rows if r["same_seed"] and r["val_bpb"] is not None]
        values = [r["val_bpb"] for r in rows if r["val_bpb"] is not None]
        summary = {
            "run": str(rec.rd.root), "trial": n, "commit": note.commit, "seed": note.seed,
            "recorded": {"status": note.status, "val_bpb": note.val_bpb,
                         "backend": recorded.get("backend", ""),
                         "image": recorded.get("image", "")},
            "budget": rec.config.token_budget or rec.config.time_budget,
            "runs": rows, "folder": str(out),
            "same_seed_delta": (same[0] - note.val_bpb
                                if same and note.val_bpb is not None else None),
            "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "changed": [w for w in ("backend", "image")
                        if recorded.get(w) and rows[0][w] and recorded.get(w) != rows[0][w]]}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "rerun.json", (json.dumps(summary, indent=2) + "\n").encode())
        return summary
