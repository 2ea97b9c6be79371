"""How many files a newcomer reads to follow one trial, end to end (issue 22).

Runs a real two-trial session (random search on the synthetic training folder, the local
sandbox, a real git repo and ledger) and traces trial 1 from its proposal (`_propose`) to its
tell (`_tell_next`): every call into a function of agent/ or sandbox/ in the driver and in
the executor's threads. Prints the files in the order they are first entered, how many moves
between files the trial makes and how many of those go back into a file already visited.
Three counts: every file; the files that hold a step of the trial (leaving out the leaves
every layer uses: errors, text, paths, stats, protocols, and package __init__s); and those
steps by package (agent/loop, agent/edit, ..., sandbox), the map DESIGN.md draws.

    .venv/bin/python benchmarks/trial_path.py
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEAVES = {"agent/errors.py", "agent/text.py", "agent/paths.py", "agent/stats.py",
          "agent/protocols.py"}


def main() -> None:
    from agent.config.settings import SessionConfig
    from agent.loop.session import Session
    from agent.testing.synthetic import make_train_dir

    seen: list[str] = []
    tracing = threading.Event()

    def profile(frame, event, arg):
        if event != "call" or not tracing.is_set():
            return
        path = Path(frame.f_code.co_filename)
        try:
            rel = path.resolve().relative_to(ROOT).as_posix()
        except ValueError:
            return
        if rel.startswith(("agent/", "sandbox/")) and (not seen or seen[-1] != rel):
            seen.append(rel)

    with tempfile.TemporaryDirectory() as tmp:
        train_dir = make_train_dir(Path(tmp))
        config = SessionConfig(method="random", trials=1, sandbox="local",
                               train_dir=str(train_dir), time_budget=0.001, preflight_steps=0)
        session = Session.create(Path(tmp) / "run", config)
        propose, tell_next = Session._propose, Session._tell_next

        def traced_propose(self):
            if self.progress.asked == 1:
                tracing.set()
            return propose(self)

        def traced_tell(self):
            told = self.progress.told
            tell_next(self)
            if told == 1:
                tracing.clear()

        Session._propose, Session._tell_next = traced_propose, traced_tell
        sys.setprofile(profile)
        threading.setprofile(profile)
        try:
            outcome = session.run()
        finally:
            sys.setprofile(None)
            threading.setprofile(None)
            Session._propose, Session._tell_next = propose, tell_next
    assert outcome.trials_run == 1, outcome
    steps = [f for f in seen if f not in LEAVES and not f.endswith("__init__.py")]
    for name, files in (("every file", seen), ("steps only", steps),
                        ("by package", [f.rsplit("/", 1)[0] for f in steps])):
        moves = [f for i, f in enumerate(files) if i and files[i - 1] != f]
        collapsed = [f for i, f in enumerate(files) if not i or files[i - 1] != f]
        back = sum(1 for i, f in enumerate(collapsed) if f in collapsed[:i])
        order = list(dict.fromkeys(files))
        unit = "packages" if name == "by package" else "files"
        print(f"{name}: {len(order)} {unit}, {len(moves)} moves, {back} back into one "
              "already visited")
        print("  " + " -> ".join(order))


if __name__ == "__main__":
    main()
