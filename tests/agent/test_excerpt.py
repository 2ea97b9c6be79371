"""agent/edit/excerpt.py: what of train.py a prompt shows when the whole does not fit."""

from __future__ import annotations

from agent.edit.excerpt import excerpt
from agent.llm.window import estimate_tokens
from agent.paths import baseline_dir


def marker(first: int, last: int) -> str:
    return f"# ... lines {first}-{last} left out ..."


SOURCE = (baseline_dir() / "train.py").read_text()
NAMES = ["DEPTH", "MATRIX_LR", "WARMDOWN_RATIO", "WARMUP_RATIO", "FINAL_LR_FRAC", "SEQ_LEN",
         "TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE", "HEAD_DIM", "ASPECT_RATIO", "EMBEDDING_LR",
         "UNEMBEDDING_LR", "SCALAR_LR", "WEIGHT_DECAY", "WINDOW_PATTERN"]
BLOCK = SOURCE[SOURCE.index("# --- hyperparameters ---"):
               SOURCE.index("# --- end hyperparameters ---")]


def test_a_file_that_fits_is_shown_whole():
    shown = excerpt(SOURCE, estimate_tokens(SOURCE), estimate_tokens, marker, NAMES)
    assert shown.text == SOURCE and shown.markers == () and shown.left_out == 0


def test_the_block_and_the_code_using_it_are_shown_in_full_the_rest_marked():
    room = estimate_tokens(SOURCE) // 3
    shown = excerpt(SOURCE, room, estimate_tokens, marker, NAMES)
    assert estimate_tokens(shown.text) <= room
    assert BLOCK in shown.text  # every hyperparameter line, in full
    assert "def make_optimizers(model):" in shown.text  # reads five of them
    assert shown.markers and all(m in shown.text.splitlines() for m in shown.markers)
    assert 0 < shown.left_out < len(SOURCE.splitlines())
    # what is shown is the file's own lines, in order, each run of left-out lines one marker
    kept = [line for line in shown.text.splitlines() if line not in shown.markers]
    lines = SOURCE.splitlines()
    at = [lines.index(line) for line in kept if line.strip() and lines.count(line) == 1]
    assert at == sorted(at)
    shown_lines = shown.text.splitlines()
    assert not any(a in shown.markers and b in shown.markers
                   for a, b in zip(shown_lines, shown_lines[1:], strict=False))


def test_lines_a_recent_diff_touched_come_before_other_code():
    room = estimate_tokens(SOURCE) // 3
    line = "    return (1 - frac) * 0.85 + frac * 0.95"  # in muon_momentum, using no name
    plain = excerpt(SOURCE, room, estimate_tokens, marker, NAMES)
    touched = excerpt(SOURCE, room, estimate_tokens, marker, NAMES, touched=[line])
    assert line not in plain.text.splitlines()
    assert line in touched.text.splitlines() and "def muon_momentum(step):" in touched.text


def test_no_excerpt_when_the_block_alone_does_not_fit():
    assert excerpt(SOURCE, estimate_tokens(BLOCK) // 2, estimate_tokens, marker, NAMES) is None


def test_a_file_that_does_not_parse_is_cut_in_chunks_keeping_the_block():
    broken = SOURCE + "\ndef oops(:\n" + "x = 1\n" * 200
    shown = excerpt(broken, estimate_tokens(SOURCE) // 3, estimate_tokens, marker, NAMES)
    assert "DEPTH = 4  # number of transformer layers" in shown.text and shown.markers
