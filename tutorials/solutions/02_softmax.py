"""Solutions to the exercises of lesson 02 (softmax), each with a plausible mistake
(wrong_K) that its check must catch."""
import os

import torch

if not torch.cuda.is_available():  # no GPU: run every kernel on CPU tensors through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported
import triton
import triton.language as tl


# ---- 1: log-softmax ----------------------------------------------------------------

@triton.jit
def log_softmax_kernel(x_ptr, y_ptr, n_cols, stride_x, stride_y, SUBTRACT_MAX: tl.constexpr,
                       BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=float("-inf"))
    if SUBTRACT_MAX:
        m = tl.max(x, axis=0)
    else:  # the mistake: exp(x) overflows to inf for x > 88
        m = 0.0
    lse = m + tl.log(tl.sum(tl.exp(x - m), axis=0))
    tl.store(y_ptr + row * stride_y + cols, x - lse, mask=mask)


def _log_softmax(x, subtract_max):
    y = torch.empty_like(x)
    log_softmax_kernel[(x.shape[0],)](x, y, x.shape[1], x.stride(0), y.stride(0), SUBTRACT_MAX=subtract_max,
                                      BLOCK=triton.next_power_of_2(x.shape[1]))
    return y


def exercise_1(x: torch.Tensor) -> torch.Tensor:
    return _log_softmax(x, True)


def wrong_1(x: torch.Tensor) -> torch.Tensor:
    """Forgets the max subtraction: inf for large inputs."""
    return _log_softmax(x, False)


# ---- 2: softmax over dim 0 ---------------------------------------------------------

@triton.jit
def softmax_column_kernel(x_ptr, y_ptr, n_rows, stride_row, BLOCK: tl.constexpr):
    col = tl.program_id(0)
    rows = tl.arange(0, BLOCK)
    mask = rows < n_rows
    x = tl.load(x_ptr + col + rows * stride_row, mask=mask, other=float("-inf"))
    e = tl.exp(x - tl.max(x, axis=0))
    tl.store(y_ptr + col + rows * stride_row, e / tl.sum(e, axis=0), mask=mask)


def exercise_2(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    softmax_column_kernel[(x.shape[1],)](x, y, x.shape[0], x.stride(0), BLOCK=triton.next_power_of_2(x.shape[0]))
    return y


@triton.jit
def softmax_row_kernel(x_ptr, y_ptr, n_cols, stride_row, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_row + cols, mask=mask, other=float("-inf"))
    e = tl.exp(x - tl.max(x, axis=0))
    tl.store(y_ptr + row * stride_row + cols, e / tl.sum(e, axis=0), mask=mask)


def wrong_2(x: torch.Tensor) -> torch.Tensor:
    """The wrong axis: one program per row, softmax along dim 1."""
    x = x.contiguous()
    y = torch.empty_like(x)
    n_rows, n_cols = x.shape
    softmax_row_kernel[(n_rows,)](x, y, n_cols, x.stride(0), BLOCK=triton.next_power_of_2(n_cols))
    return y


# ---- 3: online log-sum-exp ---------------------------------------------------------

@triton.jit
def logsumexp_online_kernel(x_ptr, out_ptr, n_cols, stride_x, RESCALE: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    m = float("-inf")
    s = 0.0
    for start in range(0, n_cols, BLOCK):
        c = start + cols
        x = tl.load(x_ptr + row * stride_x + c, mask=c < n_cols, other=float("-inf"))
        m_new = tl.maximum(m, tl.max(x, axis=0))
        if RESCALE:
            s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        else:  # the mistake: the old sum stays relative to the old, smaller maximum
            s = s + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new
    tl.store(out_ptr + row, m + tl.log(s))


def _logsumexp(x, rescale):
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    logsumexp_online_kernel[(x.shape[0],)](x, out, x.shape[1], x.stride(0), RESCALE=rescale, BLOCK=128)
    return out


def exercise_3(x: torch.Tensor) -> torch.Tensor:
    return _logsumexp(x, True)


def wrong_3(x: torch.Tensor) -> torch.Tensor:
    """Forgets to rescale the running sum when the maximum grows."""
    return _logsumexp(x, False)
