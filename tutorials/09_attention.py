# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 · Attention: flash attention, the scores never leave the chip
#
# Attention is `out = softmax(q kᵀ · scale) v`, per batch and head: for each of the `L`
# queries, a score against each of the `S` keys, a softmax over those scores (lesson 02),
# and a weighted sum of the `S` value rows. Written with torch ops, the `L × S` score
# matrix is **materialised**: written to memory, read back, written again, once per op.
# At 4096 tokens that matrix is 16.8 M numbers per head, far more than `q`, `k`, `v` and
# `out` together.
#
# The new idea of this lesson is **flash attention** (Dao et al., 2022): keep a block of
# queries on chip, stream the keys and values through in tiles, and combine the tiles with
# lesson 02's **online softmax** — a running maximum, a running sum, and now also a
# running *output*, rescaled whenever the maximum grows. The score matrix exists only one
# tile at a time, in registers. Every other piece is an earlier lesson's: tiles and
# `tl.dot` (05), the row softmax (02), a fused forward and backward (04), Philox dropout
# (03).
#
# The ladder:
#
#     naive loop -> reference (materialised scores) -> torch's flash SDPA
#       -> v1: a whole score row block per program (short sequences only)
#       -> v2: K/V tiles streamed with the online softmax (the flash forward)
#       -> v3: causal, tiles past the diagonal skipped
#       -> tritonlab's kernel: GQA, masks, dropout, the backward, autotuning
#
# **No GPU has measured any attention kernel of this project yet** (the project's one GPU
# run, `reports/h200-2026-11-28/`, came before attention existed). So this lesson makes
# predictions only; on a GPU, each `ladder(...)` cell prints the timings that test them.

# %%
import os

import torch

if not torch.cuda.is_available():  # no GPU: run every kernel on CPU tensors through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported
import triton
import triton.language as tl

from tritonlab.bench.ladder import Cost, device, exercise, ladder, pick

# %% [markdown]
# ## The math and the shapes
#
# Following torch's `F.scaled_dot_product_attention`: `q` is `(B, H, L, E)` (batch, heads,
# queries, head dim), `k` and `v` are `(B, H, S, E)`, `scale = 1/sqrt(E)`. For one
# (batch, head):
#
#     s   = q kᵀ · scale           (L, S)  the scores
#     p   = softmax(s, dim=-1)     (L, S)  each query's weights over the keys
#     out = p v                    (L, E)
#
# With a **causal** mask (a decoder: query `i` may look at keys `j <= i` only), scores with
# `j > i` are set to `-inf` before the softmax, so their weight is `exp(-inf) = 0`.
#
# From scratch (`tritonlab/scratch/attention.py`): `attention_naive` loops over every
# (batch, head, query) in Python — one score row, its softmax and its weighted sum at a
# time; `attention_reference` does all rows at once with batched matmuls, the `(B, H, L, S)`
# probabilities in one buffer. Both take `(q, k, v, mask, dropout_p, is_causal, scale)`.
#
# The truth every version is checked against is the same formula in float64, eight heads
# at a time (at the long size below the float64 scores of all heads are 8.6 GB per
# tensor, and the gradients need several such tensors).

# %%
import math

import torch.nn.functional as F

import tritonlab
from tritonlab.scratch.attention import attention_naive, attention_reference

dev = device()
dtype = pick(cpu=torch.float32, gpu=torch.float16)  # fp16: the tensor cores, and torch's flash backend


def attention_f64(q, k, v, causal=False, dout=None, heads_at_once=8):
    """softmax(q kᵀ / sqrt(E)) v in float64, rounded to q's dtype; with dout, the tuple
    (out, dq, dk, dv) from float64 autograd. q, k, v: (B, H, L or S, E)."""
    B, H, L, E = q.shape
    S = k.shape[2]

    def heads(t, i):
        return t.reshape(B * H, *t.shape[2:])[i:i + heads_at_once].double()

    pieces = []
    for i in range(0, B * H, heads_at_once):
        qc, kc, vc = (heads(t, i).requires_grad_(dout is not None) for t in (q, k, v))
        s = qc @ kc.transpose(1, 2) / math.sqrt(E)
        if causal:  # key j > query i: weight 0
            s = s.masked_fill(torch.ones(L, S, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        o = torch.softmax(s, -1) @ vc
        grads = () if dout is None else torch.autograd.grad(o, (qc, kc, vc), heads(dout, i))
        pieces.append((o.detach(), *grads))
    full = [torch.cat(p).reshape(t.shape).to(q.dtype) for p, t in zip(zip(*pieces), (q, q, k, v))]
    return full[0] if dout is None else tuple(full)


def torch_sdpa(q, k, v, causal=False):
    """torch's fused attention. On a GPU held to its flash backend (FlashAttention-2 inside
    torch), the bar the benchmark measures tritonlab against; on CPU torch's own choice."""
    if q.is_cuda:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def lab_sdpa(q, k, v, causal=False):
    """The final rung: tritonlab's functional on the triton tier (the flash kernel)."""
    return tritonlab.scaled_dot_product_attention(q, k, v, is_causal=causal, backend="triton")


def qkv(B, H, L, E, seed):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, L, E, generator=g).to(dev, dtype) for _ in range(3))


# %% [markdown]
# ## The napkin math
#
# Per (batch, head), `q kᵀ` is `L·S` dot products of length `E` (2 FLOPs per
# multiply-add) and `p v` the same again: **`4·B·H·L·S·E` FLOPs** (half of it for causal,
# where half the scores are never needed). The bytes that must move are `q`, `k`, `v` read
# and `out` written: **`4·B·H·L·E` elements** when `L = S`. Their ratio, the **arithmetic
# intensity**, is `4·L·S·E / (4·L·E·2 bytes) = S/2` FLOPs per byte in fp16. An H100 does
# ~990 fp16 TFLOP/s on its tensor cores and moves ~3.35 TB/s: the crossover (the "ridge")
# is at 990 / 3.35 ≈ 300 FLOPs per byte, so **from `S ≈ 600` on, attention is
# compute-bound** — if, and only if, nothing but q, k, v and out touches memory.
#
# The reference does not manage that. `_probabilities` writes the scores (one pass over an
# `L × S` tensor), then reads or rewrites them in place for the max, the subtraction, the
# `exp`, the sum and the division, and `p v` reads them once more: **~10 passes over
# `B·H·L·S` elements** (12 with the causal `masked_fill`).
#
# | case (fp16) | FLOPs | floor at 990 TFLOP/s | q,k,v,out | at 3.35 TB/s | one L×S tensor | reference's ~10 passes |
# |---|---|---|---|---|---|---|
# | short: B16 H32 L=S=512 E64 | 34.4 G | 35 us | 134 MB | 40 us | 268 MB | 2.7 GB, ~0.8 ms |
# | long: B4 H16 L=S=4096 E128 | 550 G | 0.56 ms | 268 MB | 80 us | 2.15 GB | 21 GB, ~6.4 ms |
#
# (These are the benchmark's cases, `tritonlab/bench/ops.py`.) So we **predict the
# reference ~20× the floor at 512 and ~12× at 4096**, its time all memory; the short case
# sits right at the ridge (35 us of math, 40 us of bytes). On CPU, under the interpreter,
# the same ladders run at toy sizes: odd lengths and a head dim that is not a power of two,
# so every mask is exercised.

# %%
SHORT = pick(cpu=(2, 2, 72, 24), gpu=(16, 32, 512, 64))  # (B, H, L = S, E)
LONG = pick(cpu=(1, 2, 200, 32), gpu=(4, 16, 4096, 128))


def cost(B, H, L, E, causal=False):
    """The forward's floor (L = S): q, k, v, out once; 4·B·H·L·S·E FLOPs, halved when causal."""
    es = torch.empty((), dtype=dtype).element_size()
    return Cost(bytes=4 * B * H * L * E * es, flops=4 * B * H * L * L * E // (2 if causal else 1))


q, k, v = qkv(*SHORT, seed=0)
print(f"short: q, k, v {tuple(q.shape)} {dtype}; the reference's L x S buffer: "
      f"{q.shape[0] * q.shape[1] * q.shape[2] ** 2 * q.element_size() / 1e6:.1f} MB")

# %% [markdown]
# ## Triton v1: one program per block of queries, the whole score row block at once
#
# The grid is 2-D: `tl.program_id(0)` picks a block of `BLOCK_M` queries, `tl.program_id(1)`
# the (batch, head) pair, split with `//` and `%`. One program:
#
# 1. loads its `q` tile `(BLOCK_M, E)` and **all** of its head's keys as a transposed tile
#    `kᵀ (E, BLOCK_S)`, `BLOCK_S = next_power_of_2(S)` — the transpose costs nothing, it is
#    only which offsets go down the rows (`offs_e[:, None]`) and which across
#    (`offs_s[None, :]`);
# 2. `s = tl.dot(q, kᵀ) · scale`: the `(BLOCK_M, BLOCK_S)` score block, in registers;
# 3. lesson 02's softmax on each row of `s`: keys past `S` set to `-inf`, `tl.max`,
#    `tl.exp`, `tl.sum` along `axis=1`;
# 4. `tl.dot(p, v)` with all of `v`, then divides each row by its sum — after the matmul,
#    `BLOCK_M × E` divisions instead of `BLOCK_M × S`.
#
# Scores never touch memory: one read of q, k, v, one write of out, the fusion of lesson
# 02 applied to the whole of attention. The catch is **size**: each program holds a
# `BLOCK_M × S` fp32 score block plus all of `K` and `V` of its head. How much that costs
# can be checked without a GPU, as in lesson 02: `scripts/sm90_resources.py` compiles the
# kernel ahead of time for an H100 (sm_90), and the `ptxas -v` log of Triton's own compile
# gives registers and spills (its output for Triton 3.9 and 3.6 is in
# reports/sm90-compile-2026-11-29). With 16 queries, 8 warps, S = 512, E = 64 in fp16: 156
# registers a thread with Triton 3.9 (128 with 3.6), no spills, 80 KiB of shared memory;
# 32 queries take 173 (162) registers; 64 queries all **255 registers** a thread may have,
# and spill 872 (568) bytes a thread to memory (with 4 warps, 16 queries take 254 (218)
# registers, no spills). At S = 4096, E = 128, one head's K and V alone are 2 MB against
# an SM's 227 KB of shared memory: **v1 cannot run the long case at all** — that is the
# ladder's second table.
#
# Also, every program re-reads its whole head's K and V: `L / BLOCK_M = 32` times per head
# at the short size, from the L2 cache if we are lucky. **Predict v1 well ahead of the
# reference (no L×S traffic), well behind torch** (16-row tiles are too thin
# for Hopper's `wgmma` matmul instructions, which take 64 rows per warpgroup: the compiled
# v1 uses the older `mma` ones).

# %%
@triton.jit
def attention_v1_kernel(q_ptr, k_ptr, v_ptr, o_ptr, scale, H, L, S, E,
                        sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som,
                        BLOCK_M: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_E: tl.constexpr):
    """out = softmax(q kᵀ · scale) v for BLOCK_M queries of one (batch, head), every key
    at once. q, o: (B, H, L, E); k, v: (B, H, S, E); strides s<tensor><b|h|row>, the last
    dim contiguous. BLOCK_S >= S, BLOCK_E >= E, powers of two >= 16.
    Grid (cdiv(L, BLOCK_M), B·H)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # this program's queries
    offs_s = tl.arange(0, BLOCK_S)  # every key
    offs_e = tl.arange(0, BLOCK_E)
    m_ok = offs_m < L
    s_ok = offs_s < S
    e_ok = offs_e < E
    q = tl.load(q_ptr + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_e[None, :],
                mask=m_ok[:, None] & e_ok[None, :], other=0.0)
    kt = tl.load(k_ptr + b * skb + h * skh + offs_s[None, :] * skn + offs_e[:, None],  # (BLOCK_E, BLOCK_S)
                 mask=e_ok[:, None] & s_ok[None, :], other=0.0)
    s = tl.dot(q, kt) * scale  # (BLOCK_M, BLOCK_S) scores, fp32
    s = tl.where(s_ok[None, :], s, float("-inf"))  # padding keys get weight exp(-inf) = 0
    m = tl.max(s, axis=1)
    p = tl.exp(s - m[:, None])
    l = tl.sum(p, axis=1)
    v = tl.load(v_ptr + b * svb + h * svh + offs_s[:, None] * svn + offs_e[None, :],
                mask=s_ok[:, None] & e_ok[None, :], other=0.0)
    o = tl.dot(p.to(v.dtype), v) / l[:, None]  # normalise after the matmul: BLOCK_M·E divisions
    tl.store(o_ptr + b * sob + h * soh + offs_m[:, None] * som + offs_e[None, :], o.to(o_ptr.dtype.element_ty),
             mask=m_ok[:, None] & e_ok[None, :])


def launch(kernel, q, k, v, **meta):
    """out = kernel(q, k, v) for (B, H, L, E) q and (B, H, S, E) k, v with a contiguous
    last dim; one program per BLOCK_M queries of each (batch, head)."""
    B, H, L, E = q.shape
    S = k.shape[2]
    assert k.shape == v.shape == (B, H, S, E) and q.stride(3) == k.stride(3) == v.stride(3) == 1
    o = torch.empty_like(q)
    grid = (triton.cdiv(L, meta["BLOCK_M"]), B * H)
    kernel[grid](q, k, v, o, 1 / math.sqrt(E), H, L, S, E, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
                 *o.stride()[:3], BLOCK_E=max(16, triton.next_power_of_2(E)), **meta)
    return o


V1 = pick(cpu=dict(BLOCK_M=16), gpu=dict(BLOCK_M=16, num_warps=8))


def attention_v1(q, k, v):
    return launch(attention_v1_kernel, q, k, v, BLOCK_S=max(16, triton.next_power_of_2(k.shape[2])), **V1)


# %% [markdown]
# ## Triton v2: stream K and V through, the online softmax (the flash forward)
#
# v2 keeps v1's grid and its `q` tile, but walks the keys in tiles of `BLOCK_N`, holding
# only a `(BLOCK_M, BLOCK_N)` score tile at a time. Lesson 02's online softmax kept, per
# row, a running maximum `m` and a running sum `l` of `exp(s - m)`. Attention needs one
# more running quantity, the **unnormalised output** `acc = Σ_j exp(s_j - m) v_j` (a
# `(BLOCK_M, E)` tile). When a new tile raises a row's maximum from `m` to `m_new`, every
# term summed so far was scaled by `exp(-m)` and must now be scaled by `exp(-m_new)`:
# multiply both `l` and `acc` by `alpha = exp(m - m_new)`, then add the new tile's terms:
#
#     m_new = max(m, rowmax(s_tile))
#     p     = exp(s_tile - m_new)
#     l     = l · alpha + rowsum(p)
#     acc   = acc · alpha + p v_tile
#
# After the last tile, `out = acc / l`: exactly the softmax-weighted sum (the `exp(-m)`
# factors cancel), however the keys were split. The first tile starts from `m = -inf`,
# `l = 0`, `acc = 0`: `alpha = exp(-inf) = 0`.
#
# `tl.dot(p, v, acc)` accumulates into `acc` (lesson 05's K loop). `p` is cast to v's dtype
# for the tensor cores (fp16 on the GPU), the accumulation stays fp32.
#
# **Napkin math.** HBM traffic should be the floor's: q once, each program streams its
# head's K and V once, out once (we expect the `L / BLOCK_M` programs of one head, next to
# each other in the grid, to run at about the same time, so that after the first, K and V
# come from L2). The **arithmetic intensity of a tile** matters now: each `BLOCK_N`-key
# tile of K and V (`2·BLOCK_N·E` elements) feeds `4·BLOCK_M·BLOCK_N·E` FLOPs, `BLOCK_M`
# FLOPs per byte in fp16. With `BLOCK_M = 128` the tensor cores at full speed need ~7.7
# TB/s of K/V: more than HBM gives, so the reuse through L2 and the width of the query
# tile are what let a flash kernel be compute-bound. That is why the query tile is wide
# (128) and the key tile narrower (64: the score tile `128 × 64` fp32 stays in registers).
# `num_stages=3` lets Triton's compiler prefetch the next K/V tiles while the current one
# is multiplied (software pipelining). Compiled for sm_90 as v1 was: at E = 128 with 8
# warps, 176 registers a thread with Triton 3.9 (173 with 3.6) and **no spills**, 128 KiB
# of shared memory, and the matmuls on Hopper's `wgmma` instructions (E = 64: 118 (117)
# registers, 64 KiB).
#
# **Predict:** at 4096 (compute-bound), v2 within 0.6–1.0× of torch's flash backend.
# FlashAttention-3's authors (Shah et al., 2024) report FlashAttention-2 — what torch's
# flash backend runs — using about 35% of an H100's peak in the forward, ~350 TFLOP/s;
# v2 has the same structure in fp16 with fp32 accumulation, so we expect the instruction
# mix, not the algorithm, to decide.

# %%
@triton.jit
def attention_v2_kernel(q_ptr, k_ptr, v_ptr, o_ptr, scale, H, L, S, E,
                        sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr):
    """out = softmax(q kᵀ · scale) v for BLOCK_M queries of one (batch, head), BLOCK_N keys
    at a time with the online softmax. Arguments and grid as attention_v1_kernel."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_e = tl.arange(0, BLOCK_E)
    m_ok = offs_m < L
    e_ok = offs_e < E
    q = tl.load(q_ptr + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_e[None, :],
                mask=m_ok[:, None] & e_ok[None, :], other=0.0)
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    acc = tl.zeros((BLOCK_M, BLOCK_E), dtype=tl.float32)  # Σ exp(s - m) v, unnormalised
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)  # running row max
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)  # running Σ exp(s - m)
    for start in range(0, S, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_ok = offs_n < S
        kt = tl.load(k_base + offs_n[None, :] * skn + offs_e[:, None], mask=e_ok[:, None] & n_ok[None, :], other=0.0)
        s = tl.dot(q, kt) * scale
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)  # rescales what was summed under the old maximum
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + offs_n[:, None] * svn + offs_e[None, :], mask=n_ok[:, None] & e_ok[None, :], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    o = acc / l_i[:, None]
    tl.store(o_ptr + b * sob + h * soh + offs_m[:, None] * som + offs_e[None, :], o.to(o_ptr.dtype.element_ty),
             mask=m_ok[:, None] & e_ok[None, :])


V2 = pick(cpu=dict(BLOCK_M=32, BLOCK_N=16), gpu=dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3))


def attention_v2(q, k, v, **meta):
    return launch(attention_v2_kernel, q, k, v, **(meta or V2))


# the rescaling at work: keys whose scores rise tile after tile, 16 keys a tile
qr = torch.ones(1, 1, 16, 16, device=dev, dtype=dtype)
kr = (torch.arange(64, device=dev, dtype=dtype)[None, None, :, None] / 8).repeat(1, 1, 1, 16)  # scores j / 2
vr = torch.randn(1, 1, 64, 16, device=dev, dtype=dtype)
tol = 1e-4 if dtype == torch.float32 else 1e-2
torch.testing.assert_close(attention_v2(qr, kr, vr, BLOCK_M=16, BLOCK_N=16), attention_f64(qr, kr, vr),
                           atol=tol, rtol=tol)
print("v2 over 4 tiles of rising scores matches the float64 softmax")

# %% [markdown]
# ## The short case: every version runs
#
# At the short size the naive loop is skipped on a GPU (262,144 Python iterations); v1
# runs. `baseline="torch"`: the `x_vs_torch` column is each version's speed-up over torch.

# %%
table_short = ladder(f"attention forward B{SHORT[0]} H{SHORT[1]} L=S={SHORT[2]} E{SHORT[3]} {dtype}", {
    "naive": (lambda: attention_naive(q, k, v, None, 0.0, False, SHORT[3] ** -0.5))
    if q.shape[0] * q.shape[1] * q.shape[2] <= 4096 else "skipped: one Python iteration per query row, 262144 of them",
    "reference": lambda: attention_reference(q, k, v, None, 0.0, False, SHORT[3] ** -0.5),
    "torch": lambda: torch_sdpa(q, k, v),
    "triton v1 (whole row block)": lambda: attention_v1(q, k, v),
    "triton v2 (flash, online softmax)": lambda: attention_v2(q, k, v),
    "tritonlab": lambda: lab_sdpa(q, k, v),
}, expected=attention_f64(q, k, v), cost=cost(*SHORT), baseline="torch")

# %% [markdown]
# ## The long case: where materialising stops being an option
#
# At 4096 tokens the reference's score buffer is 2.15 GB per pass (table above) and v1
# cannot hold a row block; v2 holds `128 × 64` scores at a time whatever `S` is. Its
# memory is what q, k, v, out need, nothing else, which is what lets long contexts fit in
# memory at all. **Predict** the reference ~12× the floor (~6–7 ms), v2 and torch within a
# factor of 2 of the 0.56 ms floor.

# %%
ql, kl, vl = qkv(*LONG, seed=1)
L_LONG = LONG[2]
table_long = ladder(f"attention forward B{LONG[0]} H{LONG[1]} L=S={L_LONG} E{LONG[3]} {dtype}", {
    "naive": (lambda: attention_naive(ql, kl, vl, None, 0.0, False, LONG[3] ** -0.5))
    if ql.shape[0] * ql.shape[1] * L_LONG <= 4096 else "skipped: one Python iteration per query row",
    "reference": lambda: attention_reference(ql, kl, vl, None, 0.0, False, LONG[3] ** -0.5),
    "torch": lambda: torch_sdpa(ql, kl, vl),
    "triton v1 (whole row block)": (lambda: attention_v1(ql, kl, vl)) if L_LONG <= 1024
    else f"skipped: K and V of one head ({2 * L_LONG * LONG[3] * ql.element_size() / 1e6:.0f} MB) per program; "
         "an SM has 227 KB of shared memory",
    "triton v2 (flash, online softmax)": lambda: attention_v2(ql, kl, vl),
    "tritonlab": lambda: lab_sdpa(ql, kl, vl),
}, expected=attention_f64(ql, kl, vl), cost=cost(*LONG), baseline="torch")

# %% [markdown]
# ## Triton v3: causal, and the tiles it never has to load
#
# With a causal mask, query `i` sees keys `0..i`. The obvious kernel is v2 with the mask
# applied to every score tile: correct, and it does all the work of the non-causal case
# only to throw half of it away. Look at the tiles instead. For the query tile
# `[m0, m0 + BLOCK_M)`:
#
# - key tiles **entirely before `m0`**: every query of the tile sees every key — no mask;
# - key tiles **between `m0` and `m0 + BLOCK_M`**: they cross the diagonal — mask `j <= i`;
# - key tiles **from `m0 + BLOCK_M` on**: no query of the tile sees any of them — skip them,
#   never load them.
#
# So v3 runs the online-softmax loop twice — over `[0, m0)` unmasked, then over the
# diagonal `[m0, m0 + BLOCK_M)` masked — and stops. The loop body moves to a `@triton.jit`
# helper called from both (inlined by the compiler) with a `DIAG: tl.constexpr` flag: the
# unmasked loop's binary has no mask code at all. `BLOCK_M` must be a multiple of `BLOCK_N`
# so the diagonal is whole key tiles (two of them here, 128 / 64). With `SKIP=False` the
# same kernel is the obvious version: one masked loop over every key tile.
#
# A row never sees only `-inf` in its first tile: the first tile holds key 0, which every
# query sees. (tritonlab's kernel guards that case anyway, for masks that hide a row's
# first keys, and for rows with no visible key at all.)
#
# **Napkin math** (long case, causal): half the FLOPs, 275 G, a floor of **0.28 ms**; the
# bytes are unchanged. **Predict v3 ~1.7–1.9× faster than `SKIP=False`**, not 2×: the
# diagonal tiles cost a full tile's work for half its scores, and the query tiles near the
# end of the sequence have 64 key tiles to walk where the first has 2, so the last programs
# to finish set the time (tritonlab's answer is below). The reference gets no such saving:
# it computes every score and then masks them, one more pass (~12 in all).

# %%
@triton.jit
def attend_tiles(acc, l_i, m_i, q, k_base, v_base, offs_m, offs_e, e_ok, lo, hi, S, scale, skn, svn,
                 DIAG: tl.constexpr, BLOCK_N: tl.constexpr):
    """v2's loop over the key tiles [lo, hi): returns the updated (acc, l, m). DIAG: the
    tiles cross the causal diagonal, so scores with key > query are masked."""
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_ok = offs_n < S
        kt = tl.load(k_base + offs_n[None, :] * skn + offs_e[:, None], mask=e_ok[:, None] & n_ok[None, :], other=0.0)
        s = tl.dot(q, kt) * scale
        visible = n_ok[None, :]
        if DIAG:
            visible = visible & (offs_n[None, :] <= offs_m[:, None])
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + offs_n[:, None] * svn + offs_e[None, :], mask=n_ok[:, None] & e_ok[None, :], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def attention_v3_kernel(q_ptr, k_ptr, v_ptr, o_ptr, scale, H, L, S, E,
                        sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som,
                        SKIP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr):
    """Causal out = softmax(q kᵀ · scale, keys j <= query i) v, L == S. SKIP: only the key
    tiles before the query tile (unmasked) and on its diagonal (masked); else every tile,
    masked. BLOCK_M a multiple of BLOCK_N. Arguments and grid as attention_v1_kernel."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_e = tl.arange(0, BLOCK_E)
    m_ok = offs_m < L
    e_ok = offs_e < E
    q = tl.load(q_ptr + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_e[None, :],
                mask=m_ok[:, None] & e_ok[None, :], other=0.0)
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    acc = tl.zeros((BLOCK_M, BLOCK_E), dtype=tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    if SKIP:
        acc, l_i, m_i = attend_tiles(acc, l_i, m_i, q, k_base, v_base, offs_m, offs_e, e_ok, 0, m0,
                                     S, scale, skn, svn, False, BLOCK_N)  # below the diagonal: no mask
        acc, l_i, m_i = attend_tiles(acc, l_i, m_i, q, k_base, v_base, offs_m, offs_e, e_ok, m0,
                                     tl.minimum(m0 + BLOCK_M, S), S, scale, skn, svn, True, BLOCK_N)
    else:  # the obvious version: every tile, every score masked
        acc, l_i, m_i = attend_tiles(acc, l_i, m_i, q, k_base, v_base, offs_m, offs_e, e_ok, 0, S,
                                     S, scale, skn, svn, True, BLOCK_N)
    o = acc / l_i[:, None]
    tl.store(o_ptr + b * sob + h * soh + offs_m[:, None] * som + offs_e[None, :], o.to(o_ptr.dtype.element_ty),
             mask=m_ok[:, None] & e_ok[None, :])


def attention_v3(q, k, v, skip=True):
    assert q.shape[2] == k.shape[2] and V2["BLOCK_M"] % V2["BLOCK_N"] == 0
    return launch(attention_v3_kernel, q, k, v, SKIP=skip, **V2)


# %%
table_causal = ladder(f"causal attention forward B{LONG[0]} H{LONG[1]} L=S={L_LONG} E{LONG[3]} {dtype}", {
    "naive": (lambda: attention_naive(ql, kl, vl, None, 0.0, True, LONG[3] ** -0.5))
    if ql.shape[0] * ql.shape[1] * L_LONG <= 4096 else "skipped: one Python iteration per query row",
    "reference": lambda: attention_reference(ql, kl, vl, None, 0.0, True, LONG[3] ** -0.5),
    "torch": lambda: torch_sdpa(ql, kl, vl, causal=True),
    "triton v3, SKIP=False (every tile masked)": lambda: attention_v3(ql, kl, vl, skip=False),
    "triton v3 (tiles past the diagonal skipped)": lambda: attention_v3(ql, kl, vl),
    "tritonlab": lambda: lab_sdpa(ql, kl, vl, causal=True),
}, expected=attention_f64(ql, kl, vl, causal=True), cost=cost(*LONG, causal=True), baseline="torch")

# %% [markdown]
# ## The final rung: `tritonlab.kernels.attention`
#
# `tritonlab.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale,
# enable_gqa, backend="triton")` checks its inputs like torch's functional, brings them to
# `(B, H, L, E)` and calls `attention_forward` / `attention_backward` in
# `tritonlab/kernels/attention.py` through a `torch.library` custom op (the form lesson 04's
# `autograd.Function` takes when `torch.compile` must trace it). Its `_fwd_kernel` is v3 —
# the loop body is `_fwd_tiles`, called for the tiles before the diagonal and for the
# diagonal — plus:
#
# - **exp2**: `log2(e)` is folded into the scale, so each score costs one multiply and an
#   `exp2` (the hardware's native exponential) instead of `exp`.
# - **A one-axis grid**: `_tile_and_row` splits `program_id(0)` into (query tile, batch ·
#   head), a head's tiles consecutive so they share its K/V in L2. The 2-D grid above
#   stops at 65535 on its second axis; this one takes any batch · heads.
# - **Causal query tiles last-first** (`tile = tiles - 1 - tile`): within each head the
#   tiles with the most keys start first, so the short ones fill the tail instead of the
#   long ones.
# - **Grouped-query attention (GQA)**: `Hq` query heads share `Hkv` key/value heads; query
#   head `h` reads kv head `h // (Hq // Hkv)`. The kernel only changes a pointer; K and V
#   are never repeated in memory.
# - **Masks through strides**: an additive float mask `(B, Hq, L, S)` is read at its four
#   strides, stride 0 where it broadcasts. A key-padding mask `(B, 1, 1, S)` is never
#   expanded to `(B, H, L, S)`: the kernel reads one row of it per batch.
# - **Dropout regenerated by Philox**: the probabilities are dropped *after* `l` summed
#   them (softmax, then dropout, as torch does); the keep bit of score `(row, j)` is
#   Philox of the seed and the element's logical coordinates (lesson 03), so the backward
#   regenerates exactly the same mask and no mask is ever stored.
# - **The log-sum-exp per row** (`lse = m + log(l)`, 4 bytes a query, lesson 04's trick):
#   the backward rebuilds `P = exp(S - lse)` tile by tile instead of storing it.
# - **Edges**: int64 offsets, any strides, ragged `L` and `S`, a key bound check dropped when
#   `S` is a multiple of `BLOCK_N` (`EVEN_N`), fully masked rows giving 0 (not NaN), fp16,
#   bf16, fp32 (TF32 only when torch's flag allows it) and fp64.
# - **Autotuning** (lesson 05): six forward configs (`BLOCK_M` 32–128, `BLOCK_N` 32–128),
#   keyed by head dim, causal/mask/dropout, dtype and the power-of-two bucket of `L` and `S`;
#   configs whose shared memory or registers would overflow by an estimate (`_cost`) are
#   pruned before compiling.
#
# **The backward** (three kernels; the last two recompute the scores from q, k and lse):
#
# - `_delta_kernel`: `delta_i = Σ_e dO_ie · O_ie`, one number per query. The softmax
#   backward needs `rowsum(dP ∘ P)` (lesson 04's `sum(g · y)`), and that sum equals
#   `dO_i · O_i` because `O = P V`: a `B·H·L` vector instead of an `L × S` reduction.
# - `_dkdv_kernel`: one program per **key** tile; it loops over the query tiles (of every
#   query head of its GQA group) and accumulates `dV += Pᵀ dO` and
#   `dK += dSᵀ Q · scale` (with `dS = P ∘ (dP - delta)`, `dP = dO Vᵀ`) in registers, so
#   each dK/dV tile is written once by one program: **no atomics**, deterministic. It
#   meets every `(query, key)` pair once, so it is also where a mask that requires grad
#   gets its gradient: `dS` itself (the mask is added to the scores unscaled).
# - `_dq_kernel`: one program per query tile, looping over key tiles: `dQ += dS K · scale`.
#
# The price of no atomics: `S` and `dP` are recomputed in both kernels, 7 tile matmuls
# where FlashAttention-2's backward does 5 (it accumulates `dQ` with atomic adds). At equal
# efficiency per matmul, that puts tritonlab's backward at ~5/7 of torch's speed, and
# forward+backward (2 matmuls + 5 against 2 + 7) at ~0.78×. The project's target for this
# kernel is forward+backward at 0.8× of torch's flash backend or better, so ~0.78× falls
# just short: the tiles have to make up the difference. **None of this has been timed on
# a GPU.** Its configs were chosen from the H100's sizes and its kernels compile for sm_90
# (`tests/test_triton_attention.py`); the ladders here are where their speed gets
# measured first.
#
# The extras, checked against torch on a small case: GQA (8 query heads on 2 kv heads)
# with a key-padding mask, and dropout reproducible from `torch.manual_seed`.

# %%
g8 = torch.Generator().manual_seed(8)
qg = torch.randn(2, 8, 40, 32, generator=g8).to(dev)
kg, vg = (torch.randn(2, 2, 40, 32, generator=g8).to(dev) for _ in range(2))
lengths = torch.tensor([40, 23], device=dev)
takes_part = (torch.arange(40, device=dev) < lengths[:, None])[:, None, None, :]  # (B, 1, 1, S), True = a real key
out_g = tritonlab.scaled_dot_product_attention(qg, kg, vg, attn_mask=takes_part, enable_gqa=True, backend="triton")
torch.testing.assert_close(out_g, F.scaled_dot_product_attention(qg, kg, vg, attn_mask=takes_part, enable_gqa=True),
                           atol=1e-4, rtol=1e-4)
print("GQA 8/2 heads with a (B, 1, 1, S) key-padding mask matches torch")

drop = []
for _ in range(2):
    torch.manual_seed(3)  # the kernel's seed is drawn from torch's generator
    drop.append(tritonlab.scaled_dot_product_attention(qg, kg, vg, dropout_p=0.3, enable_gqa=True, backend="triton"))
print("dropout 0.3, torch.manual_seed(3) before each call: identical outputs =", torch.equal(*drop))

# %% [markdown]
# ## Forward and backward through autograd
#
# Training runs the backward too. Each version below runs forward, then
# `torch.autograd.grad` from the same `dout`, and returns `(out, dq, dk, dv)`; the ladder
# checks all four against float64 autograd, each relative to its own largest value. The
# reference's backward is written out (`_Attention` in `tritonlab/scratch/attention.py`): it
# keeps the `(B, H, L, S)` probabilities for the backward, 2.15 GB at the long size in
# fp16. torch's flash backward and tritonlab's keep q, k, v, `out` and one `lse` per query.
#
# **Napkin math** (long case, causal, as the benchmark counts it, `tritonlab/bench/ops.py`):
# the backward's five matmuls are 2.5× the forward's FLOPs, so forward + backward is
# 3.5 × 275 G = 0.96 TFLOP, a floor of **~0.97 ms**; bytes: q, k, v, out, dO read, dq, dk,
# dv written and the forward's four, 805 MB, 0.24 ms: compute-bound. **Predict** torch
# within 2–3× of that floor, tritonlab behind torch (~0.78× at equal efficiency, above), the
# reference far behind (it reads and writes its L×S tensors again in the backward).

# %%
dout = torch.randn(ql.shape, generator=torch.Generator().manual_seed(4)).to(dev, dtype)


def fwd_bwd(f):
    qg_, kg_, vg_ = (t.detach().requires_grad_() for t in (ql, kl, vl))
    out = f(qg_, kg_, vg_)
    return (out, *torch.autograd.grad(out, (qg_, kg_, vg_), dout))


scale_long = LONG[3] ** -0.5
fb = cost(*LONG, causal=True)
table_fwd_bwd = ladder(f"causal attention forward+backward B{LONG[0]} H{LONG[1]} L=S={L_LONG} E{LONG[3]} {dtype}", {
    "naive": (lambda: fwd_bwd(lambda a, b, c: attention_naive(a, b, c, None, 0.0, True, scale_long)))
    if ql.shape[0] * ql.shape[1] * L_LONG <= 4096 else "skipped: one Python iteration per query row",
    "reference": lambda: fwd_bwd(lambda a, b, c: attention_reference(a, b, c, None, 0.0, True, scale_long)),
    "torch": lambda: fwd_bwd(lambda a, b, c: torch_sdpa(a, b, c, causal=True)),
    "tritonlab": lambda: fwd_bwd(lambda a, b, c: lab_sdpa(a, b, c, causal=True)),
}, expected=attention_f64(ql, kl, vl, causal=True, dout=dout), cost=Cost(bytes=3 * fb.bytes, flops=3.5 * fb.flops),
    baseline="torch")

# %% [markdown]
# ## Measured: not yet
#
# No GPU has run this lesson (or any attention kernel of this project) so far: every number
# above is a prediction from the napkin math, and every table printed on CPU says
# "validated only". Run it on a GPU (`python tutorials/09_attention.py`; on a lent machine
# `TESTS_S=0 BENCH_S=0 LESSONS_S=300 LESSONS=tutorials/09_attention.py scripts/gpu_check.sh`,
# whose default share per lesson is too short for this one: tritonlab's first calls compile
# and autotune each of its configs) and each ladder prints ms, TFLOP/s and the fraction of
# the floor per version. Then compare v1 against the thin-tile prediction, v2 and
# tritonlab against torch's flash backend, v3 against `SKIP=False`, and the
# forward+backward against the target of 0.8× torch's flash backend.

# %% [markdown]
# ## Exercises
#
# Replace each stub, then run the `check_K()` cell below it. Solutions (and a plausible
# mistake for each): `tutorials/solutions/09_attention.py`. Every check runs at small sizes,
# in float32 on CPU and float16 on a GPU.
#
# **Exercise 1: a key-padding mask in v2.** Sequences of different lengths share a batch
# by padding; the padded keys must get no weight. Add an additive mask `(B, S)` to v2:
# `s = q kᵀ · scale + mask[b, j]` with `mask = 0` for real keys and `-inf` for padding (the
# check's batch 0 has 70 real keys, batch 1 has 33). Every query sees at least key 0, so
# no row is all `-inf`.

# %%
def exercise_1(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(E) + mask[:, None, None, :]) v by a copy of attention_v2_kernel
    that also loads mask[b, offs_n] (other=-inf past S) and adds it to each score tile.
    q, k, v: (B, H, L, E) contiguous; mask: (B, S) contiguous float."""
    raise NotImplementedError


_g1 = torch.Generator().manual_seed(11)
q1, k1, v1 = (torch.randn(2, 2, 70, 32, generator=_g1).to(dev, dtype) for _ in range(3))
mask1 = torch.zeros(2, 70).masked_fill(torch.arange(70) >= torch.tensor([[70], [33]]), float("-inf")).to(dev, dtype)


def check_1(fn=None):
    fn = fn or exercise_1  # looked up now, so a rerun exercise cell counts
    padding = mask1.double()[:, None, None, :].expand(2, 2, 70, 70)  # (B, S) broadcast over heads and queries
    want = attention_reference(q1.double(), k1.double(), v1.double(), padding, 0.0, False, 32 ** -0.5).to(dtype)
    return exercise("1: key-padding mask", lambda: fn(q1, k1, v1, mask1), expected=want)


# %%
check_1()

# %% [markdown]
# **Exercise 2: sliding-window (local) causal attention.** Mistral-style local attention:
# query `i` sees keys `i - W < j <= i` (the last `W` keys, itself included). Write it from
# v3, skipping every key tile that no query of the program's tile can see — on **both**
# sides now — and masking only the tiles that need it (masking all of them is fine for the
# check; the point is which tiles you may skip). A row may see no key at all in a tile at
# the window's start: guard `m_new = -inf` (`exp(-inf - -inf)` is NaN), as tritonlab's
# `_fwd_tiles` does with its `shift`. The check uses `W = 24`, `L = S = 100`, and expects
# `BLOCK_M = 32`, `BLOCK_N = 16`. Its second run gives each 32-query tile a head of its
# own, fills with NaN the keys and values of every 16-key tile that no query of that query
# tile can see, and checks only that tile's rows. A kernel that loads such a tile, even to
# mask all of it, gets NaN there (`0 · NaN` in `p @ V`); one that skips it does not.

# %%
def exercise_2(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Causal sliding-window attention, keys i - window < j <= i, scale 1/sqrt(E), by a
    Triton kernel that loops only over the key tiles some query of its tile can see.
    q, k, v: (B, H, L, E) contiguous, L == S."""
    raise NotImplementedError


_g2 = torch.Generator().manual_seed(12)
q2, k2, v2 = (torch.randn(1, 2, 100, 16, generator=_g2).to(dev, dtype) for _ in range(3))


def unreachable_nan(k, v, window, block_m=32, block_n=16):
    """k, v of head 0 repeated once per query tile; head t holds NaN at every key no query of
    tile t can see: before the key tile that holds its first query's first key, and past its
    last query."""
    L = k.shape[2]
    tiles = triton.cdiv(L, block_m)
    k4, v4 = k[:, :1].repeat(1, tiles, 1, 1), v[:, :1].repeat(1, tiles, 1, 1)
    for t in range(tiles):
        first = max(t * block_m - window + 1, 0) // block_n * block_n
        for kv in (k4, v4):
            kv[:, t, :first] = float("nan")
            kv[:, t, (t + 1) * block_m:] = float("nan")
    return k4, v4


def check_2(fn=None, window=24):
    fn = fn or exercise_2  # looked up now, so a rerun exercise cell counts
    i, j = torch.arange(100)[:, None], torch.arange(100)[None, :]
    band = torch.zeros(100, 100).masked_fill(~((j <= i) & (j > i - window)), float("-inf"))
    band = band.to(dev, torch.float64).expand(1, 2, 100, 100)
    want = attention_reference(q2.double(), k2.double(), v2.double(), band, 0.0, False, 16 ** -0.5).to(dtype)
    k_nan, v_nan = unreachable_nan(k2, v2, window)
    q_rep = q2[:, :1].repeat(1, k_nan.shape[1], 1, 1)

    def both():
        tiled = fn(q_rep, k_nan, v_nan, window)  # tile t's rows from head t: the others may be NaN
        return fn(q2, k2, v2, window), torch.cat([tiled[0, t, 32 * t:32 * (t + 1)] for t in range(tiled.shape[1])])

    return exercise("2: sliding-window attention (and unreachable key tiles skipped)", both,
                    expected=(want, want[0, 0]))


# %%
check_2()

# %% [markdown]
# **Exercise 3: the backward's delta.** Write `_delta_kernel`'s job: `delta[b, h, i] =
# Σ_e dO[b, h, i, e] · O[b, h, i, e]`, float32, one program per block of queries of one
# (batch, head). `dO` comes from whatever layer sits above attention, so do not assume it
# is contiguous: the check passes a transposed view (`(B, L, H, E)` storage seen as
# `(B, H, L, E)`), read it through its own strides.

# %%
def exercise_3(out: torch.Tensor, dout: torch.Tensor) -> torch.Tensor:
    """(B, H, L) float32: Σ_e dout * out, by a Triton kernel over blocks of queries,
    accumulating in float32. out: (B, H, L, E) contiguous; dout: (B, H, L, E), any strides."""
    raise NotImplementedError


_g3 = torch.Generator().manual_seed(13)
out3 = torch.randn(2, 3, 50, 40, generator=_g3).to(dev, dtype)
dout3 = torch.randn(2, 50, 3, 40, generator=_g3).to(dev, dtype).transpose(1, 2)  # a view, not contiguous


def check_3(fn=None):
    fn = fn or exercise_3  # looked up now, so a rerun exercise cell counts
    want = (out3.double() * dout3.double()).sum(-1).float()
    return exercise("3: delta = rowsum(dO * O)", lambda: fn(out3, dout3), expected=want)


# %%
check_3()

# %% [markdown]
# ## What's next
#
# This is the path's last lesson for now. From here: run it on a GPU and compare each
# ladder with its predictions; `tritonlab bench --ops attention` times tritonlab against
# torch's flash backend over the benchmark's cases (up to 16K tokens, GQA included), forward
# and forward+backward; and read `_dkdv_kernel` and `_dq_kernel` in
# `tritonlab/kernels/attention.py`, the backward this lesson only described — exercise 3
# is its first step. What Triton's `tl.load`/`tl.dot` cannot express (warp specialisation,
# asynchronous TMA copies overlapping the softmax with the next matmul) is where
# FlashAttention-3 finds its extra speed on Hopper.
