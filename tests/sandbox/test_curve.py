"""A trial's output read as a learning curve (sandbox/curve.py): what is parsed, what is kept,
and that what a trial prints cannot make the session hold, write or decide more than a curve."""

from __future__ import annotations

import json

from sandbox.curve import MAX_LINE, Stop, Stream, parse_preflight, parse_progress
from sandbox.result import TrialResult


class Sink:
    def __init__(self):
        self.data = b""

    def write(self, chunk: bytes) -> None:
        self.data += chunk


class Recorder:
    """A watch that stops at the first point at or past `at`, and remembers what it saw."""

    def __init__(self, at: float = 2.0, fail: bool = False):
        self.at, self.fail, self.seen = at, fail, []

    def point(self, point):
        if self.fail:
            raise RuntimeError("boom")
        self.seen.append(point["progress"])
        return Stop("pruned", "test") if point["progress"] >= self.at else None

    def preflight(self, numbers):
        return None


def line(p: float, loss: str = "3.0") -> bytes:
    return f"progress: {p:.3f} step 1 tokens 4096 loss {loss} seconds 1.0\n".encode()


def test_both_formats_parse_and_numbers_stay_bounded():
    assert parse_progress("progress: 0.250 step 120 tokens 491520 loss 3.4512 seconds 75.1") \
        == {"progress": 0.25, "step": 120, "tokens": 491520, "loss": 3.4512, "seconds": 75.1,
            "kind": "progress"}
    karpathy = parse_progress("step 00012 (12.3%) | loss: 3.456789 | lrm: 1.00 | dt: 5ms")
    assert karpathy["step"] == 12 and abs(karpathy["progress"] - 0.123) < 1e-12
    assert parse_progress("progress: nan step 1 tokens 1 loss 3.0 seconds 1") is None
    assert parse_progress(f"progress: 0.5 step {'9' * 30} tokens 1 loss 3.0 seconds 1") is None
    assert parse_progress(f"progress: 0.5 step 1 tokens 1 loss 3.{'0' * 40} seconds 1") is None
    assert parse_progress("progress: 0.5 step 1 tokens 1 loss nan seconds 1")["loss"] != 3.0
    assert parse_preflight("preflight: ok peak_memory_mb 812.5 step_seconds 0.12") == {
        "peak_memory_mb": 812.5, "step_seconds": 0.12}
    assert parse_preflight("preflight: ok") is None  # the old `---` block's line


def test_a_stream_writes_the_curve_and_stops_taking_points_once_stopped(tmp_path):
    sink, watch = Sink(), Recorder(at=0.25)
    stopped = []
    stream = Stream(sink, tmp_path / "curve.jsonl", watch, lambda: stopped.append(True))
    stream.write(line(0.1) + line(0.2)[:10])  # a line split across chunks
    stream.write(line(0.2)[10:] + line(0.26) + line(0.3) + line(0.4))
    stream.close()
    assert stopped == [True] and stream.stopped.status == "pruned"
    assert [p["progress"] for p in stream.points] == [0.1, 0.2, 0.26]  # 0.3, 0.4: after it
    assert watch.seen == [0.1, 0.2, 0.26]
    written = [json.loads(x) for x in (tmp_path / "curve.jsonl").read_text().splitlines()]
    assert [p["progress"] for p in written] == [0.1, 0.2, 0.26]
    assert sink.data.count(b"\n") == 5  # the log has everything


def test_over_long_lines_are_not_parsed_even_two_in_one_chunk(tmp_path):
    stream = Stream(Sink(), None)
    junk = b"x" * (MAX_LINE + 10)
    fake = b"progress: 0.500 step 1 tokens 1 loss 1.0 seconds 1.0"
    stream.write(junk)  # the start of an over-long line ...
    stream.write(b"y" * 20 + fake + b"\n" + junk + b"z" + fake + b"\n" + line(0.1))
    stream.close()
    assert [p["progress"] for p in stream.points] == [0.1]


def test_a_watch_that_raises_stops_the_trial_as_a_crash():
    stream = Stream(Sink(), None, Recorder(fail=True), lambda: None)
    stream.write(line(0.1))
    assert stream.stopped.status == "crash" and "boom" in stream.stopped.reason


def test_a_trial_that_exited_0_before_the_kill_keeps_its_result():
    stream = Stream(Sink(), None, Recorder(at=0.5), lambda: None)
    stream.write(line(0.5))
    finished = TrialResult(status="ok", exit_code=0, val_bpb=2.5).watched(stream)
    assert finished.status == "ok" and finished.val_bpb == 2.5 and finished.stopped_at is None
    killed = TrialResult(status="crash", exit_code=137).watched(stream)
    assert killed.status == "pruned" and killed.stopped_at == 0.5


def test_writes_after_close_are_dropped(tmp_path):
    sink = Sink()
    stream = Stream(sink, tmp_path / "curve.jsonl")
    stream.close()
    stream.write(line(0.1))
    assert stream.points == [] and sink.data == b""
