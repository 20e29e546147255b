"""Device functions the kernels share: activations built from `tl.exp` (the interpreter
has no libdevice) and their derivatives written in terms of the output, so a backward
needs only y, never x.

Activation codes, a compile-time constant of every kernel with an epilogue:
NONE=0, RELU=1, SIGMOID=2, TANH=3.
"""
import triton
import triton.language as tl

NONE, RELU, SIGMOID, TANH = 0, 1, 2, 3
ACTIVATIONS = {None: NONE, "relu": RELU, "sigmoid": SIGMOID, "tanh": TANH}


@triton.jit
def sigmoid(x):
    # exp(-x) overflows to inf for x < -88 and 1 / inf = 0: no nan at either end
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # (1 - e) / (1 + e) with e = exp(-2|x|) <= 1 never overflows and keeps full
    # relative precision near 0, where 2 * sigmoid(2x) - 1 would cancel
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def activate(x, ACT: tl.constexpr):
    """y = act(x) for one of the activation codes, computed in x's dtype (the kernels
    pass fp32, or fp64 for float64 tensors)."""
    if ACT == 1:
        # maximum may drop a nan; x != x is True only for nan, which stays, as torch.relu(nan)
        x = tl.where(x != x, x, tl.maximum(x, 0.0))
    elif ACT == 2:
        x = sigmoid(x)
    elif ACT == 3:
        x = tanh(x)
    return x


@triton.jit
def activate_grad(dy, y, ACT: tl.constexpr):
    """dx = dy * act'(x), written with the output y (relu: y > 0; sigmoid: y(1-y);
    tanh: 1 - y^2) so the backward reads y and never recomputes x."""
    if ACT == 1:
        dy = tl.where(y > 0, dy, 0.0)
    elif ACT == 2:
        dy = dy * y * (1.0 - y)
    elif ACT == 3:
        dy = dy * (1.0 - y * y)
    return dy
