"""The optimizer's pickle (optimizer/state.pkl): every method's state survives it, a pickle
written before the layout of issue 22 still loads, and one that names anything but an
optimizer's parts is refused before it runs (a run folder may come from someone else)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from agent.edit.block import values
from agent.edit.space import load_space
from agent.loop.restore import _load
from agent.loop.standing import Progress
from agent.optimizers import LLM_METHODS, METHODS, make_optimizer
from agent.paths import baseline_dir
from agent.protocols import TrialContext

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "state_pkl_5d86e61"


@pytest.fixture(scope="module")
def space():
    return load_space(baseline_dir() / "search_space.toml", "cpu")


def context(space) -> TrialContext:
    source = (baseline_dir() / "train.py").read_text()
    return TrialContext(trial=1, incumbent_source=source,
                        incumbent_config=values(source, space.names), device="cpu, 2 cores",
                        memory="8g", budget="60 s of training", preset="cpu")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_survives_its_pickle(tmp_path, space, method):
    baseline = values((baseline_dir() / "train.py").read_text(), space.names)
    options = {"llm": None} if method in LLM_METHODS else {}
    optimizer = make_optimizer(method, space, 3, baseline, **options)
    Progress(optimizer, asked=2, told=1, inflight={1: {"kind": "none"}}).save(
        tmp_path / "state.pkl")
    loaded = Progress.load(tmp_path / "state.pkl")
    assert type(loaded.optimizer) is type(optimizer)
    assert (loaded.asked, loaded.told, loaded.inflight) == (2, 1, {1: {"kind": "none"}})
    if method not in LLM_METHODS:  # the same next proposal: the pickle is the whole state
        ctx = context(space)
        assert loaded.optimizer.ask([], [], ctx) == optimizer.ask([], [], ctx)


@pytest.mark.parametrize("name", ["random", "tpe", "cmaes"])
def test_a_pickle_from_before_the_layout_loads_and_proposes(space, name):
    loaded = Progress.load(FIXTURES / f"{name}.pkl")  # names agent.hpblock, now edit/space
    assert (loaded.asked, loaded.told) == (4, 4)
    action = loaded.optimizer.ask([], [], context(space))
    space.validate(action.values)


def test_a_pickle_that_runs_a_program_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    class Constructs:  # an allowed module's function, reached by a dotted name
        def __reduce__(self):
            from agent.config import data
            return data.prepare_default_data, (tmp_path,)

    notes = []
    for payload in (Evil(), Constructs()):
        path = tmp_path / "state.pkl"
        path.write_bytes(pickle.dumps({"v": 2, "optimizer": payload}))
        with pytest.raises(pickle.UnpicklingError, match="may not name"):
            Progress.load(path)
        assert _load(path, notes.append) is None  # restore rebuilds from the notes instead
    assert not marker.exists()
    assert len(notes) == 2 and "unreadable (UnpicklingError)" in notes[0]


def test_a_confirmation_trailer_that_is_not_a_number_is_one_line(tmp_path):
    """A run folder may be someone else's: a commit's `Confirms:` trailer is read as data."""
    from agent.loop.restore import _confirm_of
    from agent.record.newrun import SessionError

    class Repo:
        path = tmp_path

        def trial_commit(self, n):
            return "0" * 40

        def trailers(self, sha):
            return {"Method": "confirm", "Confirms": "3; rm -rf ~", "Seed": "1"}

    with pytest.raises(SessionError, match="not numbers: the repository was changed by hand"):
        _confirm_of({}, Repo(), 4)
