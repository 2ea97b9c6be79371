from sandbox.logsink import LogSink


def test_short_log_is_kept_whole(tmp_path):
    sink = LogSink(tmp_path / "log", cap=100, tail=50)
    sink.write(b"hello\n")
    sink.close()
    assert (tmp_path / "log").read_bytes() == b"hello\n"
    assert not sink.truncated and sink.tail_text() == "hello\n"


def test_long_log_keeps_head_and_tail_and_says_what_was_cut(tmp_path):
    sink = LogSink(tmp_path / "log", cap=10, tail=8)
    for i in range(100):
        sink.write(f"{i:03d}\n".encode())  # 400 bytes
    sink.close()
    data = (tmp_path / "log").read_bytes()
    assert data.startswith(b"000\n001\n00")
    assert data.endswith(b"098\n099\n")
    assert sink.truncated and sink.total == 400 and sink.written == 10
    assert b"382 bytes not kept; the last 8 bytes follow" in data
    assert sink.tail_text() == "098\n099\n"


def test_tail_overlapping_the_head_is_not_written_twice(tmp_path):
    sink = LogSink(tmp_path / "log", cap=10, tail=8)
    sink.write(b"abcdefghijkl")  # 12 bytes: head 10, 2 more
    sink.close()
    data = (tmp_path / "log").read_bytes()
    assert data.startswith(b"abcdefghij") and data.endswith(b"kl")
    assert b"0 bytes not kept; the last 2 bytes follow" in data
