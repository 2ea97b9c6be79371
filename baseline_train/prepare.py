"""
Data, tokenizer and evaluation for baseline_train/train.py. Read-only to every optimizer:
the metric is computed here, so no edit of train.py can change what val_bpb means.

Tokenizer: bytes. A token is one byte of the utf-8 text (VOCAB_SIZE = 256); documents are
joined with a 0 byte before each one, so val_bpb is plain bits per byte.

Default corpus: Python source in two parts. Training text: the .py sources of the running
Python's standard library (tests, site-packages and build-specific files left out), and 80 %
of the files of Django's test suite. Validation text: another 10 % of that suite, chosen by a
hash of each file's path; the last 10 % is the test split, written beside the data folder
(FOLDER.test), never in it, which only the harness's scoring of a final result reads
(`autoresearch report`). The suite comes from Django's release archive (pinned version and
sha256, fetched once with pip into the cache folder, never installed): pip and Debian install
Django without it, so no trial's file system holds a validation (or test) document, while the
standard library is on every trial's. Generated
tables (most lines of one shape: the charmap tables of encodings/ and their like) and
near-duplicates (most 4-line shingles already in a file kept before, the standard library
first) are left out. val_bpb is scored on windows spread over val.

Usage:
    python prepare.py                       # build the default corpus (cached; fetches the
                                            # held-out archive with pip on first use)
    python prepare.py --dataset PATH        # any text file, or every text file under a folder
    python prepare.py --out DIR [--force]   # where to write it (then run with AR_DATA_DIR=DIR)
    python prepare.py --test [--out DIR]    # the default corpus's test split (DIR.test)

Model contract of evaluate_bpb: `model(idx)` with idx a (B, T) int64 tensor of bytes returns
logits of shape (B, T, VOCAB_SIZE); position t predicts byte t + 1. The cross-entropy is
computed here, not by the model.

The trial kit (`run = prepare.trial(...)` in train.py, `Trial`) is the harness's side of a
trial, fixed like the metric: it reads the environment, times the steps and prints the lines
the harness parses (step lines, progress lines, `FAIL`, `preflight: ok`, the `---` preflight
and summary blocks). A progress line, at step 1, at the last step (1.000) and at least every
2 % of the budget between them (on a NaN loss too, before `FAIL`):
    progress: 0.250 step 120 tokens 491520 loss 3.4512 seconds 75.1
is the share of the budget spent (steps / all steps under AR_TOKEN_BUDGET, else training
seconds / TIME_BUDGET), the steps done, the training tokens so far, the smoothed
(bias-corrected moving average) train loss and the training seconds. Environment:
    TIME_BUDGET          seconds of training, default 60 (the first step is not counted)
    AR_TOKEN_BUDGET      train exactly ceil(AR_TOKEN_BUDGET / TOTAL_BATCH_SIZE) steps instead
    AR_SEED              seed of the weights and of the batches, default 0 (a session's default too)
    AR_DEVICE            cpu, cuda, cuda:N or mps; default: cuda, else mps, else cpu
    AR_GPU_MEM_FRACTION  cap on the share of GPU memory this process may allocate
    AR_COMPILE           1 to torch.compile the model; default 1 on cuda, 0 elsewhere
    AR_ATTENTION         sdpa (default) or flex (CUDA only): the sliding-window layers through
                         FlexAttention with a block mask that skips the blocks outside the
                         window, where SDPA runs a masked full attention off its fast path;
                         the same function of the same weights (`make gpu-check` times both)
    AR_DATA_DIR          a prepared data folder (see above)
    AR_EVAL_TOKENS       val bytes the metric reads; default 2**18, fewer under a TIME_BUDGET
                         below 60 s (eval_tokens: 2**17 at 30 s, 2**16 at 15 s)
    AR_PROFILE_OUT       a file: the last untimed step runs under torch.profiler, and its ops,
                         most device time first (CPU time on a CPU), are written there
    AR_SCORE             "harness": export the model to $AR_OUT_DIR/model.pt2 for the harness
                         to score (val is hidden from training then) instead of evaluating
    AR_PREFLIGHT_STEPS   N > 0: build everything, run N optimizer steps of one micro-batch of
                         DEVICE_BATCH_SIZE each (the memory peak of training) and one
                         evaluation-sized forward, print `preflight: ok`, the peak memory and
                         the seconds a whole step takes, and exit (seconds instead of a trial;
                         but see AR_PREFLIGHT_CONTINUE)
    AR_PREFLIGHT_FIT_MB  with AR_PREFLIGHT_STEPS on a CPU, uncompiled: first measure the peak of
                         two steps at growing micro-batches (1, 2, 4, ... sequences)
                         and, where DEVICE_BATCH_SIZE would peak above this many MB, probe the
                         largest power of two predicted to fit instead (`preflight_batch`)
    AR_PREFLIGHT_CONTINUE
                         1, with AR_PREFLIGHT_STEPS=N: the probe costs nothing when it passes.
                         The first N ordinary training steps (full batch, every micro-batch,
                         counted in the budget) are the probe; after step N one line
                         `preflight: ok peak_memory_mb M step_seconds S preflight_batch B`
                         (`predicted_peak_mb P` added where the fit ramp predicted one; at the
                         last step where the budget ends first), and training goes on in the
                         same process. A fit ramp that says the batch fits leaves the model and
                         optimizers as they were before it (the same val_bpb as without a
                         probe); one that says it must shrink makes the run the probe above,
                         at the fitted batch (the session repairs the batch and runs again)
    OMP_NUM_THREADS      CPU threads (torch's default: one per core); AR_TOKEN_BUDGET runs
                         give the same val_bpb for the same seed and the same thread count
"""

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

# torch is imported inside the functions that need it: building the data (the command line)
# runs where the orchestrator runs, which does not need torch.

# Idle OpenMP threads sleep instead of spinning. On a CPU shared with other processes (other
# trials, an LLM server) spinning threads made training 2-10x slower; on an idle CPU sleeping
# costs about 20%. torch reads it when it loads its OpenMP runtime, so train.py imports this
# module first; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# ---------------------------------------------------------------------------
# Constants (fixed: changing them changes the metric)
# ---------------------------------------------------------------------------

VOCAB_SIZE = 256  # one token per byte
SEPARATOR = 0  # byte written before every document
FULL_EVAL_TOKENS = 2**18  # val bytes the metric reads (AR_EVAL_TOKENS) ...
SHORT_BUDGET = 60.0  # ... under a TIME_BUDGET of this many seconds or more: see eval_tokens
MIN_EVAL_TOKENS = 2**15  # the fewest a shorter budget reads (128 windows of 256 bytes)
VAL_PERCENT = 10  # share of files that go to val, chosen by a hash of the relative path
TEST_PERCENT = 10  # of the held-out source: the test split, beside the data folder
MIN_VAL_BYTES = 2**19  # the default corpus must give at least this much val
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}
SKIP_FILE_PREFIXES = ("_sysconfigdata",)  # build-specific: would differ between machines
CORPUS_VERSION = "v3"  # v2: near-duplicates left out, windows spread over val; v3: val held out
# The held-out source of the default corpus: Django's test suite, from its release archive.
HELD_OUT = {"name": "django", "version": "5.2.8", "folder": "tests",
            "sha256": "23254866a5bb9a2cfa6004e8b809ec6246eba4b58a7589bc2772f1bcc8456c7f"}
SHINGLE_LINES = 4  # a shingle: this many consecutive non-empty, non-comment lines
DUPLICATE_SHARE = 0.5  # a file is a near-duplicate when this share of its shingles is known
SHAPE_CHARS = 8  # a line's shape: its first characters, words and numbers masked
GENERATED_SHARE = 0.5  # a file is a generated table when this share of lines has one shape
EVAL_SEED = 0  # fixes where the evaluation windows lie in val


def eval_tokens(environ=os.environ):
    """Val bytes the metric reads: AR_EVAL_TOKENS, else FULL_EVAL_TOKENS -- and under a
    TIME_BUDGET below SHORT_BUDGET (a demo's 30 s) the largest power of two up to
    FULL_EVAL_TOKENS * TIME_BUDGET / SHORT_BUDGET, at least MIN_EVAL_TOKENS, so that evaluating
    costs a short trial the share it costs a 60-s one (the cpu baseline: 7.6 s of 2**18 bytes
    after 30 s of training on 2 cores, 3.8 s of 2**17; benchmarks/demo_trial.py). A token
    budget reads them all. Every trial of a session has the same budget, so all are scored
    on the same windows, and the harness's scoring gets the same variables."""
    given = environ.get("AR_EVAL_TOKENS", "").strip()
    if given:
        return int(given)
    try:
        budget = float(environ.get("TIME_BUDGET", "").strip() or SHORT_BUDGET)
    except ValueError:
        budget = SHORT_BUDGET  # the trial kit says what is wrong with it
    if environ.get("AR_TOKEN_BUDGET", "").strip() or not 0 < budget < SHORT_BUDGET:
        return FULL_EVAL_TOKENS
    share = FULL_EVAL_TOKENS * budget / SHORT_BUDGET
    return max(MIN_EVAL_TOKENS, 2 ** int(math.log2(share)))


EVAL_TOKENS = eval_tokens()

# ---------------------------------------------------------------------------
# Where the data lives
# ---------------------------------------------------------------------------


def cache_dir():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "autoresearch-sandbox"


def default_data_dir():
    """The cache folder of the default corpus for the running Python version."""
    name = f"pycode-{CORPUS_VERSION}-{sys.version_info.major}.{sys.version_info.minor}"
    return cache_dir() / "data" / name


def fallback_data_dir():
    """Used when the cache folder cannot be written (read-only or missing HOME)."""
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"autoresearch-sandbox-{uid}" / default_data_dir().name


def has_data(folder):
    folder = Path(folder)
    return all((folder / name).is_file() for name in ("train.bin", "val.bin", "meta.json"))


def ensure_data():
    """Return the prepared data folder, building the default corpus on first use."""
    env_dir = os.environ.get("AR_DATA_DIR")
    if env_dir:
        # May be mounted read-only: only ever read it.
        if not has_data(env_dir):
            sys.exit(f"AR_DATA_DIR={env_dir} holds no prepared data (train.bin, val.bin, "
                     f"meta.json); run `python prepare.py --out {env_dir}` first")
        return Path(env_dir)
    for folder in (default_data_dir(), fallback_data_dir()):
        if has_data(folder):
            return folder
        try:
            docs, held_out = default_documents()
            return build(docs, folder, source=default_source(), held_out=held_out)
        except OSError as exc:
            print(f"prepare: cannot write {folder} ({exc.strerror or exc}); trying the next place")
    sys.exit("prepare: no writable place for the data cache; run `python prepare.py --out DIR` "
             "and set AR_DATA_DIR=DIR")


# ---------------------------------------------------------------------------
# Corpus: collect documents, split by file, write train.bin / val.bin / meta.json
# ---------------------------------------------------------------------------


def default_source():
    return (f"python-stdlib {sys.version_info.major}.{sys.version_info.minor} + "
            f"{HELD_OUT['name']}-{HELD_OUT['version']} {HELD_OUT['folder']}/ (held out)")


def stdlib_documents():
    """(relative posix path, bytes) of every stdlib .py file that is not a near-duplicate of
    one before it, in sorted path order."""
    return kept(text_documents(stdlib_root(), suffix=".py"))


def kept(docs):
    """docs without generated tables and near-duplicates (of a document kept before)."""
    docs = [(rel, data) for rel, data in docs if not generated(data)]
    dropped = set(near_duplicates(docs))
    return [(rel, data) for rel, data in docs if rel not in dropped]


def stdlib_root():
    return Path(sysconfig.get_paths()["stdlib"])


def default_documents():
    """(docs, held_out): the standard library's files, then the held-out suite's (paths under
    `django-tests/`), without generated tables and near-duplicates -- the standard library
    first, so a held-out file that repeats a readable one is left out -- and the set of
    held-out paths, which alone may go to val."""
    held = held_out_documents()
    docs = kept(text_documents(stdlib_root(), suffix=".py") + held)
    names = {rel for rel, _ in held}
    return docs, {rel for rel, _ in docs if rel in names}


def held_out_documents():
    """(`django-tests/<path>`, bytes) of the .py files of the held-out archive's test folder."""
    archive = held_out_archive()
    prefix = f"{HELD_OUT['name']}-{HELD_OUT['version']}/{HELD_OUT['folder']}/"
    docs = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if not (member.isfile() and member.name.startswith(prefix)
                    and member.name.endswith(".py")):
                continue
            data = tar.extractfile(member).read()
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if data and bytes([SEPARATOR]) not in data:
                docs.append((f"django-tests/{member.name[len(prefix):]}", data))
    return sorted(docs)


def held_out_archive():
    """The held-out release archive, checked against its sha256: $AR_HELD_OUT_ARCHIVE, else
    the cache folder's copy, else fetched there once with pip (its `--require-hashes`)."""
    name = f"{HELD_OUT['name']}-{HELD_OUT['version']}.tar.gz"
    given = os.environ.get("AR_HELD_OUT_ARCHIVE")
    path = Path(given) if given else cache_dir() / "sources" / name
    if not path.is_file():
        if given:
            sys.exit(f"prepare: AR_HELD_OUT_ARCHIVE={given} does not exist")
        fetch_held_out(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != HELD_OUT["sha256"]:
        sys.exit(f"prepare: {path} has sha256 {digest}, not {HELD_OUT['sha256']}: delete it "
                 "and run prepare.py again")
    return path


def fetch_held_out(path):
    """`pip download` of the pinned release archive into path's folder (private: the
    validation text must not be readable by a trial's user)."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
    except OSError as exc:
        sys.exit(f"prepare: cannot write {folder} ({exc.strerror or exc}); set "
                 "AR_HELD_OUT_ARCHIVE to a copy of the archive")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        requirement = Path(tmp) / "requirement.txt"
        requirement.write_text(f"{HELD_OUT['name']}=={HELD_OUT['version']} "
                               f"--hash=sha256:{HELD_OUT['sha256']}\n")
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             ":all:", "--require-hashes", "-r", str(requirement), "-d", tmp],
            capture_output=True, text=True, timeout=900)
        got = Path(tmp) / path.name
        if done.returncode != 0 or not got.is_file():
            said = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
            sys.exit(f"prepare: pip could not fetch {path.name} ({said}); copy that file "
                     f"(sha256 {HELD_OUT['sha256']}) to {path} or set AR_HELD_OUT_ARCHIVE")
        got.chmod(0o600)
        os.replace(got, path)


def line_shape(line):
    """A line's first characters with every word -> 'a' and every number -> '0'."""
    return re.sub(r"[A-Za-z_]+", "a", re.sub(r"[0-9A-Fa-f]+", "0", line.strip()))[:SHAPE_CHARS]


def generated(data):
    """A table rather than code: more than GENERATED_SHARE of its (at least 50) lines have
    one and the same shape (`'\\x41'   #  0x41 -> LATIN ...`, `KEY_A: 'ka',`)."""
    lines = [ln for ln in data.decode("utf-8").splitlines() if ln.strip()]
    if len(lines) < 50:
        return False
    shapes = {}
    for ln in lines:
        shape = line_shape(ln)
        shapes[shape] = shapes.get(shape, 0) + 1
    return max(shapes.values()) > GENERATED_SHARE * len(lines)


def shingles(data):
    """Hashes of every run of SHINGLE_LINES consecutive non-empty, non-comment lines."""
    lines = [ln.strip() for ln in data.decode("utf-8").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    return {hashlib.blake2b("\n".join(lines[i:i + SHINGLE_LINES]).encode(),
                            digest_size=8).digest()
            for i in range(max(0, len(lines) - SHINGLE_LINES + 1))}


def near_duplicates(docs):
    """The paths of documents at least DUPLICATE_SHARE of whose shingles already stand in a
    document kept before them (in path order). Decided by content, not by name: generated
    tables share most of their lines with each other, so the first is kept, the rest go."""
    known, dropped = set(), []
    for rel, data in docs:
        own = shingles(data)
        if own and len(own & known) >= DUPLICATE_SHARE * len(own):
            dropped.append(rel)
        else:
            known |= own
    return dropped


def text_documents(root, suffix=None):
    """(relative posix path, bytes) of the text files under root (or root itself), sorted."""
    root = Path(root)
    if root.is_file():
        paths = [(root.name, root)]
    else:
        paths = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")
                           and not d.startswith("config-")]
            for name in filenames:
                if name.startswith(".") or name.startswith(SKIP_FILE_PREFIXES):
                    continue
                if suffix and not name.endswith(suffix):
                    continue
                path = Path(dirpath) / name
                paths.append((path.relative_to(root).as_posix(), path))
    docs = []
    for rel, path in sorted(paths):
        try:
            data = path.read_bytes()
            data.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # unreadable or not utf-8 text
        if data and bytes([SEPARATOR]) not in data:  # a 0 byte means binary
            docs.append((rel, data))
    return docs


def bucket(rel_path):
    digest = hashlib.sha256(rel_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 100


def is_val(rel_path):
    return bucket(rel_path) < VAL_PERCENT


def split_of(rel_path, held_out=None):
    """'train', 'val' or 'test' (kept back: in neither file). With `held_out`, only those
    paths may be val or test; without, any path may be val and none is test."""
    if held_out is None:
        return "val" if is_val(rel_path) else "train"
    if rel_path not in held_out:
        return "train"
    b = bucket(rel_path)
    return "val" if b < VAL_PERCENT else "test" if b < VAL_PERCENT + TEST_PERCENT else "train"


def test_bytes(docs, held_out):
    """The test split's byte stream (a separator before each document): the held-out
    documents kept back from train and val; empty without a held-out source."""
    sep = bytes([SEPARATOR])
    if held_out is None:
        return b""
    return b"".join(sep + data for rel, data in docs if split_of(rel, held_out) == "test")


def test_dir(data_dir):
    """Where the test split of a prepared folder lives: beside it, never in it (a trial gets
    the data folder; the test split only the harness's scoring of a final result)."""
    data_dir = Path(data_dir)
    return data_dir.with_name(data_dir.name + ".test")


def build_test(out, test, meta):
    """Write the test split of the folder `out` (whose meta.json is `meta`) into test_dir(out),
    atomically, as a data folder of its own whose val.bin holds the test bytes (so the
    harness scores it with evaluate_bpb unchanged) and whose train.bin is empty."""
    target = test_dir(out)
    if has_data(target):
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # the harness's scoring sandbox reads it as the trial user
        (tmp / "train.bin").write_bytes(b"")
        (tmp / "val.bin").write_bytes(test)
        digest = hashlib.sha256(test).hexdigest()
        (tmp / "meta.json").write_text(json.dumps({
            "split": "test", "of": meta.get("fingerprint"), "source": meta.get("source"),
            "corpus": f"{meta.get('corpus')}-test", "fingerprint": digest[:12],
            "python": meta.get("python"), "vocab_size": VOCAB_SIZE, "separator": SEPARATOR,
            "bytes": {"train": 0, "val": len(test)}, "sha256": {"val": digest}},
            indent=2) + "\n")
        try:
            os.rename(tmp, target)
        except OSError:
            if not has_data(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_test(data_dir):
    """The test split of the default corpus prepared in `data_dir`, built there once (from
    the same documents: its val must match the folder's, byte for byte); exits with the
    reason for a corpus without a held-out source."""
    data_dir = Path(data_dir)
    meta = json.loads((data_dir / "meta.json").read_text())
    if has_data(test_dir(data_dir)):
        return test_dir(data_dir)
    if not meta.get("held_out"):
        sys.exit(f"prepare: {data_dir} has no test split: only a corpus with a held-out "
                 "source (the default one) keeps one back")
    docs, held_out = default_documents()
    _, val = split_documents(docs, held_out)
    if hashlib.sha256(val).hexdigest() != meta["sha256"]["val"]:
        sys.exit(f"prepare: the documents today do not give {data_dir}'s val split (another "
                 "Python or archive?): prepare it again with --force")
    return build_test(data_dir, test_bytes(docs, held_out), meta)


def split_documents(docs, held_out=None):
    """Join documents into the train and val byte streams (a separator before each)."""
    sep = bytes([SEPARATOR])
    split = [(split_of(rel, held_out), data) for rel, data in docs]
    train = b"".join(sep + data for part, data in split if part == "train")
    val = b"".join(sep + data for part, data in split if part == "val")
    if not train or not val:
        # Too few files to split by file (a single file, say): split the stream instead.
        stream = train + val
        cut = len(stream) - max(1, len(stream) * VAL_PERCENT // 100)
        train, val = stream[:cut], stream[cut:]
    return train, val


def build(docs, out, source, force=False, held_out=None):
    """Write train.bin / val.bin / meta.json into out, atomically; return out."""
    out = Path(out)
    if has_data(out) and not force:
        return out
    if not docs:
        sys.exit(f"prepare: no utf-8 text files found in {source}")
    train, val = split_documents(docs, held_out)
    if source == default_source() and len(val) < MIN_VAL_BYTES:
        sys.exit(f"prepare: val split has {len(val)} bytes, fewer than {MIN_VAL_BYTES}")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target, then rename: a reader never sees a half-written folder, and
    # of two processes racing, the first rename wins and the second drops its copy.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; other users (a sandbox) must read it
        (tmp / "train.bin").write_bytes(train)
        (tmp / "val.bin").write_bytes(val)
        meta = {
            "source": source,
            "corpus": default_data_dir().name if source == default_source() else out.name,
            "fingerprint": hashlib.sha256(train + val).hexdigest()[:12],
            "python": sys.version.split()[0],
            "vocab_size": VOCAB_SIZE,
            "separator": SEPARATOR,
            "num_documents": len(docs),
            "held_out": None if held_out is None else {
                "archive": f"{HELD_OUT['name']}-{HELD_OUT['version']}.tar.gz",
                "sha256": HELD_OUT["sha256"], "documents": len(held_out),
                "val_documents": sum(split_of(r, held_out) == "val" for r in held_out),
                "test_documents": sum(split_of(r, held_out) == "test" for r in held_out)},
            "bytes": {"train": len(train), "val": len(val)},
            "sha256": {"train": hashlib.sha256(train).hexdigest(),
                       "val": hashlib.sha256(val).hexdigest()},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if force and out.exists():
            shutil.rmtree(out)
            shutil.rmtree(test_dir(out), ignore_errors=True)
        try:
            os.rename(tmp, out)
        except OSError:
            if not has_data(out):  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if held_out is not None:
        build_test(out, test_bytes(docs, held_out),
                   json.loads((out / "meta.json").read_text()))
    return out


# ---------------------------------------------------------------------------
# Loading and batches
# ---------------------------------------------------------------------------


def corpus_id(data_dir):
    """`NAME:FINGERPRINT` of a prepared folder: which data a val_bpb was measured on."""
    meta = json.loads((Path(data_dir) / "meta.json").read_text())
    fingerprint = meta.get("fingerprint") or meta["sha256"]["val"][:12]
    return f"{meta.get('corpus') or Path(data_dir).name}:{fingerprint}"


def load_split(split, data_dir=None):
    """The bytes of 'train' or 'val' as a read-only uint8 array."""
    data_dir = Path(data_dir) if data_dir else ensure_data()
    return np.memmap(data_dir / f"{split}.bin", dtype=np.uint8, mode="r")


def train_batches(batch_size, seq_len, seed, device, data_dir=None):
    """Yield (x, y) int64 tensors of shape (batch_size, seq_len) forever.

    Each row is a random window of seq_len + 1 bytes of train; y is x shifted by one.
    The windows come from a numpy Generator seeded with `seed`: same seed, same batches.
    """
    import torch

    data = load_split("train", data_dir)
    if len(data) <= seq_len + 1:
        sys.exit(f"prepare: train has {len(data)} bytes, too few for seq_len={seq_len}")
    rng = np.random.default_rng(seed)
    offsets = np.arange(seq_len + 1)
    pin = torch.device(device).type == "cuda"
    while True:
        starts = rng.integers(0, len(data) - seq_len, size=batch_size)
        window = torch.from_numpy(data[starts[:, None] + offsets].astype(np.int64))
        if pin:
            window = window.pin_memory()
        window = window.to(device, non_blocking=pin)
        yield window[:, :-1], window[:, 1:]


# ---------------------------------------------------------------------------
# Evaluation (the metric)
# ---------------------------------------------------------------------------


def eval_windows(val_len, seq_len, eval_tokens=None):
    """Start positions of the evaluation windows: EVAL_TOKENS // seq_len of them (all of val
    if shorter), spread over the whole split -- val cut into that many equal strata, one
    window at a seeded random place in each -- so the score reflects all of val, and never
    overlapping."""
    n = min(eval_tokens or EVAL_TOKENS, val_len - 1)
    num_windows = n // seq_len
    if num_windows < 1:
        sys.exit(f"prepare: val has {val_len} bytes, too few for seq_len={seq_len}")
    stratum = (val_len - 1) // num_windows  # >= seq_len
    rng = np.random.default_rng(EVAL_SEED)
    offsets = rng.integers(0, stratum - seq_len + 1, size=num_windows)
    return np.arange(num_windows) * stratum + offsets


def evaluate_bpb(model, batch_size, seq_len, device, data_dir=None):
    """Validation bits per byte of `model` (see the contract at the top of this file).

    Scores the windows of `eval_windows` (EVAL_TOKENS predicted bytes, spread over all of
    val), seq_len predicted bytes each, forward only, in a fixed order. Returns summed
    cross-entropy in nats / (ln 2 * number of predicted bytes).
    """
    import torch
    import torch.nn.functional as F

    val = load_split("val", data_dir)
    starts = eval_windows(len(val), seq_len)
    num_windows = len(starts)
    rows = np.asarray(val)[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64)
    tokens = torch.from_numpy(rows)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    was_training = model.training
    model.eval()
    total_nats = 0.0
    with torch.no_grad():
        for i in range(0, num_windows, batch_size):
            x = inputs[i : i + batch_size].to(device)
            y = targets[i : i + batch_size].to(device)
            logits = model(x)
            nats = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1),
                                   reduction="none")
            total_nats += nats.double().sum().item()  # float64: no drift over long sums
    model.train(was_training)
    return total_nats / (math.log(2) * num_windows * seq_len)


# ---------------------------------------------------------------------------
# Trial kit: the harness's side of train.py (environment, clock, preflight, verdict lines)
# ---------------------------------------------------------------------------

# A probe's own steps at a batch peaked up to 9 % above the ramp's at that batch on the cpu
# preset (another data iterator, the heap's growth): a fitted batch leaves that much room.
RAMP_TO_PROBE = 1.1
# MFU against the dense bf16 peak of an H100 / H200 SXM; no meaningful peak on a CPU or MPS.
PEAK_FLOPS = 989.5e12


def config_error(message):
    print(f"config error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def env_number(name, default, kind):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        config_error(f"{name}={raw!r} is not a valid {kind.__name__}")
    if kind is float and not math.isfinite(value):
        config_error(f"{name}={raw!r} must be finite")
    return value


def trial(hyperparameters, check=None, integers=(), numbers=()):
    """The trial's setup, before any model is built: the named hyperparameters checked
    (`integers` positive, `numbers` finite and >= 0, then `check()`, the script's own rules),
    the environment read, the device picked and set up, torch seeded, the data found."""
    t_start = time.time()
    for name in integers:
        value = hyperparameters[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            config_error(f"{name}={value!r} must be a positive integer")
    for name in numbers:
        value = hyperparameters[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value) or value < 0:
            config_error(f"{name}={value!r} must be a finite number >= 0")
    if check is not None:
        check()
    return Trial(t_start)


def pick_device():
    import torch

    name = os.environ.get("AR_DEVICE", "").strip().lower() or "auto"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        config_error(f"AR_DEVICE={name!r} must be cpu, cuda, cuda:N or mps")
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": torch.backends.mps.is_available()}
    if device.type not in available:
        config_error(f"AR_DEVICE={name!r} must be cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not available["cuda"]:
        # is_available() hides why; init() raises the driver's own error (no driver, a CPU
        # build of torch, "Error 2: out of memory" under an address-space limit, ...).
        try:
            torch.cuda.init()
            reason = "torch finds no cuda device"
        except Exception as e:  # noqa: BLE001 - any failure is the answer we report
            reason = " ".join(str(e).split()) or type(e).__name__
        print(f"CUDA init failed: {reason}", file=sys.stderr, flush=True)
        sys.exit(3)
    if not available[device.type]:
        config_error(f"AR_DEVICE={name!r} but torch finds no {device.type} device")
    if device.type == "cuda" and device.index is not None \
            and device.index >= torch.cuda.device_count():
        config_error(f"AR_DEVICE={name!r} but torch finds {torch.cuda.device_count()} cuda "
                     "devices")
    return device


class Trial:
    """One run of train.py as the harness sees it. train.py calls, in this order: start()
    once its model and optimizers exist; begin_step(), end_micro_steps() and end_step() in
    every step; end_preflight() and finish() after the loop."""

    def __init__(self, t_start):
        import torch

        self.t_start = t_start
        self.seed = env_number("AR_SEED", 0, int)  # a session's default seed too
        self.time_budget = env_number("TIME_BUDGET", 60.0, float)
        self.token_budget = env_number("AR_TOKEN_BUDGET", None, int)  # None: time_budget
        mem_fraction = env_number("AR_GPU_MEM_FRACTION", None, float)
        self.preflight = env_number("AR_PREFLIGHT_STEPS", 0, int)  # 0: train for real
        self.fit_mb = env_number("AR_PREFLIGHT_FIT_MB", None, float)
        go_on = os.environ.get("AR_PREFLIGHT_CONTINUE", "0").strip() or "0"
        if go_on not in ("0", "1"):
            config_error(f"AR_PREFLIGHT_CONTINUE={go_on!r} must be 0 or 1")
        if self.time_budget <= 0:
            config_error(f"TIME_BUDGET={self.time_budget} must be positive")
        if self.token_budget is not None and self.token_budget <= 0:
            config_error(f"AR_TOKEN_BUDGET={self.token_budget} must be positive")
        if self.preflight < 0:
            config_error(f"AR_PREFLIGHT_STEPS={self.preflight} must be 0 or more")
        if mem_fraction is not None and not 0 < mem_fraction <= 1:
            config_error(f"AR_GPU_MEM_FRACTION={mem_fraction} must be in (0, 1]")
        device = pick_device()
        compile_ = os.environ.get("AR_COMPILE", "1" if device.type == "cuda" else "0").strip()
        if compile_ not in ("0", "1"):
            config_error(f"AR_COMPILE={compile_!r} must be 0 or 1")
        self.compile = compile_ == "1"
        self.attention = os.environ.get("AR_ATTENTION", "sdpa").strip() or "sdpa"
        if self.attention not in ("sdpa", "flex"):
            config_error(f"AR_ATTENTION={self.attention!r} must be sdpa or flex")
        if self.attention == "flex" and device.type != "cuda":
            config_error(f"AR_ATTENTION=flex needs a CUDA device, not {device.type} "
                         "(FlexAttention has no backward there)")
        self.profile_out = os.environ.get("AR_PROFILE_OUT", "").strip()
        self.score = os.environ.get("AR_SCORE", "printed").strip() or "printed"
        if self.score not in ("printed", "harness"):
            config_error(f"AR_SCORE={self.score!r} must be printed or harness")

        torch.manual_seed(self.seed)
        if device.type == "cuda":
            if device.index is None:  # the CUDA memory calls below want an explicit index
                device = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(device)
            torch.cuda.manual_seed(self.seed)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            if mem_fraction is not None:
                torch.cuda.set_per_process_memory_fraction(mem_fraction, device)
        self.device = device
        self.data_dir = ensure_data()
        print(f"device: {device}  compile: {compile_}  attention: {self.attention}  "
              f"seed: {self.seed}  data: {self.data_dir}")
        # probe: N steps of one micro-batch, the `---` preflight block and exit (the separate
        # probe process); in_process: the first N training steps are the probe (start() may
        # still make it a probe, where the fit ramp shrinks the batch)
        self.in_process = bool(self.preflight) and go_on == "1"
        self.probe = bool(self.preflight) and not self.in_process
        self.steps, self.step_times = 0, []
        self.training_seconds, self.timed_tokens = 0.0, 0
        self._smooth_loss, self._last_print = 0.0, 0.0
        self._fraction, self._printed = 0.0, 0  # the last step's share, the last line's (1/1000)
        self._profiler, self._predicted_mb = None, None

    def start(self, model, optimizers, autocast, batch_size, seq_len, tokens_per_step):
        """Print the budget; return the micro-batch to train with: batch_size, unless a
        preflight on a CPU with AR_PREFLIGHT_FIT_MB predicts it would not fit."""
        self.model, self.optimizers, self.autocast = model, optimizers, autocast
        self.seq_len, self.tokens_per_step = seq_len, tokens_per_step
        self.num_steps = -(-self.token_budget // tokens_per_step) if self.token_budget else None
        self.skip_steps = 3 if self.compile else 1  # warm-up / compilation steps not timed
        if self.num_steps:
            print(f"budget: {self.token_budget} tokens = {self.num_steps} steps")
        else:
            print(f"budget: {self.time_budget:g} s of training")
        self.batch = batch_size
        if self.preflight and self.fit_mb and self.device.type == "cpu" and not self.compile:
            before = self._snapshot() if self.in_process else None
            fit, self._predicted_mb = self._fit_batch(batch_size)
            if fit < batch_size:
                print(f"preflight: DEVICE_BATCH_SIZE {batch_size} would peak at about "
                      f"{self._predicted_mb:.0f} MB, above {self.fit_mb:.0f} MB: probing {fit}",
                      flush=True)
                self.batch = fit
                # the session repairs the batch and starts again: a probe is all this run is
                self.in_process, self.probe = False, True
            elif before is not None:
                self._restore(before)  # the ramp's steps trained the model: undone
            del before  # freed before the peak is reset, which trims the heap
            reset_peak_memory(self.device)  # the probe's peak is its batch's, not the ramp's
        self.grad_accum = tokens_per_step // (self.batch * seq_len)
        # a probe runs one micro-batch per step: the peak of the whole step, in less time
        self.micro_steps = 1 if self.probe else self.grad_accum
        return self.batch

    def begin_step(self, step):
        """Start step `step` (0 = the first): the share of the budget spent so far."""
        import torch

        progress = step / self.num_steps if self.num_steps else \
            min(self.training_seconds / self.time_budget, 1.0)
        if self.profile_out and step == self.skip_steps - 1:  # the last untimed: compiled
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._profiler = torch.profiler.profile(activities=activities)
            self._profiler.start()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self._t0 = time.time()
        return progress

    def end_micro_steps(self):
        import torch

        if self.probe and self.device.type == "cuda":
            torch.cuda.synchronize()
        self._t_micro = time.time() - self._t0

    def end_step(self, step, loss, lrm):
        """After step `step` (1 = the first, done): the progress line where one is due, FAIL
        and exit 1 on a NaN or exploding loss, the step line, an in-process probe's verdict
        after its steps; True once the budget is spent or a probe's steps are done."""
        dt = time.time() - self._t0
        if self.probe:  # the whole step it stands for: every micro-batch, one update
            dt += self._t_micro * (self.grad_accum / self.micro_steps - 1)
        if self._profiler is not None:
            self._profiler.stop()
            self._write_profile(step, dt)
            self._profiler = None
        failed = not math.isfinite(loss) or loss > 100
        self.steps = step
        self.step_times.append(dt)
        if self.probe:  # no curve: a probe's steps are not the trial's
            if failed:
                print(f"FAIL: training loss {loss} at step {step - 1}", flush=True)
                sys.exit(1)
            return step >= self.preflight
        if step > self.skip_steps:
            self.training_seconds += dt
            self.timed_tokens += self.tokens_per_step
        self._smooth_loss = 0.9 * self._smooth_loss + 0.1 * loss
        shown = self._smooth_loss / (1 - 0.9**step)  # bias-corrected moving average
        done = step >= self.num_steps if self.num_steps else \
            (step > self.skip_steps and self.training_seconds >= self.time_budget)
        self._progress(step, shown, due=step == 1 or done or failed)
        if failed:
            print(f"FAIL: training loss {loss} at step {step - 1}", flush=True)
            sys.exit(1)
        if done or step <= 2 or time.time() - self._last_print >= 5:
            self._last_print = time.time()
            share = step / self.num_steps if self.num_steps else \
                self.training_seconds / self.time_budget
            print(f"step {step:05d} ({100 * min(share, 1):.1f}%) | loss {shown:.4f} | "
                  f"lrm {lrm:.2f} | dt {dt * 1000:.0f} ms | "
                  f"tok/s {self.tokens_per_step / dt:,.0f}", flush=True)
        if self.in_process and (step == self.preflight or (done and step < self.preflight)):
            said = f" predicted_peak_mb {self._predicted_mb:.1f}" \
                if self._predicted_mb is not None else ""
            print(f"preflight: ok peak_memory_mb {peak_memory(self.device):.1f} step_seconds "
                  f"{self._step_seconds():.4f} preflight_batch {self.batch}{said}", flush=True)
        return done

    def _progress(self, step, loss, due):
        """The progress line: when `due`, and where waiting one more step could take the
        curve more than 2 % of the budget past the last line -- a step as long as this one
        under a token budget, twice as long under a time budget (steps' times vary)."""
        fraction = min(step / self.num_steps, 1.0) if self.num_steps else \
            min(self.training_seconds / self.time_budget, 1.0)
        share, self._fraction = fraction - self._fraction, fraction
        ahead = 1 if self.num_steps else 2
        if not due and round(1000 * (fraction + ahead * share)) - self._printed <= 20:
            return
        self._printed = round(1000 * fraction)
        print(f"progress: {fraction:.3f} step {step} tokens {step * self.tokens_per_step} "
              f"loss {loss:.4f} seconds {self.training_seconds:.1f}", flush=True)

    def _step_seconds(self):
        """The median step time so far, the first step left out: it pays for compiling."""
        warm = self.step_times[1:] or self.step_times
        return sorted(warm)[len(warm) // 2]

    def _snapshot(self):
        """Deep copies of what the fit ramp's steps change: weights, optimizer state, the
        torch random generator."""
        import copy

        import torch

        return (copy.deepcopy(self.model.state_dict()),
                [copy.deepcopy(opt.state_dict()) for opt in self.optimizers],
                torch.get_rng_state())

    def _restore(self, snapshot):
        import torch

        model_state, optimizer_states, rng = snapshot
        self.model.load_state_dict(model_state)
        for opt, state in zip(self.optimizers, optimizer_states, strict=True):
            opt.load_state_dict(state)
        torch.set_rng_state(rng)

    def end_preflight(self, x):
        """A probe (not an in-process one) ends here: one forward of the next batch (the
        evaluation's size), then the `---` block of its memory peak and step seconds, and
        exit 0. The forward runs on the eager module, as evaluate_bpb does: through the
        compiled one it would compile a no-grad graph the trial never uses (10-25 s on a
        GPU)."""
        import torch

        if not self.probe:
            return
        with torch.no_grad(), self.autocast:
            getattr(self.model, "_orig_mod", self.model)(x)  # torch.compile's wrapper
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        print("---")
        print("preflight: ok")
        print(f"peak_memory_mb: {peak_memory(self.device):.1f}")
        print(f"preflight_batch: {self.batch}")
        if self._predicted_mb is not None:
            print(f"predicted_peak_mb: {self._predicted_mb:.1f}")
        print(f"step_seconds: {self._step_seconds():.4f}")
        print(f"num_steps: {self.steps}")
        print(f"total_seconds: {time.time() - self.t_start:.1f}")
        sys.exit(0)

    def finish(self, model, batch_size, seq_len, flops_per_token, **extra):
        """val_bpb of `model` by evaluate_bpb (FAIL and exit 1 if not finite) or, under
        AR_SCORE=harness, the model exported for the harness to score; then the `---`
        summary, `extra` as its lines after `corpus`."""
        if self.score == "harness":
            out_dir = os.environ.get("AR_OUT_DIR") or "."
            export_for_harness(model, os.path.join(out_dir, "model.pt2"), seq_len, self.device)
            val_bpb = None
            print(f"exported the model for the harness to {out_dir}/model.pt2", flush=True)
        else:
            with self.autocast:
                val_bpb = evaluate_bpb(model, batch_size, seq_len, self.device, self.data_dir)
            if not math.isfinite(val_bpb):
                print(f"FAIL: val_bpb is {val_bpb}", flush=True)
                sys.exit(1)
        seconds = self.training_seconds
        tokens_per_second = self.timed_tokens / seconds if seconds > 0 else 0.0
        peak_mb = peak_memory(self.device)
        cuda = self.device.type == "cuda"
        mfu = 100 * flops_per_token * tokens_per_second / PEAK_FLOPS if cuda else 0.0
        print("---")
        if val_bpb is not None:
            print(f"val_bpb: {val_bpb:.6f}")
        print(f"training_seconds: {seconds:.1f}")
        print(f"total_seconds: {time.time() - self.t_start:.1f}")
        print(f"peak_memory_mb: {peak_mb:.1f}")
        if cuda:
            print(f"peak_vram_mb: {peak_mb:.1f}")
        print(f"mfu_percent: {mfu:.2f}")
        print(f"total_tokens_M: {self.steps * self.tokens_per_step / 1e6:.3f}")
        print(f"tokens_per_second: {tokens_per_second:.0f}")
        print(f"num_steps: {self.steps}")
        print(f"num_params_M: {sum(p.numel() for p in model.parameters()) / 1e6:.3f}")
        print(f"corpus: {corpus_id(self.data_dir)}")
        for key, value in extra.items():
            print(f"{key}: {value}")
        print(f"device: {self.device.type}")

    def _fit_batch(self, batch_size):
        """(the largest power of two <= batch_size whose steps are predicted to peak under
        AR_PREFLIGHT_FIT_MB, the predicted peak of batch_size): two optimizer steps on
        micro-batches of 1, 2, 4, ... sequences below it, each size measured only if the line
        through the last two predicts it fits -- the first two are the smallest there are, so
        the ramp is not killed; below 4 sequences there is no line, and the probe runs its
        own batch."""
        x, y = next(train_batches(batch_size, self.seq_len, self.seed, self.device,
                                  self.data_dir))
        sizes, peaks = [], []
        b = 1
        while b < batch_size:
            if len(peaks) >= 2 and predict(sizes, peaks, b) > self.fit_mb:
                break
            reset_peak_memory(self.device)
            for _ in range(2):  # a second step peaks higher than the first (the heap's growth)
                with self.autocast:
                    loss = self.model(x[:b], y[:b])
                loss.backward()
                for opt in self.optimizers:
                    opt.step()
                self.model.zero_grad(set_to_none=True)
                del loss
            sizes.append(b)
            peaks.append(peak_memory(self.device))
            b *= 2
        if sizes:
            print("preflight: peak MB by micro-batch " + ", ".join(
                f"{b}: {p:.0f}" for b, p in zip(sizes, peaks, strict=True)), flush=True)
        if len(peaks) < 2:
            return batch_size, None
        fit = batch_size
        while fit > 1 and RAMP_TO_PROBE * predict(sizes, peaks, fit) > self.fit_mb:
            fit //= 2
        return fit, predict(sizes, peaks, batch_size)

    def _write_profile(self, number, seconds):
        """The ops of one profiled step, the most self device (on a CPU: CPU) time first."""
        cuda = self.device.type == "cuda"
        sort = "self_device_time_total" if cuda else "self_cpu_time_total"
        table = self._profiler.key_averages().table(sort_by=sort, row_limit=40)
        with open(self.profile_out, "w") as f:
            f.write(f"step {number}: {self.grad_accum} x {self.batch} x {self.seq_len} tokens, "
                    f"{seconds:.3f} s under the profiler, device {self.device}, compile "
                    f"{int(self.compile)}, attention {self.attention}\n{table}\n")
        print(f"profile of step {number}: {self.profile_out}", flush=True)


def predict(sizes, peaks, b):
    slope = max(0.0, (peaks[-1] - peaks[-2]) / (sizes[-1] - sizes[-2]))
    return peaks[-1] + slope * (b - sizes[-1])


def peak_memory(device):
    """MB: the device's allocation peak on a GPU, else the process's resident peak."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    try:  # Linux: VmHWM, which reset_peak_memory can set back
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**10
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    except ImportError:  # Windows
        return 0.0


def reset_peak_memory(device):
    if device.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # hand freed heap back to the kernel, so the next peak is the next step's own
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (ImportError, OSError, AttributeError):
        pass  # not glibc: the peak below may include what earlier steps left cached
    try:  # Linux: 5 sets the resident peak back to the current resident size
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # the peak only grows then; the fit ramp measures growing batches anyway


def export_for_harness(model, path, seq_len, device):
    """The harness scores a torch.export program (a graph of tensor ops: no code of train.py
    runs at scoring time), any batch size, this sequence length."""
    import torch

    model.eval()
    model.block_mask = None  # train.py's FlexAttention mask: the graph holds the SDPA one
    example = torch.randint(0, VOCAB_SIZE, (2, seq_len), device=device)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(model, (example,), dynamic_shapes={"idx": {0: batch}})
    torch.export.save(program, path)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build the byte-level dataset for train.py.")
    parser.add_argument("--dataset", help="a text file or a folder of text files "
                        "(default: the Python standard library's .py sources)")
    parser.add_argument("--out", help="output folder (default: the cache folder)")
    parser.add_argument("--force", action="store_true", help="rebuild if OUT already has data")
    parser.add_argument("--test", action="store_true", help="the test split of the default "
                        "corpus in OUT (built beside it once): print its folder")
    args = parser.parse_args(argv)
    if args.test:
        print(ensure_test(args.out or default_data_dir()))
        return
    if args.dataset:
        src = Path(args.dataset).resolve()
        if not src.exists():
            sys.exit(f"prepare: --dataset {args.dataset} does not exist")
        docs, source, held_out = text_documents(src), str(src), None
        tag = hashlib.sha256(str(src).encode()).hexdigest()[:8]
        out = args.out or default_data_dir().parent / f"{src.name}-{tag}"
    else:
        (docs, held_out), source = default_documents(), default_source()
        out = args.out or default_data_dir()
    try:
        out = build(docs, out, source, force=args.force, held_out=held_out)
    except OSError as exc:
        sys.exit(f"prepare: cannot write {out} ({exc.strerror or exc}); choose another --out")
    meta = json.loads((Path(out) / "meta.json").read_text())
    print(f"prepare: {meta['source']}: {meta['bytes']['train']:,} train bytes, "
          f"{meta['bytes']['val']:,} val bytes", file=sys.stderr)
    print(out)


if __name__ == "__main__":
    main()
