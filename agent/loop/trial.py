"""One trial's serial steps: prepare (patch, validate, commit) and record (note, ledger, best).

`PreparedTrial` is what an executor runs; `TrialNote` (record/note.py) what is recorded. Between
`Trials.prepare` and `Trials.record` lies the one step that runs in parallel: the sandbox.
Write order (resume depends on it): commit + ref at prepare; note, ledger lines, branch best
at record.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from agent.config.settings import SessionConfig
from agent.edit import block
from agent.edit.actions import (
    Action,
    ApplyDiff,
    Confirm,
    EditHyperparameters,
    NoAction,
    action_to_dict,
    edit_to_diff,
    unified_diff,
)
from agent.edit.block import SpaceError, render_block
from agent.edit.patching import PatchError, apply_patch
from agent.edit.space import SearchSpace
from agent.record.ledger import Ledger
from agent.record.note import TrialNote
from agent.record.workspace import Workspace
from agent.text import shorten
from sandbox.result import TrialResult


@dataclass
class PreparedTrial:
    """A proposal turned into a commit (or refused: `rejected` holds why), ready to run."""

    number: int
    action: Action
    commit: str
    parent: str | None
    diff: str = ""
    config: dict | None = None
    rejected: str | None = None
    llm: dict = field(default_factory=lambda: {"calls": 0, "valid": None, "prompt": 0,
                                               "completion": 0, "cost_usd": 0.0})
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(
        timespec="seconds"))
    t0: float = field(default_factory=time.monotonic)
    stage: str = "full"  # "preflight" first for a new configuration (agent/loop/preflight.py)
    spent_s: float = 0.0  # sandbox seconds of all its runs so far
    preflight: dict | None = None  # what its passed preflight measured
    repairs: list[str] = field(default_factory=list)  # OOM repairs made, in order
    probes: list[dict] = field(default_factory=list)  # each preflight run: status, seconds


class Trials:
    """Prepare and record trials of one session; the only writer of its git repo and ledger."""

    def __init__(self, ws: Workspace, ledger: Ledger, space: SearchSpace,
                 config: SessionConfig):
        self.ws, self.ledger, self.space, self.config = ws, ledger, space, config

    def baseline(self) -> PreparedTrial:
        source = self.ws.source(self.ws.baseline)
        config = self.config_of(source)
        return PreparedTrial(0, EditHyperparameters(config, "baseline"), self.ws.baseline,
                             None, config=config)

    def prepare(self, n: int, action: Action, incumbent: str, llm: dict | None = None,
                reuse: bool = True) -> PreparedTrial:
        """Patch the incumbent's train.py with `action`, validate it against the space and
        commit it as trial n (parent: the incumbent). A refused action is an empty commit
        with its reason. `reuse`: an unrecorded commit of trial n with the same parent and
        file is taken as it is (a trial interrupted before its result)."""
        source = self.ws.source(incumbent)
        rejected = content = None
        diff = action.patch if isinstance(action, ApplyDiff) else ""
        if isinstance(action, Confirm):  # `incumbent` is the commit it repeats: same tree
            content = source
        elif isinstance(action, NoAction):
            rejected = action.reason
        else:
            try:
                diff, content = self._patch(action, source)
            except (PatchError, SpaceError) as e:
                rejected = str(e)
        commit = self._commit(n, action, incumbent, content, rejected, reuse)
        prepared = PreparedTrial(n, action, commit, incumbent, diff, self.config_of(content),
                                 rejected)
        if llm:
            prepared.llm = llm
        return prepared

    def record(self, prepared: PreparedTrial, result: TrialResult, is_best: bool,
               best_before: float | None) -> TrialNote:
        """Write the trial's note (git), its ledger lines, and move `best` if it is one
        (`is_best` as agent/loop/standing.Best decides; under the acceptance gate the session
        moves it, once a candidate is confirmed)."""
        llm = prepared.llm
        note = TrialNote(
            trial=prepared.number, commit=prepared.commit, parent=prepared.parent,
            method=method_of(prepared.number, prepared.action, self.config.method),
            seed=seed_of(prepared.action, self.config.seed),
            action=action_to_dict(prepared.action),
            rationale=one_line(prepared.action.rationale), config=prepared.config,
            diff=prepared.diff, status=result.status, val_bpb=result.val_bpb,
            result=result.to_dict(), is_best=is_best,
            best_val_bpb=result.val_bpb if is_best else best_before,
            tokens={"prompt": llm["prompt"], "completion": llm["completion"]},
            cost_usd=llm["cost_usd"], llm_calls=llm["calls"], llm_valid=llm["valid"],
            started_at=prepared.started_at, wall_s=round(time.monotonic() - prepared.t0, 3),
            cost_s=round((prepared.spent_s or result.wall_s) + llm.get("seconds", 0.0), 3),
            preflight=prepared.preflight, repairs=prepared.repairs, probes=prepared.probes)
        self.ws.add_note(prepared.commit, note.to_dict())
        self.ledger.append(note)
        if is_best and prepared.number > 0:
            self.ws.move_best(prepared.commit)
        return note

    @staticmethod
    def llm_summary(calls: list[dict], action: Action, folder) -> dict:
        """Write the LLM calls behind a proposal to folder/llm.jsonl; their sums."""
        if calls:
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / "llm.jsonl").open("w") as f:
                for call in calls:
                    f.write(json.dumps(call, sort_keys=True) + "\n")
        return {"calls": len(calls), "valid": not isinstance(action, NoAction) if calls else None,
                "seconds": round(sum(c.get("latency_s", 0.0) for c in calls), 3),
                "prompt": sum(c["prompt_tokens"] for c in calls),
                "completion": sum(c["completion_tokens"] for c in calls),
                "cost_usd": sum(c["cost_usd"] for c in calls)}

    def repair(self, prepared: PreparedTrial, cause: str, smaller: int) -> PreparedTrial | None:
        """The trial with DEVICE_BATCH_SIZE `smaller` (the effective batch is TOTAL_BATCH_SIZE
        and stays), committed on top of the failed commit; None unless 1 <= smaller < its
        batch."""
        batch = (prepared.config or {}).get("DEVICE_BATCH_SIZE")
        if not isinstance(batch, int) or not 1 <= smaller < batch:
            return None
        why = f"repair: DEVICE_BATCH_SIZE {batch} -> {smaller} ({cause})"
        content = render_block(self.ws.source(prepared.commit), {"DEVICE_BATCH_SIZE": smaller})
        trailers = {"Trial": prepared.number, "Method": self.config.method,
                    "Seed": self.config.seed, "Repair": len(prepared.repairs) + 1}
        commit = self.ws.commit_trial(prepared.number, prepared.commit, why, content, trailers)
        return replace(prepared, commit=commit, config=self.config_of(content),
                       diff=unified_diff(self.ws.source(prepared.parent), content),
                       repairs=[*prepared.repairs, why])

    def resume(self, n: int, action: Action) -> PreparedTrial:
        """Trial n as its commit holds it (repairs included), to run again after a stop."""
        commit = self.ws.trial_commit(n)
        original = commit
        while "Repair" in self.ws.trailers(original):
            original = self.ws.git.rev_parse(f"{original}^")
        parent = self.ws.git.rev_parse(f"{original}^")
        content = self.ws.source(commit)
        repairs = [] if original == commit else [
            self.ws.git.log("-1", "--format=%s", c) for c in self.ws.git.rev_list(
                f"{original}..{commit}").split()[::-1]]
        diff = action.patch if isinstance(action, ApplyDiff) and not repairs else \
            unified_diff(self.ws.source(parent), content)
        return PreparedTrial(n, action, commit, parent, diff, self.config_of(content),
                             repairs=repairs)

    def config_of(self, content: str | None) -> dict | None:
        if content is None:
            return None
        try:
            return block.values(content, self.space.names)
        except SpaceError:
            return None

    def _patch(self, action: Action, source: str) -> tuple[str, str]:
        """(diff, new train.py) for either tool, through the one patch path."""
        if isinstance(action, EditHyperparameters):
            diff = edit_to_diff(action, source, self.space)
        else:
            diff = action.patch
        content = apply_patch(source, diff)
        self.space.check_source(content)
        return diff, content

    def _commit(self, n: int, action: Action, parent: str, content: str | None,
                rejected: str | None, reuse: bool) -> str:
        pending = self.ws.trial_commit(n)
        if pending is not None:  # interrupted earlier: reuse it if it is this very proposal
            same_parent = self.ws.git.rev_parse(f"{pending}^") == parent
            same_file = content is not None and self.ws.source(pending) == content
            if reuse and same_parent and same_file and self.ws.note(pending) is None:
                return pending
            self.ws.set_aside(n)
        method, seed = method_of(n, action, self.config.method), seed_of(action, self.config.seed)
        subject = subject_of(method, action)
        trailers = {"Trial": n, "Method": method, "Seed": seed}
        if isinstance(action, Confirm):
            trailers["Confirms"] = action.of
        if rejected is not None:
            trailers |= {"Status": "rejected", "Reason": one_line(rejected, 400)}
        return self.ws.commit_trial(n, parent, subject, content, trailers)


def method_of(n: int, action: Action, method: str) -> str:
    return "baseline" if n == 0 else "confirm" if isinstance(action, Confirm) else method


def subject_of(method: str, action: Action) -> str:
    """A trial commit's subject, written here only: `<method>: <rationale>`. Optimizers give
    bare rationales; a method with several proposers names the one (`proposer`) beside it
    ("centaur llm: ..."); no rationale (an LLM's echoed placeholder) shows the action's kind."""
    who = f"{method} {action.proposer}" if action.proposer else method
    return f"{who}: {one_line(action.rationale) or action.kind}"


def seed_of(action: Action, seed: int) -> int:
    """AR_SEED of the trial: the session's, or a confirmation run's own."""
    return action.seed if isinstance(action, Confirm) else seed


def one_line(text: str, limit: int = 120) -> str:
    """A rationale or reason as one line of a commit message and a note: no control bytes
    (git refuses a NUL in a message; a terminal obeys escapes)."""
    return shorten(text or "", limit)
