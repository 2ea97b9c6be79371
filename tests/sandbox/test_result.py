from sandbox.result import parse_summary

BLOCK = "---\nval_bpb: 1.234500\nnum_steps: 12\ndevice: cpu\n"


def test_parses_the_summary_block():
    assert parse_summary("step 1 loss 3\n" + BLOCK) == {
        "val_bpb": 1.2345, "num_steps": 12.0, "device": "cpu"}


def test_only_the_last_block_counts():
    fake = "---\nval_bpb: 0.1\n"
    log = fake + "step 2 loss 3.0\n" + BLOCK
    assert parse_summary(log)["val_bpb"] == 1.2345


def test_a_block_followed_by_other_output_is_not_a_summary():
    assert parse_summary(BLOCK + "Traceback (most recent call last):\n") == {}
    assert parse_summary("no block at all\n") == {}
