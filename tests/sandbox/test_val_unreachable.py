"""Validation no trial can reach (issue 21, point 2). On main the default corpus was the
standard library split by a hash of the path, and every trial runs on that library: a trial
rebuilt val exactly with `prepare.split_documents(prepare.stdlib_documents())` while its own
val.bin was empty. The v3 corpus holds val out (Django's test suite, from its release archive,
which no installed package carries): a trial that rebuilds, or walks its whole readable file
system, finds no validation document."""

from __future__ import annotations

import hashlib
import json
import shutil
import textwrap
from pathlib import Path

from agent.paths import baseline_dir
from sandbox.base import TrialRun
from tests.sandbox.helpers import limits, make_trial

MIN_LINE = 40  # a line this long that no training document holds marks its val document

REBUILD = """
    import hashlib, json, os, sys
    import prepare

    meta = json.load(open(os.path.join(os.environ["AR_DATA_DIR"], "meta.json")))
    print("own val.bin:", os.path.getsize(os.path.join(os.environ["AR_DATA_DIR"], "val.bin")))
    _, val = prepare.split_documents(prepare.stdlib_documents())  # what worked on main
    print("stdlib route rebuilt val:", hashlib.sha256(val).hexdigest() == meta["sha256"]["val"])
    try:
        docs, held_out = prepare.default_documents()
        _, val = prepare.split_documents(docs, held_out)
        print("default route rebuilt val:",
              hashlib.sha256(val).hexdigest() == meta["sha256"]["val"])
    except SystemExit as e:
        print("default route failed:", e)
    print("---")
    print("val_bpb: 1.0")
"""

SCAN = r"""
    import hashlib, io, json, os, stat, sys, tarfile, zipfile

    marks = json.load(open(MARKS))  # line digest -> val document
    sizes = {}
    for doc in marks.values():
        sizes[doc] = sizes.get(doc, 0) + 1
    LIMIT = 64 * 2**20
    files = archives = 0
    total = 0
    found = {}

    def scan(name, data):
        global total
        total += len(data)
        hits = {}
        for line in data.split(b"\n"):
            line = line.strip(b" \t\r\0")
            if len(line) >= %(min_line)d:
                doc = marks.get(hashlib.blake2b(line, digest_size=8).hexdigest())
                if doc is not None:
                    hits.setdefault(doc, set()).add(line)
        for doc, lines in hits.items():  # most of a document's own lines: a copy of it
            if len(lines) >= max(3, sizes[doc] / 2):
                found.setdefault(doc, []).append(name)
""".replace("%(min_line)d", str(MIN_LINE))

WALK = SCAN + r"""
    for root, dirs, names in os.walk("/", followlinks=False):
        if root == "/":
            dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
        for n in names:
            path = os.path.join(root, n)
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or st.st_size > LIMIT:
                    continue
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            files += 1
            scan(path, data)
            try:
                if data[:4] == b"PK\x03\x04":
                    with zipfile.ZipFile(io.BytesIO(data)) as z:
                        archives += 1
                        for i in z.infolist():
                            if i.filename.endswith(".py") and i.file_size <= LIMIT:
                                scan(path + "!" + i.filename, z.read(i))
                elif data[:2] == b"\x1f\x8b" and ".tar" in n or n.endswith(".tgz"):
                    with tarfile.open(fileobj=io.BytesIO(data)) as t:
                        archives += 1
                        for m in t:
                            if m.isfile() and m.name.endswith(".py") and m.size <= LIMIT:
                                scan(path + "!" + m.name, t.extractfile(m).read())
            except Exception:
                pass
    print(f"walked: {files} files, {archives} archives, {total} bytes")
    print("found:", json.dumps(found)[:2000])
    print("---")
    print("val_bpb: 1.0")
"""
WALK = WALK.replace("MARKS", 'os.path.join(os.path.dirname(os.path.abspath(__file__)), '
                    '"marks.json")')


def val_marks(data, part: str = "val") -> tuple[dict[str, str], int, int]:
    """blake2b digests of the lines (>= MIN_LINE chars) that only a val (or, with part="test",
    a test) document holds -> that document's number; how many such documents of >= 1 KB have
    3 such lines, of how many."""
    import sys

    sys.path.insert(0, str(baseline_dir()))
    try:
        import prepare
    finally:
        sys.path.pop(0)
    wanted = part
    docs, held_out = prepare.default_documents()
    lines: dict[str, set[bytes]] = {"train": set(), "val": set(), "test": set()}
    per_doc: dict[str, set[bytes]] = {}
    for rel, text in docs:
        part = prepare.split_of(rel, held_out)
        own = {ln.strip() for ln in text.split(b"\n") if len(ln.strip()) >= MIN_LINE}
        lines[part] |= own
        if part == wanted and len(text) >= 1024:
            per_doc[rel] = own
    other = lines["train"] | lines["test" if wanted == "val" else "val"]
    marks = {}
    for i, own in enumerate(per_doc.values()):
        for line in own - other:
            marks[hashlib.blake2b(line, digest_size=8).hexdigest()] = f"{wanted}{i}"
    covered = sum(len(own - other) >= 3 for own in per_doc.values())
    return marks, covered, len(per_doc)


def run_trial(backend, tmp_path, data, script, name, extra=None):
    run = make_trial(tmp_path, script, name=name)
    shutil.copy(baseline_dir() / "prepare.py", run.tree / "prepare.py")
    for file, text in (extra or {}).items():
        (run.tree / file).write_text(text)
    run = TrialRun(run.tree, run.workdir, data_dir=data, hide_val=True, env={"AR_SEED": "1"})
    result = backend.run(run, limits(timeout_s=1200, memory="2g"))
    return result, (run.workdir / "train.log").read_text()


def test_a_trial_cannot_rebuild_val_from_what_it_can_read(backend, tmp_path, prepared_data):
    result, log = run_trial(backend, tmp_path, prepared_data, REBUILD, "rebuild")
    assert result.status == "ok", log
    assert "own val.bin: 0" in log
    assert "stdlib route rebuilt val: False" in log
    assert "default route failed: prepare: pip could not fetch" in log, log


def test_a_trial_that_walks_its_file_system_finds_no_val_document(backend, tmp_path,
                                                                  prepared_data):
    """Nor a test document (issue 25): the test split lies beside the data folder."""
    marks, covered, big = val_marks(prepared_data)
    assert covered == big >= 50  # the check can see every val document of >= 1 KB
    test_marks, test_covered, test_big = val_marks(prepared_data, "test")
    # all but one test document of >= 1 KB (it shares its long lines with training text)
    assert test_big - 1 <= test_covered and test_covered >= 50, (test_covered, test_big)
    marks |= test_marks
    test = prepared_data.with_name(prepared_data.name + ".test")
    assert (test / "val.bin").stat().st_size > 2**19  # the test split is there to be found
    (tmp_path / "marks.json").write_text(json.dumps(marks))
    control: dict = {}  # the walk's own detector, run here on val.bin: it sees every document
    exec(textwrap.dedent(SCAN).replace("MARKS", repr(str(tmp_path / "marks.json"))), control)
    control["scan"]("val.bin", (prepared_data / "val.bin").read_bytes())
    control["scan"]("test/val.bin", (test / "val.bin").read_bytes())
    assert len(control["found"]) == covered + test_covered, len(control["found"])
    result, log = run_trial(backend, tmp_path, prepared_data, WALK, "walk",
                            {"marks.json": json.dumps(marks)})
    walked = next(ln for ln in log.splitlines() if ln.startswith("walked:"))
    print(f"{backend.name}: {walked}; {len(marks)} marker lines of {covered} val documents "
          "of >= 1 KB")
    assert result.status == "ok", log[-3000:]
    assert "found: {}" in log, log[-3000:]
    assert int(walked.split()[1]) > 1000  # it did read the interpreter and its libraries


REAL_PATH = """
    import os

    path = os.path.join({folder!r}, "val.bin")
    try:
        with open(path, "rb") as f:
            print("read val.bin at its own path:", len(f.read()), "bytes")
    except OSError as e:
        print("val.bin at its own path:", type(e).__name__)
    print("---")
    print("val_bpb: 1.0")
"""


def test_the_data_folders_own_path_shows_no_val(backend, tmp_path, prepared_data):
    """A data folder that others may read (here under /opt, 0755), scored by the harness: the
    trial reads train.bin, and val.bin neither in its view nor at the folder's own path."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="ar-test-data-", dir="/opt"))
    try:
        folder.chmod(0o755)
        for name in ("train.bin", "val.bin", "meta.json"):
            shutil.copy(prepared_data / name, folder / name)
            (folder / name).chmod(0o644)
        result, log = run_trial(backend, tmp_path, folder,
                                REAL_PATH.format(folder=str(folder)), "real")
    finally:
        shutil.rmtree(folder)
    assert result.status == "ok", log
    assert "read val.bin at its own path" not in log, log


TEST_PATH = """
    import os

    test = {folder!r} + ".test"
    try:
        with open(os.path.join(test, "val.bin"), "rb") as f:
            print("read the test split at its own path:", len(f.read()), "bytes")
    except OSError as e:
        print("the test split at its own path:", type(e).__name__)
    try:
        print("files of the test split:", sorted(os.listdir(test)))
    except OSError as e:
        print("files of the test split:", type(e).__name__)
    print("own val.bin:", os.path.getsize(os.path.join(os.environ["AR_DATA_DIR"], "val.bin")))
    print("---")
    print("val_bpb: 1.0")
"""


def test_a_trial_scored_by_what_it_prints_cannot_read_the_test_split(backend, tmp_path,
                                                                     prepared_data):
    """Such a trial reads val.bin (it evaluates itself), but the test split beside its data
    folder (here under /opt, open to everyone) neither at its own path nor in the folder
    that holds both (issue 25)."""
    import tempfile

    parent = Path(tempfile.mkdtemp(prefix="ar-test-split-", dir="/opt"))
    try:
        parent.chmod(0o755)
        folder = parent / "data"
        for source, target in ((prepared_data, folder),
                               (prepared_data.with_name(prepared_data.name + ".test"),
                                parent / "data.test")):
            target.mkdir(mode=0o755)
            for name in ("train.bin", "val.bin", "meta.json"):
                shutil.copy(source / name, target / name)
                (target / name).chmod(0o644)
        run = make_trial(tmp_path, TEST_PATH.format(folder=str(folder)), name="test-split")
        run = TrialRun(run.tree, run.workdir, data_dir=folder, hide_val=False,
                       env={"AR_SEED": "1"})
        result = backend.run(run, limits(timeout_s=300, memory="2g"))
        log = (run.workdir / "train.log").read_text()
    finally:
        shutil.rmtree(parent)
    assert result.status == "ok", log
    assert f"own val.bin: {(prepared_data / 'val.bin').stat().st_size}" in log  # val: yes
    assert "the test split at its own path:" in log, log
    assert "read the test split" not in log and "'val.bin'" not in log, log
