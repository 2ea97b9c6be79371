"""Where a session stands, and resuming it: the state is checked against git (the truth).

`Progress` is the optimizer's pickle (optimizer/state.pkl), saved after every proposal (once
its commit exists) and after every tell. `restore` brings a session back after any stop:
the ledger is rebuilt from the notes when it differs, `best` is moved back to the best ok
note, the optimizer comes from its pickle (or, when that is unreadable, is rebuilt by
replaying the recorded trials in the order the session runs them), and every trial that was
prepared but not recorded -- running when the session was killed -- runs again on its
existing commit.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

from agent.edit.actions import Confirm, action_from_dict, action_to_dict
from agent.loop.gate import Gate, best_note
from agent.loop.trial import PreparedTrial, TrialNote
from agent.optimizers import make_optimizer
from agent.protocols import LLMMethod, TrialRecord
from agent.record.ledger import Ledger, atomic_write
from agent.record.newrun import SessionError

STATE_VERSION = 2


@dataclass
class Progress:
    optimizer: object
    asked: int = 1  # trials prepared: the next proposal is trial `asked` (0 is the baseline)
    told: int = 0  # trials 0 .. told - 1 were told to the optimizer, in trial order
    inflight: dict[int, dict] = field(default_factory=dict)  # prepared, not told: the action

    def save(self, path) -> None:
        atomic_write(path, pickle.dumps({"v": STATE_VERSION, **self.__dict__}))


def noted(session) -> dict[int, TrialNote]:
    """The recorded trials in git; SessionError when they cannot be trusted (lost, or
    notes of trials that were never committed): then nothing is changed."""
    notes = session.ws.notes()
    refs = session.ws.trial_refs()
    ledger = session.ledger.jsonl
    if not notes and (refs or (ledger.exists() and ledger.stat().st_size > 0)):
        raise SessionError(f"{session.rd.repo} has lost its trial notes (refs/notes/results) "
                           f"but holds {len(refs)} trial commits: restore that ref "
                           "(the notes are the record of results); nothing was changed")
    by_trial = {n.trial: n for n in map(TrialNote.from_dict, notes.values())}
    stray = sorted(n for n in by_trial if n > 0 and n not in refs)
    if stray:
        raise SessionError(f"the trial notes in {session.rd.repo} name trials without a "
                           f"commit ({stray[:10]}): the repository was changed by hand")
    return by_trial


def restore(session) -> tuple[Progress, list[PreparedTrial]]:
    """(progress, trials to run again) for a session opening its folder."""
    notes = session.notes
    check_ledger(session.ledger, list(notes.values()), session.reporter.note)
    progress = load(session) or rebuild(session)
    if isinstance(progress.optimizer, LLMMethod):
        progress.optimizer.attach(session.llm)
    config = session.config
    session.gate = Gate.replay(config.confirm, config.seed, notes, progress.told,
                               progress.inflight)
    check_best(session.ws, best_note(session.gate, notes.values()), session.reporter.note)
    reruns = []
    for n in range(progress.asked):
        if n in notes:
            continue
        if n == 0:
            reruns.append(session.trials.baseline())
            continue
        reruns.append(session.trials.resume(n, action_from_dict(progress.inflight[n])))
    return progress, reruns


def load(session) -> Progress | None:
    path = session.rd.state_pkl
    if not path.exists():
        return None
    try:
        state = pickle.loads(path.read_bytes())
        if state.pop("v", 1) != STATE_VERSION:
            raise ValueError("written by an older version")
        return Progress(**state)
    except Exception as e:  # any unreadable pickle: rebuilt from the notes
        session.reporter.note(f"{path} is unreadable ({type(e).__name__}): rebuilding the "
                              "optimizer from the trial notes")
        return None


def rebuild(session) -> Progress:
    """A fresh optimizer brought to where the recorded trials leave it, asked and told in
    the session's own order (trial n is asked once trials 0 .. n - slots are told)."""
    config, notes = session.config, session.notes
    optimizer = make_optimizer(config.method, session.space, config.seed,
                               session.trials.baseline().config,
                               **session.plan.method_options(session.llm))
    if isinstance(optimizer, LLMMethod):
        optimizer.attach(session.llm)
    progress = session.progress = Progress(optimizer)  # the context of each ask reads it
    progress.inflight[0] = action_to_dict(session.trials.baseline().action)
    history = []
    n = 1
    while n in notes or session.ws.trial_commit(n) is not None:
        while progress.told <= n - session.slots and progress.told in notes:
            history.append(tell(progress, notes[progress.told]))
        if progress.told <= n - session.slots:
            break  # an earlier trial never finished: the rest is asked again
        confirm = confirm_of(session, n)
        if confirm is not None:  # a confirmation run: no optimizer asked for it
            progress.inflight[n] = confirm
        else:
            pending = pending_views(session, {k: a for k, a in progress.inflight.items()
                                              if k >= progress.told})
            ctx = session.context(n)
            ctx.replay = notes[n].recorded_action() if n in notes else None
            progress.inflight[n] = action_to_dict(optimizer.ask(history, pending, ctx))
        progress.asked = n + 1
        n += 1
    while progress.told < progress.asked and progress.told in notes:
        history.append(tell(progress, notes[progress.told]))
    session.history = [seen for seen in history if seen is not None]
    return progress


def tell(progress: Progress, note: TrialNote):
    """Tell the optimizer trial `progress.told` (its recorded action and outcome); what it
    saw, or None for a confirmation run (the gate's, not the optimizer's)."""
    seen = None
    if note.method != "confirm":
        seen = note.as_seen()
        progress.optimizer.tell(note.recorded_action(), seen)
    progress.inflight.pop(note.trial, None)
    progress.told += 1
    return seen


def confirm_of(session, n: int) -> dict | None:
    """Trial n's Confirm action when it is a confirmation run (its note, or its commit's
    `Confirms:` trailer when it has no note yet)."""
    if n in session.notes:
        action = session.notes[n].action
        return action if action.get("kind") == "confirm" else None
    message = session.ws.message(session.ws.trial_commit(n))
    trailers = dict(line.split(": ", 1) for line in message.splitlines() if ": " in line)
    if trailers.get("Method") != "confirm" or "Confirms" not in trailers:
        return None
    return action_to_dict(Confirm(int(trailers["Confirms"]), int(trailers["Seed"])))


def pending_views(session, inflight: dict[int, dict]) -> list[TrialRecord]:
    """The proposals in flight as an optimizer sees them: their full configuration where
    known (confirmation runs are left out)."""
    views = []
    for n, action in sorted(inflight.items()):
        if action.get("kind") == "confirm":
            continue
        known = session.notes.get(n) or session.running.get(n)
        values = action.get("values") or {}
        config = known.config if known else (
            values if len(values) == len(session.space.names) else None)
        views.append(TrialRecord(n, "running", config, rationale=action.get("rationale", "")))
    return views


def check_ledger(ledger: Ledger, notes: list[TrialNote], say) -> None:
    """results.tsv and trials.jsonl must hold what the notes hold (in any order); else they
    are rebuilt from the notes, the old files kept beside them."""
    expected = ledger.render(notes)
    current = {path: path.read_text(errors="replace") if path.exists() else None
               for path in expected}
    if not notes and not any(current.values()):
        return  # a new session: its first trial creates the files
    if all(current[p] is not None and sorted(current[p].splitlines()) ==
           sorted(text.splitlines()) for p, text in expected.items()):
        return
    kept = ledger.rewrite(notes)  # the old files kept beside, never silently dropped
    if kept:
        say(f"the ledger differed from the git notes: rebuilt from them (the old files are "
            f"kept as {', '.join(p.name for p in kept)})")


def check_best(ws, best: TrialNote | None, say) -> None:
    """Branch `best` must point at the best trial (the best ok one, the first of equals; under
    the gate, the one it promoted last)."""
    if best is None or best.trial == 0 and best.status != "ok":
        return
    expected = best.commit
    if ws.best != expected:
        say(f"branch best pointed at {ws.best[:7]}, not at the best ok trial {expected[:7]}: "
            "moved it back")
        ws.move_best(expected)
