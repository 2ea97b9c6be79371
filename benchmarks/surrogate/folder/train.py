"""A stand-in for baseline_train/train.py that trains nothing (issue 25): it predicts the
val_bpb the real cpu-preset trial reached for its hyperparameter block at a fixed token
budget, from a model fitted to real trials (benchmarks/surrogate/, surrogate.json), with
seeded noise of the measured seed spread, and fails where the data says the configuration
fails. It runs through the real session, git, sandbox and ledger like any training folder
(`--train-dir benchmarks/surrogate/folder`), in well under a second. It ranks optimizers on
this space; it does not replace a real run (README, "A surrogate of our own testbed")."""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import surrogate  # noqa: E402

# --- hyperparameters ---
DEPTH = 4  # number of transformer layers
ASPECT_RATIO = 32  # model width = DEPTH * ASPECT_RATIO (rounded up to a multiple of HEAD_DIM)
HEAD_DIM = 32  # attention head dimension
DEVICE_BATCH_SIZE = 16  # sequences per forward/backward pass
TOTAL_BATCH_SIZE = 4096  # tokens per optimizer step (gradient accumulation makes up the rest)
EMBEDDING_LR = 0.6  # AdamW learning rate of the token embedding
UNEMBEDDING_LR = 0.004  # AdamW learning rate of the output head
MATRIX_LR = 0.08  # Muon learning rate of the transformer matrices
SCALAR_LR = 0.5  # AdamW learning rate of per-layer scalars
WEIGHT_DECAY = 0.2  # weight decay of the Muon matrices
WARMUP_RATIO = 0.0  # share of the budget spent warming the learning rate up
WARMDOWN_RATIO = 0.5  # share of the budget spent decaying the learning rate
FINAL_LR_FRAC = 0.0  # learning rate at the end, as a fraction of the peak
WINDOW_PATTERN = "SSSL"  # per-layer windows: S = half context, L = full
SEQ_LEN = 256  # fixed by the preset
# --- end hyperparameters ---

t0 = time.time()
model = surrogate.load()
names = list(model["spec"]["numeric"]) + list(model["spec"]["categorical"])
config = {name: globals()[name] for name in names}
config["SEQ_LEN"] = SEQ_LEN
seed = int(os.environ.get("AR_SEED", "0"))
status, val_bpb = surrogate.predict(config, model, seed)
report = model["report"]
print(f"surrogate of {report['trials']} cpu trials at {report['token_budget']} tokens "
      f"(held-out Spearman {report['spearman_rho']}), seed {seed}", flush=True)
if status == "oom":
    raise MemoryError("surrogate: configurations like this one ran out of memory")
if status != "ok":
    print(f"FAIL: surrogate: configurations like this one ended {status}")
    sys.exit(1)
print("---")
print(f"val_bpb: {val_bpb:.6f}")
print(f"training_seconds: {time.time() - t0:.3f}")
print("peak_memory_mb: 0.0")
print(f"num_steps: {-(-report['token_budget'] // TOTAL_BATCH_SIZE)}")
print(f"seed: {seed}")
