"""What the harness's causality audits cost (issue 21, point 1): the packaged baseline, exported
as a trial scored by the harness would export it, scored by prepare.evaluate_bpb alone and by
sandbox/harness_eval.py (the same metric, with >= 1024 audits mixed into its calls). Prints
the median seconds of each over --repeats runs, their ratio, and that both give one val_bpb.

    python benchmarks/harness_audits.py [--eval-tokens 262144] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "baseline_train"

MEASURE = """
import json, statistics, sys, time
import harness_eval as h
import prepare

class Plain:
    training = False
    def __init__(self, m): self.m = m
    def __call__(self, idx): return self.m(idx)
    def eval(self): return self
    def train(self, mode=True): return self

program = h.load(sys.argv[1])
module, seq_len = program.module(), program.example_inputs[0][0].shape[1]
data = prepare.ensure_data()
plain, audited, values = [], [], set()
for i in range(int(sys.argv[2])):
    t = time.perf_counter()
    with h.torch.no_grad():
        values.add(round(prepare.evaluate_bpb(Plain(module), 16, seq_len, "cpu", data), 6))
    plain.append(time.perf_counter() - t)
    t = time.perf_counter()
    value, audits, _ = h.score(module, 16, seq_len, "cpu", data, i)
    audited.append(time.perf_counter() - t)
    values.add(round(value, 6))
print(json.dumps({"plain": plain, "audited": audited, "values": sorted(values),
                  "audits": audits, "seq_len": int(seq_len)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-tokens", type=int, default=2**18)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = subprocess.run([sys.executable, str(BASELINE / "prepare.py")], check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()[-1]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(BASELINE / "prepare.py", folder / "prepare.py")
        shutil.copy(ROOT / "sandbox" / "harness_eval.py", folder / "harness_eval.py")
        env = {**os.environ, "AR_DATA_DIR": data, "AR_EVAL_TOKENS": str(args.eval_tokens),
               "AR_OUT_DIR": tmp, "AR_SCORE": "harness", "AR_TOKEN_BUDGET": "16384",
               "AR_DEVICE": "cpu", "PYTHONPATH": tmp}
        subprocess.run([sys.executable, str(BASELINE / "train.py")], env=env, check=True,
                       capture_output=True, cwd=tmp)
        out = subprocess.run([sys.executable, "-c", MEASURE, str(folder / "model.pt2"),
                              str(args.repeats)], env=env, check=True, capture_output=True,
                             text=True, cwd=tmp)
    got = json.loads(out.stdout.splitlines()[-1])
    plain, audited = statistics.median(got["plain"]), statistics.median(got["audited"])
    print(f"baseline (cpu preset, seq_len {got['seq_len']}), {args.eval_tokens:,} evaluation "
          f"bytes, median of {args.repeats}:")
    print(f"  evaluate_bpb alone       {plain:7.2f} s")
    print(f"  with {got['audits']:,} audits       {audited:7.2f} s   (x{audited / plain:.2f})")
    print(f"  val_bpb values seen: {got['values']}")


if __name__ == "__main__":
    main()
