"""Solutions to the exercises of lesson 01 (elementwise), each with a plausible mistake
(wrong_K) that its check must catch."""
import os

import torch

if not torch.cuda.is_available():  # no GPU: run every kernel on CPU tensors through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported
import triton
import triton.language as tl

from tritonlab.kernels._math import sigmoid

BLOCK = 256


# ---- 1: leaky ReLU -----------------------------------------------------------------

@triton.jit
def leaky_relu_kernel(x_ptr, y_ptr, n, slope, MASKED: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n if MASKED else None  # the mistake: no mask, so the last block runs past n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(y_ptr + offs, tl.where(x > 0, x, slope * x), mask=mask)


def exercise_1(x: torch.Tensor, slope: float, out: torch.Tensor) -> torch.Tensor:
    n = x.numel()
    leaky_relu_kernel[(triton.cdiv(n, BLOCK),)](x, out, n, slope, MASKED=True, BLOCK=BLOCK)
    return out


def wrong_1(x: torch.Tensor, slope: float, out: torch.Tensor) -> torch.Tensor:
    """No mask: the last, partial block writes past the end of out."""
    n = x.numel()
    leaky_relu_kernel[(triton.cdiv(n, BLOCK),)](x, out, n, slope, MASKED=False, BLOCK=BLOCK)
    return out


# ---- 2: SiLU backward --------------------------------------------------------------

@triton.jit
def silu_backward_kernel(x_ptr, dy_ptr, dx_ptr, n, PRODUCT_RULE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
    dy = tl.load(dy_ptr + offs, mask=mask).to(tl.float32)
    s = sigmoid(x)
    if PRODUCT_RULE:
        dx = dy * (s + x * s * (1.0 - s))
    else:  # the mistake: d/dx of x * s taken as s alone
        dx = dy * s
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _silu_backward(x, dy, product_rule):
    x, dy = x.contiguous(), dy.contiguous()
    dx = torch.empty_like(x)
    n = x.numel()
    silu_backward_kernel[(triton.cdiv(n, BLOCK),)](x, dy, dx, n, PRODUCT_RULE=product_rule, BLOCK=BLOCK)
    return dx


def exercise_2(x: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    return _silu_backward(x, dy, True)


def wrong_2(x: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Forgets the product rule: dx = dy * sigmoid(x)."""
    return _silu_backward(x, dy, False)


# ---- 3: ReLU of any 2-D view -------------------------------------------------------

@triton.jit
def relu_2d_kernel(x_ptr, y_ptr, n, n_cols, stride_row, stride_col, BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    row = idx // n_cols
    col = idx % n_cols
    x = tl.load(x_ptr + row * stride_row + col * stride_col, mask=mask)
    tl.store(y_ptr + idx, tl.maximum(x, 0.0), mask=mask)


def exercise_3(x: torch.Tensor) -> torch.Tensor:
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    n = x.numel()
    relu_2d_kernel[(triton.cdiv(n, BLOCK),)](x, y, n, x.shape[1], x.stride(0), x.stride(1), BLOCK=BLOCK)
    return y


def wrong_3(x: torch.Tensor) -> torch.Tensor:
    """Treats the view as contiguous: strides (n_cols, 1) instead of x.stride()."""
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    n = x.numel()
    relu_2d_kernel[(triton.cdiv(n, BLOCK),)](x, y, n, x.shape[1], x.shape[1], 1, BLOCK=BLOCK)
    return y
