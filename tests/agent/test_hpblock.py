import pytest

from agent.edit.block import (
    SpaceError,
    apply_preset,
    format_value,
    read_block,
    render_block,
    values,
)
from agent.edit.space import Param, load_space
from agent.paths import baseline_dir

SPACE = baseline_dir() / "search_space.toml"
PAPER_NAMES = {
    "DEPTH", "ASPECT_RATIO", "HEAD_DIM", "DEVICE_BATCH_SIZE", "TOTAL_BATCH_SIZE", "EMBEDDING_LR",
    "UNEMBEDDING_LR", "MATRIX_LR", "SCALAR_LR", "WEIGHT_DECAY", "WARMUP_RATIO",
    "WARMDOWN_RATIO", "FINAL_LR_FRAC", "WINDOW_PATTERN",
}

# A file written in the style of karpathy/autoresearch's train.py (not a copy): aligned
# comments, `2**19` constants, other module-level code around the block.
KARPATHY_STYLE = '''\
import os
import torch

# Model architecture
ASPECT_RATIO = 64       # model_dim = depth * ASPECT_RATIO
HEAD_DIM = 128          # target head dimension for attention
WINDOW_PATTERN = "SSSL" # sliding window pattern: L=full, S=half context

# Optimization
TOTAL_BATCH_SIZE = 2**19 # ~524K tokens per optimizer step
EMBEDDING_LR = 0.6      # learning rate for token embeddings (Adam)
UNEMBEDDING_LR = 0.004  # learning rate for lm_head (Adam)
MATRIX_LR = 0.04        # learning rate for matrix parameters (Muon)
SCALAR_LR = 0.5         # learning rate for per-layer scalars (Adam)
WEIGHT_DECAY = 0.2      # cautious weight decay for Muon
ADAM_BETAS = (0.8, 0.95) # Adam beta1, beta2
WARMUP_RATIO = 0.0      # fraction of time budget for LR warmup
WARMDOWN_RATIO = 0.5    # fraction of time budget for LR warmdown
FINAL_LR_FRAC = 0.0     # final LR as fraction of initial

# Model size
DEPTH = 8               # number of transformer layers
DEVICE_BATCH_SIZE = 128  # per-device batch size (reduce if OOM)

def helper():
    DEPTH = 3  # a local, not the constant
    return DEPTH
'''


def test_space_has_the_papers_fourteen_parameters_at_gpu_scale():
    space = load_space(SPACE, "gpu")
    assert set(space.names) == PAPER_NAMES
    p = space.params
    assert (p["DEPTH"].low, p["DEPTH"].high, p["DEPTH"].default) == (4, 24, 8)
    assert p["TOTAL_BATCH_SIZE"].power_of_two and p["TOTAL_BATCH_SIZE"].log
    assert (p["TOTAL_BATCH_SIZE"].low, p["TOTAL_BATCH_SIZE"].high) == (65536, 2097152)
    assert p["WINDOW_PATTERN"].choices == ("SSSL", "SSLL", "SLSL", "LLLL", "SSSS", "LSSL")
    assert space.fixed == {"SEQ_LEN": 2048} and space.time_budget == 300
    assert space.errors(space.defaults()) == []


def test_cpu_preset_is_the_default_and_scales_sizes_down():
    cpu = load_space(SPACE)
    assert cpu.preset == "cpu" and cpu.fixed == {"SEQ_LEN": 256} and cpu.time_budget == 60
    assert cpu.params["DEPTH"].high < load_space(SPACE, "gpu").params["DEPTH"].high
    assert cpu.errors(cpu.defaults()) == []


def test_out_of_range_values_name_the_bound():
    space = load_space(SPACE, "gpu")
    errors = space.errors({"DEPTH": 30, "MATRIX_LR": 0.001, "HEAD_DIM": 96, "WINDOW_PATTERN": "X"})
    assert "DEPTH = 30 is above the upper bound 24 of the gpu preset" in errors
    assert "MATRIX_LR = 0.001 is below the lower bound 0.005 of the gpu preset" in errors
    assert "HEAD_DIM = 96 is not a power of two" in errors
    assert any(e.startswith("WINDOW_PATTERN = 'X' is not one of") for e in errors)
    with pytest.raises(SpaceError, match="upper bound 24"):
        space.validate({"DEPTH": 30})


def test_declared_constraint_rejects_a_batch_smaller_than_one_micro_batch():
    space = load_space(SPACE, "cpu")  # SEQ_LEN = 256
    config = {**space.defaults(), "DEVICE_BATCH_SIZE": 64, "TOTAL_BATCH_SIZE": 8192}
    (error,) = space.errors(config)
    assert "at least DEVICE_BATCH_SIZE * SEQ_LEN" in error and "SEQ_LEN=256" in error
    assert space.errors({**config, "TOTAL_BATCH_SIZE": 16384}) == []


def test_constraints_come_from_the_file_not_python(tmp_path):
    text = SPACE.read_text().replace("TOTAL_BATCH_SIZE >= DEVICE_BATCH_SIZE * SEQ_LEN",
                                     "DEPTH <= 6")
    path = tmp_path / "space.toml"
    path.write_text(text)
    space = load_space(path, "cpu")
    assert space.errors({**space.defaults(), "DEPTH": 7})
    assert space.errors({**space.defaults(), "DEPTH": 6}) == []


def test_bad_space_files_give_one_line_errors(tmp_path):
    with pytest.raises(SpaceError, match="no search space at"):
        load_space(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text(SPACE.read_text() + '\n[[constraints]]\nexpr = "__import__(1)"\n')
    with pytest.raises(SpaceError, match="unsupported expression"):
        load_space(bad)
    with pytest.raises(SpaceError, match="unknown preset 'tpu'"):
        load_space(SPACE, "tpu")


def test_nearest_rounds_onto_the_grid():
    p = load_space(SPACE, "gpu").params
    assert p["HEAD_DIM"].nearest(100.0) == [128] and p["HEAD_DIM"].nearest(80) == [64]
    assert p["DEPTH"].nearest(7.6) == [8]
    assert p["MATRIX_LR"].nearest(0.0412345678) == [0.0412346]
    assert p["DEPTH"].nearest(99) == [24]


def test_a_parameter_lists_its_grid():
    p = load_space(SPACE, "gpu").params
    assert p["HEAD_DIM"].grid() == [64, 128, 256]
    assert list(p["DEPTH"].grid()) == list(range(4, 25))
    assert p["WINDOW_PATTERN"].grid() == p["WINDOW_PATTERN"].choices
    assert p["MATRIX_LR"].grid() is None
    odd = Param("X", "int", 40, 33, 100, power_of_two=True)
    assert odd.grid() == [64]


def test_nearest_values_lie_in_the_space_nearest_first():
    p = load_space(SPACE, "gpu").params
    head, depth, lr = p["HEAD_DIM"], p["DEPTH"], p["MATRIX_LR"]
    assert head.nearest(1000, 2) == [256, 128] and head.nearest(-5, 2) == [64, 128]
    assert head.nearest(90.50966799187809, 3) == [128, 64, 256]  # 2**6.5: a tie goes up
    assert depth.nearest(6.5, 2) == [7, 6]
    assert depth.nearest(99, 3) == [24, 23, 22] and depth.nearest(float("-inf")) == [4]
    assert depth.nearest(10, 100) == sorted(depth.grid(), key=lambda g: (abs(g - 10), -g))
    assert lr.nearest(0.0412345678, 3) == [0.0412346]
    assert lr.nearest(5.0) == [0.2] and lr.nearest(0.0) == [0.005]
    window = p["WINDOW_PATTERN"]
    assert window.nearest("LLLL", 2) == ["LLLL", "SSSL"] and window.nearest("X") == ["SSSL"]
    for param in (head, depth, lr):
        for v in (3, 70.2, 1e9, 0.07):
            assert all(param.check(g) is None for g in param.nearest(v, 3))


def test_values_are_the_named_constants_in_file_order():
    got = values(KARPATHY_STYLE, ["DEPTH", "TOTAL_BATCH_SIZE", "WINDOW_PATTERN"])
    assert got == {"WINDOW_PATTERN": "SSSL", "TOTAL_BATCH_SIZE": 524288, "DEPTH": 8}
    assert list(got) == ["WINDOW_PATTERN", "TOTAL_BATCH_SIZE", "DEPTH"]
    with pytest.raises(SpaceError, match="no module-level constant for MATRIX_LR"):
        values("DEPTH = 8\n", ["DEPTH", "MATRIX_LR"])


def test_check_source_is_the_one_answer_to_is_this_a_valid_trial():
    space = load_space(SPACE, "cpu")
    source = apply_preset((baseline_dir() / "train.py").read_text(), space)
    space.check_source(source)
    depth = f"DEPTH = {space.defaults()['DEPTH']}"
    assert depth in source
    space.check_source(source.replace(depth, "LAYERS = 4"))  # a code agent may drop one
    with pytest.raises(SpaceError, match="must stay literal values in the block: line .*DEPTH"):
        space.check_source(source.replace(depth, "DEPTH = int(4)"))
    with pytest.raises(SpaceError, match="literal values in the block: .*DEPTH"):
        space.check_source(source + "DEPTH *= 2\n")
    with pytest.raises(SpaceError, match="DEPTH = 99 is above the upper bound 8"):
        space.check_source(source.replace(depth, "DEPTH = 99"))
    with pytest.raises(SpaceError, match="must be at least DEVICE_BATCH_SIZE"):
        space.check_source(source.replace("TOTAL_BATCH_SIZE = 4096", "TOTAL_BATCH_SIZE = 2048"))
    with pytest.raises(SpaceError, match="does not parse"):
        space.check_source(source + "def (\n")


def test_reads_and_rewrites_a_karpathy_style_block():
    block = read_block(KARPATHY_STYLE, sorted(PAPER_NAMES - {"DEVICE_BATCH_SIZE"}) + [
        "DEVICE_BATCH_SIZE"])
    assert block["TOTAL_BATCH_SIZE"].value == 524288
    assert block["WINDOW_PATTERN"].value == "SSSL"
    assert block["DEPTH"].value == 8 and block["DEPTH"].line == 22  # module level, not helper
    new = render_block(KARPATHY_STYLE, {"TOTAL_BATCH_SIZE": 2**20, "DEPTH": 12,
                                        "MATRIX_LR": 0.0123, "WINDOW_PATTERN": "LLLL"})
    lines = new.splitlines()
    assert lines[9] == "TOTAL_BATCH_SIZE = 2**20 # ~524K tokens per optimizer step"
    assert lines[21] == "DEPTH = 12              # number of transformer layers"
    assert lines[12] == "MATRIX_LR = 0.0123      # learning rate for matrix parameters (Muon)"
    assert lines[6] == 'WINDOW_PATTERN = "LLLL" # sliding window pattern: L=full, S=half context'
    changed = [i for i, (a, b) in enumerate(zip(KARPATHY_STYLE.splitlines(), lines, strict=True))
               if a != b]
    assert changed == [6, 9, 12, 21]  # nothing else moved
    assert read_block(new, ["DEPTH"])["DEPTH"].value == 12


def test_a_longer_value_pushes_the_comment_right_but_keeps_it():
    src = "DEPTH = 8  # layers\n"
    assert render_block(src, {"DEPTH": 123456}) == "DEPTH = 123456  # layers\n"


def test_missing_constant_is_named():
    with pytest.raises(SpaceError, match="no module-level constant for MATRIX_LR"):
        read_block("DEPTH = 8\n", ["DEPTH", "MATRIX_LR"])
    with pytest.raises(SpaceError, match="does not parse"):
        read_block("DEPTH = = 8\n")


def test_format_value_keeps_literals_python():
    assert format_value(1e-05) == "1e-05"
    assert format_value("S'L", "'x'") == "'S\\'L'"
    assert format_value(3, "2**19") == "3"
    with pytest.raises(SpaceError):
        format_value(True)


def test_packaged_train_py_block_holds_the_cpu_preset():
    cpu = load_space(SPACE, "cpu")
    source = (baseline_dir() / "train.py").read_text()
    block = read_block(source, cpu.names + list(cpu.fixed))
    assert {n: a.value for n, a in block.items()} == {**cpu.defaults(), **cpu.fixed}


def test_gpu_preset_rewrites_the_packaged_block():
    gpu = load_space(SPACE, "gpu")
    source = (baseline_dir() / "train.py").read_text()
    new = apply_preset(source, gpu)
    block = read_block(new, gpu.names + ["SEQ_LEN"])
    assert {n: a.value for n, a in block.items()} == {**gpu.defaults(), "SEQ_LEN": 2048}
    changed = sum(a != b for a, b in zip(source.splitlines(), new.splitlines(), strict=True))
    assert 0 < changed <= 15
