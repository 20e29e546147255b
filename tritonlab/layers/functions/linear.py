"""Linear on the Triton tier: y = act(x Wᵀ + b) as one GEMM with a fused epilogue,
and a backward made of Triton kernels too.

`linear_triton(x, weight, bias=None, activation=None)` is the public entry point; the
Linear layer (torch.nn.Linear's signature, so no activation) calls it with none. For
Linear followed by an activation in one kernel:

    from tritonlab.layers.functions.linear import linear_triton
    y = linear_triton(x, layer.weight, layer.bias, activation="relu")  # or "sigmoid", "tanh"

or, as a module on every tier, `tritonlab.layers.linear.LinearActivation(in, out, "relu")`.

Backward, with g = dy * act'(y) (= dy without an activation):
    dX = g @ W      and     dW = gᵀ @ X     two launches of the same GEMM kernel,
    db = g summed over rows, fused with computing g in one elementwise pass
(`kernels.gemm.epilogue_grad`, which documents why not a prologue in the GEMMs).
Ops: tritonlab::linear and tritonlab::linear_backward (see scratch/_autograd.py). Saved for
backward: x (if dW is needed; its 2-D rows are a view unless x's strides forbid one),
weight (if dX is), and y only when an activation is fused.
"""
from __future__ import annotations

import math

import torch

from ...kernels.gemm import DTYPES, epilogue_grad, matmul
from ...kernels._math import ACTIVATIONS
from ...scratch._autograd import custom_op, needs, register_backward
from ._vmap import front, per_sample


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(*, F) as (prod(*), F): a view whenever the strides allow (reshape copies only
    when they do not); not reshape(-1, F), which fails for F = 0."""
    return t.reshape(math.prod(t.shape[:-1]), t.shape[-1])


@custom_op("linear", "(Tensor x, Tensor weight, Tensor? bias, str? activation) -> Tensor")
def linear_op(x, weight, bias, activation):
    return matmul(_rows(x), weight.t(), bias, activation).view(*x.shape[:-1], weight.shape[0])


@linear_op.register_fake
def _(x, weight, bias, activation):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@linear_op.register_vmap
def _(info, in_dims, x, weight, bias, activation):
    if in_dims[1:3] != (None, None):  # per-sample weights (an ensemble): one GEMM each
        return per_sample(linear_op, info, in_dims, x, weight, bias, activation)
    return linear_op(front(x, in_dims[0], info.batch_size), weight, bias, activation), 0


@custom_op("linear_backward", "(Tensor dy, Tensor? x, Tensor? weight, Tensor? y, str? activation, "
                              "bool[] needs) -> (Tensor?, Tensor?, Tensor?)")
def linear_backward_op(dy, x, weight, y, activation, needs):
    need_dx, need_dw, need_db = needs
    g, db = epilogue_grad(_rows(dy), None if y is None else _rows(y), activation, need_db)
    dx = matmul(g, weight).view(*dy.shape[:-1], weight.shape[1]) if need_dx else None
    dw = matmul(g.t(), _rows(x)) if need_dw else None
    return dx, dw, db


@linear_backward_op.register_fake
def _(dy, x, weight, y, activation, needs):
    need_dx, need_dw, need_db = needs
    return (dy.new_empty((*dy.shape[:-1], weight.shape[1])) if need_dx else None,
            dy.new_empty((dy.shape[-1], x.shape[-1])) if need_dw else None,
            dy.new_empty(dy.shape[-1]) if need_db else None)


def _setup(ctx, inputs, output):
    x, weight, _, ctx.activation = inputs
    # x only for dW, the weight only for dX, y only for an activation's derivative
    need_dx, need_dw = ctx.needs_input_grad[:2]
    ctx.save_for_backward(x if need_dw else None, weight if need_dx else None,
                          output if ctx.activation is not None else None)


def _backward(ctx, dy):
    x, weight, y = ctx.saved_tensors
    dx, dw, db = linear_backward_op(dy, x, weight, y, ctx.activation, needs(ctx, 0, 1, 2))
    return dx, dw, db, None


register_backward(linear_op, _backward, _setup)


def linear_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  activation: str | None = None) -> torch.Tensor:
    """act(x Wᵀ + b) over any leading dims of x, differentiable in x, weight and bias.

    x (*, in_features); weight (out_features, in_features); bias (out_features,) or
    None; one dtype among float32 (TF32 when torch.backends.cuda.matmul.allow_tf32),
    float16, bfloat16; activation None, "relu", "sigmoid" or "tanh".
    """
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is None and name == "bias":
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"linear_triton expected {name} to be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in DTYPES:
            raise TypeError(
                f"the triton tier of Linear supports float32, float16 and bfloat16, got {name} "
                f"of dtype {t.dtype}; use backend='reference' for other dtypes"
            )
    if x.dim() == 0:
        raise ValueError("linear_triton expected x of shape (*, in_features), got a 0-D tensor")
    if weight.dim() != 2:
        raise ValueError(f"linear_triton expected a 2-D weight (out_features, in_features), got shape {tuple(weight.shape)}")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear_triton expected x with {weight.shape[1]} input features in its last dimension "
            f"for weight of shape {tuple(weight.shape)}, got x of shape {tuple(x.shape)}"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(f"linear_triton activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear_triton expected bias of shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"linear_triton expected {name} of x's dtype {x.dtype}, got {t.dtype}")
        if t is not None and t.device != x.device:
            raise ValueError(f"linear_triton expected {name} on x's device {x.device}, got {t.device}")
    return linear_op(x, weight, bias, activation)
