"""Conv2d's Triton tier: the implicit-GEMM path (the default) and the im2col path.

Both take the reference tier's arguments (explicit padding ((top, bottom), (left,
right)), see scratch/conv.py) plus an optional fused activation ("relu", "sigmoid",
"tanh") applied in the GEMM epilogue. The output comes in the layout torch gives:
channels_last when the input is, NCHW otherwise. Both share one backward: dgrad and
wgrad as implicit GEMMs, db as a reduction (kernels/conv.py).
"""
from __future__ import annotations

import torch

from ...kernels import conv as kernels
from ...kernels._math import ACTIVATIONS
from ...scratch._autograd import first_order_only
from ..conv import _strides_like_channels_last

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check(x: torch.Tensor, weight: torch.Tensor, activation) -> None:
    """Refuse, with a clear error, what the kernels cannot do."""
    if x.dtype not in _DTYPES:
        raise TypeError(f"Conv2d's triton tier supports {', '.join(map(str, _DTYPES))}, got {x.dtype}; "
                        f"use backend='reference' for other dtypes")
    if x.dtype == torch.bfloat16 and not x.is_cuda:
        raise TypeError("Conv2d's triton tier runs torch.bfloat16 only on a GPU: the Triton "
                        "interpreter (TRITON_INTERPRET=1) has no bfloat16; use float16 or float32")
    if weight.dtype != x.dtype:
        raise TypeError(f"Conv2d's triton tier expected weights of the input's dtype {x.dtype}, "
                        f"got {weight.dtype}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")


def _empty(shape, channels_last: bool, like: torch.Tensor) -> torch.Tensor:
    """An (N, C, H, W) tensor, NHWC in memory when `channels_last`."""
    n, c, h, w = shape
    if channels_last:
        return like.new_empty((n, h, w, c)).permute(0, 3, 1, 2)
    return like.new_empty(shape)


def _out_shape(x, weight, stride, padding, dilation):
    (top, bottom), (left, right) = padding
    r, s = weight.shape[2:]
    p = (x.shape[2] + top + bottom - dilation[0] * (r - 1) - 1) // stride[0] + 1
    q = (x.shape[3] + left + right - dilation[1] * (s - 1) - 1) // stride[1] + 1
    return x.shape[0], weight.shape[0], p, q


class _Conv2dImplicit(torch.autograd.Function):
    """Forward: one implicit-GEMM kernel with bias and activation in its epilogue.

    Backward (dy of y's shape): dz = dy * act'(y) (y saved only with an activation),
    dx = dgrad(dz, W), dW = wgrad(dz, x), db = sum of dz over N, P, Q.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, activation):
        channels_last = _strides_like_channels_last(x)
        y = _empty(_out_shape(x, weight, stride, padding, dilation), channels_last, x)
        kernels.conv2d_fwd(x, weight, bias, y, stride, (padding[0][0], padding[1][0]), dilation,
                           groups, activation)
        _save(ctx, x, weight, y, stride, padding, dilation, groups, activation, channels_last)
        return y

    @staticmethod
    @first_order_only
    def backward(ctx, dy):
        x, weight, y = ctx.saved_tensors
        x_shape, stride, pad, dilation, groups, activation, channels_last = ctx.geometry
        if activation is not None:
            dy = kernels.activation_grad(dy, y, activation)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = kernels.conv2d_dgrad(dy, weight, _empty(x_shape, channels_last, dy), stride, pad,
                                      dilation, groups)
        if ctx.needs_input_grad[1]:
            dw = kernels.conv2d_wgrad(dy, x, ctx.weight_shape, stride, pad, dilation, groups,
                                      out=torch.empty_like(weight) if weight is not None else None)
        if ctx.needs_input_grad[2]:
            db = kernels.conv2d_bias_grad(dy)
        return dx, dw, db, None, None, None, None, None


def _save(ctx, x, weight, y, stride, padding, dilation, groups, activation, channels_last):
    """What the shared backward needs: x only for dW, weight only for dx, y only for an
    activation's derivative."""
    ctx.geometry = (x.shape, stride, (padding[0][0], padding[1][0]), dilation, groups, activation,
                    channels_last)
    ctx.weight_shape = weight.shape
    ctx.save_for_backward(x if ctx.needs_input_grad[1] else None,
                          weight if ctx.needs_input_grad[0] or ctx.needs_input_grad[1] else None,
                          y if activation is not None else None)


def _args(stride, padding, dilation):
    return tuple(stride), tuple(map(tuple, padding)), tuple(dilation)


def conv2d_implicit(x, weight, bias, stride, padding, dilation, groups, activation=None):
    """Conv2d by implicit GEMM (no unfolded buffer): the triton tier's default path."""
    _check(x, weight, activation)
    return _Conv2dImplicit.apply(x, weight, bias, *_args(stride, padding, dilation), groups, activation)
