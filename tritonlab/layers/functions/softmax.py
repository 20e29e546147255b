"""Softmax, Dropout and SoftmaxDropout on the Triton tier: custom ops over the fused
kernels of kernels/softmax.py. No mask is saved: dropout keeps only its seed (a
1-element int64 tensor, an argument of the ops) and the backward regenerates the mask.

What each backward gets: softmax the output y; softmax_dropout the input x and the
per-row log-sum-exp, a second output of its forward op (y is rebuilt as exp(x - lse),
so the forward writes one tensor of x's size); dropout only the seed.
"""
from __future__ import annotations

import math

import torch

from ...kernels.softmax import softmax_dropout_backward, softmax_dropout_forward
from ...scratch._autograd import custom_op, register_backward
from ._vmap import front, one_seed, per_sample
from .activations import check_dtype


def draw_seed(device: torch.device) -> torch.Tensor:
    """One seed from torch's default generator of `device` (so torch.manual_seed
    reproduces the mask), left on the device: the kernel reads it, nothing syncs."""
    return torch.randint(0, 2**62, (1,), device=device)


def _like(x: torch.Tensor) -> torch.Tensor:
    """What the kernels write: x's shape, contiguous."""
    return x.new_empty(x.shape)


def _lse(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The per-row log-sum-exp buffer: one entry per row along `dim`, fp32 (fp64 for fp64)."""
    dim %= max(x.dim(), 1)  # the launcher's reading of a negative dim
    rows = math.prod(x.shape[:dim]) * math.prod(x.shape[dim + 1:])
    return x.new_empty(rows, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)


# ---- softmax -----------------------------------------------------------------------

@custom_op("softmax", "(Tensor x, int dim) -> Tensor")
def softmax_op(x, dim):
    return softmax_dropout_forward(x, dim, 0.0, None)[0]


@custom_op("softmax_backward", "(Tensor y, Tensor dout, int dim) -> Tensor")
def softmax_backward_op(y, dout, dim):
    return softmax_dropout_backward(y, None, dout, dim, 0.0, None)


def _softmax_setup(ctx, inputs, output):
    ctx.save_for_backward(output)
    ctx.dim = inputs[1]


def _softmax_backward(ctx, dout):
    (y,) = ctx.saved_tensors
    return softmax_backward_op(y, dout, ctx.dim), None


# ---- softmax + dropout -------------------------------------------------------------

@custom_op("softmax_dropout", "(Tensor x, int dim, float p, Tensor seed) -> (Tensor, Tensor)")
def softmax_dropout_op(x, dim, p, seed):
    return softmax_dropout_forward(x, dim, p, seed, save_lse=True)


@custom_op("softmax_dropout_backward",
           "(Tensor x, Tensor lse, Tensor dout, int dim, float p, Tensor seed) -> Tensor")
def softmax_dropout_backward_op(x, lse, dout, dim, p, seed):
    return softmax_dropout_backward(x, lse, dout, dim, p, seed)


def _softmax_dropout_setup(ctx, inputs, output):
    x, ctx.dim, ctx.p, ctx.seed = inputs  # the 1-element seed rides on ctx; saved: x and lse only
    ctx.save_for_backward(x, output[1])


def _softmax_dropout_backward(ctx, dout, _dlse):
    x, lse = ctx.saved_tensors
    return softmax_dropout_backward_op(x, lse, dout, ctx.dim, ctx.p, ctx.seed), None, None, None


# ---- dropout alone: the same kernels with the softmax compiled out, rows along the last dim

def _last(x: torch.Tensor) -> int:
    return max(x.dim() - 1, 0)


@custom_op("dropout", "(Tensor x, float p, Tensor seed) -> Tensor")
def dropout_op(x, p, seed):
    return softmax_dropout_forward(x, _last(x), p, seed, softmax=False)[0]


@custom_op("dropout_backward", "(Tensor dout, float p, Tensor seed) -> Tensor")
def dropout_backward_op(dout, p, seed):
    return softmax_dropout_backward(dout, None, dout, _last(dout), p, seed, softmax=False)


def _dropout_setup(ctx, inputs, output):
    _, ctx.p, ctx.seed = inputs


def _dropout_backward(ctx, dout):
    return dropout_backward_op(dout, ctx.p, ctx.seed), None, None


for _op in (softmax_op, softmax_backward_op, dropout_op, dropout_backward_op):
    _op.register_fake(lambda t, *args: _like(t))
softmax_dropout_op.register_fake(lambda x, dim, p, seed: (_like(x), _lse(x, dim)))
softmax_dropout_backward_op.register_fake(lambda x, lse, dout, *args: _like(dout))
register_backward(softmax_op, _softmax_backward, _softmax_setup)
register_backward(softmax_dropout_op, _softmax_dropout_backward, _softmax_dropout_setup)
register_backward(dropout_op, _dropout_backward, _dropout_setup)


# ---- vmap rules (see _vmap.py): one launch over the whole vmapped batch -------------

def _physical(dim: int, rank: int, bdim: int) -> int:
    """The dim of a batched tensor (batch at `bdim`) that is logical `dim` of rank `rank`."""
    dim %= rank
    return dim + (dim >= bdim)


@softmax_op.register_vmap
def _(info, in_dims, x, dim):
    if x.dim() == 1:  # 0-d samples: each is its own row of one
        return softmax_op(x.unsqueeze(-1), -1).squeeze(-1), 0
    return softmax_op(x, _physical(dim, x.dim() - 1, in_dims[0])), in_dims[0]


@dropout_op.register_vmap
def _(info, in_dims, x, p, seed):
    if in_dims[2] is None:  # randomness="same": one mask, so one call per sample
        return per_sample(dropout_op, info, in_dims, x, p, seed)
    return dropout_op(front(x, in_dims[0], info.batch_size), p, one_seed(seed, in_dims[2])), 0


@softmax_dropout_op.register_vmap
def _(info, in_dims, x, dim, p, seed):
    if in_dims[3] is None or x.dim() == 1:  # one mask for all, or 0-d samples
        return per_sample(softmax_dropout_op, info, in_dims, x, dim, p, seed)
    x = front(x, in_dims[0], info.batch_size)  # batch first: lse then holds its rows sample by sample
    y, lse = softmax_dropout_op(x, _physical(dim, x.dim() - 1, 0), p, one_seed(seed, in_dims[3]))
    return (y, lse.view(info.batch_size, -1)), (0, 0)


def softmax_triton(x: torch.Tensor, dim: int) -> torch.Tensor:
    check_dtype(x, "Softmax")
    return softmax_op(x, dim)


def dropout_triton(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    check_dtype(x, "Dropout")
    if not training or p == 0 or x.numel() == 0:
        return x
    return dropout_op(x, p, draw_seed(x.device))


def softmax_dropout_triton(x: torch.Tensor, p: float, dim: int, training: bool = True) -> torch.Tensor:
    check_dtype(x, "SoftmaxDropout")
    if not training or p == 0:
        return softmax_op(x, dim)
    return softmax_dropout_op(x, dim, p, draw_seed(x.device))[0]
