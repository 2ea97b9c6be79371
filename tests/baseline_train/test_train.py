"""baseline_train: train.py as a trial runs it (a subprocess on a copy), and prepare.py.

Training runs use a token budget (AR_TOKEN_BUDGET), so results do not depend on the speed of
the machine, and a small AR_EVAL_TOKENS; the data is the session's prepared corpus.
"""

from __future__ import annotations

import ast
import json
import math
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from tests.baseline_train.helpers import (
    BASELINE,
    BUDGET,
    PROGRESS,
    STEP_TOKENS,
    load_prepare,
    make_tree,
    progress,
    run_train,
    set_param,
    summary,
)

# ---------------------------------------------------------------------------
# train.py
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_summary_block_parses(baseline_run):
    for key in ("val_bpb", "training_seconds", "total_seconds", "peak_memory_mb", "num_steps",
                "num_params_M", "total_tokens_M", "tokens_per_second", "mfu_percent", "depth"):
        assert key in baseline_run, key
    assert math.isfinite(baseline_run["val_bpb"]) and 0 < baseline_run["val_bpb"] < 8.0
    assert baseline_run["num_params_M"] > 0 and baseline_run["peak_memory_mb"] > 0
    assert baseline_run["num_steps"] == BUDGET // STEP_TOKENS
    assert baseline_run["total_tokens_M"] == pytest.approx(BUDGET / 1e6, abs=1e-3)


@pytest.mark.slow
def test_same_seed_same_val_bpb_and_another_seed_differs(baseline_run, prepared_data, tmp_path):
    tree = make_tree(tmp_path / "tree")
    again = summary(run_train(tree, prepared_data, AR_SEED="42"))
    other = summary(run_train(tree, prepared_data, AR_SEED="43"))
    assert abs(again["val_bpb"] - baseline_run["val_bpb"]) <= 1e-4
    assert abs(other["val_bpb"] - baseline_run["val_bpb"]) > 1e-4


@pytest.mark.slow
def test_matrix_lr_changes_val_bpb(baseline_run, prepared_data, tmp_path):
    tree = make_tree(tmp_path / "tree")
    set_param(tree, "MATRIX_LR", 0.4)
    changed = summary(run_train(tree, prepared_data, AR_SEED="42"))
    assert abs(changed["val_bpb"] - baseline_run["val_bpb"]) > 1e-3


@pytest.mark.slow
def test_depth_changes_num_params(baseline_run, prepared_data, tmp_path):
    tree = make_tree(tmp_path / "tree")
    set_param(tree, "DEPTH", 2)
    changed = summary(run_train(tree, prepared_data, AR_TOKEN_BUDGET=str(STEP_TOKENS)))
    assert changed["depth"] == 2
    assert 0 < changed["num_params_M"] < baseline_run["num_params_M"]


@pytest.mark.slow
def test_overlapping_warmup_and_warmdown_train(prepared_data, tmp_path):
    """The space allows WARMUP_RATIO 0.3 with WARMDOWN_RATIO 0.8: a valid trial, not an error."""
    tree = make_tree(tmp_path / "tree")
    set_param(tree, "WARMUP_RATIO", 0.3)
    set_param(tree, "WARMDOWN_RATIO", 0.8)
    run = summary(run_train(tree, prepared_data, AR_TOKEN_BUDGET=str(2 * STEP_TOKENS)))
    assert math.isfinite(run["val_bpb"])


@pytest.mark.slow
@pytest.mark.parametrize(("name", "value", "named"), [
    ("TOTAL_BATCH_SIZE", 2048, ("TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE", "SEQ_LEN")),
    ("TOTAL_BATCH_SIZE", 6144, ("TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE", "SEQ_LEN")),
    ("WINDOW_PATTERN", "SXL", ("WINDOW_PATTERN",)),
    ("WINDOW_PATTERN", "", ("WINDOW_PATTERN",)),
])
def test_invalid_config_exits_2_with_one_line(prepared_data, tmp_path, name, value, named):
    tree = make_tree(tmp_path / "tree")
    set_param(tree, name, value)
    proc = run_train(tree, prepared_data)
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if line.startswith("config error:")]
    assert proc.returncode == 2, output[-3000:]
    assert len(errors) == 1 and "Traceback" not in output, output[-3000:]
    for param in named:
        assert param in errors[0]


@pytest.mark.slow
def test_bad_environment_is_a_config_error(prepared_data, tmp_path):
    tree = make_tree(tmp_path / "tree")
    proc = run_train(tree, prepared_data, AR_TOKEN_BUDGET="lots")
    assert proc.returncode == 2 and "config error: AR_TOKEN_BUDGET" in proc.stderr
    proc = run_train(tree, prepared_data, AR_ATTENTION="fast")
    assert proc.returncode == 2 and "AR_ATTENTION='fast' must be sdpa or flex" in proc.stderr
    proc = run_train(tree, prepared_data, AR_ATTENTION="flex")  # FlexAttention trains on CUDA
    assert proc.returncode == 2 and "AR_ATTENTION=flex needs a CUDA device" in proc.stderr


@pytest.mark.slow
def test_a_probe_fits_its_batch_under_the_mark_from_the_smallest_micro_batches(
        prepared_data, tmp_path):
    """AR_PREFLIGHT_FIT_MB: the ramp measures micro-batches 1, 2, ... (the first two always:
    they are the smallest there are); where DEVICE_BATCH_SIZE would peak above the mark the
    probe runs the largest power of two predicted to fit; well under it, its own batch."""
    tree = make_tree(tmp_path / "tree")
    set_param(tree, "DEVICE_BATCH_SIZE", 8)
    tight = run_train(tree, prepared_data, AR_PREFLIGHT_STEPS="1", AR_PREFLIGHT_FIT_MB="1")
    assert "preflight: peak MB by micro-batch 1: " in tight.stdout, tight.stdout[-2000:]
    result = summary(tight)
    assert result["preflight"] == "ok" and result["preflight_batch"] == 1
    assert result["predicted_peak_mb"] > 1
    roomy = summary(run_train(tree, prepared_data, AR_PREFLIGHT_STEPS="1",
                              AR_PREFLIGHT_FIT_MB="1000000"))
    assert roomy["preflight_batch"] == 8 and roomy["predicted_peak_mb"] < 1000000


@pytest.mark.slow
def test_one_step_is_profiled_into_the_named_file(prepared_data, tmp_path):
    tree = make_tree(tmp_path / "tree")
    out = tmp_path / "profile.txt"
    result = summary(run_train(tree, prepared_data, AR_PROFILE_OUT=str(out)))
    assert result["num_steps"] == 4  # the profiled step is one of the budget's, untimed
    text = out.read_text()
    assert text.startswith("step 1: 1 x 16 x 256 tokens") and "Self CPU" in text
    assert "aten::mm" in text  # the matmuls of that step, by name


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_attention_computes_what_the_sdpa_mask_does():
    """AR_ATTENTION=flex (CUDA only: FlexAttention has no CPU backward) must be the same
    function: the model code of train.py, its forward on a CPU in both ways."""
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    source = (BASELINE / "train.py").read_text()
    start = source.index("VE_GATE_CHANNELS = ")
    code = source[start:source.index("# Optimizers:", start)]
    namespace = {"torch": torch, "nn": torch.nn, "F": torch.nn.functional, "math": math,
                 "prepare": load_prepare()}
    exec(compile(code, "train.py", "exec"), namespace)  # noqa: S102 - our own file
    torch.manual_seed(0)
    # 512 positions: 4 x 4 blocks of 128, so blocks are skipped, full and partial
    model = namespace["GPT"](2, 64, 16, 512, "SL")
    model.init_weights()
    for block in model.blocks:  # non-zero outputs, so attention shows in the logits
        torch.nn.init.normal_(block.attn.c_proj.weight, std=0.1)
    idx = torch.randint(0, 256, (2, 512))
    with torch.no_grad():
        sdpa = model(idx)
        model.use_flex_attention(512)
        mask = model.window_mask(512)
        assert isinstance(mask, BlockMask) and model.windows == [256, 512]
        assert mask.sparsity() > 0  # the blocks outside the window are never computed
        namespace["flex_attention"] = flex_attention  # eager on a CPU: no compiler needed
        flex = model(idx)
        assert isinstance(model.window_mask(256), torch.Tensor)  # another length: the mask
    assert torch.allclose(sdpa, flex, atol=1e-5), (sdpa - flex).abs().max()


@pytest.mark.slow
def test_exploding_loss_prints_fail_and_exits_1(prepared_data, tmp_path):
    # Muon steps of size 1e30 overflow float32 in the first updated step, every time.
    tree = make_tree(tmp_path / "tree")
    set_param(tree, "MATRIX_LR", 1e30)
    proc = run_train(tree, prepared_data)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    fail = next(i for i, line in enumerate(lines) if line.startswith("FAIL"))
    assert fail == len(lines) - 1 and "---" not in lines
    # its progress line comes before FAIL, with the non-finite loss (issue 23's guard reads it)
    last = PROGRESS.fullmatch(lines[fail - 1])
    assert last, lines[fail - 1]
    assert not math.isfinite(float(last[4]))
    assert int(last[2]) == 2 and last[1] == "0.500"  # the step that diverged, counted
    assert [p[1] for p in progress(proc.stdout)] == [1, 2]


def test_packaged_block_is_the_cpu_preset():
    source = (BASELINE / "train.py").read_text().splitlines()
    start = source.index("# --- hyperparameters ---")
    end = source.index("# --- end hyperparameters ---")
    block = {}
    for line in source[start + 1:end]:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]* = [^#]+?  # \S.*", line), line
        node = ast.parse(line).body[0]
        block[node.targets[0].id] = ast.literal_eval(node.value)
    space = tomllib.loads((BASELINE / "search_space.toml").read_text())
    cpu = space["presets"]["cpu"]
    expected = {name: spec["default"] for name, spec in space["params"].items()}
    expected.update(cpu.get("defaults", {}))
    expected.update(cpu["fixed"])
    assert block == expected
    for name, value in block.items():
        assert type(value) is type(expected[name]), name


# ---------------------------------------------------------------------------
# prepare.py
# ---------------------------------------------------------------------------


def test_default_corpus_is_reproducible(prepared_data, tmp_path):
    out = tmp_path / "again"
    proc = subprocess.run([sys.executable, str(BASELINE / "prepare.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    first = json.loads((prepared_data / "meta.json").read_text())
    second = json.loads((out / "meta.json").read_text())
    assert first["sha256"] == second["sha256"] and first["bytes"] == second["bytes"]
    assert second["bytes"]["val"] >= 2**19
    assert (out / "val.bin").stat().st_size == second["bytes"]["val"]


def test_two_builds_racing_leave_one_complete_folder(tmp_path):
    out = tmp_path / "data"
    procs = []

    def build():
        procs.append(subprocess.run(
            [sys.executable, str(BASELINE / "prepare.py"), "--out", str(out)],
            capture_output=True, text=True, timeout=300))

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.returncode for p in procs] == [0, 0], [p.stderr for p in procs]
    # no temporary folder left; the test split beside the data folder, never in it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "data.test"]
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]
    assert sorted(p.name for p in (tmp_path / "data.test").iterdir()) == [
        "meta.json", "train.bin", "val.bin"]


@pytest.mark.slow
def test_dataset_folder_builds_and_trains(tmp_path):
    src = tmp_path / "texts"
    (src / "sub").mkdir(parents=True)
    (src / ".git").mkdir()
    words = "the quick brown fox jumps over the lazy dog while ".split()
    for i in range(40):
        text = " ".join(words[(i + j) % len(words)] for j in range(300)) + "\n"
        (src / ("sub" if i % 2 else "") / f"doc{i:02d}.txt").write_text(text)
    (src / ".git" / "config").write_text("hidden, skipped\n")
    (src / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    (src / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))  # not utf-8: skipped
    out = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, str(BASELINE / "prepare.py"), "--dataset", str(src), "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    meta = json.loads((out / "meta.json").read_text())
    texts = sorted(src.rglob("doc*.txt"))
    assert meta["num_documents"] == len(texts) == 40
    assert sum(meta["bytes"].values()) == sum(p.stat().st_size + 1 for p in texts)
    assert meta["bytes"]["val"] > 0 and meta["bytes"]["train"] > 0

    tree = make_tree(tmp_path / "tree")
    result = summary(run_train(tree, out, AR_TOKEN_BUDGET=str(STEP_TOKENS),
                               AR_EVAL_TOKENS="4096"))
    assert math.isfinite(result["val_bpb"])


def test_uniform_logits_score_8_bits_per_byte(prepared_data, monkeypatch):
    prepare = load_prepare()
    monkeypatch.setattr(prepare, "EVAL_TOKENS", 5000)
    monkeypatch.setenv("AR_DATA_DIR", str(prepared_data))

    class Uniform(torch.nn.Module):
        def forward(self, idx):
            return torch.zeros(*idx.shape, prepare.VOCAB_SIZE)

    bpb = prepare.evaluate_bpb(Uniform(), batch_size=8, seq_len=64, device="cpu")
    assert abs(bpb - 8.0) < 1e-6


def test_evaluate_bpb_scores_windows_spread_over_all_of_val(prepared_data, monkeypatch):
    """A model that knows the next byte of val scores 0 on exactly the windows eval_windows
    names, and those lie over the whole split, never overlapping."""
    prepare = load_prepare()
    monkeypatch.setattr(prepare, "EVAL_TOKENS", 3000)
    val = torch.from_numpy(prepare.load_split("val", prepared_data)[:].astype("int64"))
    starts = prepare.eval_windows(len(val), 100)
    assert len(starts) == 30 and starts[0] < len(val) // 30 and starts[-1] > len(val) * 0.9
    assert all(b - a >= 100 for a, b in zip(starts, starts[1:], strict=False))
    seen = []

    class Oracle(torch.nn.Module):
        def forward(self, idx):
            rows = starts[len(seen): len(seen) + idx.size(0)]
            seen.extend(rows)
            nxt = torch.stack([val[s + 1: s + 101] for s in rows])
            assert torch.equal(idx, torch.stack([val[s: s + 100] for s in rows]))
            return torch.nn.functional.one_hot(nxt, prepare.VOCAB_SIZE).float() * 1e4

    bpb = prepare.evaluate_bpb(Oracle(), batch_size=4, seq_len=100, device="cpu",
                               data_dir=prepared_data)
    assert bpb == pytest.approx(0.0, abs=1e-6)
    assert list(seen) == list(starts)
    assert list(prepare.eval_windows(len(val), 100)) == list(starts)  # fixed by the seed


def test_a_short_time_budget_reads_fewer_val_bytes():
    """Issue 28: a demo's 30-s trial spent 7.6 s of 2**18 evaluation bytes on the baseline
    and 38 s on a 5 M-parameter model; below 60 s the metric reads a share of them."""
    tokens = load_prepare().eval_tokens
    assert tokens({}) == tokens({"TIME_BUDGET": "60"}) == tokens({"TIME_BUDGET": "300"}) \
        == 2**18
    assert tokens({"TIME_BUDGET": "30"}) == 2**17 and tokens({"TIME_BUDGET": "15"}) == 2**16
    assert tokens({"TIME_BUDGET": "45"}) == 2**17  # a power of two at most the share
    assert tokens({"TIME_BUDGET": "0.5"}) == 2**15  # the floor
    assert tokens({"TIME_BUDGET": "5", "AR_TOKEN_BUDGET": "4096"}) == 2**18  # no clock
    assert tokens({"TIME_BUDGET": "5", "AR_EVAL_TOKENS": "4096"}) == 4096  # a setting wins
    assert tokens({"TIME_BUDGET": "soon"}) == 2**18  # the trial kit refuses it


def test_near_duplicates_are_left_out_by_content():
    prepare = load_prepare()
    table = "".join(f"    '\\x{i:02x}'     #  0x{i:02x} -> CHAR {i}\n" for i in range(120))
    docs = [("a_codec.py", ("# one\n" + table).encode()),
            ("b_code.py", "\n".join(f"def f{i}(x):\n    return x + {i}" for i in range(60))
             .encode()),
            ("c_codec.py", ("# another\n" + table.replace("CHAR 7", "BELL")).encode())]
    assert prepare.near_duplicates(docs) == ["c_codec.py"]  # the first of a family stays
    kept = prepare.stdlib_documents()
    names = {rel for rel, _ in kept}
    every = prepare.text_documents(Path(prepare.sysconfig.get_paths()["stdlib"]), ".py")
    tables = [rel for rel, _ in every if rel.startswith("encodings/cp")]
    assert not any(rel in names for rel in tables), "charmap tables should be gone"
    code = [rel for rel, _ in every if not rel.startswith("encodings/")]
    assert sum(rel in names for rel in code) >= 0.97 * len(code)  # real code stays


def test_train_batches_are_seeded(prepared_data):
    prepare = load_prepare()

    def first(seed, n=3):
        batches = prepare.train_batches(4, 32, seed, "cpu", prepared_data)
        return [next(batches) for _ in range(n)]

    a, b, c = first(7), first(7), first(8)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][0], c[0][0])
    x, y = a[0]
    assert x.shape == (4, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_empty_data_dir_says_run_prepare(tmp_path, monkeypatch):
    prepare = load_prepare()
    monkeypatch.setenv("AR_DATA_DIR", str(tmp_path))
    with pytest.raises(SystemExit, match=r"prepare\.py --out"):
        prepare.ensure_data()
    assert list(tmp_path.iterdir()) == []  # nothing written into it
