"""Flash attention, forward and backward: out = dropout(softmax(scale * q kᵀ + mask)) v
without ever writing the (L, S) score matrix to memory.

Shapes (the tier contract): q (B, Hq, L, E), k (B, Hkv, S, E), v (B, Hkv, S, Ev), any
strides (a last-dim stride of 1 is specialised by Triton; any other is read as is, no
copy); Hq % Hkv == 0 and query head h reads kv head h // (Hq // Hkv) (grouped-query).
mask: None or an additive float (B, Hq, L, S) read through its 4 strides, stride 0 where
it is broadcast (never materialised here); -inf masks out. Causal is torch's top-left
alignment: query i sees keys j <= i. out (B, Hq, L, Ev) contiguous in q's dtype; lse
(B, Hq, L) contiguous, fp32 (fp64 for fp64), natural log of each row's softmax
denominator, +inf for a row whose keys are all masked out (its out is 0 and every
exp(s - lse) of the backward is exactly 0, so no NaN anywhere).

Grids are one axis, each (batch, head)'s tiles consecutive (`_tile_and_row`), so batch ·
heads has no 65535 limit. Forward (`_fwd_kernel`), cdiv(L, BLOCK_M)·B·Hq programs: one
owns BLOCK_M queries of one head, holds q on chip and streams K/V through in BLOCK_N-key tiles with the
online softmax (running max m, running sum l, output rescaled by exp(m_old - m_new)),
all in fp32 (fp64 for fp64). exp2 with log2(e) folded into the scale: one multiply per
score. Causal: key tiles past the diagonal are never loaded; only the tiles that cross
it pay for the j <= i mask; query tiles run last-first (the longest first, a shorter
tail). Dropout multiplies P by keep / (1 - p) *after* l has summed the undropped P
(torch's order: softmax, then dropout). keep comes from Philox keyed by the seed and the
element's logical coordinates: row (b·Hq + h)·L + i, column j, int64, through
kernels/softmax.py's `_keep`, so the backward regenerates the same bits and no mask is
ever stored.

Backward: delta_i = Σ_e dO_ie O_ie (`_delta_kernel`), then `_dkdv_kernel`,
cdiv(S, BLOCK_N)·B·Hkv programs: one owns BLOCK_N keys of one kv head and loops over the
query tiles of every query head of its group, so dK/dV sum in registers (no atomics,
deterministic); and `_dq_kernel`, cdiv(L, BLOCK_M)·B·Hq programs, looping over key tiles.
Both recompute S = scale q kᵀ + mask and P = exp(S - lse) and regenerate keep:
  dV = (P∘Z)ᵀ dO,  dP = (dO Vᵀ)∘Z,  dS = P∘(dP - delta),  dQ = scale dS K,  dK = scale dSᵀ Q,
with Z = keep / (1 - p) (Z = 1 without dropout). A mask that wants its gradient gets
dS itself (the mask is added to the scores unscaled): _dkdv_kernel, which visits every
(query, key) pair once, stores its dS tiles: B·Hq·L·S values written (4 GiB in fp32 at
B=4, H=16, L=S=4K), summed afterwards over the dims where the mask broadcasts.

Napkin math, B·H·L·S·E = N (E = Ev): forward 4N FLOPs (q kᵀ and P v, 2N each), backward
about 2.5x that (five matmuls of 2N: S again, dP, dV, dQ, dK); causal halves both.
Bytes: q, k, v, o once each + lse (4 bytes a row): 4·B·H·L·E·2 bytes in bf16, and the
backward reads q, k, v, o, dO, lse, delta and writes dq, dk, dv (~2x that). Arithmetic
intensity of the forward, L = S: 4·L·S·E / (8·L·E) = S/2 FLOPs per byte. An H200's
~990 dense bf16 TFLOP/s (data sheet) over the 4.12 TB/s a copy measured on one
(reports/h200-2026-11-28/summary.md) is ~240 FLOP/byte, so from S ≈ 480 on attention
is compute-bound (and from E >= 64 the tiles are wide enough to keep the tensor cores
fed): B=4, H=16, L=S=4K, E=128 bf16 is 4·4·16·4096²·128 = 0.55 TFLOP forward, a
floor of ~0.56 ms at 990 TFLOP/s, against ~65 us for its 4 x 67 MB at 4.12 TB/s
(S/2 = 2048 FLOP/byte). What torch's flash SDPA reaches at these sizes is to be measured
on the device (`tritonlab bench --ops attention`), not assumed: compare both providers'
tflops column against the measured bf16 matmul ceiling.

Precision: tiles multiply on the tensor cores in fp16/bf16 with fp32 accumulation;
float32 uses TF32 exactly when torch.backends.cuda.matmul.allow_tf32 is True (as
kernels/gemm.py), full fp32 otherwise; float64 multiplies and accumulates in fp64.
Block sizes: autotuned on CUDA per (E, Ev, causal, mask, dropout, dtype, pow-2 bucket of
L and S), with configs that would overflow shared memory or registers pruned first
(head dim 256); one small fixed config under the interpreter.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..backend import interpreter_enabled
from ._host import cdiv, dot_precision, next_power_of_2
from .softmax import _keep

INTERPRETED = interpreter_enabled()  # as triton.jit read it for this module's kernels (see _host)

LOG2E = 1.4426950408889634  # the kernels spell it out: a plain global is no constexpr
_LEN_BUCKET_CAP = 16384   # autotune per power-of-two bucket of L and S up to this
_SMEM_BUDGET = 227 * 1024  # shared memory per block on an H100/H200
_ACC_REGS = 256            # accumulator registers per thread past which a config surely spills


# ---- forward -------------------------------------------------------------------------

@triton.jit
def _tile_and_row(n, BLOCK: tl.constexpr, REVERSE: tl.constexpr):
    """(tile, row) of this program on the flattened grid (cdiv(n, BLOCK) · rows,): a row's
    tiles are consecutive programs (they share its K/V in L2), and the row count (batch ·
    heads) escapes the 65535 limit of a grid's second axis. REVERSE: tiles last-first."""
    tiles = tl.cdiv(n, BLOCK)
    pid = tl.program_id(0)
    tile = pid % tiles
    if REVERSE:
        tile = tiles - 1 - tile
    return tile, (pid // tiles).to(tl.int64)


@triton.jit
def _scores(q, k_base, mask_base, offs_m, offs_n, n_ok, offs_e, L, E, skn, ske, smn, qk_scale, like,
            HAS_MASK: tl.constexpr, PRECISION: tl.constexpr):
    """One key tile, as the forward and dQ read it: kᵀ (BLOCK_E, BLOCK_N), 0 past S and E,
    and the scores scale·q kᵀ + mask in log2 units, in `like`'s dtype (the accumulator's)."""
    kt = tl.load(k_base + offs_n[None, :] * skn + offs_e[:, None] * ske,
                 mask=n_ok[None, :] & (offs_e[:, None] < E), other=0.0)
    s = tl.dot(q, kt, input_precision=PRECISION).to(like.dtype) * qk_scale
    if HAS_MASK:
        am = tl.load(mask_base + offs_n[None, :] * smn, mask=(offs_m[:, None] < L) & n_ok[None, :],
                     other=float("-inf"))
        s += am.to(like.dtype) * 1.4426950408889634
    return kt, s


@triton.jit
def _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, mask_base, rows, offs_m, lo, hi,
               seed_ptr, L, S, E, Ev, skn, ske, svn, sve, smn, qk_scale, p_drop, drop_scale,
               DIAG: tl.constexpr, HAS_MASK: tl.constexpr, DROPOUT: tl.constexpr, EVEN_N: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr,
               BLOCK_EV: tl.constexpr, PRECISION: tl.constexpr):
    """The online softmax over key tiles [lo, hi): returns the updated (acc, l, m), with
    m and the scores in log2 units. DIAG: the tiles cross the causal diagonal (mask j > i)."""
    offs_e = tl.arange(0, BLOCK_E)
    offs_ev = tl.arange(0, BLOCK_EV)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
        n_ok = offs_n < S
        _, qk = _scores(q, k_base, mask_base, offs_m, offs_n, n_ok, offs_e, L, E, skn, ske, smn, qk_scale, acc,
                        HAS_MASK, PRECISION)
        if not HAS_MASK:
            if not EVEN_N:  # keys past S (k loaded as 0) must not count; with a mask its load does it
                qk = tl.where(n_ok[None, :], qk, float("-inf"))
        if DIAG:
            qk = tl.where(offs_n[None, :] <= offs_m[:, None], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        # a row with nothing visible yet keeps m = -inf: shift by 0 then (not -inf - -inf)
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(qk - shift[:, None])
        alpha = tl.exp2(m_i - shift)
        l_i = l_i * alpha + tl.sum(p, 1)
        if DROPOUT:  # l sums the undropped P: softmax first, then dropout
            p = tl.where(_keep(seed_ptr, rows, start_n, p_drop, BLOCK_M, BLOCK_N), p * drop_scale, 0.0)
        v = tl.load(v_base + offs_n[:, None] * svn + offs_ev[None, :] * sve,
                    mask=n_ok[:, None] & (offs_ev[None, :] < Ev), other=0.0)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit(do_not_specialize=["L_BUCKET", "S_BUCKET"])
def _fwd_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, o_ptr, lse_ptr, seed_ptr,
                qk_scale, p_drop, drop_scale, Hq, L, S, E, Ev, GROUP, L_BUCKET, S_BUCKET,
                sqb, sqh, sqm, sqe, skb, skh, skn, ske, svb, svh, svn, sve, smb, smh, smm, smn,
                IS_CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, DROPOUT: tl.constexpr,
                PRECISION: tl.constexpr, ACC: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr,
                BLOCK_EV: tl.constexpr, EVEN_N: tl.constexpr):
    """o, lse for BLOCK_M queries of one (batch, query head). Pointers: q, k, v, mask as
    the module docstring (strides s<tensor><b|h|m/n|e>); o (B, Hq, L, Ev) and lse (B·Hq, L)
    contiguous; seed (1,) int64. qk_scale = scale·log2(e). L_BUCKET, S_BUCKET feed only
    the autotune key. BLOCK_M is a multiple of BLOCK_N (the causal split needs it);
    BLOCK_E, BLOCK_EV: E, Ev padded to a power of two >= 16; EVEN_N: S % BLOCK_N == 0
    (no ragged key tile, so no per-score bounds select).
    Grid (cdiv(L, BLOCK_M)·B·Hq,), see _tile_and_row. Cost: 4·BLOCK_M·S·E FLOPs (half under causal);
    bytes: its q tile and o tile once, every k and v tile (S·(E+Ev) elements) streamed
    once per program, mostly from L2 (the programs of one head share them), and a mask
    tile of BLOCK_M·S when HAS_MASK."""
    # causal: the last query tiles see the most keys; launch them first, less tail
    pid_m, bh = _tile_and_row(L, BLOCK_M, IS_CAUSAL)
    b = bh // Hq
    h = bh % Hq
    hk = h // GROUP
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M).to(tl.int64)
    offs_e = tl.arange(0, BLOCK_E)
    m_ok = offs_m < L
    q = tl.load(q_ptr + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_e[None, :] * sqe,
                mask=m_ok[:, None] & (offs_e[None, :] < E), other=0.0)
    k_base = k_ptr + b * skb + hk * skh
    v_base = v_ptr + b * svb + hk * svh
    mask_base = mask_ptr + b * smb + h * smh + offs_m[:, None] * smm
    rows = bh * L + offs_m  # Philox row of each query: the backward uses the same

    acc = tl.zeros((BLOCK_M, BLOCK_EV), dtype=ACC)
    l_i = tl.zeros((BLOCK_M,), dtype=ACC)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=ACC)
    if IS_CAUSAL:  # keys before m0 are seen by every row of the tile; past m0 + BLOCK_M by none
        acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, mask_base, rows, offs_m,
                                   0, tl.minimum(m0, S), seed_ptr, L, S, E, Ev, skn, ske, svn, sve, smn,
                                   qk_scale, p_drop, drop_scale, False, HAS_MASK, DROPOUT, EVEN_N,
                                   BLOCK_M, BLOCK_N, BLOCK_E, BLOCK_EV, PRECISION)
        acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, mask_base, rows, offs_m,
                                   m0, tl.minimum(m0 + BLOCK_M, S), seed_ptr, L, S, E, Ev, skn, ske, svn,
                                   sve, smn, qk_scale, p_drop, drop_scale, True, HAS_MASK, DROPOUT, EVEN_N,
                                   BLOCK_M, BLOCK_N, BLOCK_E, BLOCK_EV, PRECISION)
    else:
        acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, mask_base, rows, offs_m,
                                   0, S, seed_ptr, L, S, E, Ev, skn, ske, svn, sve, smn,
                                   qk_scale, p_drop, drop_scale, False, HAS_MASK, DROPOUT, EVEN_N,
                                   BLOCK_M, BLOCK_N, BLOCK_E, BLOCK_EV, PRECISION)
    empty = l_i == 0.0  # every key masked out: out 0, lse +inf (see the module docstring)
    acc = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) * 0.6931471805599453)
    offs_ev = tl.arange(0, BLOCK_EV)
    tl.store(o_ptr + (bh * L + offs_m)[:, None] * Ev + offs_ev[None, :], acc.to(o_ptr.dtype.element_ty),
             mask=m_ok[:, None] & (offs_ev[None, :] < Ev))
    tl.store(lse_ptr + bh * L + offs_m, lse, mask=m_ok)


# ---- backward ------------------------------------------------------------------------

@triton.jit
def _delta_kernel(o_ptr, do_ptr, delta_ptr, Hq, L, Ev, sdb, sdh, sdm, sde,
                  BLOCK_M: tl.constexpr, BLOCK_EV: tl.constexpr):
    """delta (B·Hq, L) fp32/fp64 = Σ_e dO∘O per query. It is the rowsum(P∘dP) that the
    softmax backward needs even with dropout: with Z = keep/(1-p) and dP = (dO Vᵀ)∘Z,
    Σ_j P_ij dP_ij = Σ_j (P∘Z)_ij (dO_i · V_j) = dO_i · O_i, since O = (P∘Z) V.
    o: (B, Hq, L, Ev) contiguous; dO: its strides. Grid (cdiv(L, BLOCK_M)·B·Hq,).
    Cost: reads o and dO (2·L·Ev elements a head), writes 4 bytes a query; 2 FLOPs an
    element: bandwidth-bound, a few % of the backward's time."""
    pid_m, bh = _tile_and_row(L, BLOCK_M, False)
    b = bh // Hq
    h = bh % Hq
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    offs_ev = tl.arange(0, BLOCK_EV)
    ok = (offs_m[:, None] < L) & (offs_ev[None, :] < Ev)
    o = tl.load(o_ptr + (bh * L + offs_m)[:, None] * Ev + offs_ev[None, :], mask=ok, other=0.0)
    do = tl.load(do_ptr + b * sdb + h * sdh + offs_m[:, None] * sdm + offs_ev[None, :] * sde,
                 mask=ok, other=0.0)
    acc_ty = delta_ptr.dtype.element_ty
    tl.store(delta_ptr + bh * L + offs_m, tl.sum(o.to(acc_ty) * do.to(acc_ty), 1), mask=offs_m < L)


@triton.jit
def _dkdv_tiles(dk, dv, k, v, q_base, do_base, mask_base, dm_base, lse_base, delta_base, row0, n0, offs_n,
                lo, hi, seed_ptr, L, S, E, Ev, sqm, sqe, sdm, sde, smm, qk_scale, p_drop, drop_scale,
                DIAG: tl.constexpr, HAS_MASK: tl.constexpr, DROPOUT: tl.constexpr, MASK_GRAD: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr,
                BLOCK_EV: tl.constexpr, PRECISION: tl.constexpr):
    """dK, dV of BLOCK_N keys summed over query tiles [lo, hi) of one query head, in the
    transposed orientation (keys as rows): sᵀ = k qᵀ, so dK and dV come out of plain dots.
    Rows past L load lse = +inf (P = 0) and dO = 0: they add nothing. MASK_GRAD: also
    store dSᵀ, the mask's gradient, at dm_base (this head's (L, S), contiguous)."""
    offs_e = tl.arange(0, BLOCK_E)
    offs_ev = tl.arange(0, BLOCK_EV)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M).to(tl.int64)
        m_ok = offs_m < L
        qt = tl.load(q_base + offs_m[None, :] * sqm + offs_e[:, None] * sqe,
                     mask=m_ok[None, :] & (offs_e[:, None] < E), other=0.0)
        lse = tl.load(lse_base + offs_m, mask=m_ok, other=float("inf"))
        st = tl.dot(k, qt, input_precision=PRECISION).to(dk.dtype) * qk_scale
        if HAS_MASK:
            am = tl.load(mask_base + offs_m[None, :] * smm, mask=(offs_n[:, None] < S) & m_ok[None, :],
                         other=float("-inf"))
            st += am.to(dk.dtype) * 1.4426950408889634
        pt = tl.exp2(st - lse[None, :] * 1.4426950408889634)
        if DIAG:
            pt = tl.where(offs_m[None, :] >= offs_n[:, None], pt, 0.0)
        do = tl.load(do_base + offs_m[:, None] * sdm + offs_ev[None, :] * sde,
                     mask=m_ok[:, None] & (offs_ev[None, :] < Ev), other=0.0)
        dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION).to(dk.dtype)
        if DROPOUT:
            keep = tl.trans(_keep(seed_ptr, row0 + offs_m, n0, p_drop, BLOCK_M, BLOCK_N))
            dv = tl.dot(tl.where(keep, pt * drop_scale, 0.0).to(do.dtype), do, dv, input_precision=PRECISION)
            dpt = tl.where(keep, dpt * drop_scale, 0.0)
        else:
            dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=PRECISION)
        delta = tl.load(delta_base + offs_m, mask=m_ok, other=0.0)
        dst = pt * (dpt - delta[None, :])
        if MASK_GRAD:  # the mask is added to the scores unscaled: its gradient is dS itself
            tl.store(dm_base + offs_m[None, :] * S + offs_n[:, None], dst.to(dm_base.dtype.element_ty),
                     mask=(offs_n[:, None] < S) & m_ok[None, :])
        dk = tl.dot(dst.to(qt.dtype), tl.trans(qt), dk, input_precision=PRECISION)
    return dk, dv


@triton.jit(do_not_specialize=["L_BUCKET", "S_BUCKET"])
def _dkdv_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, dm_ptr, seed_ptr,
                 qk_scale, scale, p_drop, drop_scale, Hq, Hkv, L, S, E, Ev, GROUP, L_BUCKET, S_BUCKET,
                 sqb, sqh, sqm, sqe, skb, skh, skn, ske, svb, svh, svn, sve, smb, smh, smm, smn,
                 sdb, sdh, sdm, sde,
                 IS_CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, DROPOUT: tl.constexpr,
                 MASK_GRAD: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr,
                 BLOCK_EV: tl.constexpr):
    """dk (B, Hkv, S, E), dv (B, Hkv, S, Ev), contiguous, for BLOCK_N keys of one (batch,
    kv head), summed over the GROUP query heads that read it; with MASK_GRAD (never with
    IS_CAUSAL) also dS into dm (B, Hq, L, S) contiguous, each element written once (every
    query tile of every head of the group passes through here).
    lse, delta: (B·Hq, L); dO: strides sd*; the rest as _fwd_kernel. BLOCK_N is a multiple of BLOCK_M.
    Grid (cdiv(S, BLOCK_N)·B·Hkv,). Cost: 8·GROUP·L·BLOCK_N·E FLOPs (half under causal);
    bytes: its k, v tiles in and dk, dv tiles out once, and every q, dO tile (and lse,
    delta) of the GROUP heads streamed once per program, mostly from L2; with MASK_GRAD
    a dS tile of L·BLOCK_N written per head."""
    pid_n, bhk = _tile_and_row(S, BLOCK_N, False)
    n0 = pid_n * BLOCK_N
    b = bhk // Hkv
    hk = bhk % Hkv
    offs_n = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
    offs_e = tl.arange(0, BLOCK_E)
    offs_ev = tl.arange(0, BLOCK_EV)
    n_ok = offs_n < S
    k = tl.load(k_ptr + b * skb + hk * skh + offs_n[:, None] * skn + offs_e[None, :] * ske,
                mask=n_ok[:, None] & (offs_e[None, :] < E), other=0.0)
    v = tl.load(v_ptr + b * svb + hk * svh + offs_n[:, None] * svn + offs_ev[None, :] * sve,
                mask=n_ok[:, None] & (offs_ev[None, :] < Ev), other=0.0)
    dk = tl.zeros((BLOCK_N, BLOCK_E), dtype=ACC)
    dv = tl.zeros((BLOCK_N, BLOCK_EV), dtype=ACC)
    for g in range(0, GROUP):
        h = hk * GROUP + g
        bh = b * Hq + h
        q_base = q_ptr + b * sqb + h * sqh
        do_base = do_ptr + b * sdb + h * sdh
        # keys past S read mask -inf: their P is 0 (their dk, dv are never stored anyway)
        mask_base = mask_ptr + b * smb + h * smh + offs_n[:, None] * smn
        dm_base = dm_ptr + bh * L * S
        if IS_CAUSAL:  # queries before n0 see none of these keys; from n0 + BLOCK_N on, all
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, mask_base, dm_base, lse_ptr + bh * L,
                                 delta_ptr + bh * L, bh * L, n0, offs_n, n0, tl.minimum(n0 + BLOCK_N, L),
                                 seed_ptr, L, S, E, Ev, sqm, sqe, sdm, sde, smm, qk_scale, p_drop, drop_scale,
                                 True, HAS_MASK, DROPOUT, MASK_GRAD, BLOCK_M, BLOCK_N, BLOCK_E, BLOCK_EV,
                                 PRECISION)
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, mask_base, dm_base, lse_ptr + bh * L,
                                 delta_ptr + bh * L, bh * L, n0, offs_n, n0 + BLOCK_N, L,
                                 seed_ptr, L, S, E, Ev, sqm, sqe, sdm, sde, smm, qk_scale, p_drop, drop_scale,
                                 False, HAS_MASK, DROPOUT, MASK_GRAD, BLOCK_M, BLOCK_N, BLOCK_E, BLOCK_EV,
                                 PRECISION)
        else:
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, mask_base, dm_base, lse_ptr + bh * L,
                                 delta_ptr + bh * L, bh * L, n0, offs_n, 0, L,
                                 seed_ptr, L, S, E, Ev, sqm, sqe, sdm, sde, smm, qk_scale, p_drop, drop_scale,
                                 False, HAS_MASK, DROPOUT, MASK_GRAD, BLOCK_M, BLOCK_N, BLOCK_E, BLOCK_EV,
                                 PRECISION)
    out = bhk * S + offs_n
    tl.store(dk_ptr + out[:, None] * E + offs_e[None, :], (dk * scale).to(dk_ptr.dtype.element_ty),
             mask=n_ok[:, None] & (offs_e[None, :] < E))
    tl.store(dv_ptr + out[:, None] * Ev + offs_ev[None, :], dv.to(dv_ptr.dtype.element_ty),
             mask=n_ok[:, None] & (offs_ev[None, :] < Ev))


@triton.jit
def _dq_tiles(dq, q, do, lse2, delta, k_base, v_base, mask_base, rows, offs_m, lo, hi,
              seed_ptr, L, S, E, Ev, skn, ske, svn, sve, smn, qk_scale, p_drop, drop_scale,
              DIAG: tl.constexpr, HAS_MASK: tl.constexpr, DROPOUT: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr,
              BLOCK_EV: tl.constexpr, PRECISION: tl.constexpr):
    """dQ (unscaled) of BLOCK_M queries summed over key tiles [lo, hi). Keys past S load
    k = v = 0, so whatever P they get, dS·K adds nothing for them."""
    offs_e = tl.arange(0, BLOCK_E)
    offs_ev = tl.arange(0, BLOCK_EV)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
        n_ok = offs_n < S
        kt, s = _scores(q, k_base, mask_base, offs_m, offs_n, n_ok, offs_e, L, E, skn, ske, smn, qk_scale, dq,
                        HAS_MASK, PRECISION)
        p = tl.exp2(s - lse2[:, None])
        if DIAG:
            p = tl.where(offs_n[None, :] <= offs_m[:, None], p, 0.0)
        vt = tl.load(v_base + offs_n[None, :] * svn + offs_ev[:, None] * sve,
                     mask=n_ok[None, :] & (offs_ev[:, None] < Ev), other=0.0)
        dp = tl.dot(do, vt, input_precision=PRECISION).to(dq.dtype)
        if DROPOUT:
            dp = tl.where(_keep(seed_ptr, rows, start_n, p_drop, BLOCK_M, BLOCK_N), dp * drop_scale, 0.0)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), dq, input_precision=PRECISION)
    return dq


@triton.jit(do_not_specialize=["L_BUCKET", "S_BUCKET"])
def _dq_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, seed_ptr,
               qk_scale, scale, p_drop, drop_scale, Hq, L, S, E, Ev, GROUP, L_BUCKET, S_BUCKET,
               sqb, sqh, sqm, sqe, skb, skh, skn, ske, svb, svh, svn, sve, smb, smh, smm, smn,
               sdb, sdh, sdm, sde,
               IS_CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, DROPOUT: tl.constexpr,
               PRECISION: tl.constexpr, ACC: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr,
               BLOCK_EV: tl.constexpr):
    """dq (B, Hq, L, E) contiguous for BLOCK_M queries of one (batch, query head); the
    rest as _dkdv_kernel. BLOCK_M is a multiple of BLOCK_N. Grid (cdiv(L, BLOCK_M)·B·Hq,).
    Cost: 6·BLOCK_M·S·E FLOPs (S, dP, dQ; half under causal); bytes: its q, dO tiles
    in and dq out once, every k and v tile streamed once per program, mostly from L2."""
    # causal: the last query tiles see the most keys; launch them first, less tail
    pid_m, bh = _tile_and_row(L, BLOCK_M, IS_CAUSAL)
    b = bh // Hq
    h = bh % Hq
    hk = h // GROUP
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M).to(tl.int64)
    offs_e = tl.arange(0, BLOCK_E)
    offs_ev = tl.arange(0, BLOCK_EV)
    m_ok = offs_m < L
    q = tl.load(q_ptr + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_e[None, :] * sqe,
                mask=m_ok[:, None] & (offs_e[None, :] < E), other=0.0)
    do = tl.load(do_ptr + b * sdb + h * sdh + offs_m[:, None] * sdm + offs_ev[None, :] * sde,
                 mask=m_ok[:, None] & (offs_ev[None, :] < Ev), other=0.0)
    lse2 = tl.load(lse_ptr + bh * L + offs_m, mask=m_ok, other=float("inf")) * 1.4426950408889634
    delta = tl.load(delta_ptr + bh * L + offs_m, mask=m_ok, other=0.0)
    k_base = k_ptr + b * skb + hk * skh
    v_base = v_ptr + b * svb + hk * svh
    mask_base = mask_ptr + b * smb + h * smh + offs_m[:, None] * smm
    rows = bh * L + offs_m
    dq = tl.zeros((BLOCK_M, BLOCK_E), dtype=ACC)
    if IS_CAUSAL:
        dq = _dq_tiles(dq, q, do, lse2, delta, k_base, v_base, mask_base, rows, offs_m, 0, tl.minimum(m0, S),
                       seed_ptr, L, S, E, Ev, skn, ske, svn, sve, smn, qk_scale, p_drop, drop_scale,
                       False, HAS_MASK, DROPOUT, BLOCK_M, BLOCK_N, BLOCK_E, BLOCK_EV, PRECISION)
        dq = _dq_tiles(dq, q, do, lse2, delta, k_base, v_base, mask_base, rows, offs_m,
                       m0, tl.minimum(m0 + BLOCK_M, S),
                       seed_ptr, L, S, E, Ev, skn, ske, svn, sve, smn, qk_scale, p_drop, drop_scale,
                       True, HAS_MASK, DROPOUT, BLOCK_M, BLOCK_N, BLOCK_E, BLOCK_EV, PRECISION)
    else:
        dq = _dq_tiles(dq, q, do, lse2, delta, k_base, v_base, mask_base, rows, offs_m, 0, S,
                       seed_ptr, L, S, E, Ev, skn, ske, svn, sve, smn, qk_scale, p_drop, drop_scale,
                       False, HAS_MASK, DROPOUT, BLOCK_M, BLOCK_N, BLOCK_E, BLOCK_EV, PRECISION)
    tl.store(dq_ptr + (bh * L + offs_m)[:, None] * E + offs_e[None, :], (dq * scale).to(dq_ptr.dtype.element_ty),
             mask=m_ok[:, None] & (offs_e[None, :] < E))


# ---- block sizes -----------------------------------------------------------------------

def _cfg(m: int, n: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=warps, num_stages=stages)


# H100/H200 candidates in the spirit of Triton's fused-attention tutorial: wide query tiles
# forward and for dQ (BLOCK_M a multiple of BLOCK_N), wide key tiles for dK/dV (the reverse).
_FWD_CONFIGS = [_cfg(128, 128, 8, 3), _cfg(128, 64, 8, 3), _cfg(128, 64, 4, 3), _cfg(64, 64, 4, 3),
                _cfg(64, 32, 4, 2), _cfg(32, 32, 4, 2)]
_DKDV_CONFIGS = [_cfg(32, 128, 4, 3), _cfg(64, 128, 8, 3), _cfg(32, 64, 4, 3), _cfg(16, 64, 4, 2),
                 _cfg(16, 32, 4, 2)]
_DQ_CONFIGS = [_cfg(128, 32, 4, 3), _cfg(128, 64, 8, 3), _cfg(64, 32, 4, 3), _cfg(64, 16, 4, 2),
               _cfg(32, 16, 4, 2)]
# Under the interpreter: several tiles per test shape, so ragged edges, the causal split
# and (dK/dV) more than one query tile per diagonal all run.
_INTERPRET = {"fwd": dict(BLOCK_M=16, BLOCK_N=16), "dkdv": dict(BLOCK_M=16, BLOCK_N=32),
              "dq": dict(BLOCK_M=32, BLOCK_N=16)}


def _pad(n: int) -> int:
    """A head dim padded to the tile width tl.dot takes: a power of two >= 16."""
    return max(16, next_power_of_2(n))


def _cost(kind: str, c: triton.Config, e: int, ev: int, size: int) -> tuple[int, float]:
    """(shared-memory bytes, accumulator registers per thread) a config needs, an upper
    bound: the streamed tiles once per pipeline stage, the resident tiles (q; q and dO;
    k and v) and, in the backward, the P/dS tile a second dot reads from shared memory.
    An estimate: checked against some sm_90 compiles (triton 3.9; the head dims and flags
    compared were not recorded, and reports/sm90-compile-2026-11-29 does not rerun them) it
    was mostly generous (16-bit forward the most) and once a few percent under (fp64
    forward with mask and dropout, 64x64, 3 stages); a config that does not fit fails to
    launch with OutOfResources, which the autotuner catches and skips."""
    m, n = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
    streamed = c.num_stages * (m if kind == "dkdv" else n) * (e + ev)
    resident = {"fwd": m * e, "dq": m * (e + ev) + m * n, "dkdv": n * (e + ev) + m * n}[kind]
    acc = {"fwd": m * ev, "dq": m * e, "dkdv": n * (e + ev)}[kind]
    return size * (streamed + resident), acc / (32 * c.num_warps)


def _pruner(kind: str):
    def prune(configs, named_args, **kwargs):
        e, ev = _pad(named_args["E"]), _pad(named_args["Ev"])
        size = named_args["q_ptr"].element_size()
        costs = [_cost(kind, c, e, ev, size) for c in configs]
        fit = [c for c, (smem, regs) in zip(configs, costs) if smem <= _SMEM_BUDGET and regs <= _ACC_REGS]
        # nothing fits (fp64 at head dim 256): the smallest footprint, which may spill
        return fit or [min(zip(costs, configs), key=lambda t: t[0])[1]]
    return prune


_KEY = ["E", "Ev", "L_BUCKET", "S_BUCKET", "IS_CAUSAL", "HAS_MASK", "DROPOUT", "PRECISION"]


def _tuned(kernel, configs, kind, key=_KEY):
    return triton.autotune(configs=configs, key=key, prune_configs_by={"early_config_prune": _pruner(kind)})(kernel)


# EVEN_N depends on the BLOCK_N the autotuner picks, so the heuristic sits inside it
_fwd_fixed = triton.heuristics({"EVEN_N": lambda a: a["S"] % a["BLOCK_N"] == 0})(_fwd_kernel)
_fwd_tuned = _tuned(_fwd_fixed, _FWD_CONFIGS, "fwd")
_dkdv_tuned = _tuned(_dkdv_kernel, _DKDV_CONFIGS, "dkdv", _KEY + ["MASK_GRAD"])
_dq_tuned = _tuned(_dq_kernel, _DQ_CONFIGS, "dq")


def _launch(kernel, tuned, kind: str, tiles: int, rows: int, args, meta) -> None:
    """Launch with the interpreter's fixed config or the autotuner's; the grid is
    (cdiv(tiles, BLOCK_M or BLOCK_N) · rows,), see _tile_and_row."""
    block = "BLOCK_N" if kind == "dkdv" else "BLOCK_M"
    if INTERPRETED:
        cfg = _INTERPRET[kind]
        kernel[(cdiv(tiles, cfg[block]) * rows,)](*args, **meta, **cfg, num_warps=4)
    else:
        tuned[lambda c: (cdiv(tiles, c[block]) * rows,)](*args, **meta)


# ---- launchers ---------------------------------------------------------------------------

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _meta(q, mask, dropout_p: float, is_causal: bool, e: int, ev: int) -> dict:
    """The compile-time flags shared by every kernel here. fp32 takes TF32 exactly when
    torch's matmul flag allows it, read at every call (as kernels/gemm.py)."""
    return dict(IS_CAUSAL=bool(is_causal), HAS_MASK=mask is not None, DROPOUT=dropout_p > 0,
                PRECISION=dot_precision(q.dtype), ACC=_acc(q.dtype), BLOCK_E=_pad(e), BLOCK_EV=_pad(ev))


def _common(q, k, v, mask, dropout_p, scale, seed):
    """Shapes, the mask as a (B, Hq, L, S) view and its strides, placeholder pointers for
    what is absent, and the scalar arguments every kernel takes."""
    B, Hq, L, E = q.shape
    Hkv, S, Ev = k.shape[1], k.shape[2], v.shape[3]
    if mask is not None:
        mask = mask.expand(B, Hq, L, S)  # a view: stride 0 where it broadcasts
    m_strides = mask.stride() if mask is not None else (0, 0, 0, 0)
    p = float(dropout_p)
    scalars = (float(scale) * LOG2E, p, 1.0 / (1.0 - p) if p > 0 else 1.0)
    return (B, Hq, Hkv, L, S, E, Ev), (q if mask is None else mask), m_strides, (q if seed is None else seed), scalars


def _bucket(n: int) -> int:
    return min(next_power_of_2(max(n, 1)), _LEN_BUCKET_CAP)


def attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                      dropout_p: float, is_causal: bool, scale: float, seed: torch.Tensor | None):
    """(out, lse) as the module docstring. seed: (1,) int64 on q's device, needed when
    dropout_p > 0 (from torch's generator, see layers/functions/softmax.py's draw_seed)."""
    (B, Hq, Hkv, L, S, E, Ev), mask_t, ms, seed_t, (qk_scale, p, drop_scale) = _common(q, k, v, mask,
                                                                                       dropout_p, scale, seed)
    out = q.new_empty((B, Hq, L, Ev))
    lse = q.new_empty((B, Hq, L), dtype=_lse_dtype(q.dtype))
    if B * Hq * L == 0:
        return out, lse
    args = (q, k, v, mask_t, out, lse, seed_t, qk_scale, p, drop_scale, Hq, L, S, E, Ev, Hq // Hkv,
            _bucket(L), _bucket(S), *q.stride(), *k.stride(), *v.stride(), *ms)
    _launch(_fwd_fixed, _fwd_tuned, "fwd", L, B * Hq, args, _meta(q, mask, p, is_causal, E, Ev))
    return out, lse


def attention_backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       mask: torch.Tensor | None, out: torch.Tensor, lse: torch.Tensor, dropout_p: float,
                       is_causal: bool, scale: float, seed: torch.Tensor | None, mask_grad: bool = False):
    """(dq, dk, dv, dmask), dq/dk/dv contiguous in q's dtype, for the forward that returned
    (out, lse) with the same arguments. dout: any strides (stride 0 too). dmask: None
    unless mask_grad (which takes a mask and is_causal False, as attention_triton
    allows), else the mask's gradient dS in the mask's shape and dtype (summed
    over the dims where it broadcasts). It costs a (B, Hq, L, S) buffer the kernel
    writes once: in the mask's dtype when the mask has that shape, else in fp32 (fp64
    for fp64) so the sum over batch and heads does not round in 16 bits."""
    (B, Hq, Hkv, L, S, E, Ev), mask_t, ms, seed_t, (qk_scale, p, drop_scale) = _common(q, k, v, mask,
                                                                                       dropout_p, scale, seed)
    dq, dk, dv = q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)
    meta = _meta(q, mask, p, is_causal, E, Ev)
    dm = _mask_grad_buffer(mask, (B, Hq, L, S)) if mask_grad else None
    delta = q.new_empty((B * Hq, L), dtype=_lse_dtype(q.dtype))
    if B * Hq * L > 0:
        block = 16 if INTERPRETED else 64
        _delta_kernel[(cdiv(L, block) * B * Hq,)](out, dout, delta, Hq, L, Ev, *dout.stride(),
                                                         BLOCK_M=block, BLOCK_EV=_pad(Ev))
    common = (qk_scale, float(scale), p, drop_scale)
    strides = (*q.stride(), *k.stride(), *v.stride(), *ms, *dout.stride())
    if B * Hkv * S > 0:
        args = (q, k, v, mask_t, dout, lse, delta, dk, dv, q if dm is None else dm, seed_t, *common, Hq, Hkv,
                L, S, E, Ev, Hq // Hkv, _bucket(L), _bucket(S), *strides)
        _launch(_dkdv_kernel, _dkdv_tuned, "dkdv", S, B * Hkv, args, dict(meta, MASK_GRAD=dm is not None))
    if B * Hq * L > 0:
        args = (q, k, v, mask_t, dout, lse, delta, dq, seed_t, *common, Hq, L, S, E, Ev, Hq // Hkv,
                _bucket(L), _bucket(S), *strides)
        _launch(_dq_kernel, _dq_tuned, "dq", L, B * Hq, args, meta)
    if dm is not None and dm.shape != mask.shape:
        dm = dm.sum_to_size(mask.shape).to(mask.dtype)
    return dq, dk, dv, dm


def _mask_grad_buffer(mask: torch.Tensor, full: tuple) -> torch.Tensor:
    """The (B, Hq, L, S) buffer _dkdv_kernel writes dS into (see attention_backward)."""
    dtype = mask.dtype if tuple(mask.shape) == full else _lse_dtype(mask.dtype)
    return torch.empty(full, dtype=dtype, device=mask.device)
