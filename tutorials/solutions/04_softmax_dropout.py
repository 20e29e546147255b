"""Solutions to the exercises of lesson 04 (fused softmax + dropout, forward and backward),
each with a plausible mistake (`wrong_K`) that its check must reject. The mask helpers are
the lesson's, copied (a solution file does not run the lesson)."""
import os

import torch

if not torch.cuda.is_available():  # no GPU: run every kernel on CPU tensors through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported
import triton
import triton.language as tl


@triton.jit
def row_tile(row, n_cols, Q: tl.constexpr):
    cols = tl.arange(0, 4)[:, None] * Q + tl.arange(0, Q)[None, :]
    return row.to(tl.int64) * n_cols + cols, cols < n_cols


@triton.jit
def keep_tile(seed, row, p, Q: tl.constexpr):
    u0, u1, u2, u3 = tl.rand4x(seed, row * Q + tl.arange(0, Q))
    j = tl.arange(0, 4)[:, None]
    u = tl.where(j == 0, u0[None, :], tl.where(j == 1, u1[None, :], tl.where(j == 2, u2[None, :], u3[None, :])))
    return u >= p


@triton.jit
def row_max(t):
    return tl.max(tl.max(t, axis=1), axis=0)


@triton.jit
def row_sum(t):
    return tl.sum(tl.sum(t, axis=1), axis=0)


def launch(kernel, x, *args, **kw):
    block = max(4, triton.next_power_of_2(x.shape[1]))
    kernel[(x.shape[0],)](*args, x.shape[1], **kw, Q=block // 4, num_warps=min(16, max(4, block // 512)))


# ---- exercise 1: dx of dropout(softmax(t * x)), recomputing the softmax ------------------

@triton.jit(do_not_specialize=["seed"])
def _scaled_bwd_kernel(x_ptr, dout_ptr, dx_ptr, t, p, scale, seed, n_cols, Q: tl.constexpr,
                       CHAIN: tl.constexpr):
    """One program per row. y = softmax(t * x) rebuilt from x; g = dout through the mask;
    dx = t * y * (g - sum(g * y)) (CHAIN=False leaves out the factor t: the mistake)."""
    row = tl.program_id(0)
    offs, inside = row_tile(row, n_cols, Q)
    z = t * tl.load(x_ptr + offs, mask=inside, other=float("-inf"))
    e = tl.exp(z - row_max(z))
    y = e / row_sum(e)
    dout = tl.load(dout_ptr + offs, mask=inside, other=0.0)
    g = tl.where(keep_tile(seed, row, p, Q), dout * scale, 0.0)
    dx = y * (g - row_sum(g * y))
    if CHAIN:
        dx = dx * t  # d(t * x)/dx = t
    tl.store(dx_ptr + offs, dx, mask=inside)


def _scaled_bwd(x, dout, t, p, seed, chain):
    x, dout = x.contiguous(), dout.contiguous()
    dx = torch.empty_like(x)
    launch(_scaled_bwd_kernel, x, x, dout, dx, t, p, 1 / (1 - p), seed, CHAIN=chain)
    return dx


def exercise_1(x, dout, t, p, seed):
    return _scaled_bwd(x, dout, t, p, seed, chain=True)


def wrong_1(x, dout, t, p, seed):
    """Forgets the chain rule's factor t."""
    return _scaled_bwd(x, dout, t, p, seed, chain=False)


# ---- exercise 2: the row log-sum-exp -------------------------------------------------

@triton.jit
def _lse_kernel(x_ptr, lse_ptr, n_cols, Q: tl.constexpr, SUBTRACT_MAX: tl.constexpr):
    """lse[row] = m + log(sum(exp(x - m))); without SUBTRACT_MAX, log(sum(exp(x))), which
    overflows for large logits (the mistake)."""
    row = tl.program_id(0)
    offs, inside = row_tile(row, n_cols, Q)
    x = tl.load(x_ptr + offs, mask=inside, other=float("-inf"))
    if SUBTRACT_MAX:
        m = row_max(x)
        lse = m + tl.log(row_sum(tl.exp(x - m)))
    else:
        lse = tl.log(row_sum(tl.exp(x)))
    tl.store(lse_ptr + row, lse)


def _lse(x, subtract_max):
    x = x.contiguous()
    lse = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    launch(_lse_kernel, x, x, lse, SUBTRACT_MAX=subtract_max)
    return lse


def exercise_2(x):
    return _lse(x, subtract_max=True)


def wrong_2(x):
    """Forgets to subtract the row max: exp overflows to inf."""
    return _lse(x, subtract_max=False)
