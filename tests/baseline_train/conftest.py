"""The baseline run the train.py tests compare against."""

from __future__ import annotations

import pytest

from tests.baseline_train.helpers import make_tree, run_train, summary


@pytest.fixture(scope="session")
def baseline_run(prepared_data, tmp_path_factory):
    """The packaged train.py, seed 42, four steps: the reference the other tests vary."""
    tree = make_tree(tmp_path_factory.mktemp("baseline") / "tree")
    return summary(run_train(tree, prepared_data, AR_SEED="42"))
