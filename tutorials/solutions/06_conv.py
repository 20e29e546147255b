"""Solutions to lesson 06's exercises (convolution), each with a plausible mistake
`wrong_K` that its check must reject."""
import os

import torch

if not torch.cuda.is_available():  # no GPU: run every kernel on CPU tensors through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported
import triton
import triton.language as tl

from tritonlab.kernels.gemm import matmul

GPU = torch.cuda.is_available()


# ---- exercise 1: an im2col kernel -------------------------------------------------------

@triton.jit
def _im2col_kernel(x_ptr, cols_ptr, H, W, P, Q, M, K, sxn, sxc, sxh, sxw, stride, pad,
                   R: tl.constexpr, S: tl.constexpr, SUBTRACT_PAD: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    n = offs_m // (P * Q)
    p = (offs_m // Q) % P
    q = offs_m % Q
    c = offs_k // (R * S)
    r = (offs_k // S) % R
    s = offs_k % S
    if SUBTRACT_PAD:
        h = (p * stride - pad)[:, None] + r[None, :]
        w = (q * stride - pad)[:, None] + s[None, :]
    else:  # the mistake: the patch starts at p*stride of the *unpadded* image
        h = (p * stride)[:, None] + r[None, :]
        w = (q * stride)[:, None] + s[None, :]
    in_tile = (offs_m < M)[:, None] & (offs_k < K)[None, :]
    inside = in_tile & (h >= 0) & (h < H) & (w >= 0) & (w < W)
    vals = tl.load(x_ptr + (n * sxn)[:, None] + (c * sxc)[None, :] + h * sxh + w * sxw, mask=inside, other=0.0)
    tl.store(cols_ptr + offs_m[:, None] * K + offs_k[None, :], vals, mask=in_tile)


def _im2col(x, kernel_size, stride, pad, subtract_pad):
    n, c, h, w = x.shape
    p = (h + 2 * pad - kernel_size) // stride + 1
    q = (w + 2 * pad - kernel_size) // stride + 1
    m, k = n * p * q, c * kernel_size * kernel_size
    cols = torch.empty((m, k), device=x.device, dtype=x.dtype)
    block_m, block_k = (64, 32) if GPU else (16, 16)
    _im2col_kernel[(triton.cdiv(m, block_m), triton.cdiv(k, block_k))](
        x, cols, h, w, p, q, m, k, *x.stride(), stride, pad, R=kernel_size, S=kernel_size,
        SUBTRACT_PAD=subtract_pad, BLOCK_M=block_m, BLOCK_K=block_k)
    return cols


def exercise_1(x, kernel_size, stride, pad):
    return _im2col(x, kernel_size, stride, pad, True)


def wrong_1(x, kernel_size, stride, pad):
    """Forgets to shift by the padding: every patch sits pad pixels down and right."""
    return _im2col(x, kernel_size, stride, pad, False)


# ---- exercise 2: implicit GEMM with dilation --------------------------------------------

@triton.jit
def _conv_dilated_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    H, W, O, P, Q, M, K,
    sxn, sxc, sxh, sxw, syn, syc, syp, syq,
    stride, pad, dil_h, dil_w,
    R: tl.constexpr, S: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_o = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    o_ok = offs_o < O
    n = offs_m // (P * Q)
    p = (offs_m // Q) % P
    q = offs_m % Q
    h0 = p * stride - pad
    w0 = q * stride - pad
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < K
        c = k // (R * S)
        r = (k // S) % R
        s = k % S
        h = h0[:, None] + (r * dil_h)[None, :]
        w = w0[:, None] + (s * dil_w)[None, :]
        a_ok = m_ok[:, None] & k_ok[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        a = tl.load(x_ptr + (n * sxn)[:, None] + c[None, :] * sxc + h * sxh + w * sxw, mask=a_ok, other=0.0)
        b = tl.load(w_ptr + offs_o[None, :] * K + k[:, None], mask=k_ok[:, None] & o_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc)
    acc += tl.load(b_ptr + offs_o, mask=o_ok, other=0.0).to(tl.float32)[None, :]
    y_off = (n * syn + p * syp + q * syq)[:, None] + offs_o[None, :] * syc
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & o_ok[None, :])


def _conv_dilated(x, weight, bias, stride, pad, dilation, dil_w):
    n, c, h, w = x.shape
    o, _, r, s = weight.shape
    p = (h + 2 * pad - dilation * (r - 1) - 1) // stride + 1
    q = (w + 2 * pad - dilation * (s - 1) - 1) // stride + 1
    y = torch.empty((n, o, p, q), device=x.device, dtype=x.dtype)
    m, k = n * p * q, c * r * s
    tile = dict(BLOCK_M=64, BLOCK_N=32, BLOCK_K=32) if GPU else dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)
    grid = (triton.cdiv(m, tile["BLOCK_M"]), triton.cdiv(o, tile["BLOCK_N"]))
    _conv_dilated_kernel[grid](x, weight.contiguous(), bias, y, h, w, o, p, q, m, k, *x.stride(), *y.stride(),
                               stride, pad, dilation, dil_w, R=r, S=s, **tile)
    return y


def exercise_2(x, weight, bias, stride, pad, dilation):
    return _conv_dilated(x, weight, bias, stride, pad, dilation, dilation)


def wrong_2(x, weight, bias, stride, pad, dilation):
    """Dilates the rows but forgets the columns (s instead of s * dilation): right shape, wrong taps."""
    return _conv_dilated(x, weight, bias, stride, pad, dilation, 1)


# ---- exercise 3: a 1x1 conv is one GEMM -------------------------------------------------

def exercise_3(x, weight, bias):
    n, c, h, w = x.shape
    o = weight.shape[0]
    rows = x.permute(0, 2, 3, 1).view(n * h * w, c)  # channels_last memory: a view, no copy
    y = matmul(rows, weight.view(o, c).t(), bias)  # (N*H*W, O)
    return y.view(n, h, w, o).permute(0, 3, 1, 2)


def wrong_3(x, weight, bias):
    """Reshapes by the logical NCHW shape: each 'row' then mixes pixels of one channel."""
    n, c, h, w = x.shape
    o = weight.shape[0]
    y = matmul(x.reshape(n * h * w, c), weight.view(o, c).t(), bias)
    return y.view(n, h, w, o).permute(0, 3, 1, 2)
