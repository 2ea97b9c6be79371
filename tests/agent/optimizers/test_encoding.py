import math

import numpy as np
import pytest

from agent.edit.block import SpaceError
from agent.edit.space import load_space
from agent.optimizers.encoding import Encoding
from agent.paths import baseline_dir

SPACE_FILE = baseline_dir() / "search_space.toml"


@pytest.fixture(params=("cpu", "gpu"))
def space(request):
    return load_space(SPACE_FILE, request.param)


def test_defaults_round_trip(space):
    enc = Encoding(space)
    x = enc.encode(space.defaults())
    assert x.shape == (14,) and np.all((x >= 0) & (x <= 1))
    assert enc.decode(x) == space.defaults()


def test_random_configs_round_trip_and_every_decoded_value_checks(space):
    enc = Encoding(space)
    rng = np.random.default_rng(0)
    points = np.vstack([rng.random((300, enc.dim)), np.zeros(enc.dim), np.ones(enc.dim),
                        rng.uniform(-1, 2, (20, enc.dim))])
    for x in points:
        config = enc.decode(x)
        assert [n for n, v in config.items() if space.params[n].check(v)] == []
        assert all(space.params[n].nearest(v) == [v] for n, v in config.items())
        assert enc.decode(enc.encode(config)) == config


def test_log_floats_are_encoded_in_log_space(space):
    enc = Encoding(space)
    i = enc.names.index("EMBEDDING_LR")
    middle = {**space.defaults(), "EMBEDDING_LR": math.sqrt(0.01 * 2.0)}
    assert enc.encode(middle)[i] == pytest.approx(0.5)


def test_powers_of_two_and_ints_get_equal_bins():
    space = load_space(SPACE_FILE, "cpu")  # HEAD_DIM 16..64, DEPTH 2..8
    enc = Encoding(space)
    h, d = enc.names.index("HEAD_DIM"), enc.names.index("DEPTH")
    for k, value in enumerate((16, 32, 64)):
        assert enc.encode({**space.defaults(), "HEAD_DIM": value})[h] == pytest.approx((k + .5) / 3)
    x = np.full(enc.dim, 0.5)
    for k, depth in enumerate(range(2, 9)):
        for u in (k / 7 + 1e-9, (k + 1) / 7 - 1e-9):
            x[d] = u
            assert enc.decode(x)["DEPTH"] == depth


def test_the_categorical_is_one_coordinate_of_equal_ordered_bins(space):
    enc = Encoding(space)
    i = enc.names.index("WINDOW_PATTERN")
    choices = space.params["WINDOW_PATTERN"].choices
    x = np.full(enc.dim, 0.5)
    for k, choice in enumerate(choices):
        x[i] = (k + 0.5) / len(choices)
        assert enc.decode(x)["WINDOW_PATTERN"] == choice
        assert enc.encode(enc.decode(x))[i] == pytest.approx(x[i])
    x[i] = 1.0
    assert enc.decode(x)["WINDOW_PATTERN"] == choices[-1]


def test_out_of_bounds_numbers_are_clipped_unknown_choices_refused(space):
    enc = Encoding(space)
    wild = {**space.defaults(), "DEPTH": 1000, "MATRIX_LR": 1e-9}
    at_bounds = {**space.defaults(), "DEPTH": space.params["DEPTH"].high,
                 "MATRIX_LR": space.params["MATRIX_LR"].low}
    np.testing.assert_array_equal(enc.encode(wild), enc.encode(at_bounds))
    assert enc.encode(wild)[enc.names.index("MATRIX_LR")] == 0.0
    assert enc.project(wild)["DEPTH"] == space.params["DEPTH"].high
    with pytest.raises(SpaceError, match="WINDOW_PATTERN"):
        enc.encode({**space.defaults(), "WINDOW_PATTERN": "XXXX"})
    assert enc.project({**space.defaults(), "WINDOW_PATTERN": "XXXX"}) is None
    with pytest.raises(SpaceError, match="lacks DEPTH"):
        enc.encode({n: v for n, v in space.defaults().items() if n != "DEPTH"})


def test_decode_refuses_a_malformed_point(space):
    enc = Encoding(space)
    with pytest.raises(ValueError):
        enc.decode(np.zeros(3))
    with pytest.raises(ValueError):
        enc.decode(np.full(enc.dim, np.nan))


def test_legend_says_what_each_coordinate_means(space):
    legend = Encoding(space).legend()
    assert len(legend) == 14
    assert legend[0].startswith("DEPTH: linear")
    assert any(line.startswith("HEAD_DIM: log2 scale") for line in legend)
    assert any("SSSL, SSLL" in line for line in legend)
