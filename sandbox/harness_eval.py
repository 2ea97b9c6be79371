"""The harness's own measurement of a trial's model: fixed code that no method can edit.

The session copies this file, the trial's prepare.py (read-only to every method) and the model
that train.py exported (`torch.export`, to $AR_OUT_DIR/model.pt2) into a fresh folder and runs
it in a second sandbox, where the validation split is visible (it was hidden from training):

1. check the archive before torch reads it: weights and graph only, no pickled object, no
   compiled library (a pickle runs code when it is read; torch.export.save writes none);
   every torch.load it triggers is forced to weights_only;
2. load the exported program (a graph of tensor operations: nothing of train.py runs) and
   refuse one that is not a pure function of its input (a graph that writes its own buffers
   could count its calls) or calls operators outside aten/prims (a custom op is someone's code);
3. score it with prepare.evaluate_bpb through `Audited`, which turns every scored call into
   several calls of the same shape that mix the scored rows with causality audits, drawn
   at random for this evaluation; one audit that moves is a `non-causal` verdict.

Why the audits catch a model that looks ahead (the bound): an audit copies a scored window,
replaces its bytes from a random position t on (1 <= t < T; the byte at t always differs) and
runs it in another call, beside other rows of the evaluation; its logits before t must equal
the ones that were scored. Logits that read the byte after their position are caught when
t - 1 is such a position, so a model that looks ahead at a share f of the scored positions
escapes one audit with probability at most 1 - f and all of them with at most (1 - f)**A.
There are A >= AUDITS = 1024 audits per evaluation: f = 1 % escapes with p <= 3.4e-5, 0.5 %
with 0.6 %, and a look-ahead at fewer positions gains at most that share of the bytes' bits.
A model cannot tell a scored row from an audit by the call (same shape, same kinds of rows,
order drawn at random), and telling them apart by the row does not help it: the logits it
must repeat were computed from a byte the audit no longer holds. A model whose rows depend on
each other fails the same check (its other rows differ between the two calls).

Exit codes: 3 a bad setting, 4 non-causal, 5 no usable model. Environment: AR_DEVICE,
AR_GPU_MEM_FRACTION (the trial's share of its GPU, held to here too), AR_DATA_DIR,
AR_EVAL_SEQ_LEN (else the model's own input length), AR_EVAL_BATCH, AR_EVAL_TOKENS
(else prepare.py's for TIME_BUDGET / AR_TOKEN_BUDGET),
AR_AUDIT_SEED (tests only: replays one evaluation's audits; the session never sets it).
"""

import os

# Before torch is imported: every torch.load inside torch.export.load unpickles tensors only,
# whatever its call site asks for.
os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)

import json  # noqa: E402
import math  # noqa: E402
import operator  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import prepare  # noqa: E402

HERE = Path(__file__).resolve().parent
AUDITS = 1024  # at least this many causality audits per evaluation (the bound above)
TOLERANCE = 1e-4  # an audit moved when a logit moved by more than this times the largest
MAX_AUDITS_PER_ROW = 64  # an evaluation of fewer than AUDITS / 64 windows gets fewer audits

# What torch.export.save writes into a .pt2 archive (below its root folder). Anything else
# (AOTInductor libraries, legacy pickled weight files, extra files) is refused unread.
ARCHIVE_ENTRIES = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/sample_inputs/model\.pt"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+)")
OPERATOR_NAMESPACES = {"aten", "prims"}
PLAIN_FUNCTIONS = {operator.getitem, operator.add, operator.sub, operator.mul,
                   operator.floordiv, operator.truediv, operator.mod, operator.neg,
                   operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
                   operator.ge, math.ceil, math.floor}


class Refused(Exception):
    """The model cannot be scored; the message says why."""


def said(error):
    """An exception as one line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def fail(code, message):
    print(message, flush=True)
    sys.exit(code)


def device_of(name):
    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    return device


def gpu_share(text):
    """AR_GPU_MEM_FRACTION as the trial got it: the scoring holds to the trial's share of its
    GPU (a session running several trials on one GPU gives each a share). None: all of it."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        share = float(text)
    except ValueError:
        share = float("nan")
    if not 0 < share <= 1:
        fail(3, f"AR_GPU_MEM_FRACTION={text!r} must be a number in (0, 1]")
    return share


def use_device(device, share):
    """Make `device` current and cap this process at `share` of its memory."""
    if device.type != "cuda":
        return
    torch.cuda.set_device(device)
    if share is not None:
        torch.cuda.set_per_process_memory_fraction(share, device)


# ---------------------------------------------------------------------------
# Loading: weights and a graph, nothing that runs code
# ---------------------------------------------------------------------------


def check_archive(path):
    """Refuse a model.pt2 holding anything but what torch.export.save writes, or any payload
    stored as a pickle."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            root = names[0].split("/", 1)[0] + "/" if names else ""
            for name in names:
                if name.endswith("/"):
                    continue
                inner = name[len(root):] if name.startswith(root) else name
                if not ARCHIVE_ENTRIES.fullmatch(inner):
                    raise Refused(f"model.pt2 holds {inner!r}, which torch.export.save does "
                                  "not write: only weights and a graph are scored")
            for config in ("data/weights/model_weights_config.json",
                           "data/constants/model_constants_config.json"):
                if root + config not in names:
                    raise Refused(f"model.pt2 has no {config}: save it with torch.export.save")
                payloads = json.loads(archive.read(root + config)).get("config", {})
                for fqn, meta in payloads.items():
                    if meta.get("use_pickle") or not re.fullmatch(
                            r"(weight|tensor)_\d+", str(meta.get("path_name", ""))):
                        raise Refused(f"model.pt2 stores {fqn!r} as a pickled object: a "
                                      "scored model holds plain tensors only")
    except (zipfile.BadZipFile, OSError, ValueError, AttributeError) as e:
        raise Refused(f"model.pt2 is not a torch.export archive: {said(e)}") from None


def check_program(program):
    """A pure function of its input, made of aten/prims operators."""
    signature = program.graph_signature
    if signature.buffers_to_mutate or signature.user_inputs_to_mutate:
        written = sorted({*signature.buffers_to_mutate.values(),
                          *signature.user_inputs_to_mutate.values()})
        raise Refused(f"model writes its own state ({', '.join(written)}): a scored model "
                      "must be a pure function of its input")
    if len(signature.user_outputs) != 1:
        raise Refused(f"model returns {len(signature.user_outputs)} outputs, not the logits")
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        target = node.target
        namespace = getattr(target, "namespace", None)
        if isinstance(target, torch._ops.OpOverload) and namespace in OPERATOR_NAMESPACES:
            continue
        symbolic = (getattr(target, "__module__", "") == "torch"
                    and getattr(target, "__name__", "").startswith("sym_"))
        if target in PLAIN_FUNCTIONS or symbolic:  # arithmetic on shapes
            continue
        raise Refused(f"model calls {target} (node {node.name}): a scored model is made of "
                      "aten operators only")


def load(path):
    check_archive(path)
    try:
        program = torch.export.load(str(path))
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same answer
        raise Refused(f"model.pt2 is not a torch.export program: {said(e)}") from None
    try:  # functional form: every write to a buffer or an input shows in the signature
        program = program.run_decompositions({})
    except Exception as e:  # noqa: BLE001
        raise Refused(f"model.pt2's graph cannot be made functional: {said(e)}") from None
    check_program(program)
    return program


# ---------------------------------------------------------------------------
# Scoring with audits
# ---------------------------------------------------------------------------


class Counter:
    """A stand-in model: counts the rows evaluate_bpb scores, so audits can be planned."""

    training = False

    def __init__(self):
        self.rows = 0

    def __call__(self, idx):
        self.rows += idx.size(0)
        return torch.zeros(*idx.shape, prepare.VOCAB_SIZE, device=idx.device)

    def eval(self):
        return self

    def train(self, mode=True):
        return self


class NonCausal(Exception):
    pass


class Audited:
    """What evaluate_bpb calls. Each scored call of b rows becomes 1 + r calls of b rows: every
    window of the call appears once in each, as its scored row in one of them (drawn at
    random) and as an audit in the others, shuffled within the call and across calls."""

    training = False

    def __init__(self, module, audits_per_row, rng):
        self.module = module
        self.per_row = audits_per_row
        self.rng = rng
        self.audits = 0
        self.calls = 0

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def _run(self, batch):
        logits = self.module(batch)
        self.calls += 1
        if tuple(logits.shape) != (*batch.shape, prepare.VOCAB_SIZE):
            raise Refused(f"model returns shape {tuple(logits.shape)}, not (batch, "
                          f"{batch.size(1)}, {prepare.VOCAB_SIZE})")
        logits = logits.float()
        if not torch.isfinite(logits).all():
            raise Refused("model returns NaN or infinite logits")
        return logits

    def __call__(self, idx):
        b, T = idx.shape
        if T < 2:
            return self._run(idx)
        calls, V = 1 + self.per_row, prepare.VOCAB_SIZE
        x = idx.cpu().numpy()
        scored_in = self.rng.integers(0, calls, size=b)  # the call that holds window j's score
        cuts = self.rng.integers(1, T, size=(calls, b))  # an audit's t, per call and window
        before = np.arange(T)[None, :] < cuts[:, :, None]  # (calls, b, T): what must not move
        outputs = [None] * calls
        for k in self.rng.permutation(calls):
            noise = self.rng.integers(0, V, size=(b, T))
            rows = np.arange(b)
            noise[rows, cuts[k]] = (x[rows, cuts[k]] + self.rng.integers(1, V, size=b)) % V
            batch = np.where(before[k], x, noise)  # the byte at t always differs
            batch[scored_in == k] = x[scored_in == k]
            order = self.rng.permutation(b)  # rows shuffled within the call
            logits = self._run(torch.from_numpy(batch[order]).to(idx.device))
            inverse = np.empty(b, dtype=np.int64)
            inverse[order] = np.arange(b)
            outputs[k] = logits[torch.from_numpy(inverse).to(logits.device)]
        scored = torch.stack([outputs[scored_in[j]][j] for j in range(b)])
        scale = max(1.0, scored.abs().max().item())
        for k in range(calls):
            audited = scored_in != k
            moved = (outputs[k] - scored).abs().amax(dim=2)  # (b, T)
            moved = moved.masked_fill(~torch.from_numpy(before[k]).to(moved.device), 0.0)
            worst = moved.amax(dim=1).cpu().numpy()
            self.audits += int(audited.sum())
            for j in np.flatnonzero(audited & ~(worst <= TOLERANCE * scale)):
                t = int(cuts[k, j])
                raise NonCausal(
                    f"non-causal: logits before position {t} moved by {worst[j]:.3g} when the "
                    f"bytes from {t} on were changed (one of {self.audits} audits so far, "
                    "drawn at random by the harness)")
        return scored


def audits_per_row(rows):
    """Audits per scored window so that an evaluation has at least AUDITS of them."""
    return max(1, min(MAX_AUDITS_PER_ROW, math.ceil(AUDITS / max(rows, 1))))


def score(module, batch, seq_len, device, data_dir, seed):
    """(val_bpb, audits run, windows scored): prepare.evaluate_bpb through the audits."""
    counter = Counter()
    prepare.evaluate_bpb(counter, batch, seq_len, device, data_dir)
    audited = Audited(module, audits_per_row(counter.rows), np.random.default_rng(seed))
    with torch.no_grad():
        val_bpb = prepare.evaluate_bpb(audited, batch, seq_len, device, data_dir)
    return val_bpb, audited.audits, counter.rows


def main():
    started = time.time()
    path = HERE / "model.pt2"
    if not path.is_file():
        fail(5, "no model to score: train.py must export its model to $AR_OUT_DIR/model.pt2 "
             "when AR_SCORE=harness (README, 'Scores')")
    try:
        program = load(path)
    except Refused as e:
        fail(5, str(e))
    device = device_of(os.environ.get("AR_DEVICE", ""))
    use_device(device, gpu_share(os.environ.get("AR_GPU_MEM_FRACTION")))
    module = program.module()
    seq_len = int(os.environ.get("AR_EVAL_SEQ_LEN") or 0)
    if not seq_len and program.example_inputs:
        seq_len = program.example_inputs[0][0].shape[1]
    batch = int(os.environ.get("AR_EVAL_BATCH") or 16)
    seed = int(os.environ.get("AR_AUDIT_SEED") or secrets.randbits(63))
    data_dir = prepare.ensure_data()
    try:
        val_bpb, audits, windows = score(module, batch, seq_len, device, data_dir, seed)
    except NonCausal as e:
        fail(4, str(e))
    except Refused as e:
        fail(5, str(e))
    if not math.isfinite(val_bpb):
        fail(5, f"val_bpb is {val_bpb}")
    print("---")
    print(f"val_bpb: {val_bpb:.6f}")
    print("causal: yes")
    print(f"audits: {audits}")
    print(f"audit_seed: {seed}")
    print(f"eval_seq_len: {seq_len}")
    print(f"eval_windows: {windows}")  # as many as the trial's own evaluation would score
    print(f"corpus: {prepare.corpus_id(data_dir)}")
    print(f"eval_seconds: {time.time() - started:.1f}")


if __name__ == "__main__":
    main()
