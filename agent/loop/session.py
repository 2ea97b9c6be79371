"""The loop: ask -> prepare -> submit -> record -> tell (DESIGN.md, "One trial, end to end").

The session is the only writer of git, the ledger and the optimizer; an executor runs the
prepared trials, up to `slots` at once. The order is fixed so that a seed and a slot count
give the same proposals however long each trial takes: results are recorded (note, ledger,
best) as they finish, but told to the optimizer in trial order, and trial n is proposed once
trials 0 .. n - slots have been told; `pending` holds the trials proposed and not yet told.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from agent.config.runspec import load_runspec
from agent.config.settings import SessionConfig
from agent.edit import block
from agent.edit.actions import Confirm, action_to_dict
from agent.edit.space import SearchSpace, load_space
from agent.llm.pricing import cut_usd, pricing_for, save_snapshot
from agent.loop.gate import Gate
from agent.loop.money import CapReached, Purse
from agent.loop.plan import TrialPlan
from agent.loop.preflight import Preflight
from agent.loop.progress import NO_PLOT, ProgressPlot, QuietReporter, Reporters
from agent.loop.restore import noted, restore
from agent.loop.standing import Best, Progress, Spend, Stop, StopRules
from agent.loop.trial import PreparedTrial, TrialNote, Trials, seed_of
from agent.loop.watching import watch_spec
from agent.optimizers import LLM_METHODS, make_optimizer
from agent.paths import baseline_dir
from agent.protocols import LLMMethod, TrialContext, TrialRecord
from agent.record import warmstart
from agent.record.ledger import Ledger
from agent.record.newrun import SessionError, create_run_folder, require_session
from agent.record.rundir import RunDir
from agent.record.workspace import Workspace
from agent.text import clean
from agent.track import group_of
from agent.track.feed import Feed
from agent.track.view import session_view
from sandbox.result import TrialResult

__all__ = ["Outcome", "Session", "SessionError"]

GUIDANCE_CHARS = 4000  # of RUN/guidance.md a prompt shows


@dataclass
class Outcome:
    trials_run: int
    best_val_bpb: float | None
    best_commit: str
    stopped_by: str  # "trials", "budget", "money", a stop rule ("failures", "plateau"), "stop"
    why: str = ""  # a stop rule's one line: what happened, how to go on


class Session:
    def __init__(self, run_dir: Path, config: SessionConfig, reporter=None):
        self.rd, self.config = RunDir(run_dir), config
        self.run_dir, self.ws, self.ledger = self.rd.root, Workspace(self.rd.repo), Ledger(run_dir)
        self.space: SearchSpace = load_space(self.rd.repo / "search_space.toml", config.preset)
        self.plot = ProgressPlot(self.rd.progress_png, self.rd.root.name)
        self.feed = Feed(config.track, self.rd, lambda text: self.reporter.note(text))
        self.reporter = Reporters(reporter or QuietReporter(), self.plot, self.feed)
        self.trials = Trials(self.ws, self.ledger, self.space, config)
        # --warm-start: the earlier runs' trials, as copied into the folder at creation
        self.earlier: list[TrialRecord] = warmstart.load(self.rd.warm_start_json, self.space)
        self.plan = TrialPlan(config, self.space)
        self.notes: dict[int, TrialNote] = {}  # recorded trials
        self.history: list[TrialRecord] = []  # told trials, in order
        self.progress: Progress | None = None
        self.running: dict[int, PreparedTrial] = {}  # submitted, not recorded
        self.best = Best(Gate(config.confirm, config.seed), self.notes)
        self.spend = Spend()
        self.stops: StopRules | None = None  # made at the start, from the config in force
        self.stopped: Stop | None = None
        self.guidance = ""  # RUN/guidance.md as last read (agent/cli/main.py, steer)
        self.purse: Purse | None = None  # made at the start: the prices of the model in force
        self.executor = self.llm = self.server = None

    @classmethod
    def create(cls, run_dir: Path, config: SessionConfig, reporter=None) -> Session:
        """A new session folder (agent/record/newrun.py), locked for this process."""
        session = cls(run_dir, create_run_folder(run_dir, config), reporter)
        session.rd.lock()
        return session

    @classmethod
    def open(cls, run_dir: Path, reporter=None, track: list[str] = ()) -> Session:
        """An existing session, locked for this process (RunDirBusy if another drives it);
        `track`: trackers this command adds to session.toml's (saved there)."""
        rd = RunDir(run_dir)
        require_session(rd)
        rd.lock()
        try:
            config = SessionConfig.load(rd.session_toml)
            if track:
                config = SessionConfig(**{**config.model_dump(), "track": [
                    *config.track, *track], "track_dropped": [
                    t for t in config.track_dropped if t not in track]})
                config.save(rd.session_toml)
            session = cls(rd.root, config, reporter)
            noted(session.ws, session.ledger)  # refuse at once what resume cannot repair
        except BaseException:
            rd.unlock()
            raise
        session.rd = rd
        return session

    def close(self) -> None:
        self.rd.unlock()

    @property
    def slots(self) -> int:
        return self.executor.slots if self.executor else self.config.workers

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> Outcome:
        started, stopped_by, elapsed_before = time.monotonic(), "trials", 0.0
        try:
            self.feed.launch()
            elapsed_before = self._start()
            self.reporter.start(len(self.notes), self.config.trials)
            for prepared in self._reruns:  # running when the session was stopped
                self._submit(self.preflight.first_stage(prepared))
            while True:  # propose what the tells so far allow, then tell one more, ...
                spent = elapsed_before + time.monotonic() - started
                if self._budget_spent(spent):
                    stopped_by = "budget"
                elif self._may_propose():
                    if self._stop_rule() is None:
                        self._propose()
                        continue
                    stopped_by = self.stopped.rule
                if self.progress.told in self.notes:
                    self._tell_next()
                    continue
                if not self.running:
                    break
                for prepared, result in self.executor.wait():
                    prepared, final = self.preflight.after(prepared, result)
                    self._record(prepared, final) if final else self._submit(prepared)
            self.feed.finished_ok = True
        finally:
            self._stop(elapsed_before, started)
        best = self.best.current
        return Outcome(len(self.notes) - 1, best and best.val_bpb, self.ws.best, stopped_by,
                       self.stopped.why if self.stopped else "")

    def _start(self) -> float:
        from agent.config.data import prepare_data
        from agent.llm.local import connect

        self.rd.lock()  # no-op when create/open took it
        self.rd.clear_tmp()  # what a killed run of this folder left
        self.rd.stop_request.unlink(missing_ok=True)  # asked of a session that has ended
        spec = load_runspec(train_dir := Path(self.config.train_dir or baseline_dir()))
        if self.config.data_dir is None:
            data = prepare_data(spec, self.rd.repo, train_dir, TrialPlan(
                self.config, self.space, spec).preparation(self.rd.root / "prepare"))
            if data is not None:
                self.config = self.config.model_copy(update={"data_dir": str(data)})
                self.config.save(self.rd.session_toml)
        config, self.plan = self.config, TrialPlan(self.config, self.space, spec)
        self.preflight = Preflight(config, self.trials, self.plan.time_budget, self.space.preset,
                                   self.plan.limits().memory_bytes / 2**20)
        self.executor = self.plan.executor(self.rd.tmp)
        self.reporter.note(f"sandbox: {self.executor.why}")
        if not self.plot.enabled:
            self.reporter.note(NO_PLOT)
        if config.method in LLM_METHODS:
            self.llm, self.server = connect(config, self.rd.llm_server_log, self.reporter.note)
        self.notes = noted(self.ws, self.ledger)
        self.plot.seed(self.notes.values())
        got = restore(self.notes, self.ws, self.ledger, self.trials, self.rd.state_pkl,
                      Gate(config.confirm, config.seed), self._new_optimizer, self.context,
                      self.slots, self.reporter.note)
        self.progress, self.best, self.history, self._reruns = (
            got.progress, got.best, got.history, got.reruns)
        if isinstance(self.progress.optimizer, LLMMethod):  # a pickle holds no client
            self.progress.optimizer.attach(self.llm)
        for note in self.notes.values():
            self.spend.add(note)
        self.stops = StopRules(config.stop_after_failures, config.plateau_trials,
                               config.plateau_s)
        for n in range(self.progress.told):
            self.stops.told(self.notes[n])
        self._open_purse()
        self.progress.save(self.rd.state_pkl)
        for spec in config.track_dropped:
            self.reporter.note(f"session.toml asks to track to {spec}: not done (a run folder "
                               "may be someone else's); pass --track to send there")
        if self.earlier and not self.notes.get(1):
            ok = [r.val_bpb for r in self.earlier if r.ok]
            self.reporter.note(f"warm start: {len(self.earlier)} trials of earlier runs"
                               + (f", best val_bpb {min(ok):.6f}" if ok else ""))
        self.feed.begin(session_view(self.rd, config, self.space, self.ws,
                                     group_of(self.rd.root)),
                        [self.notes[n] for n in sorted(self.notes)])
        elapsed = self.rd.load_clock()
        if elapsed is None:
            self.reporter.note(f"{self.rd.clock_json} is unreadable: the session clock "
                               "restarts from the trials' own wall time")
            elapsed = sum(n.wall_s or 0.0 for n in self.notes.values())
        return elapsed

    def _may_propose(self) -> bool:
        n = self.progress.asked
        wanted = self.config.trials is None or n <= self.config.trials
        return wanted and n - self.progress.told < self.slots

    def _open_purse(self) -> None:
        """The prices in force (saved to RUN/pricing.json) and the spend so far; the LLM
        client counts its calls in the purse and asks it before each one."""
        llm, config = self.llm, self.config
        pricing = pricing_for(llm.config.model if llm else None, bool(llm and llm.config.local),
                              config.llm_usd_per_mtok, config.gpu_usd_per_hour)
        save_snapshot(self.rd.pricing_json, pricing, self.progress.asked)
        self.purse = Purse(config.max_usd, pricing, self.reporter.note)
        self.purse.restore(self.notes.values(), cut_usd(self.rd.cut_calls))
        if llm is not None:
            llm.config.prices = (pricing.input_usd_per_mtok, pricing.output_usd_per_mtok)
            llm.meter = self.purse

    def _budget_spent(self, spent: float) -> bool:
        return self.plan.budget_spent(self.spend, spent)

    def _stop_rule(self) -> Stop | None:
        """What ended proposing: `autoresearch stop`, or a stop rule (--stop-after-failures,
        --stop-on-plateau), said once; the trials in flight still finish and are recorded."""
        if self.stopped is not None:
            return self.stopped
        short = self.purse.room_for_trial(self.spend.typical_wall_s)
        if self.rd.stop_request.exists():
            self.stopped = Stop("stop", f"asked by `autoresearch stop`; `autoresearch resume "
                                        f"{self.run_dir}` continues")
        elif short:
            self.stopped = self._money(short)
        else:
            self.stopped = self.stops.check(self.best.incumbent, self.slots, str(self.run_dir))
        if self.stopped is not None:
            running = len(self.running)
            self.reporter.note(f"stopping: {self.stopped.why}" + (
                f" (the {running} trial{'s' * (running != 1)} in flight finish first)"
                if running else ""))
        return self.stopped

    def _money(self, short: str) -> Stop:
        return Stop("money", f"{short}; `autoresearch resume {self.run_dir} --max-usd MORE` "
                             "goes on")

    def _new_optimizer(self):
        optimizer = make_optimizer(self.config.method, self.space, self.config.seed,
                                   self.trials.baseline().config,
                                   **self.plan.method_options(self.llm))
        if isinstance(optimizer, LLMMethod):
            optimizer.attach(self.llm)
        if self.earlier:
            optimizer.warm_start(self.earlier)
        return optimizer

    def _propose(self) -> None:
        """Ask for trial n, commit it, save the optimizer, and run it (or record a refusal)."""
        n, progress = self.progress.asked, self.progress
        action = self.best.gate.next()  # a confirmation run that is due comes first
        guidance = ""
        if action is None:
            pending = progress.pending(self._known, len(self.space.names))
            ctx = self.context(n, self.incumbent())
            guidance = ctx.guidance = self._guidance()
            try:
                action = progress.optimizer.ask(list(self.history), pending, ctx)
            except CapReached as e:  # this ask is undone: the optimizer as last saved
                cut = progress.optimizer.take_calls() if isinstance(progress.optimizer,
                                                                    LLMMethod) else []
                with self.rd.cut_calls.open("a") as f:  # paid for: kept, counted on resume
                    for call in cut:
                        f.write(json.dumps({"trial": n, **call}, sort_keys=True) + "\n")
                self.progress = Progress.load(self.rd.state_pkl)
                if isinstance(self.progress.optimizer, LLMMethod):
                    self.progress.optimizer.attach(self.llm)
                self.stopped = self._money(str(e))
                self.reporter.note(f"stopping: {self.stopped.why}")
                return
        calls = progress.optimizer.take_calls() if isinstance(progress.optimizer,
                                                              LLMMethod) else []
        for call in calls:  # what the researcher had said when the prompt was made
            call["guidance"] = guidance
        llm = self.trials.llm_summary(calls, action, self.rd.trial(n))
        parent = self.notes[action.of].commit if isinstance(action, Confirm) else \
            self.incumbent()
        prepared = self.trials.prepare(n, action, parent, llm)
        progress.inflight[n] = action_to_dict(prepared.action)
        progress.asked = n + 1
        progress.save(self.rd.state_pkl)
        if prepared.rejected is not None:
            self.reporter.running(n, action)
            self._record(prepared, TrialResult(status="rejected", reason=prepared.rejected))
        else:
            self._submit(self.preflight.first_stage(prepared))

    def _submit(self, prepared: PreparedTrial) -> None:
        self.reporter.running(prepared.number, prepared.action)
        config, env = self.config, {**self.plan.env(), **self.preflight.env(prepared)}
        env["AR_SEED"] = str(seed_of(prepared.action, config.seed))
        folder = self.rd.trial(prepared.number)  # a probe's run is set aside when it ends
        spec = watch_spec(config, self.notes, prepared.number, prepared.config, self.slots,
                          self.preflight.watch(prepared), isinstance(prepared.action, Confirm))
        job = self.plan.job(prepared.number, self.ws.archive(prepared.commit), folder, env,
                            self.rd.cache, spec.to_dict() if spec else None)
        self.executor.submit(prepared, job)
        self.running[prepared.number] = prepared

    def _record(self, prepared: PreparedTrial, result) -> None:
        self.running.pop(prepared.number, None)
        best = self.best.current  # under the gate: its incumbent
        is_best = self.best.is_new(prepared.number, result.ok, result.val_bpb)
        note = self.trials.record(prepared, result, is_best, best.val_bpb if best else None)
        self.notes[note.trial] = note
        self.best.recorded(note)
        self.spend.add(note)
        self.purse.recorded(note)
        self.reporter.finished(note)

    def _tell_next(self) -> None:
        note = self.notes[self.progress.told]
        seen = self.progress.tell(note)  # None: a confirmation run, no optimizer's business
        self.stops.told(note)
        self.history += [seen] if seen else []
        decision = self.best.told(note)
        if decision is not None:
            self.reporter.note(decision.line())
            self.ws.move_best(self.incumbent())
        self.progress.save(self.rd.state_pkl)

    def _stop(self, elapsed_before: float, started: float) -> None:
        try:
            if self.executor is not None:
                self.executor.close()
            if self.progress is not None:
                self.rd.save_clock(elapsed_before + time.monotonic() - started)
        finally:
            self.reporter.stop()
            if self.server is not None:
                self.server.stop()
            self.rd.clear_tmp()
            self.rd.stop_request.unlink(missing_ok=True)
            self.close()

    # -- what a proposal is made from --------------------------------------------------------
    def _guidance(self) -> str:
        """RUN/guidance.md for an LLM method's prompt (at most GUIDANCE_CHARS); a change is
        said once in the session's output."""
        if self.llm is None:
            return ""
        try:
            text = self.rd.guidance_md.read_text(errors="replace")[:GUIDANCE_CHARS].strip()
        except OSError:  # none (or not a file): no guidance
            text = ""
        if text != self.guidance:
            self.reporter.note(f"guidance for the next LLM prompts: {clean(text, True)[:160]}"
                               if text else "guidance removed: the next LLM prompts have none")
            self.guidance = text
        return text

    def incumbent(self) -> str:
        """The commit of the best trial told so far (agent/loop/standing.py; the baseline
        before any): the parent of the next proposal, whatever order results came in."""
        best = self.best.incumbent
        return best.commit if best else self.ws.baseline

    def _known(self, n: int):
        """Trial n's note, else its running PreparedTrial: what a pending view shows."""
        return self.notes.get(n) or self.running.get(n)

    def context(self, n: int, incumbent: str) -> TrialContext:
        source = self.ws.source(incumbent)
        config = block.values(source, self.space.names)
        return TrialContext(trial=n, incumbent_source=source, incumbent_config=config,
                            device=self.plan.device(), memory=self.plan.memory,
                            budget=self.plan.budget(), preset=self.space.preset,
                            earlier=tuple(self.earlier))
