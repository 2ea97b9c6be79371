"""
Pretraining script of the autoresearch sandbox. Single device, single file: the ONE file that
agents and optimizers edit. A byte-level GPT trains for the trial's budget (TIME_BUDGET
seconds, or AR_TOKEN_BUDGET tokens), then prepare.evaluate_bpb measures val_bpb.

Usage: python train.py   (no flags; the environment sets the budget and the device)

The harness's side of a trial is prepare.py's fixed trial kit, `run` below: it reads the
environment (budget, seed, device, preflight, profiler, scoring), times the steps, prints the
step lines, and evaluates (or exports the model for the harness) and prints the summary.
"""

import math
from contextlib import nullcontext

import prepare  # before torch: it makes idle OpenMP threads sleep, read when torch loads

# isort: split
import torch
import torch.nn as nn
import torch.nn.functional as F

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

# ---------------------------------------------------------------------------
# Configuration: a bad value or combination is one line and exit code 2
# ---------------------------------------------------------------------------


def check_config():
    """The block's own rules; prepare.trial has checked the types and signs before."""
    if HEAD_DIM % 2:
        prepare.config_error(f"HEAD_DIM={HEAD_DIM} must be even (rotary embeddings rotate pairs)")
    if SEQ_LEN < 2:
        prepare.config_error(f"SEQ_LEN={SEQ_LEN} must be at least 2")
    micro = DEVICE_BATCH_SIZE * SEQ_LEN
    if TOTAL_BATCH_SIZE < micro or TOTAL_BATCH_SIZE % micro:
        prepare.config_error(
            f"TOTAL_BATCH_SIZE={TOTAL_BATCH_SIZE} must be a positive multiple of "
            f"DEVICE_BATCH_SIZE * SEQ_LEN = {DEVICE_BATCH_SIZE} * {SEQ_LEN} = {micro}")
    if not isinstance(WINDOW_PATTERN, str) or not WINDOW_PATTERN \
            or set(WINDOW_PATTERN) - set("SL"):
        prepare.config_error(
            f"WINDOW_PATTERN={WINDOW_PATTERN!r} must be a non-empty string of S and L")
    for name in ("WARMUP_RATIO", "WARMDOWN_RATIO", "FINAL_LR_FRAC"):
        if globals()[name] > 1:
            prepare.config_error(f"{name}={globals()[name]} must be at most 1")


run = prepare.trial(
    globals(), check_config,
    integers=("DEPTH", "ASPECT_RATIO", "HEAD_DIM", "DEVICE_BATCH_SIZE", "TOTAL_BATCH_SIZE",
              "SEQ_LEN"),
    numbers=("EMBEDDING_LR", "UNEMBEDDING_LR", "MATRIX_LR", "SCALAR_LR", "WEIGHT_DECAY",
             "WARMUP_RATIO", "WARMDOWN_RATIO", "FINAL_LR_FRAC"))
device = run.device  # seeded and set up by the kit (AR_SEED, AR_DEVICE, AR_GPU_MEM_FRACTION)

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

autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16)
            if device.type == "cuda" else nullcontext())
model_dim = math.ceil(DEPTH * ASPECT_RATIO / HEAD_DIM) * HEAD_DIM  # a multiple of HEAD_DIM
raw_model = GPT(DEPTH, model_dim, HEAD_DIM, SEQ_LEN, WINDOW_PATTERN)
raw_model.init_weights()
raw_model.to(device)
if run.attention == "flex":
    raw_model.use_flex_attention(SEQ_LEN)
model = torch.compile(raw_model, dynamic=False) if run.compile else raw_model
optimizers = make_optimizers(raw_model)
num_params = sum(p.numel() for p in raw_model.parameters())
grad_accum = TOTAL_BATCH_SIZE // (DEVICE_BATCH_SIZE * SEQ_LEN)

print(f"model: depth {DEPTH}, width {model_dim}, {model_dim // HEAD_DIM} heads, "
      f"windows {raw_model.windows}, {num_params / 1e6:.3f}M parameters")
print(f"batch: {TOTAL_BATCH_SIZE} tokens = {grad_accum} x {DEVICE_BATCH_SIZE} x {SEQ_LEN}")
# A preflight probe (AR_PREFLIGHT_STEPS) may run fewer sequences per micro-batch, where the kit
# predicts that DEVICE_BATCH_SIZE would not fit, and one micro-batch per step (the kit's
# micro_steps; grad_accum of them when it trains, an in-process probe's steps included).
device_batch = run.start(model, optimizers, autocast, DEVICE_BATCH_SIZE, SEQ_LEN,
                         TOTAL_BATCH_SIZE)
grad_accum = TOTAL_BATCH_SIZE // (device_batch * SEQ_LEN)
micro_steps = run.micro_steps
batches = prepare.train_batches(device_batch, SEQ_LEN, run.seed, device, run.data_dir)

# ---------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------

x, y = next(batches)
step = 0
while True:
    progress = run.begin_step(step)  # the share of the budget spent (steps or seconds)
    loss_sum = torch.zeros((), device=device)
    for _ in range(micro_steps):
        with autocast:
            loss = model(x, y)
        (loss / grad_accum).backward()
        loss_sum += loss.detach()
        x, y = next(batches)
    run.end_micro_steps()  # a probe's step stands for grad_accum of them
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
    step += 1
    # FAIL and exit 1 on a NaN or exploding loss; True once the budget is spent
    if run.end_step(step, train_loss, lrm):
        break

# ---------------------------------------------------------------------------
# Evaluation and summary
# ---------------------------------------------------------------------------

run.end_preflight(x)  # a probe ends here: one evaluation-sized forward, then its verdict
# val_bpb by prepare.evaluate_bpb (or, under AR_SCORE=harness, the model exported for the
# harness to score), then the `---` summary with these extra lines
run.finish(raw_model, DEVICE_BATCH_SIZE, SEQ_LEN, flops_per_token=raw_model.flops_per_token(),
           depth=DEPTH, model_dim=model_dim)
