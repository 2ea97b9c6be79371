"""Fixtures of the agent tests: the synthetic training folder (agent/testing/synthetic.py)."""

from __future__ import annotations

import pytest

from agent.testing.synthetic import make_train_dir

__all__ = ["make_train_dir"]


@pytest.fixture
def train_dir(tmp_path):
    return make_train_dir(tmp_path)
