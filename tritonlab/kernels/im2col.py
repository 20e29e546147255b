"""im2col: unfold the input into the column matrix a convolution's GEMM multiplies.

The teaching step before implicit GEMM (kernels/conv.py): materialise
    cols[(n, p, q), (c, r, s)] = x[n, c, p*sh - pad_h + r*dh, q*sw - pad_w + s*dw]
(0 where that falls in the padding), an (N*P*Q, C*R*S) matrix whose group g is columns
[g*CG*R*S, (g+1)*CG*R*S). Then conv = cols_g @ weight_g.reshape(OG, CG*R*S)^T, a plain
GEMM. The column order (c, r, s) is the weight's own (O, CG, R, S) order, so the weight
needs no reordering.

The price is the buffer: R*S/(sh*sw) times the input's size (9x for a 3x3 stride-1
conv), written once here and read back by the GEMM, where implicit GEMM reads the input
(mostly from L2) and writes nothing extra. `buffer_bytes` states it for the benchmark.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..backend import interpreter_enabled
from ._host import cdiv

INTERPRETED = interpreter_enabled()  # as triton.jit read it for this module's kernels (see _host)


@triton.jit
def _im2col_kernel(
    x_ptr, cols_ptr,
    H, W, P, Q, M, K, R, S,
    sxn, sxc, sxh, sxw, scm,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """cols[m, k] for one BLOCK_M x BLOCK_K tile, m = (n*P + p)*Q + q, k = (c*R + r)*S + s.

    Grid: (cdiv(M, BLOCK_M), cdiv(K, BLOCK_K)), M = N*P*Q, K = C*R*S.
    Pointers: x (N, C, H, W) with strides sx*; cols (M, K) with row stride scm, unit
    column stride. Cost: reads x (each pixel about R*S/(sh*sw) times, mostly from cache),
    writes M*K elements: the buffer's bytes once; no FLOPs.
    """
    offs_m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    q = offs_m % Q
    p = (offs_m // Q) % P
    n = offs_m // (P * Q)
    s = offs_k % S
    r = (offs_k // S) % R
    c = offs_k // (R * S)
    h = (p * stride_h - pad_h)[:, None] + (r * dil_h)[None, :]
    w = (q * stride_w - pad_w)[:, None] + (s * dil_w)[None, :]
    in_tile = (offs_m < M)[:, None] & (offs_k < K)[None, :]
    inside = in_tile & (h >= 0) & (h < H) & (w >= 0) & (w < W)
    src = x_ptr + (n * sxn)[:, None] + (c.to(tl.int64) * sxc)[None, :] + h * sxh + w * sxw
    vals = tl.load(src, mask=inside, other=0.0)
    tl.store(cols_ptr + offs_m[:, None] * scm + offs_k[None, :], vals, mask=in_tile)


def im2col(x, kernel, stride, pad, dilation, out_size):
    """The (N*P*Q, C*R*S) column matrix of x (any strides) in x's dtype.
    `kernel` (R, S), `pad` (top, left), `out_size` (P, Q)."""
    n, c, h, w = x.shape
    (r, s), (p, q) = kernel, out_size
    m, k = n * p * q, c * r * s
    cols = torch.empty((m, k), device=x.device, dtype=x.dtype)
    if cols.numel() == 0:
        return cols
    block_m, block_k = (16, 16) if INTERPRETED else (64, 64)
    _im2col_kernel[(cdiv(m, block_m), cdiv(k, block_k))](
        x, cols, h, w, p, q, m, k, r, s, *x.stride(), cols.stride(0),
        *stride, *pad, *dilation, BLOCK_M=block_m, BLOCK_K=block_k)
    return cols


def buffer_bytes(n: int, c: int, out_size, kernel, element_size: int) -> int:
    """Bytes of the column matrix for N images of C channels: N*P*Q * C*R*S elements."""
    (p, q), (r, s) = out_size, kernel
    return n * p * q * c * r * s * element_size
