"""Softmax, Dropout and SoftmaxDropout on the Triton tier: autograd Functions over the
fused kernels of kernels/softmax.py. No mask is saved: dropout keeps only its seed (a
1-element tensor) and the backward regenerates the mask from it.

What each saves for backward: Softmax its output y; SoftmaxDropout the input x and the
per-row log-sum-exp (y is rebuilt as exp(x - lse), so the forward writes one tensor);
Dropout nothing.
"""
from __future__ import annotations

import torch

from ...kernels.softmax import softmax_dropout_backward, softmax_dropout_forward
from ...scratch._autograd import first_order_only
from .activations import check_dtype


def draw_seed(device: torch.device) -> torch.Tensor:
    """One seed from torch's default generator of `device` (so torch.manual_seed
    reproduces the mask), left on the device: the kernel reads it, nothing syncs."""
    return torch.randint(0, 2**62, (1,), device=device)


class _SoftmaxDropout(torch.autograd.Function):
    """dropout(softmax(x, dim), p); seed None means softmax alone."""

    @staticmethod
    def forward(ctx, x, dim, p, seed):
        out, lse = softmax_dropout_forward(x, dim, p, seed, save_lse=seed is not None)
        if seed is None:
            ctx.save_for_backward(out)
        else:
            ctx.save_for_backward(x, lse)
        ctx.dim, ctx.p, ctx.seed = dim, p, seed
        return out

    @staticmethod
    @first_order_only
    def backward(ctx, dout):
        src, *lse = ctx.saved_tensors
        dx = softmax_dropout_backward(src, lse[0] if lse else None, dout, ctx.dim, ctx.p, ctx.seed)
        return dx, None, None, None


class _Dropout(torch.autograd.Function):
    """Dropout alone: the same kernels with the softmax compiled out, rows along the last dim."""

    @staticmethod
    def forward(ctx, x, p, seed):
        ctx.dim, ctx.p, ctx.seed = max(x.dim() - 1, 0), p, seed
        return softmax_dropout_forward(x, ctx.dim, p, seed, softmax=False)[0]

    @staticmethod
    @first_order_only
    def backward(ctx, dout):
        return softmax_dropout_backward(dout, None, dout, ctx.dim, ctx.p, ctx.seed, softmax=False), None, None


def softmax_triton(x: torch.Tensor, dim: int) -> torch.Tensor:
    check_dtype(x, "Softmax")
    return _SoftmaxDropout.apply(x, dim, 0.0, None)


def dropout_triton(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    check_dtype(x, "Dropout")
    if not training or p == 0 or x.numel() == 0:
        return x
    return _Dropout.apply(x, p, draw_seed(x.device))


def softmax_dropout_triton(x: torch.Tensor, p: float, dim: int, training: bool = True) -> torch.Tensor:
    check_dtype(x, "SoftmaxDropout")
    if not training or p == 0:
        return _SoftmaxDropout.apply(x, dim, 0.0, None)
    return _SoftmaxDropout.apply(x, dim, p, draw_seed(x.device))
