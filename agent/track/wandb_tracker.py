"""Weights & Biases (`--track wandb[:PROJECT]`, default project "autoresearch"): a W&B run per
trial, grouped by session (a bench's sessions: grouped by bench, the session as job type).

Why a run per trial rather than one run with a table: that is how W&B users see a search
(their sweeps make a run per configuration), and what the project page's tools are built for:
the runs table sorted by val_bpb, parallel coordinates and parameter importance over the
runs' configs, each run's learning curve, its files. A trial's run holds: config = every
value of the block, summary = its numbers and tags (status, reason, commit, rationale),
history = the learning curve (train_loss by progress in per mille), files = its diffs, the
log's head and tail, llm.jsonl.

Offline (the runs are written under HOME/wandb/ and `wandb sync HOME/wandb/offline-run-*`
sends them later) unless a key is set (WANDB_API_KEY, or `wandb login`'s ~/.netrc entry):
then to the user's own account, also for a bare `wandb` that a folder's session.toml names
(its runs go to the key's owner, never to a project the folder chose: a project of its own
is dropped by SessionConfig.load). A trial's run id is fixed
by the session and the trial number, and HOME/wandb/autoresearch-sent.jsonl lists the runs
that finished: resume and backfill send each trial once (a run cut by kill -9 is sent again
under the same id, its half-written offline folder removed). A finished W&B run cannot be
re-tagged offline, so the tag `best` goes to each trial that was the best when it was
recorded, and the summary's best_val_bpb carries the session's best so far."""

from __future__ import annotations

import json
import netrc
import os
import shutil
from pathlib import Path

from agent.protocols import TrackedSession, TrackedTrial
from agent.track.mlflow_tracker import session_hash


def has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbTracker:
    name = "wandb"

    def __init__(self, project: str | None, home: Path, offline: bool = False):
        self.project, self.home = project or "autoresearch", home
        self.mode = "offline" if offline or not has_key() else "online"
        self.root = home / "wandb"
        self.sent_file = self.root / "autoresearch-sent.jsonl"
        self.sent: set[int] = set()

    def open(self, session: TrackedSession) -> None:
        import wandb  # noqa: F401  fails here, once, if the library is broken

        self.session = session
        self.key = session_hash(session.key)[:16]
        self.root.mkdir(parents=True, exist_ok=True)
        if self.sent_file.is_file():
            for line in self.sent_file.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill: that trial is sent again
                if isinstance(row, dict) and row.get("session") == self.key and \
                        isinstance(row.get("trial"), int):
                    self.sent.add(row["trial"])

    def run_id(self, number: int) -> str:
        return f"{self.key}-{number:04d}"

    def holds(self, number: int) -> bool:
        return number in self.sent

    def trial(self, trial: TrackedTrial) -> None:
        import wandb

        if trial.number in self.sent:
            return
        rid = self.run_id(trial.number)
        for stale in self.root.glob(f"*-{rid}"):  # cut by a kill while it was written
            shutil.rmtree(stale, ignore_errors=True)
        s = self.session
        group, job = (s.group, s.name) if s.group else (s.name, s.params.get("method", ""))
        tags = [trial.status, s.params.get("method", "")]
        if trial.tags.get("is_best_when_recorded") == "true":
            tags.append("best")
        run = wandb.init(
            project=self.project, dir=str(self.home), mode=self.mode, id=rid,
            name=f"{s.name} trial {trial.number:04d}", group=group, job_type=job,
            config={**trial.params, "trial": trial.number, "session": s.name},
            tags=[t[:64] for t in tags if t], reinit="create_new",
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True,
                                    disable_git=True, save_code=False,
                                    x_save_requirements=False))
        try:
            for step, loss in trial.curve:
                run.log({"train_loss": loss, "progress_permille": step}, step=step)
            run.summary.update({**trial.metrics, **{f"tag.{k}": v
                                                    for k, v in trial.tags.items()}})
            for name, text in trial.artifacts.items():
                path = Path(run.dir) / name
                path.write_text(text)
                run.save(str(path), base_path=run.dir, policy="now")
        finally:
            run.finish(exit_code=0 if trial.status == "ok" else 1)
        with self.sent_file.open("a") as f:
            f.write(json.dumps({"session": self.key, "trial": trial.number, "id": rid}) + "\n")
        self.sent.add(trial.number)

    def best(self, number: int | None) -> None: ...

    def close(self, finished: bool) -> None: ...
