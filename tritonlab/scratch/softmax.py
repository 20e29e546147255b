"""Softmax from scratch, two tiers: y = exp(x - max) / sum(exp(x - max)) along `dim`.

Subtracting the row maximum first keeps every exp argument <= 0, so nothing
overflows; the result is unchanged because the factor exp(-max) cancels.
Backward: dx = y * (dy - sum(dy * y)) along the same dim.
"""
from __future__ import annotations

import torch

from ._autograd import transformable
from .activations import as_rows


def softmax_naive(x: torch.Tensor, dim: int) -> torch.Tensor:
    """One Python iteration per row: max, exp, sum, divide."""
    if x.numel() == 0:  # no rows, or rows of length 0 (which have no max)
        return x.clone()
    moved = x.movedim(dim, -1)
    rows = as_rows(moved)
    out = []
    for i in range(rows.shape[0]):
        row = rows[i]
        e = torch.exp(row - row.max())
        out.append(e / e.sum())
    y = torch.stack(out)
    return y.reshape(moved.shape).movedim(-1, dim)


def softmax_rows(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The vectorized forward, shared with the fused softmax+dropout."""
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def softmax_backward(y: torch.Tensor, dy: torch.Tensor, dim: int) -> torch.Tensor:
    return y * (dy - (dy * y).sum(dim=dim, keepdim=True))


class _Softmax(torch.autograd.Function):
    """Saves y; backward and jvp are differentiable ops of y (so they differentiate
    again). The Jacobian diag(y) - y yᵀ is symmetric: the jvp is the backward's formula."""
    generate_vmap_rule = True

    @staticmethod
    def forward(x, dim):
        return softmax_rows(x, dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)
        ctx.dim = inputs[1]

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return softmax_backward(y, dy, ctx.dim), None

    @staticmethod
    def jvp(ctx, dx, _dim):
        (y,) = ctx.saved_tensors
        return softmax_backward(y, dx, ctx.dim)


_softmax = transformable(_Softmax)


def softmax_reference(x: torch.Tensor, dim: int) -> torch.Tensor:
    """All rows at once, backward written out from the saved output."""
    if x.numel() == 0:
        return x.clone()
    return _softmax(x, dim)
