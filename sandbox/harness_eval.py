"""The harness's own measurement of a trial's model: fixed code that no method can edit.

The session copies this file, the trial's prepare.py (read-only to every method) and the model
that train.py exported (`torch.export`, to $AR_OUT_DIR/model.pt2) into a fresh folder and runs
it in a second sandbox, where the validation split is visible (it was hidden from training):

1. load the exported program (a graph of tensor operations: nothing of train.py runs);
2. check that it is causal: with the bytes from position t on replaced at random, the logits
   before t must not change, for several t;
3. score it with prepare.evaluate_bpb and print the summary block the classifier reads.

Exit codes: 4 non-causal, 5 no usable model. Environment: AR_DEVICE, AR_DATA_DIR,
AR_EVAL_SEQ_LEN (else the model's own input length), AR_EVAL_BATCH, AR_EVAL_TOKENS.
"""

import math
import os
import sys
import time
from pathlib import Path

import torch

import prepare

HERE = Path(__file__).resolve().parent


class Scored:
    """What evaluate_bpb calls: the exported module, whose train()/eval() torch refuses."""

    training = False

    def __init__(self, module):
        self.module = module

    def __call__(self, idx):
        return self.module(idx)

    def eval(self):
        return self

    def train(self, mode=True):
        return self


def fail(code, message):
    print(message, flush=True)
    sys.exit(code)


def device_of(name):
    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    return device


def check_causal(module, x):
    """Logits before t must not depend on bytes at t and later."""
    generator = torch.Generator().manual_seed(0)
    base = module(x).float()
    if tuple(base.shape) != (*x.shape, prepare.VOCAB_SIZE):
        fail(5, f"model returns shape {tuple(base.shape)}, not (batch, {x.size(1)}, "
             f"{prepare.VOCAB_SIZE})")
    if not torch.isfinite(base).all():
        fail(5, "model returns NaN or infinite logits")
    scale = max(1.0, base.abs().max().item())
    T = x.size(1)
    for t in sorted({1, T // 4, T // 2, T - 1} - {0}):
        changed = x.clone()
        changed[:, t:] = torch.randint(0, prepare.VOCAB_SIZE, (x.size(0), T - t),
                                       generator=generator).to(x.device)
        moved = (module(changed).float()[:, :t] - base[:, :t]).abs().max().item()
        if not moved <= 1e-4 * scale:
            fail(4, f"non-causal: logits before position {t} moved by {moved:.3g} when the "
                 f"bytes from {t} on were changed")


def main():
    started = time.time()
    path = HERE / "model.pt2"
    if not path.is_file():
        fail(5, "no model to score: train.py must export its model to $AR_OUT_DIR/model.pt2 "
             "when AR_SCORE=harness (README, 'Scores')")
    try:
        program = torch.export.load(str(path))
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same answer
        fail(5, f"model.pt2 is not a torch.export program: {type(e).__name__}: {e}")
    device = device_of(os.environ.get("AR_DEVICE", ""))
    module = program.module()
    seq_len = int(os.environ.get("AR_EVAL_SEQ_LEN") or 0)
    if not seq_len and program.example_inputs:
        seq_len = program.example_inputs[0][0].shape[1]
    batch = int(os.environ.get("AR_EVAL_BATCH") or 16)
    data_dir = prepare.ensure_data()
    val = prepare.load_split("val", data_dir)
    rows = min(4, (len(val) - 1) // seq_len)
    if rows < 1:
        fail(5, f"val holds {len(val)} bytes, too few for windows of {seq_len}")
    import numpy as np

    probe = np.asarray(val[: rows * seq_len]).astype(np.int64).reshape(rows, seq_len)
    with torch.no_grad():
        check_causal(module, torch.from_numpy(probe).to(device))
    val_bpb = prepare.evaluate_bpb(Scored(module), batch, seq_len, device, data_dir)
    if not math.isfinite(val_bpb):
        fail(5, f"val_bpb is {val_bpb}")
    print("---")
    print(f"val_bpb: {val_bpb:.6f}")
    print("causal: yes")
    print(f"eval_seq_len: {seq_len}")
    print(f"corpus: {prepare.corpus_id(data_dir)}")
    print(f"eval_seconds: {time.time() - started:.1f}")


if __name__ == "__main__":
    main()
