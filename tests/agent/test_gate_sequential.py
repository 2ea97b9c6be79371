"""The sequential gate (`--confirm K`, issue 23 point 6): one pair of seeds at a time, a
decision as soon as the pairs settle it, at the latest at K seeds.

Simulated values: the incumbent at 3.0, a candidate better by `effect`, both with seeded
noise of 0.02 per run (the cpu preset's seed spread); the candidate is the first trial that
beats the incumbent at the session's seed, as in a session. Then the same gate through a real
session: a run folder whose confirmation runs were queued all at once (before this gate)
resumes without running any of them again."""

from __future__ import annotations

import copy
import random
import statistics

import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.edit.actions import Confirm, EditHyperparameters, action_to_dict
from agent.loop.gate import ALPHA, Gate
from agent.record.note import TrialNote
from agent.testing.synthetic import ScriptedOptimizer
from tests.agent.test_gate import GOOD, SEED, WORSE, git, notes, start

K = 5
NOISE = 0.02
runner = CliRunner()


def note(trial: int, val: float | None, seed: int = SEED, of: int | None = None,
         status: str = "ok") -> TrialNote:
    if of is None:
        action, method = {"kind": "edit_hyperparameters", "values": {}}, (
            "baseline" if trial == 0 else "tpe")
    else:
        action, method = action_to_dict(Confirm(of, seed)), "confirm"
    return TrialNote(trial=trial, commit=f"{trial:040x}", method=method, seed=seed,
                     action=action, status=status, val_bpb=val if status == "ok" else None)


class Simulated:
    """A session of one worker around a gate: a due confirmation run comes first, else the
    optimizer's next trial (better than the baseline by `effects[i]` for the i-th, the last
    one repeating). Keeps every note and a copy of the gate after each step."""

    def __init__(self, effects: list[float], rep: int, k: int = K,
                 fails: set[tuple[int, int]] = frozenset()):
        self.effects, self.rep, self.fails = effects, rep, fails
        self.gate, self.truth, self.notes = Gate(k, SEED), {0: 3.0}, []
        self.snapshots: list[tuple[int, dict[int, dict], Gate]] = []  # told, inflight, gate
        self.tell(note(0, self.value(0, SEED)))

    def value(self, trial: int, seed: int) -> float:
        noise = random.Random(f"{self.rep} {trial} {seed}").gauss(0, 1)
        return self.truth[trial] + NOISE * noise

    def tell(self, n: TrialNote):
        self.notes.append(n)
        decision = self.gate.observe(n)
        self.snapshots.append((len(self.notes), {}, copy.deepcopy(self.gate)))
        return decision

    def step(self):
        n = len(self.notes)
        run = self.gate.next()
        if run is None:
            trials = sum(1 for x in self.notes if x.method == "tpe")
            self.truth[n] = 3.0 - self.effects[min(trials, len(self.effects) - 1)]
            return self.tell(note(n, self.value(n, SEED)))
        self.snapshots.append((n, {n: action_to_dict(run)}, copy.deepcopy(self.gate)))
        status = "failed" if (run.of, run.seed) in self.fails else "ok"
        return self.tell(note(n, self.value(run.of, run.seed), run.seed, run.of, status))

    def first_decision(self):
        while True:
            decision = self.step()
            if decision is not None:
                return decision


def repeated(effect: float, reps: int = 20):
    return [Simulated([effect], rep).first_decision() for rep in range(reps)]


def test_a_clear_improvement_is_promoted_on_fewer_seeds_than_k():
    decisions = repeated(0.19)
    assert all(d.promoted for d in decisions)
    used = statistics.fmean(d.used for d in decisions)
    assert used < K
    assert used == pytest.approx(3.75)  # measured: the pairs at seeds 3 or 4 settle it
    assert all(d.k == K and len(d.diffs) == d.used for d in decisions)
    assert f"over {decisions[0].used} of {K} seeds" in decisions[0].line()


def test_a_noise_sized_improvement_is_refused_on_fewer_seeds_than_k():
    decisions = repeated(0.0002)
    assert not any(d.promoted for d in decisions)
    used = statistics.fmean(d.used for d in decisions)
    assert used < K
    assert used == pytest.approx(2.9)  # measured: most lose on their first new seed
    assert all(d.mean is not None for d in decisions)


def test_the_stated_error_rate_holds():
    """The module docstring: a candidate exactly as good as the incumbent is promoted with
    probability at most 2 * ALPHA, given that it beat the incumbent at the session's seed."""
    decisions = repeated(0.0, reps=2000)
    promoted = sum(d.promoted for d in decisions) / len(decisions)
    assert promoted <= 2 * ALPHA


def test_a_failed_confirmation_run_refuses():
    sim = Simulated([0.19], rep=0, fails={(1, SEED + 1)})  # the candidate's first extra seed
    decision = sim.first_decision()
    assert not decision.promoted and decision.mean is None
    assert decision.used == 2 and decision.diffs[1] is None
    assert "a confirmation run failed over 2 of 5 seeds" in decision.line()
    assert sim.gate.incumbent == 0 and sim.gate.queue == []  # its partner is not run now


def test_the_incumbents_runs_are_kept_for_the_next_candidate():
    sim = Simulated([0.19, 0.38], rep=3)
    first = sim.first_decision()
    assert first.promoted and first.candidate == 1
    second = sim.first_decision()
    assert second.promoted and second.incumbent == 1
    runs = [(n.action["of"], n.seed) for n in sim.notes if n.method == "confirm"]
    assert len(runs) == len(set(runs))  # no run twice
    # the second candidate's pairs reuse trial 1's runs at the seeds the first decision used
    assert sum(1 for of, _ in runs if of == 1) == max(first.used, second.used) - 1


@pytest.mark.parametrize("effects,rep,fails", [
    ([0.19], 0, set()), ([0.0002], 2, set()), ([0.0002, 0.0002, 0.19, 0.05], 5, set()),
    ([0.19, 0.3], 1, {(0, SEED + 2)}),
])
def test_a_resumed_gate_equals_an_uninterrupted_one(effects, rep, fails):
    """Gate.replay from the notes recorded at any point (and the run in flight there) is the
    gate the uninterrupted session had at that point, and goes on to decide the same."""
    sim = Simulated(effects, rep, fails=fails)
    for _ in range(40):
        sim.step()
    assert sim.gate.decisions
    for told, inflight, expected in sim.snapshots:
        recorded = {n.trial: n for n in sim.notes[:told]}
        assert Gate.replay(K, SEED, recorded, told, inflight) == expected
    everything = {n.trial: n for n in sim.notes}
    assert Gate.replay(K, SEED, everything, len(sim.notes), {}) == sim.gate


def test_runs_queued_all_at_once_by_an_older_gate_are_used_not_repeated():
    """An older run folder: the candidate's 4 extra seeds ran first, then the incumbent's
    (the all-at-once order), killed with two of them in flight. The rebuilt gate queues none
    of the numbered runs, decides from the pairs in seed order, and keeps the values it did
    not need."""
    sim = Simulated([0.19], rep=0)
    sim.step()  # trial 1, the candidate
    assert sim.gate.waiting == [1]
    value = sim.value
    old = [(1, SEED + i) for i in range(1, K)] + [(0, SEED + i) for i in range(1, K)]
    recorded = {n.trial: n for n in sim.notes}
    for i, (of, seed) in enumerate(old[:6]):
        recorded[2 + i] = note(2 + i, value(of, seed), seed, of)
    inflight = {8: action_to_dict(Confirm(*old[6])), 9: action_to_dict(Confirm(*old[7]))}
    gate = Gate.replay(K, SEED, recorded, 8, inflight)
    assert gate.queue == [] and gate.next() is None  # every run it needs has a number
    decided = gate.decisions[0] if gate.decisions else None
    # the pairs complete in the old order at trials 6 and 7 (seeds 8 and 9): the rule looks
    # at 3 seeds there; either way every value stays
    assert all(r in gate.values for r in old[:6])
    for n in (8, 9):
        of, seed = inflight[n]["of"], inflight[n]["seed"]
        recorded[n] = note(n, value(of, seed), seed, of)
        got = gate.observe(recorded[n])
        decided = decided or got
    assert decided is not None and decided.promoted
    assert Gate.replay(K, SEED, recorded, 10, {}) == gate


@pytest.mark.parametrize("how", ["stopped", "pickle lost", "killed mid-run"])
def test_a_run_folder_of_the_all_at_once_gate_resumes(tmp_path, monkeypatch, how):
    """The same through a session: started with the older gate (its queue: every seed of the
    candidate, then of the incumbent), stopped after two of them, resumed with this one."""

    def all_at_once(self, candidate, s):
        for trial in (candidate, self.incumbent):
            for seed in self.seeds[1:]:
                if (trial, seed) in self.values or (trial, seed) in self.taken or any(
                        (q.of, q.seed) == (trial, seed) for q in self.queue):
                    continue
                self.queue.append(Confirm(trial, seed, "all at once"))

    actions = [EditHyperparameters(GOOD, "good")] + [EditHyperparameters(WORSE, "worse")] * 3
    with monkeypatch.context() as m:
        m.setattr(Gate, "_ask", all_at_once)
        run_dir, _ = start(tmp_path, monkeypatch, actions, noise=0.002, trials=3)
    rs = notes(run_dir)
    assert [(r["method"], r["action"].get("of"), r["seed"]) for r in rs[2:]] == [
        ("confirm", 1, SEED + 1), ("confirm", 1, SEED + 2)]  # the older order
    if how == "killed mid-run":  # trial 3 committed, never recorded
        git(run_dir / "repo", "notes", "--ref=refs/notes/results", "remove", rs[3]["commit"])
    if how != "stopped":
        (run_dir / "optimizer" / "state.pkl").unlink()
    toml = run_dir / "session.toml"
    toml.write_text(toml.read_text().replace("trials = 3", "trials = 6"))
    monkeypatch.setattr("agent.loop.session.make_optimizer",
                        lambda *a, **k: ScriptedOptimizer(actions if how != "stopped" else
                                                          actions[1:]))
    result = runner.invoke(app, ["resume", str(run_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    rs = notes(run_dir)
    runs = [(r["method"], r["action"].get("of"), r["seed"]) for r in rs]
    # the incumbent's seeds 8 and 9 complete the pairs; trial 1's are not run again
    assert runs == [("baseline", None, SEED), ("tpe", None, SEED), ("confirm", 1, SEED + 1),
                    ("confirm", 1, SEED + 2), ("confirm", 0, SEED + 1),
                    ("confirm", 0, SEED + 2), ("tpe", None, SEED)]
    assert git(run_dir / "repo", "rev-parse", "refs/heads/best") == rs[1]["commit"]
    assert rs[6]["parent"] == rs[1]["commit"]
    gate = Gate.replay(3, SEED, {r["trial"]: TrialNote.from_dict(r) for r in rs}, 7, {})
    assert [(d.candidate, d.promoted, d.used) for d in gate.decisions] == [(1, True, 3)]
