"""Conv2d's Triton tier: the implicit-GEMM path (the default) and the im2col path.

implicit: one kernel gathers the input patches inside its GEMM tile loads
(kernels/conv.py); a 1x1 stride-1 unpadded ungrouped conv whose input is an (N*H*W, C)
matrix in memory (channels_last, or a single NCHW image) is that GEMM already and
runs on the plain GEMM launcher (kernels/gemm.py). im2col: unfold the input into a
buffer (kernels/im2col.py), then the plain GEMM per group with bias and activation
fused; `im2col_bytes` states the buffer's size.

TF32 for float32: the implicit path follows torch.backends.cudnn.allow_tf32, as
torch's convolutions do (its 1x1 convs leave the plain GEMM for the implicit kernel
when torch.backends.cuda.matmul.allow_tf32, the flag the GEMM launcher follows,
differs); the im2col path is a matmul and follows the matmul flag.

Both take the reference tier's arguments (explicit padding ((top, bottom), (left,
right)), see scratch/conv.py) plus an optional fused activation ("relu", "sigmoid",
"tanh") applied in the GEMM epilogue. The output comes in the layout torch gives:
channels_last when the input is, NCHW otherwise. Both share one backward: dgrad and
wgrad as implicit GEMMs, db as a reduction (kernels/conv.py).

Ops (see scratch/_autograd.py): tritonlab::conv2d (`algo` "implicit" or "im2col") and
tritonlab::conv2d_backward.
"""
from __future__ import annotations

import torch

from ...backend import tf32_enabled
from ...kernels import conv as kernels
from ...kernels import im2col as unfold
from ...kernels._math import ACTIVATIONS
from ...kernels.gemm import matmul
from ..conv import Conv2d, _strides_like_channels_last
from ...scratch._autograd import custom_op, needs, register_backward
from ._vmap import front, per_sample

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


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    """What the kernels get: on a GPU a channels_last tensor, so their tile loads run
    along unit channel stride (vectorised and pipelined through shared memory; 2-byte
    gathers are neither), an NCHW one converted at the cost of one copy (what
    converting to NHWC and back by hand costs). Under the interpreter every layout
    runs as it is, so the tests cover the kernels' strided indexing."""
    return t.contiguous(memory_format=torch.channels_last) if t.is_cuda else t


def _out_shape(x, weight, stride, padding, dilation):
    (top, bottom), (left, right) = padding
    r, s = weight.shape[2:]
    p = (x.shape[2] + top + bottom - dilation[0] * (r - 1) - 1) // stride[0] + 1
    q = (x.shape[3] + left + right - dilation[1] * (s - 1) - 1) // stride[1] + 1
    return x.shape[0], weight.shape[0], p, q


def _rows(t: torch.Tensor) -> torch.Tensor | None:
    """t (N, C, H, W) as an (N*H*W, C) matrix without a copy, or None if its strides
    do not allow one (NCHW with N > 1)."""
    try:
        return t.permute(0, 2, 3, 1).view(-1, t.shape[1])
    except RuntimeError:
        return None


def _plain_gemm(x, weight, bias, y, stride, padding, groups, activation) -> bool:
    """Run a 1x1 stride-1 unpadded ungrouped conv as y = x @ W^T + b if x and y are
    (N*H*W, C) matrices in memory; False when it does not apply (or when the GEMM
    would round fp32 to TF32 differently from torch's convolutions)."""
    if weight.shape[2:] != (1, 1) or stride != (1, 1) or padding != ((0, 0), (0, 0)) or groups != 1:
        return False
    if x.dtype == torch.float32 and tf32_enabled("conv") != tf32_enabled("matmul"):
        return False
    a, c = _rows(x), _rows(y)
    if a is None or c is None:
        return False
    matmul(a, weight.reshape(weight.shape[0], -1).t(), bias, activation, out=c)
    return True


def _implicit(x, weight, bias, stride, padding, dilation, groups, activation):
    """One implicit-GEMM kernel with bias and activation in its epilogue (or the plain
    GEMM for a 1x1 conv laid out as a matrix), on channels_last tensors on a GPU."""
    channels_last = _strides_like_channels_last(x)
    x = _nhwc(x)
    y = _empty(_out_shape(x, weight, stride, padding, dilation), channels_last or x.is_cuda, x)
    if not _plain_gemm(x, weight, bias, y, stride, padding, groups, activation):
        kernels.conv2d_fwd(x, weight, bias, y, stride, (padding[0][0], padding[1][0]), dilation,
                           groups, activation)
    return y


def _im2col(x, weight, bias, stride, padding, dilation, groups, activation):
    """im2col into a (N*P*Q, C*R*S) buffer, then per group one GEMM
    y_g (N*P*Q, OG) = cols_g @ W_g^T + b_g with the activation fused, written straight
    into an NHWC output (copied to NCHW when the input is NCHW: part of this path's cost).
    The backward is the implicit path's (the lesson is the forward)."""
    n, o, p, q = _out_shape(x, weight, stride, padding, dilation)
    cols = unfold.im2col(x, weight.shape[2:], stride, (padding[0][0], padding[1][0]), dilation, (p, q))
    y = x.new_empty((n, p, q, o))
    rows, og = y.view(n * p * q, o), o // groups
    k = cols.shape[1] // groups
    filters = weight.reshape(groups, og, k)
    for g in range(groups):
        part = slice(g * og, (g + 1) * og)
        matmul(cols[:, g * k:(g + 1) * k], filters[g].t(), bias[part] if bias is not None else None,
               activation, out=rows[:, part])
    return y.permute(0, 3, 1, 2)


_PATHS = {"implicit": _implicit, "im2col": _im2col}


def _padding(pad: list[int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The ops' flat [top, bottom, left, right] as ((top, bottom), (left, right))."""
    return (pad[0], pad[1]), (pad[2], pad[3])


@custom_op("conv2d", "(Tensor x, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
                     "int[] dilation, int groups, str? activation, str algo) -> Tensor")
def conv2d_op(x, weight, bias, stride, padding, dilation, groups, activation, algo):
    """y in the layout torch gives: channels_last when x is, NCHW otherwise."""
    y = _PATHS[algo](x, weight, bias, tuple(stride), _padding(padding), tuple(dilation), groups, activation)
    return y if _strides_like_channels_last(x) else y.contiguous()


@conv2d_op.register_fake
def _(x, weight, bias, stride, padding, dilation, groups, activation, algo):
    return _empty(_out_shape(x, weight, stride, _padding(padding), dilation), _strides_like_channels_last(x), x)


@conv2d_op.register_vmap
def _(info, in_dims, x, weight, bias, *geometry):
    if in_dims[1:3] != (None, None):  # per-sample filters (an ensemble): one conv each
        return per_sample(conv2d_op, info, in_dims, x, weight, bias, *geometry)
    # samples of N images each fold into one batch of B*N images: a view when vmap's
    # batch dim sits outside N, as it does for stacked inputs
    y = conv2d_op(front(x, in_dims[0], info.batch_size).flatten(0, 1), weight, bias, *geometry)
    return y.unflatten(0, (info.batch_size, -1)), 0


@custom_op("conv2d_backward", "(Tensor dy, Tensor? x, Tensor? weight, Tensor? y, int[] x_shape, "
                              "int[] weight_shape, int[] stride, int[] padding, int[] dilation, int groups, "
                              "str? activation, bool channels_last, bool[] needs) -> (Tensor?, Tensor?, Tensor?)")
def conv2d_backward_op(dy, x, weight, y, x_shape, weight_shape, stride, padding, dilation, groups,
                       activation, channels_last, needs):
    """dz = dy * act'(y), dx = dgrad(dz, W), dW = wgrad(dz, x), db = sum of dz over N, P, Q;
    on a GPU all of it on channels_last tensors (see _nhwc). padding: [top, left]."""
    dy = _nhwc(dy)
    if activation is not None:
        dy = kernels.activation_grad(dy, _nhwc(y), activation)
    dx = dw = db = None
    if needs[0]:
        dx = kernels.conv2d_dgrad(dy, weight, _empty(x_shape, channels_last or dy.is_cuda, dy),
                                  stride, padding, dilation, groups)
        dx = dx if channels_last else dx.contiguous()
    if needs[1]:
        dw = kernels.conv2d_wgrad(dy, _nhwc(x), weight_shape, stride, padding, dilation, groups,
                                  out=torch.empty_like(weight))
    if needs[2]:
        db = kernels.conv2d_bias_grad(dy)
    return dx, dw, db


@conv2d_backward_op.register_fake
def _(dy, x, weight, y, x_shape, weight_shape, stride, padding, dilation, groups, activation, channels_last,
      needs):
    return (_empty(x_shape, channels_last, dy) if needs[0] else None,
            torch.empty_like(weight) if needs[1] else None,
            dy.new_empty(weight_shape[0]) if needs[2] else None)


def _setup(ctx, inputs, output):
    """What the backward needs: x only for dW, weight for dx and dW (whose layout it
    gives), y only for an activation's derivative."""
    x, weight, _, stride, padding, dilation, groups, activation, _ = inputs
    need_dx, need_dw = ctx.needs_input_grad[:2]
    ctx.geometry = (list(x.shape), list(weight.shape), stride, [padding[0], padding[2]], dilation, groups,
                    activation, _strides_like_channels_last(x))
    ctx.save_for_backward(x if need_dw else None, weight if need_dx or need_dw else None,
                          output if activation is not None else None)


def _backward(ctx, dy):
    x, weight, y = ctx.saved_tensors
    dx, dw, db = conv2d_backward_op(dy, x, weight, y, *ctx.geometry, needs(ctx, 0, 1, 2))
    return dx, dw, db, None, None, None, None, None, None


register_backward(conv2d_op, _backward, _setup)


def _apply(algo, x, weight, bias, stride, padding, dilation, groups, activation):
    _check(x, weight, activation)
    (top, bottom), (left, right) = padding
    return conv2d_op(x, weight, bias, list(stride), [top, bottom, left, right], list(dilation), groups,
                     activation, algo)


def conv2d_implicit(x, weight, bias, stride, padding, dilation, groups, activation=None):
    """Conv2d by implicit GEMM (no unfolded buffer): the triton tier's default path."""
    return _apply("implicit", x, weight, bias, stride, padding, dilation, groups, activation)


def conv2d_im2col(x, weight, bias, stride, padding, dilation, groups, activation=None):
    """Conv2d by im2col + GEMM: the unfolded buffer materialised (see im2col_bytes)."""
    return _apply("im2col", x, weight, bias, stride, padding, dilation, groups, activation)


def im2col_bytes(conv, x_shape, dtype: torch.dtype | None = None) -> int:
    """Bytes of the unfolded buffer `conv` (a tritonlab or torch Conv2d) with
    algo="im2col" materialises for a batched input of shape (N, C, H, W), in `dtype`
    (default the weight's). The path writes it once and the GEMM reads it back."""
    n, c, h, w = x_shape
    (top, bottom), (left, right) = Conv2d._explicit_padding(conv)  # works on an nn.Conv2d too
    r, s = conv.kernel_size
    p = (h + top + bottom - conv.dilation[0] * (r - 1) - 1) // conv.stride[0] + 1
    q = (w + left + right - conv.dilation[1] * (s - 1) - 1) // conv.stride[1] + 1
    size = torch.empty((), dtype=dtype or conv.weight.dtype).element_size()
    return unfold.buffer_bytes(n, c, (p, q), (r, s), size)
