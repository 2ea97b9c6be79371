"""The loop: propose -> patch -> commit -> sandbox -> record -> tell (DESIGN.md).

Write order per trial makes a kill at any point recoverable: commit + ref, run, note (git, the
source of truth), ledger line, tell, optimizer pickle. `resume` rebuilds the ledger from the
notes, loads the pickle, replays the few trials recorded after it (ask + tell), and re-runs an
interrupted trial on its existing commit when the optimizer proposes it again.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from agent.actions import (
    Action,
    ApplyDiff,
    EditHyperparameters,
    NoAction,
    action_from_dict,
    action_to_dict,
    edit_to_diff,
)
from agent.config import SessionConfig
from agent.errors import UserError
from agent.hpblock import (
    SearchSpace,
    SpaceError,
    apply_preset,
    load_space,
    non_literal,
    read_block,
)
from agent.ledger import Ledger, atomic_write
from agent.optimizers import LLM_METHODS, make_optimizer
from agent.optimizers.base import TrialRecord
from agent.patching import PatchError, apply_patch
from agent.rundir import RunDir
from agent.workspace import Workspace
from sandbox.base import Limits, TrialRun
from sandbox.harness import run_scored
from sandbox.result import TrialResult


class SessionError(UserError):
    """A session cannot start or go on; the message says what to do."""


@dataclass
class Outcome:
    trials_run: int
    best_val_bpb: float | None
    best_commit: str
    stopped_by: str  # "trials", "budget"


class Session:
    def __init__(self, run_dir: Path, config: SessionConfig, reporter=None):
        self.rd = RunDir(run_dir)
        self.run_dir = self.rd.root
        self.config = config
        self.ws = Workspace(self.rd.repo)
        self.ledger = Ledger(self.run_dir)
        self.space: SearchSpace = load_space(self.rd.repo / "search_space.toml", config.preset)
        self.reporter = reporter or QuietReporter()
        self.history: list[TrialRecord] = []
        self.records: list[dict] = []
        self.optimizer = None
        self.sandbox = None
        self.llm = None
        self.server = None  # the built-in model's server, when this session started one

    # -- creating and opening ----------------------------------------------------------------
    @classmethod
    def create(cls, run_dir: Path, config: SessionConfig, reporter=None) -> Session:
        """A new session folder, built beside its place and renamed into it, so a kill during
        creation leaves either nothing or a whole folder; then locked for this process."""
        from agent.paths import baseline_dir

        run_dir = Path(run_dir)
        if (run_dir / "session.toml").exists():
            raise SessionError(f"{run_dir} already holds a session: `autoresearch resume "
                               f"{run_dir}` continues it, or pick another --run-dir")
        if run_dir.exists() and not run_dir.is_dir():
            raise SessionError(f"--run-dir {run_dir} is a file: pick a folder")
        _remove_half_created(run_dir)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise SessionError(f"{run_dir} exists and is not empty: pick another --run-dir")
        train_dir = Path(config.train_dir) if config.train_dir else baseline_dir()
        if not (train_dir / "train.py").is_file():
            raise SessionError(f"{train_dir} has no train.py: --train-dir takes the folder "
                               "that holds train.py and search_space.toml")
        space = load_space(train_dir / "search_space.toml", config.preset)
        source = (train_dir / "train.py").read_text()
        read_block(source, space.names)  # raises unless every searched constant is there
        train_py = apply_preset(source, space) if config.preset else None
        baseline = {n: a.value for n, a in read_block(train_py or source, space.names).items()}
        errors = space.errors(baseline)
        if errors:
            raise SessionError("the baseline train.py lies outside its own search space: "
                               + "; ".join(errors))
        prepare = train_dir / "prepare.py"
        if config.scoring == "harness" and not (
                prepare.is_file() and "def evaluate_bpb(" in prepare.read_text()):
            raise SessionError(
                f"--score harness scores each trial with {prepare}'s evaluate_bpb, and "
                f"{train_dir} has none: add it, or pass --score printed to rank trials by what "
                "train.py prints (safe only for methods that edit the block alone)")
        config = config.model_copy(update={"train_dir": str(train_dir.resolve())})
        try:
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.creating-",
                                            dir=run_dir.parent))
        except OSError as e:
            raise SessionError(f"cannot create {run_dir} ({e.strerror or e}): pick another "
                               "--run-dir") from None
        try:
            staging.chmod(0o755)
            Workspace.create(staging / "repo", train_dir, train_py)
            (staging / "optimizer").mkdir()
            (staging / "trials").mkdir()
            config.save(staging / "session.toml")
            if run_dir.exists():
                run_dir.rmdir()  # empty (checked above); the rename needs the name free
            os.rename(staging, run_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        session = cls(run_dir, config, reporter)
        session.rd.lock()
        return session

    @classmethod
    def open(cls, run_dir: Path, reporter=None) -> Session:
        """An existing session, locked for this process (RunDirBusy if another drives it)."""
        rd = RunDir(run_dir)
        if not rd.exists():
            if _half_created(rd.root):
                raise SessionError(f"{rd.root} holds a session that was killed while it was "
                                   "being created: start it again with `autoresearch run "
                                   f"--run-dir {rd.root} ...`")
            raise SessionError(f"{rd.root} is not a session folder (no session.toml): "
                               "check the path, or start one with `autoresearch run`")
        rd.lock()
        try:
            session = cls(rd.root, SessionConfig.load(rd.session_toml), reporter)
            session.noted_records()  # refuse at once what resume cannot repair
        except BaseException:
            rd.unlock()
            raise
        session.rd = rd
        return session

    def close(self) -> None:
        """Release the run folder (run() does it when it ends)."""
        self.rd.unlock()

    # -- settings derived once -------------------------------------------------------------
    @property
    def time_budget(self) -> float:
        return self.config.time_budget or self.space.time_budget or 60.0

    def limits(self) -> Limits:
        timeout = self.config.trial_timeout or 3 * self.time_budget + 120
        return Limits(timeout_s=timeout, memory=self.memory, disk=self.config.disk,
                      gpus=tuple(self.config.gpus), gpu_mem_fraction=self.config.gpu_mem_fraction)

    @property
    def memory(self) -> str:
        return self.config.memory or self.space.memory or Limits.memory

    def trial_env(self) -> dict[str, str]:
        env = {"TIME_BUDGET": f"{self.time_budget:g}", "AR_SEED": str(self.config.seed)}
        if self.config.token_budget:
            env["AR_TOKEN_BUDGET"] = str(self.config.token_budget)
        if self.config.eval_tokens:
            env["AR_EVAL_TOKENS"] = str(self.config.eval_tokens)
        return env

    def baseline_config(self) -> dict:
        source = self.ws.source(self.ws.baseline)
        return {n: a.value for n, a in read_block(source, self.space.names).items()}

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> Outcome:
        self._start()
        started = time.monotonic()
        elapsed_before = self._load_clock()
        stopped_by = "trials"
        try:
            n = len(self.records)
            total = self.config.trials
            self.reporter.start(n, total)
            if n == 0:
                self._trial(0)
                n = 1
            while True:
                if total is not None and n > total:
                    break
                spent = elapsed_before + time.monotonic() - started
                if self.config.budget_s is not None and spent + self._expected_trial_s() > \
                        self.config.budget_s:
                    stopped_by = "budget"
                    break
                self._trial(n)
                n += 1
        finally:
            self._save_clock(elapsed_before + time.monotonic() - started)
            self.reporter.stop()
            if self.server is not None:
                self.server.stop()
            self.rd.clear_tmp()
            self.close()
        best = self._best_val()
        return Outcome(len(self.records) - 1, best, self.ws.best, stopped_by)

    def _start(self) -> None:
        from agent.data import prepare_default_data
        from sandbox import select_sandbox

        self.rd.lock()  # no-op when create/open took it
        self.rd.clear_tmp()  # what a killed run of this folder left
        if self.config.data_dir is None:
            data = prepare_default_data(self.rd.repo)
            if data is not None:
                self.config = self.config.model_copy(update={"data_dir": str(data)})
                self.config.save(self.rd.session_toml)
        self.sandbox, why = select_sandbox(self.config.sandbox)
        self.reporter.note(f"sandbox: {why}")
        if self.config.method in LLM_METHODS:
            self.llm = self._connect_llm()
        self._restore()

    def _restore(self) -> None:
        """Check the folder against git before going on (git is the truth): the ledger is
        rebuilt from the notes when it differs, `best` is moved to the best ok note, and an
        unreadable optimizer pickle or clock is rebuilt by replaying the notes."""
        self.records = self.noted_records()
        self._check_ledger()
        self._check_best()
        after, self.optimizer = self._load_optimizer()
        for record in self.records:
            trial = to_trial_record(record)
            if record["trial"] > after:  # recorded, but the optimizer had not been told
                if record["trial"] == 0:
                    action = EditHyperparameters(self.baseline_config(), "baseline")
                else:  # an LLM method replays its recorded answer instead of asking again
                    replay = getattr(self.optimizer, "replay_ask", None)
                    recorded = action_from_dict(record["action"])
                    action = (replay(self.history, recorded) if replay is not None
                              else self.optimizer.ask(self.history))
                self.optimizer.tell(action, trial)
            self.history.append(trial)
        if self.records and self.records[-1]["trial"] > after:
            self._save_state(self.records[-1]["trial"])

    def noted_records(self) -> list[dict]:
        """The trial records in git, in trial order; SessionError if they cannot be trusted
        (lost, or with gaps): then nothing is changed and the user decides."""
        notes = self.ws.notes()
        trial_refs = self.ws.trial_refs()
        recorded = self.ledger.jsonl.exists() and self.ledger.jsonl.stat().st_size > 0
        if not notes and (trial_refs or recorded):
            raise SessionError(f"{self.rd.repo} has lost its trial notes (refs/notes/results) "
                               f"but holds {len(trial_refs)} trial commits: restore that ref "
                               "(the notes are the record of results); nothing was changed")
        records = sorted(notes.values(), key=lambda r: r["trial"])
        numbers = [r["trial"] for r in records]
        if numbers != list(range(len(numbers))):
            raise SessionError(f"the trial notes in {self.rd.repo} are not contiguous "
                               f"({numbers[:10]}...): the repository was changed by hand")
        return records

    def _check_ledger(self) -> None:
        """results.tsv and trials.jsonl must say what the notes say; else they are rebuilt
        (the old files kept beside them when they held something else)."""
        expected = self.ledger.render(self.records)
        current = {path: path.read_text(errors="replace") if path.exists() else None
                   for path in expected}
        if not self.records and not any(current.values()):
            return  # a new session: its first trial creates the files
        if all(current[path] == text for path, text in expected.items()):
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for path, text in current.items():
            if text:  # kept, never silently dropped
                path.rename(path.with_name(f"{path.name}.replaced-{stamp}"))
        if any(current.values()):
            self.reporter.note(f"the ledger differed from the git notes: rebuilt from them "
                               f"(the old files are kept as *.replaced-{stamp})")
        self.ledger.rewrite(self.records)

    def _check_best(self) -> None:
        """Branch `best` must point at the best ok trial (the first of equals)."""
        ok = [r for r in self.records if r["status"] == "ok"]
        if not ok:
            return
        expected = min(ok, key=lambda r: (r["val_bpb"], r["trial"]))["commit"]
        if self.ws.best != expected:
            self.reporter.note(f"branch best pointed at {self.ws.best[:7]}, not at the best ok "
                               f"trial {expected[:7]}: moved it back")
            self.ws.move_best(expected)

    def _load_optimizer(self):
        """(trial the pickle was saved after, optimizer); a fresh optimizer (-1) when the
        pickle is missing or unreadable: the notes are then replayed into it."""
        if self.rd.state_pkl.exists():
            try:
                state = pickle.loads(self.rd.state_pkl.read_bytes())
                optimizer, after = state["optimizer"], state["after_trial"]
                if self.llm is not None:
                    optimizer.seat.llm = self.llm
                return after, optimizer
            except Exception as e:  # any unreadable pickle: rebuilt from the notes
                self.reporter.note(f"{self.rd.state_pkl} is unreadable ({type(e).__name__}): "
                                   "rebuilding the optimizer from the trial notes")
        return -1, make_optimizer(self.config.method, self.space, self.config.seed,
                                  self.baseline_config(), **self._method_options())

    def _trial(self, n: int) -> None:
        t0 = time.monotonic()
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        incumbent = self.ws.best
        source = self.ws.source(incumbent)
        rejected = None
        if n == 0:
            action: Action = EditHyperparameters(self.baseline_config(), "baseline")
            commit, content, diff, parent = self.ws.baseline, source, "", None
            llm = {"calls": 0, "valid": None, "prompt": 0, "completion": 0, "cost_usd": 0.0}
        else:
            seat = getattr(self.optimizer, "seat", None)  # LLM methods: see llm_seat.py
            if seat is not None:
                seat.ctx = self._context(n, source)
            action = self.optimizer.ask(self.history)
            llm = self._save_calls(n)
            if llm["calls"]:
                llm["valid"] = not isinstance(action, NoAction)
            parent = incumbent
            if isinstance(action, NoAction):
                rejected, content, diff = action.reason, None, ""
            else:
                try:
                    diff, content = self._patch(action, source)
                except (PatchError, SpaceError) as e:
                    rejected, content = str(e), None
                    diff = action.patch if isinstance(action, ApplyDiff) else ""
            commit = self._commit(n, action, parent, content, rejected)
        self.reporter.running(n, action)
        if rejected is not None:
            result = TrialResult(status="rejected", reason=rejected)
        else:
            result = self._run_sandbox(n, commit)
        config = self._config_of(content)
        best_before = self._best_val()
        is_best = result.ok and (best_before is None or result.val_bpb < best_before)
        record = {
            "v": 1, "trial": n, "commit": commit, "parent": parent,
            "method": "baseline" if n == 0 else self.config.method, "seed": self.config.seed,
            "action": action_to_dict(action), "rationale": one_line(action.rationale),
            "config": config, "diff": diff, "status": result.status, "val_bpb": result.val_bpb,
            "result": result.to_dict(), "is_best": is_best,
            "best_val_bpb": result.val_bpb if is_best else best_before,
            "tokens": {"prompt": llm["prompt"], "completion": llm["completion"]},
            "cost_usd": llm["cost_usd"], "llm_calls": llm["calls"], "llm_valid": llm["valid"],
            "started_at": started_at, "wall_s": round(time.monotonic() - t0, 3),
        }
        self.ws.add_note(commit, record)
        self.ledger.append(record)
        if is_best and n > 0:
            self.ws.move_best(commit)
        trial = to_trial_record(record)
        self.optimizer.tell(action, trial)
        self.history.append(trial)
        self.records.append(record)
        self._save_state(n)
        self.reporter.finished(record)

    def _method_options(self) -> dict:
        if self.config.method not in LLM_METHODS:
            return {}
        options = {"llm": self.llm, "max_repairs": self.config.max_repairs}
        if self.config.method == "centaur":
            options.update(ratio=self.config.llm_ratio, warmup=self.config.llm_warmup)
        return options

    def _connect_llm(self):
        from agent.llm import LLM, LLMConfig

        if self.config.model:
            return LLM(LLMConfig(self.config.model, self.config.api_base,
                                 temperature=self.config.temperature))
        from agent.local_llm import LocalModelServer

        self.reporter.note("starting the built-in model (SmolLM2-135M-Instruct, llama.cpp)")
        self.server = LocalModelServer(log_path=self.rd.llm_server_log)
        self.server.start()
        # a 135M model has no tool calling: the schema goes into the prompt instead
        return LLM(LLMConfig(self.server.model, self.server.api_base, tools=False,
                             max_tokens=256, temperature=self.config.temperature,
                             compact=True, structured=True))

    def _context(self, n: int, source: str):
        from agent.optimizers.base import TrialContext

        gpus = self.config.gpus
        device = (f"GPU {', '.join(map(str, gpus))}" if gpus else f"cpu, {os.cpu_count()} cores")
        if gpus and self.config.gpu_mem_fraction:
            device += f" (capped at {self.config.gpu_mem_fraction:.0%} of its memory)"
        budget = (f"{self.config.token_budget} training tokens" if self.config.token_budget
                  else f"{self.time_budget:g} s of training")
        config = {k: a.value for k, a in read_block(source, self.space.names).items()}
        return TrialContext(trial=n, incumbent_source=source, incumbent_config=config,
                            device=device, memory=self.memory, budget=budget,
                            preset=self.space.preset)

    def _save_calls(self, n: int) -> dict:
        """Write the LLM calls behind trial n's proposal to trials/NNNN/llm.jsonl; sums."""
        seat = getattr(self.optimizer, "seat", None)
        calls = seat.consume() if seat is not None else []
        if calls:
            folder = self.rd.trial(n)
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / "llm.jsonl").open("w") as f:
                for call in calls:
                    f.write(json.dumps(call, sort_keys=True) + "\n")
        return {"calls": len(calls), "valid": None,
                "prompt": sum(c["prompt_tokens"] for c in calls),
                "completion": sum(c["completion_tokens"] for c in calls),
                "cost_usd": sum(c["cost_usd"] for c in calls)}

    def _patch(self, action: Action, source: str) -> tuple[str, str]:
        """(diff, new train.py) for either tool, through the one patch path."""
        if isinstance(action, EditHyperparameters):
            diff = edit_to_diff(action, source, self.space)
        else:
            diff = action.patch
        content = apply_patch(source, diff)
        bad = non_literal(content, self.space.names)
        if bad:
            raise SpaceError("hyperparameters must stay literal values in the block: "
                             + "; ".join(bad))
        present = read_block(content)  # a code agent may have removed or renamed some
        self.space.validate({n: present[n].value for n in self.space.names if n in present})
        return diff, content

    def _commit(self, n: int, action: Action, parent: str, content: str | None,
                rejected: str | None) -> str:
        pending = self.ws.trial_commit(n)
        if pending is not None:  # interrupted earlier: reuse it if it is this very proposal
            same_parent = self.ws.git.rev_parse(f"{pending}^") == parent
            same_file = content is not None and self.ws.source(pending) == content
            if same_parent and same_file and self.ws.note(pending) is None:
                return pending
            self.ws.set_aside(n)
        title = one_line(action.rationale) or action.kind
        message = (f"{self.config.method}: {title}\n\nTrial: {n}\nMethod: {self.config.method}\n"
                   f"Seed: {self.config.seed}\n")
        if rejected is not None:
            message += f"Status: rejected\nReason: {one_line(rejected, 400)}\n"
        return self.ws.commit_trial(n, parent, message, content)

    def _run_sandbox(self, n: int, commit: str) -> TrialResult:
        tree = self.ws.temp_tree(commit, self.rd.tmp)
        data = Path(self.config.data_dir) if self.config.data_dir else None
        run = TrialRun(tree=tree, workdir=self.rd.trial(n), data_dir=data,
                       env=self.trial_env(), cache_dir=self.rd.cache)
        try:
            if self.config.scoring == "harness":
                return run_scored(self.sandbox, run, self.limits(),
                                  self.space.fixed.get("SEQ_LEN"), scratch=self.rd.tmp)
            return self.sandbox.run(run, self.limits())
        finally:
            shutil.rmtree(tree.parent, ignore_errors=True)

    def _config_of(self, content: str | None) -> dict | None:
        if content is None:
            return None
        try:
            return {n: a.value for n, a in read_block(content, self.space.names).items()}
        except SpaceError:
            return None

    def _best_val(self) -> float | None:
        values = [r["val_bpb"] for r in self.records if r["status"] == "ok"]
        return min(values) if values else None

    def _expected_trial_s(self) -> float:
        walls = sorted(r["wall_s"] for r in self.records if r["status"] != "rejected")
        return walls[len(walls) // 2] if walls else 0.0

    def _save_state(self, after_trial: int) -> None:
        atomic_write(self.rd.state_pkl, pickle.dumps(
            {"after_trial": after_trial, "optimizer": self.optimizer}))

    def _load_clock(self) -> float:
        """Seconds the session ran before; from the notes when clock.json is unreadable."""
        try:
            elapsed = json.loads(self.rd.clock_json.read_text())["elapsed_s"]
            if isinstance(elapsed, (int, float)) and elapsed >= 0:
                return float(elapsed)
        except FileNotFoundError:
            return 0.0
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            pass
        self.reporter.note(f"{self.rd.clock_json} is unreadable: the session clock restarts "
                           "from the trials' own wall time")
        return sum(r.get("wall_s") or 0.0 for r in self.records)

    def _save_clock(self, elapsed: float) -> None:
        atomic_write(self.rd.clock_json, json.dumps({"elapsed_s": round(elapsed, 3)}).encode())


def _half_created(run_dir: Path) -> bool:
    """A folder an older version left when killed while creating a session: no
    session.toml, nothing but what creation makes, and no trial recorded."""
    if not run_dir.is_dir() or (run_dir / "session.toml").exists():
        return False
    names = {p.name for p in run_dir.iterdir()}
    trials = run_dir / "trials"
    return bool(names) and names <= {"repo", "optimizer", "trials", ".lock"} and not (
        trials.is_dir() and any(trials.iterdir()))


def _remove_half_created(run_dir: Path) -> None:
    if _half_created(run_dir):
        shutil.rmtree(run_dir)
    for stale in run_dir.parent.glob(f".{run_dir.name}.creating-*"):  # a killed create
        shutil.rmtree(stale, ignore_errors=True)


def to_trial_record(record: dict) -> TrialRecord:
    result = record.get("result") or {}
    return TrialRecord(number=record["trial"], status=record["status"], config=record["config"],
                       val_bpb=record["val_bpb"], method=record.get("method", ""),
                       reason=result.get("reason", ""), rationale=record.get("rationale", ""),
                       diff=record.get("diff", ""))


def one_line(text: str, limit: int = 120) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class QuietReporter:
    """Reports nothing: for tests and --quiet."""

    def start(self, done: int, total: int | None) -> None: ...
    def note(self, text: str) -> None: ...
    def running(self, n: int, action) -> None: ...
    def finished(self, record: dict) -> None: ...
    def stop(self) -> None: ...
