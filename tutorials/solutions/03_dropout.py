"""Solutions to the exercises of lesson 03 (dropout), each with a plausible mistake
(`wrong_K`) that its check must reject."""
import os

import torch

if not torch.cuda.is_available():  # no GPU: run every kernel on CPU tensors through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported
import triton
import triton.language as tl


# ---- exercise 1: one coin per row --------------------------------------------------

@triton.jit(do_not_specialize=["seed"])
def _row_dropout_kernel(x_ptr, out_ptr, n_cols, p, scale, seed, PER_ELEMENT: tl.constexpr,
                        BLOCK: tl.constexpr):
    """One program per row of a contiguous (rows, n_cols) x; BLOCK >= n_cols.
    PER_ELEMENT draws one number per element instead (the mistake)."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    inside = cols < n_cols
    offs = row.to(tl.int64) * n_cols + cols
    x = tl.load(x_ptr + offs, mask=inside)
    if PER_ELEMENT:
        keep = tl.rand(seed, offs.to(tl.int32)) >= p
    else:
        keep = tl.rand(seed, row) >= p  # one scalar for the whole row
    tl.store(out_ptr + offs, tl.where(keep, x * scale, 0.0), mask=inside)


def _row_dropout(x, p, seed, per_element):
    x = x.contiguous()
    out = torch.empty_like(x)
    rows, cols = x.shape
    _row_dropout_kernel[(rows,)](x, out, cols, p, 1 / (1 - p), seed, PER_ELEMENT=per_element,
                                 BLOCK=triton.next_power_of_2(cols))
    return out


def exercise_1(x, p, seed):
    return _row_dropout(x, p, seed, per_element=False)


def wrong_1(x, p, seed):
    """Drops single elements, not rows."""
    return _row_dropout(x, p, seed, per_element=True)


# ---- exercise 2: residual + dropout in one kernel ----------------------------------

@triton.jit(do_not_specialize=["seed"])
def _residual_dropout_kernel(x_ptr, res_ptr, out_ptr, n, p, scale, seed, DROP_THE_SUM: tl.constexpr,
                             BLOCK: tl.constexpr):
    """out = res + dropout(x) over n contiguous elements. DROP_THE_SUM computes
    dropout(res + x) instead (the mistake). Grid: (cdiv(n, BLOCK),)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    x = tl.load(x_ptr + offs, mask=inside)
    res = tl.load(res_ptr + offs, mask=inside)
    keep = tl.rand(seed, offs) >= p
    if DROP_THE_SUM:
        out = tl.where(keep, (res + x) * scale, 0.0)
    else:
        out = res + tl.where(keep, x * scale, 0.0)
    tl.store(out_ptr + offs, out, mask=inside)


def _residual_dropout(x, res, p, seed, drop_the_sum):
    x, res = x.contiguous(), res.contiguous()
    out = torch.empty_like(x)
    block = 4096
    _residual_dropout_kernel[(triton.cdiv(x.numel(), block),)](x, res, out, x.numel(), p, 1 / (1 - p), seed,
                                                               DROP_THE_SUM=drop_the_sum, BLOCK=block)
    return out


def exercise_2(x, residual, p, seed):
    return _residual_dropout(x, residual, p, seed, drop_the_sum=False)


def wrong_2(x, residual, p, seed):
    """Drops the residual too: dropout(residual + x)."""
    return _residual_dropout(x, residual, p, seed, drop_the_sum=True)
