"""MLflow: the session is a parent run, each trial a child run (`--track mlflow[:URI]`).

Default store: `sqlite:///HOME/mlflow.db` with artifacts in HOME/mlartifacts, HOME being the
run folder (a bench's folder for its sessions): MLflow 3 keeps its local runs in SQLite (the
old ./mlruns file store is deprecated there and refused without a variable), and
`mlflow ui --backend-store-uri sqlite:///HOME/mlflow.db` shows them. Any tracking URI works
(`--track mlflow:http://host:5000`).

A lone session's parent run lives in experiment "autoresearch", a bench's sessions in
"autoresearch/BENCH". The parent is found again by a tag holding a hash of the run folder's
path, a child by its `trial` tag under that parent: resume and `autoresearch track` send each
trial once. A child's run ends (FINISHED, FAILED or KILLED) last; one still RUNNING (the
process was killed while sending it) is deleted and sent again. The parent's metrics `val_bpb` and
`best_val_bpb` have the trial number as step, so its chart is the session's progress."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

from agent.protocols import TrackedSession, TrackedTrial

STATUS = {"ok": "FINISHED", "pruned": "KILLED"}  # everything else: FAILED
# a tracking server that does not answer costs seconds, not MLflow's minutes of retries
QUICK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
         "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def default_uri(home: Path) -> str:
    return f"sqlite:///{home.resolve() / 'mlflow.db'}"


def session_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class MlflowTracker:
    name = "mlflow"

    def __init__(self, uri: str | None, home: Path):
        self.home = home
        self.uri = uri or default_uri(home)
        self.local = uri is None
        self.parent = self.experiment = None
        self.children: dict[int, str] = {}  # trial -> child run id
        self.best_run: str | None = None

    def _client(self):
        for key, value in QUICK.items():
            os.environ.setdefault(key, value)
        for name in ("mlflow", "alembic"):  # their INFO lines would cut into the live view
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def _search(self, query: str) -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment], query, max_results=1000,
                                           page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def open(self, session: TrackedSession) -> None:
        from mlflow.entities import Param

        self.client = self._client()
        name = f"autoresearch/{session.group}" if session.group else "autoresearch"
        found = self.client.get_experiment_by_name(name)
        if found is None:
            where = (self.home / "mlartifacts").resolve().as_uri() if self.local else None
            self.experiment = self.client.create_experiment(name, artifact_location=where)
        else:
            self.experiment = found.experiment_id
        key = session_hash(session.key)
        parents = self._search(f"tags.`autoresearch.session` = '{key}'")
        if parents:
            self.parent = parents[0].info.run_id
            self.client.update_run(self.parent, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment, run_name=session.name,
                tags={**session.tags, "autoresearch.session": key,
                      "mlflow.runName": session.name})
            self.parent = run.info.run_id
            self.client.log_batch(self.parent, params=[
                Param(k, v) for k, v in session.params.items()])
        for run in self._search(f"tags.`mlflow.parentRunId` = '{self.parent}'"):
            tags = run.data.tags
            if run.info.status == "RUNNING" or not tags.get("trial", "").isdigit():
                self.client.delete_run(run.info.run_id)  # half sent: send it again
                continue
            self.children[int(tags["trial"])] = run.info.run_id
            if tags.get("best") == "true":
                self.best_run = run.info.run_id

    def holds(self, number: int) -> bool:
        return number in self.children

    def trial(self, trial: TrackedTrial) -> None:
        from mlflow.entities import Metric, Param, RunTag

        if trial.number in self.children:
            return
        now = int(time.time() * 1000)
        start = trial.start_ms or now
        run = self.client.create_run(
            self.experiment, start_time=start, run_name=f"trial {trial.number:04d}",
            tags={"mlflow.parentRunId": self.parent, "trial": str(trial.number)})
        rid = run.info.run_id
        metrics = [Metric(k, v, start, 0) for k, v in trial.metrics.items()]
        metrics += [Metric("train_loss", loss, start, step) for step, loss in trial.curve]
        for i in range(0, max(len(metrics), 1), 1000):  # log_batch takes 1,000 at most
            self.client.log_batch(
                rid, metrics=metrics[i:i + 1000],
                params=[Param(k, str(v)) for k, v in trial.params.items()] if i == 0 else [],
                tags=[RunTag(k, v) for k, v in trial.tags.items()] if i == 0 else [])
        for name, text in trial.artifacts.items():
            self.client.log_text(rid, text, name)
        self.client.set_terminated(rid, STATUS.get(trial.status, "FAILED"),
                                   end_time=trial.end_ms or now)  # last: it is complete
        self.children[trial.number] = rid
        parent = [Metric(k, trial.metrics[k], now, trial.number)
                  for k in ("val_bpb", "best_val_bpb") if k in trial.metrics]
        if parent:
            self.client.log_batch(self.parent, metrics=parent)

    def best(self, number: int | None) -> None:
        if number is not None and number not in self.children:
            return  # not sent yet: it is marked once it is
        run = self.children.get(number) if number is not None else None
        if run == self.best_run:
            return
        if self.best_run is not None:
            self.client.set_tag(self.best_run, "best", "false")
        if run is not None:
            self.client.set_tag(run, "best", "true")
            self.client.set_tag(self.parent, "best_trial", str(number))
        self.best_run = run

    def close(self, finished: bool) -> None:
        if self.parent is not None:
            self.client.set_terminated(self.parent, "FINISHED" if finished else "KILLED")
