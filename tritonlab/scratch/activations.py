"""ReLU, Sigmoid and Tanh from scratch, two tiers.

Both tiers avoid overflow the same way: they only ever take exp of a non-positive
number, z = exp(-|x|) in (0, 1], so sigmoid(-1000) is 0 and not nan, and so are the
gradients.
"""
from __future__ import annotations

import torch


def _rows(x: torch.Tensor) -> torch.Tensor:
    """View `x` as rows of its last dimension (a 0-D tensor is one row of one)."""
    return x.reshape(-1, x.shape[-1]) if x.dim() else x.reshape(1, 1)


# ---- naive: one Python iteration per row, autograd through the formula ---------------

def _naive_rowwise(x: torch.Tensor, f) -> torch.Tensor:
    if x.numel() == 0:
        return x.clone()
    rows = _rows(x)
    out = torch.stack([f(rows[i]) for i in range(rows.shape[0])]) 
    return out.reshape(x.shape)


def _sigmoid_formula(v: torch.Tensor) -> torch.Tensor:
    # exp(-x) for x >= 0 and exp(x) for x < 0; the clamps keep the unused branch finite
    pos = 1 / (1 + torch.exp(-v.clamp(min=0)))
    e = torch.exp(v.clamp(max=0))
    neg = e / (1 + e)
    return torch.where(v >= 0, pos, neg)


def relu_naive(x: torch.Tensor) -> torch.Tensor:
    return _naive_rowwise(x, lambda row: torch.where(row > 0, row, 0.0))


def sigmoid_naive(x: torch.Tensor) -> torch.Tensor:
    return _naive_rowwise(x, _sigmoid_formula)


def tanh_naive(x: torch.Tensor) -> torch.Tensor:
    # tanh(x) = 2 * sigmoid(2x) - 1
    return _naive_rowwise(x, lambda row: 2 * _sigmoid_formula(2 * row) - 1)


# ---- reference: vectorized, backward written out from the saved output --------------

class _ReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = torch.where(x > 0, x, 0.0)  # not x * (x > 0): -inf * 0 is nan
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy * (y > 0)


def _sigmoid_vectorized(x: torch.Tensor) -> torch.Tensor:
    z = torch.exp(-x.abs())
    return torch.where(x >= 0, 1 / (1 + z), z / (1 + z))


class _Sigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = _sigmoid_vectorized(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy * y * (1 - y)  # d sigmoid = y (1 - y)


class _Tanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = 2 * _sigmoid_vectorized(2 * x) - 1
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return dy * (1 - y * y)  # d tanh = 1 - y^2


def relu_reference(x: torch.Tensor) -> torch.Tensor:
    return _ReLU.apply(x)


def sigmoid_reference(x: torch.Tensor) -> torch.Tensor:
    return _Sigmoid.apply(x)


def tanh_reference(x: torch.Tensor) -> torch.Tensor:
    return _Tanh.apply(x)
