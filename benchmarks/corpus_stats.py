"""What the evaluation reads, before and after the v2 corpus (issue 11's metric).

Before: the first AR_EVAL_TOKENS bytes of val, on the corpus with every stdlib file. After:
the windows prepare.eval_windows spreads over val, on the corpus without near-duplicates.
For both it prints which files the scored bytes come from and the share that lies in
generated charmap-style tables (files whose name is under encodings/, counted by name only
to *report* the effect: the rule that drops them reads content, see prepare.near_duplicates).

    python benchmarks/corpus_stats.py [--seq-len 256] [--eval-tokens 262144]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "baseline_train"))
import prepare  # noqa: E402


def spans(docs):
    """(start, end, path) of each val document in the val stream (separator included)."""
    out, pos = [], 0
    for rel, data in docs:
        if prepare.is_val(rel):
            out.append((pos, pos + len(data) + 1, rel))
            pos += len(data) + 1
    return out


def owners(val_spans, ranges):
    """Bytes of `ranges` (start, end) per path."""
    per = {}
    for a, b in ranges:
        for s, e, rel in val_spans:
            lo, hi = max(a, s), min(b, e)
            if lo < hi:
                per[rel] = per.get(rel, 0) + hi - lo
    return per


def report(title, per):
    total = sum(per.values())
    tables = sum(n for rel, n in per.items() if rel.startswith("encodings/"))
    print(f"{title}: {total:,} scored bytes from {len(per)} files; under encodings/: "
          f"{tables:,} ({100 * tables / total:.1f} %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--eval-tokens", type=int, default=prepare.EVAL_TOKENS)
    args = parser.parse_args()
    root = Path(prepare.sysconfig.get_paths()["stdlib"])
    every = prepare.text_documents(root, suffix=".py")
    kept = prepare.stdlib_documents()
    dropped = len(every) - len(kept)
    dropped_bytes = sum(len(d) for _, d in every) - sum(len(d) for _, d in kept)
    print(f"stdlib .py files: {len(every)}; left out as generated tables or "
          f"near-duplicates: {dropped} ({dropped_bytes:,} bytes)")
    old_val = spans(every)
    n = (min(args.eval_tokens, old_val[-1][1]) - 1) // args.seq_len * args.seq_len + 1
    report("v1, first bytes of val", owners(old_val, [(0, n)]))
    new_val = spans(kept)
    starts = prepare.eval_windows(new_val[-1][1], args.seq_len, args.eval_tokens)
    report("v2, windows spread over val",
           owners(new_val, [(int(s), int(s) + args.seq_len + 1) for s in starts]))
    old_tables = sum(e - s for s, e, rel in old_val if rel.startswith("encodings/"))
    new_tables = sum(e - s for s, e, rel in new_val if rel.startswith("encodings/"))
    print(f"encodings/ in all of val: v1 {old_tables:,} of {old_val[-1][1]:,} bytes, "
          f"v2 {new_tables:,} of {new_val[-1][1]:,}")
    print(f"v2 windows: {len(starts)}, first at {starts[0]:,}, last at {starts[-1]:,} "
          f"(val {new_val[-1][1]:,} bytes); median gap {int(np.median(np.diff(starts))):,}")


if __name__ == "__main__":
    main()
