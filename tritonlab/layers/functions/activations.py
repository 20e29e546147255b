"""ReLU, Sigmoid, Tanh on the Triton tier: one autograd Function whose backward reads
only the saved output y (relu: y > 0, sigmoid: y(1-y), tanh: 1-y^2)."""
from __future__ import annotations

import torch

from ...backend import interpreter_enabled
from ...kernels.activations import activation_backward, activation_forward
from ...scratch._autograd import first_order_only

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_dtype(x: torch.Tensor, op: str) -> None:
    """The dtypes the kernels compute in (fp32 math for 16-bit types, fp64 for fp64);
    anything else is refused here rather than by a Triton compile error."""
    if x.dtype not in DTYPES:
        raise TypeError(f"{op} on the triton tier expects one of {DTYPES}, got dtype {x.dtype}")
    if x.dtype == torch.bfloat16 and not x.is_cuda and interpreter_enabled():
        raise TypeError(f"{op} on the triton tier got dtype {x.dtype} on the CPU, but the Triton "
                        "interpreter has no bfloat16; use float16/float32 or a CUDA tensor")


class _Activation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, activation):
        y = activation_forward(x, activation)
        ctx.save_for_backward(y)
        ctx.activation = activation
        return y

    @staticmethod
    @first_order_only
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return activation_backward(y, dy, ctx.activation), None


def _apply(x: torch.Tensor, activation: str, op: str) -> torch.Tensor:
    check_dtype(x, op)
    return _Activation.apply(x, activation)


def relu_triton(x: torch.Tensor) -> torch.Tensor:
    return _apply(x, "relu", "ReLU")


def sigmoid_triton(x: torch.Tensor) -> torch.Tensor:
    return _apply(x, "sigmoid", "Sigmoid")


def tanh_triton(x: torch.Tensor) -> torch.Tensor:
    return _apply(x, "tanh", "Tanh")
