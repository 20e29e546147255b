"""ReLU, Sigmoid, Tanh on the Triton tier: the custom ops tritonlab::activation and
tritonlab::activation_backward; the backward reads only the saved output y (relu:
y > 0, sigmoid: y(1-y), tanh: 1-y^2)."""
from __future__ import annotations

import torch

from ...backend import interpreter_enabled
from ...kernels.activations import activation_backward, activation_forward, is_dense
from ...scratch._autograd import custom_op, register_backward

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_dtype(x: torch.Tensor, op: str) -> None:
    """The dtypes the kernels compute in (fp32 math for 16-bit types, fp64 for fp64);
    anything else is refused here rather than by a Triton compile error."""
    if x.dtype not in DTYPES:
        raise TypeError(f"{op} on the triton tier expects one of {DTYPES}, got dtype {x.dtype}")
    if x.dtype == torch.bfloat16 and not x.is_cuda and interpreter_enabled():
        raise TypeError(f"{op} on the triton tier got dtype {x.dtype} on the CPU, but the Triton "
                        "interpreter has no bfloat16; use float16/float32 or a CUDA tensor")


@custom_op("activation", "(Tensor x, str activation) -> Tensor")
def activation_op(x, activation):
    return activation_forward(x, activation)


@activation_op.register_fake
def _(x, activation):
    # the launcher's layout: x's when x is dense, else contiguous
    return torch.empty_like(x) if is_dense(x) else x.new_empty(x.shape)


@activation_op.register_vmap
def _(info, in_dims, x, activation):
    return activation_op(x, activation), in_dims[0]  # elementwise: the batch dim stays where it is


@custom_op("activation_backward", "(Tensor y, Tensor dy, str activation) -> Tensor")
def activation_backward_op(y, dy, activation):
    return activation_backward(y, dy, activation)


@activation_backward_op.register_fake
def _(y, dy, activation):
    return torch.empty_like(y)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(output)
    ctx.activation = inputs[1]


def _backward(ctx, dy):
    (y,) = ctx.saved_tensors
    return activation_backward_op(y, dy, ctx.activation), None


register_backward(activation_op, _backward, _setup)


def _apply(x: torch.Tensor, name: str, op: str) -> torch.Tensor:
    check_dtype(x, op)
    return activation_op(x, name)


def relu_triton(x: torch.Tensor) -> torch.Tensor:
    return _apply(x, "relu", "ReLU")


def sigmoid_triton(x: torch.Tensor) -> torch.Tensor:
    return _apply(x, "sigmoid", "Sigmoid")


def tanh_triton(x: torch.Tensor) -> torch.Tensor:
    return _apply(x, "tanh", "Tanh")
