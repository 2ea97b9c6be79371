"""Resuming a session: a function of what is on disk, checked against git (the truth).

After any stop, `restore` rebuilds the ledger from the notes when it differs, moves `best`
back to the best trial, loads the optimizer from its pickle (or, when that is unreadable,
rebuilds it by replaying the recorded trials in the order the session runs them), and lists
every trial that was prepared but not recorded -- running when the session was killed -- to
run again on its existing commit. It returns what it found; the session takes it from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.edit.actions import Confirm, action_from_dict, action_to_dict
from agent.loop.gate import Gate
from agent.loop.standing import Best, Progress
from agent.loop.trial import PreparedTrial, Trials
from agent.protocols import TrialContext, TrialRecord
from agent.record.ledger import Ledger
from agent.record.newrun import SessionError
from agent.record.note import TrialNote
from agent.record.workspace import Workspace


@dataclass
class Restored:
    progress: Progress
    best: Best
    history: list[TrialRecord]  # what the optimizer was told, in order (no confirmation runs)
    reruns: list[PreparedTrial]  # prepared, never recorded: to run again


def noted(ws: Workspace, ledger: Ledger) -> dict[int, TrialNote]:
    """The recorded trials in git; SessionError when they cannot be trusted (lost, or
    notes of trials that were never committed): then nothing is changed."""
    notes = ws.notes()
    refs = ws.trial_refs()
    if not notes and (refs or (ledger.jsonl.exists() and ledger.jsonl.stat().st_size > 0)):
        raise SessionError(f"{ws.path} has lost its trial notes (refs/notes/results) "
                           f"but holds {len(refs)} trial commits: restore that ref "
                           "(the notes are the record of results); nothing was changed")
    by_trial = {n.trial: n for n in map(TrialNote.from_dict, notes.values())}
    stray = sorted(n for n in by_trial if n > 0 and n not in refs)
    if stray:
        raise SessionError(f"the trial notes in {ws.path} name trials without a "
                           f"commit ({stray[:10]}): the repository was changed by hand")
    return by_trial


def restore(notes: dict[int, TrialNote], ws: Workspace, ledger: Ledger, trials: Trials,
            state_pkl, gate: Gate, new_optimizer: Callable[[], object],
            context: Callable[[int, str], TrialContext], slots: int,
            say: Callable[[str], None]) -> Restored:
    """Where the session in `ws` stands: its optimizer's progress (`state_pkl`, else rebuilt
    with `new_optimizer()` and `context(n, incumbent commit)`), who is best (`gate` fed with
    the told trials), what was told, what runs again."""
    check_ledger(ledger, list(notes.values()), say)
    best = Best(gate, notes)
    for note in notes.values():
        best.recorded(note)
    progress = _load(state_pkl, say)
    if progress is None:
        progress, history = _rebuild(notes, ws, trials, gate, best, new_optimizer, context,
                                     slots)
    else:
        gate.numbered(notes, progress.inflight)
        history = []
        for n in range(progress.told):
            best.told(notes[n])
            if notes[n].method != "confirm":
                history.append(notes[n].as_seen())
    check_best(ws, best.current, say)
    reruns = [trials.baseline() if n == 0 else
              trials.resume(n, action_from_dict(progress.inflight[n]))
              for n in range(progress.asked) if n not in notes]
    return Restored(progress, best, history, reruns)


def _load(path, say) -> Progress | None:
    if not path.exists():
        return None
    try:
        return Progress.load(path)
    except Exception as e:  # any unreadable pickle: rebuilt from the notes
        say(f"{path} is unreadable ({type(e).__name__}): rebuilding the optimizer from the "
            "trial notes")
        return None


def _rebuild(notes, ws, trials, gate, best, new_optimizer, context,
             slots) -> tuple[Progress, list[TrialRecord]]:
    """A fresh optimizer brought to where the recorded trials leave it, asked and told in
    the session's own order (trial n is asked once trials 0 .. n - slots are told)."""
    progress = Progress(new_optimizer())
    progress.inflight[0] = action_to_dict(trials.baseline().action)
    gate.numbered(notes, {})
    history = []

    def tell_next():
        note = notes[progress.told]
        seen = progress.tell(note)
        best.told(note)
        history.extend([seen] if seen else [])

    n = 1
    while n in notes or ws.trial_commit(n) is not None:
        while progress.told <= n - slots and progress.told in notes:
            tell_next()
        if progress.told <= n - slots:
            break  # an earlier trial never finished: the rest is asked again
        confirm = _confirm_of(notes, ws, n)
        if confirm is not None:  # a confirmation run: no optimizer asked for it
            progress.inflight[n] = confirm
        else:
            incumbent = best.incumbent.commit if best.incumbent else ws.baseline
            ctx = context(n, incumbent)
            ctx.replay = notes[n].recorded_action() if n in notes else None
            pending = progress.pending(notes.get, len(trials.space.names))
            progress.inflight[n] = action_to_dict(progress.optimizer.ask(history, pending, ctx))
        progress.asked = n + 1
        n += 1
    while progress.told < progress.asked and progress.told in notes:
        tell_next()
    gate.numbered({}, progress.inflight)  # confirmation runs committed, never recorded
    return progress, history


def _confirm_of(notes, ws, n: int) -> dict | None:
    """Trial n's Confirm action when it is a confirmation run (its note, or its commit's
    `Confirms:` trailer when it has no note yet)."""
    if n in notes:
        action = notes[n].action
        return action if action.get("kind") == "confirm" else None
    trailers = ws.trailers(ws.trial_commit(n))
    if trailers.get("Method") != "confirm" or "Confirms" not in trailers:
        return None
    of, seed = trailers["Confirms"], trailers.get("Seed", "")
    if not (of.isdigit() and seed.lstrip("-").isdigit()):  # the folder may be someone else's
        raise SessionError(f"trial {n}'s commit in {ws.path} has trailers Confirms: "
                           f"{of[:20]!r}, Seed: {seed[:20]!r}, not numbers: the repository "
                           "was changed by hand")
    return action_to_dict(Confirm(int(of), int(seed)))


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
