"""
Pretraining script of the autoresearch sandbox. Single device, single file: the ONE file that
agents and optimizers edit. A byte-level GPT trains for TIME_BUDGET seconds (or for a fixed
number of tokens, AR_TOKEN_BUDGET), then prepare.evaluate_bpb measures val_bpb.

Usage: python train.py   (no flags; the environment sets the budget and the device)

Environment:
    TIME_BUDGET          seconds of training, default 60 (the first step is not counted)
    AR_TOKEN_BUDGET      train exactly ceil(AR_TOKEN_BUDGET / TOTAL_BATCH_SIZE) steps instead
    AR_SEED              seed of the weights and of the batches, default 42
    AR_DEVICE            cpu, cuda, cuda:N or mps; default: cuda, else mps, else cpu
    AR_GPU_MEM_FRACTION  cap on the share of GPU memory this process may allocate
    AR_COMPILE           1 to torch.compile the model; default 1 on cuda, 0 elsewhere
    AR_ATTENTION         sdpa (default) or flex (CUDA only): the sliding-window layers through
                         FlexAttention with a block mask that skips the blocks outside the
                         window, where SDPA runs a masked full attention off its fast path;
                         the same function of the same weights (`make gpu-check` times both)
    AR_DATA_DIR          a prepared data folder (see prepare.py); AR_EVAL_TOKENS: val bytes
    AR_PROFILE_OUT       a file: the last untimed step runs under torch.profiler, and its ops,
                         most device time first (CPU time on a CPU), are written there
    AR_SCORE             "harness": export the model to $AR_OUT_DIR/model.pt2 for the harness
                         to score (val is hidden from training then) instead of evaluating
    AR_PREFLIGHT_STEPS   N > 0: build everything, run N optimizer steps of one micro-batch of
                         DEVICE_BATCH_SIZE each (the memory peak of training) and one
                         evaluation-sized forward, print `preflight: ok`, the peak memory and
                         the seconds a whole step takes, and exit (seconds instead of a trial)
    AR_PREFLIGHT_FIT_MB  with AR_PREFLIGHT_STEPS on a CPU, uncompiled: first measure the peak of
                         two steps at growing micro-batches (1, 2, 4, ... sequences)
                         and, where DEVICE_BATCH_SIZE would peak above this many MB, probe the
                         largest power of two predicted to fit instead (`preflight_batch`)
    OMP_NUM_THREADS      CPU threads (torch's default: one per core); AR_TOKEN_BUDGET runs
                         give the same val_bpb for the same seed and the same thread count
"""

import math
import os
import sys
import time
from contextlib import nullcontext

# Idle OpenMP threads sleep instead of spinning. On a CPU shared with other processes (other
# trials, an LLM server) spinning threads made training 2-10x slower; on an idle CPU sleeping
# costs about 20%. Set before torch loads its OpenMP runtime; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import prepare  # noqa: E402

# --- hyperparameters ---
DEPTH = 4  # number of transformer layers
ASPECT_RATIO = 32  # model width = DEPTH * ASPECT_RATIO, rounded up to a multiple of HEAD_DIM
HEAD_DIM = 32  # attention head dimension (number of heads = width // HEAD_DIM)
DEVICE_BATCH_SIZE = 16  # sequences per forward/backward pass
TOTAL_BATCH_SIZE = 4096  # tokens per optimizer step (gradient accumulation makes up the rest)
EMBEDDING_LR = 0.6  # AdamW learning rate of the token and value embeddings
UNEMBEDDING_LR = 0.004  # AdamW learning rate of the output head
MATRIX_LR = 0.08  # Muon learning rate of the transformer matrices
SCALAR_LR = 0.5  # AdamW learning rate of the per-layer residual scalars
WEIGHT_DECAY = 0.2  # decoupled weight decay of the Muon matrices
WARMUP_RATIO = 0.0  # share of the budget spent warming the learning rate up
WARMDOWN_RATIO = 0.5  # share of the budget spent decaying the learning rate
FINAL_LR_FRAC = 0.0  # learning rate at the end, as a fraction of the peak
WINDOW_PATTERN = "SSSL"  # per-layer window, repeated: S = half context, L = full; last is L
SEQ_LEN = 256  # context length in bytes (fixed by the preset, not searched)
# --- end hyperparameters ---

t_start = time.time()

# ---------------------------------------------------------------------------
# Configuration checks: a bad combination is one line and exit code 2
# ---------------------------------------------------------------------------


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


def check_hyperparameters():
    names = globals()
    for name in ("DEPTH", "ASPECT_RATIO", "HEAD_DIM", "DEVICE_BATCH_SIZE", "TOTAL_BATCH_SIZE",
                 "SEQ_LEN"):
        value = names[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            config_error(f"{name}={value!r} must be a positive integer")
    for name in ("EMBEDDING_LR", "UNEMBEDDING_LR", "MATRIX_LR", "SCALAR_LR", "WEIGHT_DECAY",
                 "WARMUP_RATIO", "WARMDOWN_RATIO", "FINAL_LR_FRAC"):
        value = names[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value) or value < 0:
            config_error(f"{name}={value!r} must be a finite number >= 0")
    if HEAD_DIM % 2:
        config_error(f"HEAD_DIM={HEAD_DIM} must be even (rotary embeddings rotate pairs)")
    if SEQ_LEN < 2:
        config_error(f"SEQ_LEN={SEQ_LEN} must be at least 2")
    micro = DEVICE_BATCH_SIZE * SEQ_LEN
    if TOTAL_BATCH_SIZE < micro or TOTAL_BATCH_SIZE % micro:
        config_error(f"TOTAL_BATCH_SIZE={TOTAL_BATCH_SIZE} must be a positive multiple of "
                     f"DEVICE_BATCH_SIZE * SEQ_LEN = {DEVICE_BATCH_SIZE} * {SEQ_LEN} = {micro}")
    if not isinstance(WINDOW_PATTERN, str) or not WINDOW_PATTERN \
            or set(WINDOW_PATTERN) - set("SL"):
        config_error(f"WINDOW_PATTERN={WINDOW_PATTERN!r} must be a non-empty string of S and L")
    for name in ("WARMUP_RATIO", "WARMDOWN_RATIO", "FINAL_LR_FRAC"):
        if names[name] > 1:
            config_error(f"{name}={names[name]} must be at most 1")


def pick_device():
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


check_hyperparameters()
SEED = env_number("AR_SEED", 42, int)
TIME_BUDGET = env_number("TIME_BUDGET", 60.0, float)
TOKEN_BUDGET = env_number("AR_TOKEN_BUDGET", None, int)  # None: train for TIME_BUDGET
GPU_MEM_FRACTION = env_number("AR_GPU_MEM_FRACTION", None, float)
PREFLIGHT_STEPS = env_number("AR_PREFLIGHT_STEPS", 0, int)  # 0: train for real
PREFLIGHT_FIT_MB = env_number("AR_PREFLIGHT_FIT_MB", None, float)
if TIME_BUDGET <= 0:
    config_error(f"TIME_BUDGET={TIME_BUDGET} must be positive")
if TOKEN_BUDGET is not None and TOKEN_BUDGET <= 0:
    config_error(f"AR_TOKEN_BUDGET={TOKEN_BUDGET} must be positive")
if PREFLIGHT_STEPS < 0:
    config_error(f"AR_PREFLIGHT_STEPS={PREFLIGHT_STEPS} must be 0 or more")
if GPU_MEM_FRACTION is not None and not 0 < GPU_MEM_FRACTION <= 1:
    config_error(f"AR_GPU_MEM_FRACTION={GPU_MEM_FRACTION} must be in (0, 1]")
device = pick_device()
COMPILE = os.environ.get("AR_COMPILE", "1" if device.type == "cuda" else "0").strip()
if COMPILE not in ("0", "1"):
    config_error(f"AR_COMPILE={COMPILE!r} must be 0 or 1")
ATTENTION = os.environ.get("AR_ATTENTION", "sdpa").strip() or "sdpa"
if ATTENTION not in ("sdpa", "flex"):
    config_error(f"AR_ATTENTION={ATTENTION!r} must be sdpa or flex")
if ATTENTION == "flex" and device.type != "cuda":
    config_error(f"AR_ATTENTION=flex needs a CUDA device, not {device.type} (FlexAttention "
                 "has no backward there)")
PROFILE_OUT = os.environ.get("AR_PROFILE_OUT", "").strip()
SCORE = os.environ.get("AR_SCORE", "printed").strip() or "printed"
if SCORE not in ("printed", "harness"):
    config_error(f"AR_SCORE={SCORE!r} must be printed or harness")

# ---------------------------------------------------------------------------
# GPT model: RMSNorm, rotary, QK-norm, ReLU^2 MLP, value embeddings, sliding windows
# ---------------------------------------------------------------------------

VE_GATE_CHANNELS = 32  # input channels of the value-embedding gate
LOGIT_SOFTCAP = 15.0
flex_attention = None  # AR_ATTENTION=flex: compiled FlexAttention (GPT.use_flex_attention)
ROPE_BASE = 10000.0


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def has_ve(layer, depth):
    # Value embeddings on alternating layers, the last layer always included.
    return layer % 2 == (depth - 1) % 2


def apply_rotary(x, cos, sin):
    # x: (B, T, H, D); rotates the pairs (x[i], x[i + D/2]) by position-dependent angles.
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim, n_head, head_dim, value_embedding):
        super().__init__()
        self.n_head, self.head_dim = n_head, head_dim
        self.c_q = nn.Linear(dim, n_head * head_dim, bias=False)
        self.c_k = nn.Linear(dim, n_head * head_dim, bias=False)
        self.c_v = nn.Linear(dim, n_head * head_dim, bias=False)
        self.c_proj = nn.Linear(n_head * head_dim, dim, bias=False)
        gate_in = min(VE_GATE_CHANNELS, dim)
        self.ve_gate = nn.Linear(gate_in, n_head, bias=False) if value_embedding else None

    def forward(self, x, ve, cos, sin, mask):
        B, T, _ = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        if ve is not None:
            # Mix the layer's value embedding into v, per head, through a learned gate in (0, 2).
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., : self.ve_gate.in_features]))
            v = v + gate.unsqueeze(-1).to(v.dtype) * ve.view_as(v).to(v.dtype)
        q = norm(apply_rotary(q, cos, sin)).to(v.dtype)
        k = norm(apply_rotary(k, cos, sin)).to(v.dtype)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif isinstance(mask, torch.Tensor):
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:  # a BlockMask of FlexAttention (AR_ATTENTION=flex)
            y = flex_attention(q, k, v, block_mask=mask)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.c_fc = nn.Linear(dim, 4 * dim, bias=False)
        self.c_proj = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, dim, n_head, head_dim, value_embedding):
        super().__init__()
        self.attn = CausalSelfAttention(dim, n_head, head_dim, value_embedding)
        self.mlp = MLP(dim)

    def forward(self, x, ve, cos, sin, mask):
        x = x + self.attn(norm(x), ve, cos, sin, mask)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, depth, dim, head_dim, seq_len, window_pattern):
        super().__init__()
        self.depth, self.dim = depth, dim
        n_head = dim // head_dim
        self.wte = nn.Embedding(prepare.VOCAB_SIZE, dim)
        self.value_embeds = nn.ModuleDict({
            str(i): nn.Embedding(prepare.VOCAB_SIZE, dim) for i in range(depth) if has_ve(i, depth)
        })
        self.blocks = nn.ModuleList(
            Block(dim, n_head, head_dim, has_ve(i, depth)) for i in range(depth))
        self.lm_head = nn.Linear(dim, prepare.VOCAB_SIZE, bias=False)
        self.resid_lambdas = nn.Parameter(torch.ones(depth))  # scales the residual stream
        self.x0_lambdas = nn.Parameter(torch.zeros(depth))  # mixes the embedding back in
        # Windows: S = half the context, L = the full context; the last layer always sees all.
        pattern = [window_pattern[i % len(window_pattern)] for i in range(depth)]
        pattern[-1] = "L"
        self.windows = [seq_len // 2 if c == "S" else seq_len for c in pattern]
        pos = torch.arange(seq_len)
        near = (pos[:, None] - pos[None, :]) < seq_len // 2
        self.register_buffer("short_mask", (pos[None, :] <= pos[:, None]) & near,
                             persistent=False)
        self.block_mask = None  # the same window for FlexAttention: see use_flex_attention
        inv_freq = ROPE_BASE ** (-torch.arange(0, head_dim, 2).float() / head_dim)
        angles = torch.outer(pos.float(), inv_freq)[None, :, None, :]  # (1, T, 1, D/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    @torch.no_grad()
    def init_weights(self):
        bound = 3**0.5 * self.dim**-0.5  # uniform with std dim**-0.5
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -bound, bound)
            # Output projections start at zero: each block starts as the identity.
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)
        for ve in self.value_embeds.values():
            nn.init.uniform_(ve.weight, -bound, bound)
        self.resid_lambdas.fill_(1.0)
        self.x0_lambdas.fill_(0.1)

    def forward(self, idx, targets=None):
        """idx (B, T) bytes -> logits (B, T, 256), or the mean cross-entropy given targets."""
        T = idx.size(1)
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = x0 = norm(self.wte(idx))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            mask = self.window_mask(T) if self.windows[i] < T else None
            x = block(x, ve, cos, sin, mask)
        logits = self.lm_head(norm(x)).float()
        logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    def window_mask(self, T):
        """The short window at length T: a BlockMask under FlexAttention, else booleans."""
        if self.block_mask is not None and self.block_mask.seq_lengths == (T, T):
            return self.block_mask
        return self.short_mask[:T, :T]

    def use_flex_attention(self, seq_len):
        """The short-window layers through FlexAttention: a block mask of the same window,
        whose blocks entirely outside it are never computed."""
        global flex_attention
        from torch.nn.attention.flex_attention import create_block_mask
        from torch.nn.attention.flex_attention import flex_attention as flex

        flex_attention = torch.compile(flex, dynamic=False)  # eager flex is a slow reference
        half = seq_len // 2
        self.block_mask = create_block_mask(lambda b, h, q, kv: (q >= kv) & (q - kv < half),
                                            None, None, seq_len, seq_len,
                                            device=self.short_mask.device)

    def flops_per_token(self):
        # 6 flops per matmul weight (forward + backward) plus attention scores and values.
        matmul = sum(p.numel() for n, p in self.named_parameters()
                     if p.dim() == 2 and "wte" not in n and "value_embeds" not in n)
        head_dim = self.blocks[0].attn.head_dim
        n_head = self.blocks[0].attn.n_head
        attention = sum(12 * n_head * head_dim * w for w in self.windows)
        return 6 * matmul + attention


# ---------------------------------------------------------------------------
# Optimizers: Muon for the block matrices, AdamW for embeddings, head and scalars
# ---------------------------------------------------------------------------


def orthogonalize(g, steps, dtype):
    # Quintic Newton-Schulz iteration towards the nearest semi-orthogonal matrix U V^T of
    # G = U S V^T (Jordan et al. 2024, "Muon"); coefficients chosen for fast convergence.
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose update is orthogonalised; decoupled weight decay."""

    def __init__(self, params, lr, weight_decay, momentum=0.95, ns_steps=5,
                 ns_dtype=torch.float32):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum))
        self.ns_steps, self.ns_dtype = ns_steps, ns_dtype

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                update = orthogonalize(p.grad.lerp(buf, momentum), self.ns_steps, self.ns_dtype)
                # Tall matrices get larger steps so that every update has a similar RMS.
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                p.mul_(1 - lr * wd)
                p.add_(update.to(p.dtype), alpha=-lr * scale)


def make_optimizers(model):
    # AdamW learning rates are given for width 768 and scaled by 1/sqrt(width/768).
    scale = (model.dim / 768) ** -0.5
    adam_groups = [
        dict(params=[model.lm_head.weight], lr=UNEMBEDDING_LR * scale),
        dict(params=[model.wte.weight, *[e.weight for e in model.value_embeds.values()]],
             lr=EMBEDDING_LR * scale),
        dict(params=[model.resid_lambdas], lr=SCALAR_LR * 0.01),
        dict(params=[model.x0_lambdas], lr=SCALAR_LR, betas=(0.96, 0.95)),
    ]
    adamw = torch.optim.AdamW(adam_groups, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0)
    matrices = [p for p in model.blocks.parameters() if p.dim() == 2]
    ns_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    muon = Muon(matrices, lr=MATRIX_LR, weight_decay=WEIGHT_DECAY, ns_dtype=ns_dtype)
    optimizers = [adamw, muon]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers


def lr_multiplier(progress):
    # Linear warmup, flat, then linear warmdown to FINAL_LR_FRAC of the peak. The search space
    # allows WARMUP_RATIO + WARMDOWN_RATIO > 1: where the ramps overlap the lower one holds.
    warm = min(1.0, (progress + 1e-8) / (WARMUP_RATIO + 1e-8))
    if progress < 1.0 - WARMDOWN_RATIO:
        return warm
    remaining = max(0.0, 1.0 - progress) / max(WARMDOWN_RATIO, 1e-8)
    return min(warm, remaining + (1.0 - remaining) * FINAL_LR_FRAC)


def muon_momentum(step):
    # Momentum rises from 0.85 to 0.95 over the first 300 steps.
    frac = min(step / 300, 1.0)
    return (1 - frac) * 0.85 + frac * 0.95


# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

torch.manual_seed(SEED)
if device.type == "cuda":
    if device.index is None:  # the CUDA memory calls below want an explicit index
        device = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_device(device)
    torch.cuda.manual_seed(SEED)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if GPU_MEM_FRACTION is not None:
        torch.cuda.set_per_process_memory_fraction(GPU_MEM_FRACTION, device)
autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16)
            if device.type == "cuda" else nullcontext())

data_dir = prepare.ensure_data()
model_dim = -(-DEPTH * ASPECT_RATIO // HEAD_DIM) * HEAD_DIM  # rounded up to HEAD_DIM
raw_model = GPT(DEPTH, model_dim, HEAD_DIM, SEQ_LEN, WINDOW_PATTERN)
raw_model.init_weights()
raw_model.to(device)
if ATTENTION == "flex":
    raw_model.use_flex_attention(SEQ_LEN)
model = torch.compile(raw_model, dynamic=False) if COMPILE == "1" else raw_model
optimizers = make_optimizers(raw_model)
num_params = sum(p.numel() for p in raw_model.parameters())
flops_per_token = raw_model.flops_per_token()
grad_accum = TOTAL_BATCH_SIZE // (DEVICE_BATCH_SIZE * SEQ_LEN)
num_steps = -(-TOKEN_BUDGET // TOTAL_BATCH_SIZE) if TOKEN_BUDGET is not None else None
skip_steps = 3 if COMPILE == "1" else 1  # warm-up / compilation steps not timed
batches = prepare.train_batches(DEVICE_BATCH_SIZE, SEQ_LEN, SEED, device, data_dir)

print(f"device: {device}  compile: {COMPILE}  attention: {ATTENTION}  seed: {SEED}  "
      f"data: {data_dir}")
print(f"model: depth {DEPTH}, width {model_dim}, {model_dim // HEAD_DIM} heads, "
      f"windows {raw_model.windows}, {num_params / 1e6:.3f}M parameters")
print(f"batch: {TOTAL_BATCH_SIZE} tokens = {grad_accum} x {DEVICE_BATCH_SIZE} x {SEQ_LEN}")
if num_steps:
    print(f"budget: {TOKEN_BUDGET} tokens = {num_steps} steps")
else:
    print(f"budget: {TIME_BUDGET:g} s of training")

def peak_memory():
    """MB: the device's allocation peak on a GPU, else the process's resident peak."""
    if device.type == "cuda":
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


def write_profile(profiler, number, seconds):
    """The ops of one profiled step, the most self device (on a CPU: CPU) time first."""
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = profiler.key_averages().table(sort_by=sort, row_limit=40)
    with open(PROFILE_OUT, "w") as f:
        f.write(f"step {number}: {grad_accum} x {DEVICE_BATCH_SIZE} x {SEQ_LEN} tokens, "
                f"{seconds:.3f} s under the profiler, device {device}, compile {COMPILE}, "
                f"attention {ATTENTION}\n{table}\n")
    print(f"profile of step {number}: {PROFILE_OUT}", flush=True)


def reset_peak_memory():
    if device.type == "cuda":
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
        pass  # the peak only grows then; the ramp below measures growing batches anyway


# The probe's own steps at a batch peaked up to 9 % above the ramp's at that batch on the cpu
# preset (another data iterator, the heap's growth): a fitted batch leaves that much room.
RAMP_TO_PROBE = 1.1


def fit_batch(limit_mb):
    """(the largest power of two <= DEVICE_BATCH_SIZE whose steps are predicted to peak under
    limit_mb, the predicted peak of DEVICE_BATCH_SIZE): two optimizer steps on micro-batches
    of 1, 2, 4, ... sequences below it, each size measured only if the line through the last
    two predicts it fits -- the first two are the smallest there are, so the ramp is not
    killed; below 4 sequences there is no line, and the probe runs its own batch."""
    sizes, peaks = [], []
    b = 1
    while b < DEVICE_BATCH_SIZE:
        if len(peaks) >= 2 and predict(sizes, peaks, b) > limit_mb:
            break
        reset_peak_memory()
        for _ in range(2):  # a second step peaks higher than the first (the heap's growth)
            with autocast:
                loss = model(x[:b], y[:b])
            loss.backward()
            for opt in optimizers:
                opt.step()
            model.zero_grad(set_to_none=True)
            del loss
        sizes.append(b)
        peaks.append(peak_memory())
        b *= 2
    if sizes:
        print("preflight: peak MB by micro-batch " +
              ", ".join(f"{b}: {p:.0f}" for b, p in zip(sizes, peaks, strict=True)), flush=True)
    if len(peaks) < 2:
        return DEVICE_BATCH_SIZE, None
    fit = DEVICE_BATCH_SIZE
    while fit > 1 and RAMP_TO_PROBE * predict(sizes, peaks, fit) > limit_mb:
        fit //= 2
    return fit, predict(sizes, peaks, DEVICE_BATCH_SIZE)


def predict(sizes, peaks, b):
    slope = max(0.0, (peaks[-1] - peaks[-2]) / (sizes[-1] - sizes[-2]))
    return peaks[-1] + slope * (b - sizes[-1])


# ---------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------

x, y = next(batches)
predicted_mb = None  # the probe's prediction for DEVICE_BATCH_SIZE, when it made one
probe_batch = DEVICE_BATCH_SIZE  # what the probe runs: smaller where that is predicted to fit
if PREFLIGHT_STEPS and PREFLIGHT_FIT_MB and device.type == "cpu" and COMPILE == "0":
    fit, predicted_mb = fit_batch(PREFLIGHT_FIT_MB)
    if fit < DEVICE_BATCH_SIZE:
        print(f"preflight: DEVICE_BATCH_SIZE {DEVICE_BATCH_SIZE} would peak at about "
              f"{predicted_mb:.0f} MB, above {PREFLIGHT_FIT_MB:.0f} MB: probing {fit}", flush=True)
        probe_batch = fit
        grad_accum = TOTAL_BATCH_SIZE // (probe_batch * SEQ_LEN)
        batches = prepare.train_batches(probe_batch, SEQ_LEN, SEED, device, data_dir)
        x, y = next(batches)
    reset_peak_memory()  # the probe's peak is its batch's, not the ramp's
step = 0
step_times = []
training_seconds = 0.0
timed_tokens = 0
smooth_loss = 0.0
last_print = 0.0
while True:
    progress = step / num_steps if num_steps else min(training_seconds / TIME_BUDGET, 1.0)
    profiler = None
    if PROFILE_OUT and step == skip_steps - 1:  # the last untimed step: compiled by now
        profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU] + (
            [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else []))
        profiler.start()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    loss_sum = torch.zeros((), device=device)
    micro_steps = 1 if PREFLIGHT_STEPS else grad_accum  # a probe's peak is one micro-batch
    for _ in range(micro_steps):
        with autocast:
            loss = model(x, y)
        (loss / grad_accum).backward()
        loss_sum += loss.detach()
        x, y = next(batches)
    if PREFLIGHT_STEPS and device.type == "cuda":
        torch.cuda.synchronize()
    t_micro = time.time() - t0
    lrm = lr_multiplier(progress)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * lrm
    for group in optimizers[1].param_groups:
        group["momentum"] = muon_momentum(step)
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
    train_loss = loss_sum.item() / micro_steps  # also waits for the device
    dt = time.time() - t0
    if PREFLIGHT_STEPS:  # the whole step it stands for: every micro-batch, one update
        dt += t_micro * (grad_accum / micro_steps - 1)
    if profiler is not None:
        profiler.stop()
        write_profile(profiler, step + 1, dt)

    if not math.isfinite(train_loss) or train_loss > 100:
        print(f"FAIL: training loss {train_loss} at step {step}", flush=True)
        sys.exit(1)

    step += 1
    step_times.append(dt)
    if PREFLIGHT_STEPS and step >= PREFLIGHT_STEPS:
        break
    if step > skip_steps:
        training_seconds += dt
        timed_tokens += TOTAL_BATCH_SIZE
    smooth_loss = 0.9 * smooth_loss + 0.1 * train_loss
    loss_shown = smooth_loss / (1 - 0.9**step)  # bias-corrected moving average
    done = step >= num_steps if num_steps else \
        (step > skip_steps and training_seconds >= TIME_BUDGET)
    if done or step <= 2 or time.time() - last_print >= 5:
        last_print = time.time()
        share = step / num_steps if num_steps else training_seconds / TIME_BUDGET
        print(f"step {step:05d} ({100 * min(share, 1):.1f}%) | loss {loss_shown:.4f} | "
              f"lrm {lrm:.2f} | dt {dt * 1000:.0f} ms | tok/s {TOTAL_BATCH_SIZE / dt:,.0f}",
              flush=True)
    if done:
        break

# ---------------------------------------------------------------------------
# Preflight: the memory peak and speed of this configuration, in seconds
# ---------------------------------------------------------------------------


if PREFLIGHT_STEPS:
    with torch.no_grad(), autocast:  # an evaluation batch at its full size
        model(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    warm = step_times[1:] or step_times  # the first step pays for compiling
    print("---")
    print("preflight: ok")
    print(f"peak_memory_mb: {peak_memory():.1f}")
    print(f"preflight_batch: {probe_batch}")
    if predicted_mb is not None:
        print(f"predicted_peak_mb: {predicted_mb:.1f}")
    print(f"step_seconds: {sorted(warm)[len(warm) // 2]:.4f}")
    print(f"num_steps: {step}")
    print(f"total_seconds: {time.time() - t_start:.1f}")
    sys.exit(0)

# ---------------------------------------------------------------------------
# Evaluation and summary
# ---------------------------------------------------------------------------


def export_for_harness(model, path):
    # The harness scores a torch.export program (a graph of tensor ops: none of this file
    # runs at scoring time), any batch size, this sequence length.
    model.eval()
    model.block_mask = None  # the exported graph holds plain tensor ops: the SDPA mask
    example = torch.randint(0, prepare.VOCAB_SIZE, (2, SEQ_LEN), device=device)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(model, (example,), dynamic_shapes={"idx": {0: batch}})
    torch.export.save(program, path)


if SCORE == "harness":
    out_dir = os.environ.get("AR_OUT_DIR") or "."
    export_for_harness(raw_model, os.path.join(out_dir, "model.pt2"))
    val_bpb = None
    print(f"exported the model for the harness to {out_dir}/model.pt2", flush=True)
else:
    with autocast:
        val_bpb = prepare.evaluate_bpb(raw_model, DEVICE_BATCH_SIZE, SEQ_LEN, device, data_dir)
    if not math.isfinite(val_bpb):
        print(f"FAIL: val_bpb is {val_bpb}", flush=True)
        sys.exit(1)

tokens_per_second = timed_tokens / training_seconds if training_seconds > 0 else 0.0
peak_memory_mb = peak_memory()
# MFU against the dense bf16 peak of an H100 / H200 SXM: 989.5 TFLOP/s; no meaningful peak
# to compare with on a CPU or MPS.
mfu = 100 * flops_per_token * tokens_per_second / 989.5e12 if device.type == "cuda" else 0.0

print("---")
if val_bpb is not None:
    print(f"val_bpb: {val_bpb:.6f}")
print(f"training_seconds: {training_seconds:.1f}")
print(f"total_seconds: {time.time() - t_start:.1f}")
print(f"peak_memory_mb: {peak_memory_mb:.1f}")
if device.type == "cuda":
    print(f"peak_vram_mb: {peak_memory_mb:.1f}")
print(f"mfu_percent: {mfu:.2f}")
print(f"total_tokens_M: {step * TOTAL_BATCH_SIZE / 1e6:.3f}")
print(f"tokens_per_second: {tokens_per_second:.0f}")
print(f"num_steps: {step}")
print(f"num_params_M: {num_params / 1e6:.3f}")
print(f"corpus: {prepare.corpus_id(data_dir)}")
print(f"depth: {DEPTH}")
print(f"model_dim: {model_dim}")
print(f"device: {device.type}")
