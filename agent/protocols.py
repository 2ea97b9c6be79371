"""Every interface of the loop in one place (DESIGN.md, "One trial, end to end").

The session owns the order of events (ask -> prepare -> submit -> record -> tell); the parts
it talks to are declared here and nowhere else: what an optimizer sees of trials
(`TrialRecord`, `TrialContext`), the optimizer itself (`Optimizer`, and `LLMMethod` for those
that call a model), where prepared trials run (`Executor`), the model client (`LLMClient`),
who is told about progress (`Reporter`) and the experiment trackers a session feeds
(`Tracker`, with what they are shown: `TrackedSession`, `TrackedTrial`). The sandbox's own
interface lives beside its backends (`sandbox.base.Sandbox`) because trials run where
`agent/` is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from agent.edit.actions import Action
from agent.edit.block import Value
from sandbox.base import Sandbox

if TYPE_CHECKING:
    from agent.executors.base import TrialJob
    from agent.loop.trial import PreparedTrial
    from agent.record.note import TrialNote
    from sandbox.result import TrialResult

__all__ = ["Executor", "LLMClient", "LLMMethod", "Optimizer", "Reporter", "Sandbox",
           "TrackedSession", "TrackedTrial", "Tracker", "TrialContext", "TrialRecord"]


@dataclass
class TrialRecord:
    """One trial as optimizers see it: a finished one (the ledger's record, trimmed), or a
    pending one (status "running", no value yet) in `ask`'s `pending`."""

    number: int
    status: str  # ok, oom, cuda_oom, timeout, diverged, crash, rejected; running if pending
    config: dict[str, Value] | None  # the hyperparameters train.py held; None if unknown
    val_bpb: float | None = None
    method: str = ""
    reason: str = ""
    rationale: str = ""
    diff: str = ""
    curve: tuple[tuple[float, float], ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.val_bpb is not None


@dataclass
class TrialContext:
    """What LLM methods are shown about the trial they propose (classical ones ignore it)."""

    trial: int
    incumbent_source: str
    incumbent_config: dict[str, Value]
    device: str  # what the trial really runs on, e.g. "cpu, 2 cores" or "GPU 0"
    memory: str  # the host memory limit, e.g. "8g"
    budget: str  # "60 s of training" or "1000000 training tokens"
    preset: str = ""
    # resume without a readable optimizer pickle: the answer recorded for this trial, which an
    # LLM method returns instead of asking its model again (it still advances its own state)
    replay: Action | None = None
    # RUN/guidance.md (`autoresearch steer`): the researcher's text, shown in its own section
    guidance: str = ""
    # --warm-start: the earlier runs' trials (agent/record/warmstart.py), shown as earlier
    earlier: tuple[TrialRecord, ...] = ()


class Optimizer(Protocol):
    """ask / tell over a fixed search space, seeded, picklable (the pickle is the resume
    state). `pending` holds the trials proposed and not yet told, so batch methods never
    propose the same point twice; `ctx` is the trial's context. A failure is told like any
    result; `failure_policy` says what the method makes of it."""

    name: str
    failure_policy: str

    def ask(self, history: list[TrialRecord], pending: list[TrialRecord],
            ctx: TrialContext) -> Action: ...

    def warm_start(self, earlier: list[TrialRecord]) -> None:
        """Start from earlier runs' trials (--warm-start), once, before the first ask."""

    def tell(self, action: Action, record: TrialRecord) -> None: ...


@runtime_checkable
class LLMMethod(Protocol):
    """An optimizer that calls a model. The client is not part of its pickle (a restarted
    local server has a new port): the session attaches one after creating or loading it, and
    takes the calls of each ask to store them with the trial."""

    def attach(self, llm: LLMClient) -> None: ...

    def take_calls(self) -> list[dict]: ...


class LLMClient(Protocol):
    def complete(self, messages: list[dict], tools: list[dict] | None = None,
                 schema: dict | None = None): ...

    def supports_tools(self) -> bool: ...


class Executor(Protocol):
    """Where prepared trials run: `slots` at once; `why` says which sandbox and why (one
    line for the session's output). `submit` hands one over: `job` is everything the trial
    needs as data, `prepared` is handed back with its result; `wait` blocks until at least
    one has finished and returns those (prepared, result) pairs; `close` stops what still
    runs (Ctrl-C) and frees the slots."""

    slots: int
    why: str

    def submit(self, prepared: PreparedTrial, job: TrialJob) -> None: ...

    def wait(self) -> list[tuple[PreparedTrial, TrialResult]]: ...

    def close(self) -> None: ...


class Reporter(Protocol):
    """Who is told about a running session (agent/loop/progress.py): its start (trials done,
    trials asked for), a line of news, a trial starting, a trial recorded, its end."""

    def start(self, done: int, total: int | None) -> None: ...

    def note(self, text: str) -> None: ...

    def running(self, n: int, action: Action) -> None: ...

    def finished(self, note: TrialNote) -> None: ...

    def stop(self) -> None: ...


@dataclass
class TrackedSession:
    """A session as experiment trackers are shown it (agent/track/view.py builds it from the
    run folder): `key` identifies it across resumes and backfills (the run folder's path),
    `group` is the bench it belongs to ("" for a lone session), `space` the search space's
    parameters (name -> {type, low, high, log, choices}) for trackers that want
    distributions."""

    key: str
    name: str
    group: str
    params: dict[str, str]
    tags: dict[str, str]
    space: dict[str, dict]


@dataclass
class TrackedTrial:
    """One recorded trial as trackers are shown it: `params` every value of the block (not
    only the changed ones), `metrics` the numbers (val_bpb absent when it has none), `curve`
    the learning curve as (progress in per mille, smoothed train loss), `tags` strings,
    `artifacts` file name -> text (its diffs, the log's head and tail, llm.jsonl), times in
    ms since the epoch."""

    number: int
    status: str
    val_bpb: float | None
    params: dict[str, Value]
    metrics: dict[str, float]
    curve: list[tuple[int, float]]
    tags: dict[str, str]
    artifacts: dict[str, str]
    start_ms: int
    end_ms: int


class Tracker(Protocol):
    """An experiment tracker a session feeds (agent/track/): `open` finds or makes the
    session's record there and learns which trials it holds (`holds`); `trial` sends one recorded
    trial unless the tracker holds it already (idempotent by trial number: resume and
    backfill send every trial again); `best` marks the trial that is best now (None: none);
    `close` ends the session's record. Any of them may raise: the feed then warns once and
    stops feeding that tracker, the session goes on."""

    name: str

    def open(self, session: TrackedSession) -> None: ...

    def holds(self, number: int) -> bool: ...

    def trial(self, trial: TrackedTrial) -> None: ...

    def best(self, number: int | None) -> None: ...

    def close(self, finished: bool) -> None: ...


class Meter(Protocol):
    """What an LLM client tells about its calls (agent/loop/money.py): `before` a call, with
    its messages and the most tokens it may answer (it may raise to refuse the call), and
    `after` it, with what it cost."""

    def before(self, messages: list[dict], max_tokens: int) -> None: ...

    def after(self, cost_usd: float) -> None: ...
