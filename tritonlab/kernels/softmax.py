"""Softmax, dropout and dropout(softmax(x)) along one dim, fused: one forward kernel and
one backward kernel, each half switched off at compile time (SOFTMAX, DROPOUT).

Rows. A tensor is viewed as (outer, n, inner) around the softmax dim: row r = (o, i)
with o = r // inner, i = r % inner holds the n elements x[o, :, i], at stride
`stride_n` apart. A softmax over a non-last dim runs as such strided rows, without a
transpose: a transpose would add a full copy in and out (two more passes over memory in
each direction); the strided rows read the same bytes, only less well coalesced. The
output is contiguous over the logical shape. Dropout alone uses the last dim as rows.

Forward, per row: m = max x, s = sum exp(x - m), y = exp(x - m) / s, out = y * keep / (1-p).
While the row fits on chip (n <= SINGLE_PASS_MAX_COLS) a program holds ROWS whole rows
(block of next_power_of_2(n) columns) and reads x once. Longer rows loop over blocks of
LOOP_BLOCK columns: an online pass keeps a running max and a rescaled sum, a second pass
writes (x is read twice, the second time mostly from L2).

Backward. Softmax alone saves y and computes dx = y * (dy - sum(dy * y)). With dropout
the layer saves x and lse = m + log(s) (4 bytes per row) instead: y = exp(x - lse) is
rebuilt in registers, so the forward writes one tensor, not out and y, and the
backward still reads two (x and dout) and writes one. g = dout * keep / (1-p) is the
gradient reaching y, then dx = y * (g - sum(g * y)).

Mask. No mask is stored: keep = u >= p where u is Philox uniform noise regenerated from
the seed (a 1-element int64 tensor drawn from torch's generator on the tensor's device,
read by the kernel, so drawing it never syncs) and the element's logical coordinates
(row, column) -- not its address, so the mask does not depend on strides. One Philox call
gives 4 numbers: counter (column // 4, row) feeds columns 4k..4k+3 (a quarter of the
integer work of one call per element, which would otherwise cost about what moving the
bytes does on an H100).

Cost per element of b bytes: forward reads b and writes b (softmax: ~5 FLOPs + 1 exp;
Philox ~ 15 integer ops), so the floor is bandwidth: 8192 x 4096 fp32 moves 268 MB, ~80 us
at 3.35 TB/s (H100), ~56 us at 4.8 TB/s (H200). Backward reads 2b and writes b.
Looped rows read x twice.
"""
import math

import torch
import triton
import triton.language as tl
from triton.language.random import philox, uint_to_uniform_float

from ._host import cdiv, next_power_of_2
from .activations import collapse, compute_dtype

SINGLE_PASS_MAX_COLS = 16384   # longest row held in registers in one piece
LOOP_BLOCK = 4096              # columns per step of the looped (online) kernel
TILE = 2048                    # elements per program for short rows: ROWS = TILE // block


@triton.jit
def _keep(seed_ptr, rows, col0, p, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    """(ROWS, BLOCK_N) booleans: True where element (row, col0 + c) is kept.
    seed_ptr: (1,) int64; rows: int64 (ROWS,); col0 a multiple of 4. Philox counter
    (col // 4, row_lo, row_hi, 0) gives 4 uniforms, interleaved back onto columns 4k..4k+3."""
    Q: tl.constexpr = BLOCK_N // 4
    quad = (col0 // 4 + tl.arange(0, Q)).to(tl.uint32)
    zero = tl.zeros((ROWS, Q), dtype=tl.uint32)
    c0 = quad[None, :] + zero
    c1 = rows.to(tl.uint32)[:, None] + zero
    c2 = (rows >> 32).to(tl.uint32)[:, None] + zero
    r0, r1, r2, r3 = philox(tl.load(seed_ptr), c0, c1, c2, zero)
    # join(join(r0, r2), join(r1, r3)) is (ROWS, Q, 2, 2) holding r0 r1 r2 r3 in order
    r = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), (ROWS, BLOCK_N))
    return uint_to_uniform_float(r) >= p


@triton.jit
def _rows(ROWS: tl.constexpr, n_rows, inner):
    """This program's rows (int64), which of them exist, and the (o, i) coordinates the
    loads use: rows past the end read the last row instead (their results are never
    stored), so no padding row computes -inf - -inf."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    safe = tl.minimum(rows, n_rows - 1)
    return rows, rows < n_rows, safe // inner, safe % inner


@triton.jit
def _fwd_kernel(x_ptr, out_ptr, lse_ptr, seed_ptr, p, scale, n_rows, n, inner,
                sx_o, sx_n, sx_i,
                SOFTMAX: tl.constexpr, DROPOUT: tl.constexpr, SAVE_LSE: tl.constexpr,
                LOOPED: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
                ACC: tl.constexpr):
    """out = dropout(softmax(x)) (either half may be off) over rows of n columns.
    x: any strides (sx_o, sx_n, sx_i) over the (outer, n, inner) view; out: contiguous
    (outer, n, inner); lse: (outer * inner,) fp32/fp64, written when SAVE_LSE;
    seed_ptr: (1,) int64. Grid: (cdiv(n_rows, ROWS),); one program computes ROWS rows
    (LOOPED: one row, BLOCK_N columns per step). ACC: fp32, or fp64 for fp64 input.
    Cost per element of b bytes: reads b and writes b (LOOPED reads x twice: 3b), plus
    4 (fp32) bytes of lse a row; 5 FLOPs for softmax, 2 for dropout, and a quarter of a
    Philox call (~15 integer ops) for the mask. Bandwidth is the floor."""
    rows, row_ok, o, i = _rows(ROWS, n_rows, inner)
    x_base = o * sx_o + i * sx_i
    out_base = o * n * inner + i
    cols = tl.arange(0, BLOCK_N).to(tl.int64)
    if SOFTMAX:  # what a padding column reads: nothing for the max and the sum
        pad = float("-inf")
    else:        # and for dropout alone a finite value (-inf * 0 would be a nan)
        pad = 0.0
    if not LOOPED:
        mask = cols[None, :] < n
        x = compute_dtype(tl.load(x_ptr + x_base[:, None] + cols[None, :] * sx_n, mask=mask,
                                  other=pad))
        if SOFTMAX:
            m = tl.max(x, axis=1)
            e = tl.exp(x - m[:, None])
            s = tl.sum(e, axis=1)
            x = e / s[:, None]
            if SAVE_LSE:
                tl.store(lse_ptr + rows, m + tl.log(s), mask=row_ok)
        if DROPOUT:
            x = tl.where(_keep(seed_ptr, rows, 0, p, ROWS, BLOCK_N), x * scale, 0.0)
        tl.store(out_ptr + out_base[:, None] + cols[None, :] * inner,
                 x.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & mask)
    else:
        m = tl.full((ROWS,), float("-inf"), ACC)
        s = tl.zeros((ROWS,), ACC)
        if SOFTMAX:
            for start in range(0, n, BLOCK_N):
                c = start + cols
                mask = c[None, :] < n
                x = compute_dtype(tl.load(x_ptr + x_base[:, None] + c[None, :] * sx_n,
                                          mask=mask, other=pad))
                m_new = tl.maximum(m, tl.max(x, axis=1))
                # a block of only -inf keeps m at -inf; shift by 0 then, not by -inf (nan)
                shift = tl.where(m_new == float("-inf"), 0.0, m_new)
                s = s * tl.exp(m - shift) + tl.sum(tl.exp(x - shift[:, None]), axis=1)
                m = m_new
            if SAVE_LSE:
                tl.store(lse_ptr + rows, m + tl.log(s), mask=row_ok)
        for start in range(0, n, BLOCK_N):
            c = start + cols
            mask = c[None, :] < n
            x = compute_dtype(tl.load(x_ptr + x_base[:, None] + c[None, :] * sx_n,
                                      mask=mask, other=pad))
            if SOFTMAX:
                x = tl.exp(x - m[:, None]) / s[:, None]
            if DROPOUT:
                x = tl.where(_keep(seed_ptr, rows, start, p, ROWS, BLOCK_N), x * scale, 0.0)
            tl.store(out_ptr + out_base[:, None] + c[None, :] * inner,
                     x.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & mask)


@triton.jit
def _bwd_kernel(src_ptr, lse_ptr, dout_ptr, dx_ptr, seed_ptr, p, scale, n_rows, n, inner,
                ss_o, ss_n, ss_i, sd_o, sd_n, sd_i,
                SOFTMAX: tl.constexpr, DROPOUT: tl.constexpr, FROM_LOGITS: tl.constexpr,
                LOOPED: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
                ACC: tl.constexpr):
    """dx for out = dropout(softmax(x)). src: y (softmax alone) or x (FROM_LOGITS, then
    y = exp(x - lse)), strides (ss_*); dout: strides (sd_*); dx: contiguous
    (outer, n, inner); lse: (outer * inner,). Grid, rows and ACC as in _fwd_kernel.
    Cost per element of b bytes: reads src and dout, writes dx: 3b (LOOPED reads both
    twice, once for sum(g * y) and once for dx: 5b); dropout alone reads dout only: 2b.
    4 FLOPs for softmax (FROM_LOGITS adds the exp rebuilding y), 2 for dropout, and
    the mask's Philox share as in the forward."""
    rows, row_ok, o, i = _rows(ROWS, n_rows, inner)
    s_base = o * ss_o + i * ss_i
    d_base = o * sd_o + i * sd_i
    dx_base = o * n * inner + i
    cols = tl.arange(0, BLOCK_N).to(tl.int64)
    lse = tl.zeros((ROWS,), ACC)
    if FROM_LOGITS:
        lse = tl.load(lse_ptr + o * inner + i)
    if not LOOPED:
        mask = cols[None, :] < n
        g = _grad_to_y(dout_ptr, d_base, cols, sd_n, mask, seed_ptr, rows, 0, p, scale, DROPOUT, ROWS,
                       BLOCK_N)
        if SOFTMAX:
            y = _load_y(src_ptr, s_base, cols, ss_n, mask, lse, FROM_LOGITS)
            g = y * (g - tl.sum(g * y, axis=1)[:, None])
        tl.store(dx_ptr + dx_base[:, None] + cols[None, :] * inner,
                 g.to(dx_ptr.dtype.element_ty), mask=row_ok[:, None] & mask)
    else:
        dot = tl.zeros((ROWS,), ACC)
        if SOFTMAX:
            for start in range(0, n, BLOCK_N):
                c = start + cols
                mask = c[None, :] < n
                g = _grad_to_y(dout_ptr, d_base, c, sd_n, mask, seed_ptr, rows, start, p, scale, DROPOUT,
                               ROWS, BLOCK_N)
                y = _load_y(src_ptr, s_base, c, ss_n, mask, lse, FROM_LOGITS)
                dot += tl.sum(g * y, axis=1)
        for start in range(0, n, BLOCK_N):
            c = start + cols
            mask = c[None, :] < n
            g = _grad_to_y(dout_ptr, d_base, c, sd_n, mask, seed_ptr, rows, start, p, scale, DROPOUT,
                           ROWS, BLOCK_N)
            if SOFTMAX:
                y = _load_y(src_ptr, s_base, c, ss_n, mask, lse, FROM_LOGITS)
                g = y * (g - dot[:, None])
            tl.store(dx_ptr + dx_base[:, None] + c[None, :] * inner,
                     g.to(dx_ptr.dtype.element_ty), mask=row_ok[:, None] & mask)


@triton.jit
def _grad_to_y(dout_ptr, base, cols, stride, mask, seed_ptr, rows, col0, p, scale,
               DROPOUT: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    """The gradient reaching the softmax output for a block: dout, through the dropout
    mask regenerated for columns col0.. (kept * 1/(1-p), dropped 0)."""
    g = compute_dtype(tl.load(dout_ptr + base[:, None] + cols[None, :] * stride, mask=mask, other=0.0))
    if DROPOUT:
        g = tl.where(_keep(seed_ptr, rows, col0, p, ROWS, BLOCK_N), g * scale, 0.0)
    return g


@triton.jit
def _load_y(src_ptr, base, cols, stride, mask, lse, FROM_LOGITS: tl.constexpr):
    """The softmax output for a block: loaded, or rebuilt from the logits as exp(x - lse)."""
    v = compute_dtype(tl.load(src_ptr + base[:, None] + cols[None, :] * stride, mask=mask,
                              other=0.0))
    if FROM_LOGITS:
        v = tl.where(mask, tl.exp(v - lse[:, None]), 0.0)
    return v


def _acc(t: torch.Tensor):
    return tl.float64 if t.dtype == torch.float64 else tl.float32


def _stride_of(shape, strides):
    """The one stride that steps over dims `shape` merged, 0 if all have size 1, None if
    they do not merge."""
    dims = collapse(shape, strides)
    if len(dims) > 1:
        return None
    return dims[0][1][0] if dims else 0


def rows_view(t: torch.Tensor, dim: int):
    """(t, (outer, n, inner), (stride_o, stride_n, stride_i)) around `dim`. t is copied
    to contiguous only when its dims before or after `dim` do not merge into one stride
    (e.g. a 4-D tensor permuted so that two of its leading dims are swapped)."""
    if t.dim() == 0:
        return t, (1, 1, 1), (0, 0, 0)
    if not -t.dim() <= dim < t.dim():
        raise IndexError(f"dim must be in [{-t.dim()}, {t.dim() - 1}] for a {t.dim()}-D tensor, got {dim}")
    dim %= t.dim()  # a negative dim would slice the shape wrongly (and read out of bounds)
    shape, strides = t.shape, t.stride()
    outer, inner = math.prod(shape[:dim]), math.prod(shape[dim + 1:])
    s_o, s_i = _stride_of(shape[:dim], strides[:dim]), _stride_of(shape[dim + 1:], strides[dim + 1:])
    if s_o is None or s_i is None:
        t = t.contiguous()
        s_o, s_i, strides = inner * shape[dim], 1, t.stride()
    return t, (outer, shape[dim], inner), (s_o, strides[dim], s_i)


def _config(n: int, n_rows: int):
    """(LOOPED, ROWS, BLOCK_N, num_warps) for rows of n columns."""
    if n > SINGLE_PASS_MAX_COLS:
        return True, 1, LOOP_BLOCK, 8
    block = max(4, next_power_of_2(n))  # >= 4: the mask takes columns in fours
    rows = max(1, min(TILE // block, next_power_of_2(n_rows)))
    # 16 elements a thread from 2048 up: fewer warps need more registers a thread (the fused
    # backward at 16K: 52-61 with 32 warps, 115 with 16, ~185 with 8, no spills; sm_90
    # compiles, triton 3.9 and 3.6, reports/sm90-compile-2026-11-29)
    return False, rows, block, min(32, max(4, rows * block // 512))


def softmax_dropout_forward(x: torch.Tensor, dim: int, p: float, seed: torch.Tensor | None,
                            softmax: bool = True, save_lse: bool = False):
    """(out, lse): out = dropout(softmax(x, dim), p), contiguous. softmax=False leaves
    the softmax out, seed=None the dropout (seed: (1,) int64 on x's device). lse
    (per row, fp32 or fp64) is returned when save_lse, else None."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    x, (outer, n, inner), strides = rows_view(x, dim)
    n_rows = outer * inner
    lse = torch.empty(n_rows, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32,
                      device=x.device) if save_lse else None
    if x.numel() == 0:
        return out, lse
    looped, rows, block, warps = _config(n, n_rows)
    _fwd_kernel[(cdiv(n_rows, rows),)](
        x, out, out if lse is None else lse, x if seed is None else seed, p, _scale(p),
        n_rows, n, inner, *strides,
        SOFTMAX=softmax, DROPOUT=seed is not None, SAVE_LSE=save_lse, LOOPED=looped,
        ROWS=rows, BLOCK_N=block, ACC=_acc(x), num_warps=warps)
    return out, lse


def softmax_dropout_backward(src: torch.Tensor, lse: torch.Tensor | None, dout: torch.Tensor,
                             dim: int, p: float, seed: torch.Tensor | None,
                             softmax: bool = True) -> torch.Tensor:
    """dx (contiguous) for out = dropout(softmax(x, dim), p) given dout. src: the softmax
    output y, or x when lse is given (see the module docstring); ignored when
    softmax=False. seed: the forward's, or None without dropout."""
    dx = torch.empty(dout.shape, dtype=dout.dtype, device=dout.device)
    if dx.numel() == 0:
        return dx
    src, _, s_strides = rows_view(src, dim)
    dout, (outer, n, inner), d_strides = rows_view(dout, dim)
    n_rows = outer * inner
    looped, rows, block, warps = _config(n, n_rows)
    _bwd_kernel[(cdiv(n_rows, rows),)](
        src, dout if lse is None else lse, dout, dx, dout if seed is None else seed, p, _scale(p),
        n_rows, n, inner, *s_strides, *d_strides,
        SOFTMAX=softmax, DROPOUT=seed is not None, FROM_LOGITS=lse is not None, LOOPED=looped,
        ROWS=rows, BLOCK_N=block, ACC=_acc(dout), num_warps=warps)
    return dx


def _scale(p: float) -> float:
    """1 / (1 - p), the factor of a kept element; 0 at p == 1, where nothing is kept."""
    return 0.0 if p >= 1 else 1.0 / (1.0 - p)
