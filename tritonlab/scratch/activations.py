"""ReLU, Sigmoid and Tanh from scratch, two tiers.

Neither tier turns exp's overflow into nan. The naive tier differentiates through its
formula with autograd, so it only takes exp of non-positive numbers (an inf anywhere in
the graph would make a nan gradient). The reference tier writes its backward from the
output (sigmoid' = y (1 - y), tanh' = 1 - y²), so its forward may let exp(-x) overflow
to inf: 1 / (1 + inf) is exactly 0.
"""
from __future__ import annotations

import functools
import math

import torch

from ._autograd import batched, forward_ad, transformable, transformed


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """View `x` as rows of its last dimension (a 0-D tensor is one row of one)."""
    # not -1: a row length of 0 leaves the row count undetermined
    return x.reshape(math.prod(x.shape[:-1]), x.shape[-1]) if x.dim() else x.reshape(1, 1)


# ---- naive: one Python iteration per row, autograd through the formula ---------------

def _naive_rowwise(x: torch.Tensor, f) -> torch.Tensor:
    if x.numel() == 0:
        return x.clone()
    rows = as_rows(x)
    out = torch.stack([f(rows[i]) for i in range(rows.shape[0])])
    return out.reshape(x.shape)


def sigmoid_formula(v: torch.Tensor) -> torch.Tensor:
    """σ of a whole tensor by its formula, differentiable by autograd to any order (the
    naive tier's σ; the naive RNN cells apply it to whole gates)."""
    # exp(-x) for x >= 0 and exp(x) for x < 0; the clamps keep the unused branch finite
    pos = 1 / (1 + torch.exp(-v.clamp(min=0)))
    e = torch.exp(v.clamp(max=0))
    neg = e / (1 + e)
    return torch.where(v >= 0, pos, neg)


def tanh_formula(v: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2 σ(2x) - 1, as sigmoid_formula."""
    return 2 * sigmoid_formula(2 * v) - 1


def relu_naive(x: torch.Tensor) -> torch.Tensor:
    return _naive_rowwise(x, lambda row: torch.where(row <= 0, 0.0, row))  # nan stays nan, as in torch


def sigmoid_naive(x: torch.Tensor) -> torch.Tensor:
    return _naive_rowwise(x, sigmoid_formula)


def tanh_naive(x: torch.Tensor) -> torch.Tensor:
    return _naive_rowwise(x, tanh_formula)


# ---- reference: vectorized, backward written out from the saved output --------------

# Python numbers are wrapped into a new tensor on every call (~2 µs on a CPU, more than
# a small op itself); 0-d tensors made once are not. In place they keep x's dtype.
# On the CPU whatever torch's default device at import: a CPU 0-d tensor combines with
# tensors on any device (see _cached)
_ONE, _TWO = torch.tensor(1.0, device="cpu"), torch.tensor(2.0, device="cpu")
# e^x = 2^(x log2 e): on this project's 2-core CPU, exp2 was 2-3x cheaper than exp
LOG2E = math.log2(math.e)


def _constant(value: float, dtype: torch.dtype) -> torch.Tensor | float:
    """`value` as a cached 0-d tensor of `dtype`; under torch.compile the number itself
    (a graph constant: Dynamo breaks the graph at a call into the cache)."""
    return value if torch.compiler.is_compiling() else _cached(value, dtype)


@functools.cache
def _cached(value: float, dtype: torch.dtype) -> torch.Tensor:
    # on the CPU whatever torch's default device at the first call: a CPU 0-d tensor
    # combines with tensors on any device, a CUDA one fails with CPU tensors
    return torch.tensor(value, dtype=dtype, device="cpu")


def _times(x: torch.Tensor, value: float) -> torch.Tensor:
    """x * value, with value a 0-d tensor made once, in x's dtype (so that neither its
    precision nor its dtype changes the result's)."""
    return torch.mul(x, _constant(value, x.dtype if x.is_floating_point() else torch.get_default_dtype()))


# torch.export records a Function's forward ops in its graph, not its backward, and
# autograd differentiates that graph: through 1 / (1 + exp(-x)) where exp overflows it
# would give 0 * inf = nan. While exporting, ReLU, σ and tanh are torch's, whose autograd
# formulas use the output, as this tier's backward does.

def sigmoid_values(x: torch.Tensor) -> torch.Tensor:
    """1 / (1 + exp(-x)) in four kernels on one fresh tensor, values only (no autograd
    graph: the reference tier writes its backward from the output). exp(-x) may
    overflow to inf for x < -88, and 1 / (1 + inf) is exactly the right 0."""
    if torch.compiler.is_exporting():  # see above
        return torch.sigmoid(x)
    return _times(x, -LOG2E).exp2_().add_(_ONE).reciprocal_()


def tanh_values(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2 / (1 + exp(-2x)) - 1, values only; -1 (not nan) where exp overflows."""
    if torch.compiler.is_exporting():  # see above
        return torch.tanh(x)
    return _times(x, -2 * LOG2E).exp2_().add_(_ONE).reciprocal_().mul_(_TWO).sub_(_ONE)


def relu_values(x: torch.Tensor) -> torch.Tensor:
    """max(x, 0): not x * (x > 0), as -inf * 0 is nan; and on a CPU torch.where with a
    scalar is 30x slower than maximum with a 0-d tensor."""
    if torch.compiler.is_exporting():  # see above: autograd gives maximum's tie at 0 a 1/2
        return torch.relu(x)
    return torch.maximum(x, x.new_zeros(()))


class _Pointwise(torch.autograd.Function):
    """y = f(x) whose derivative is a function of y alone, so only y is saved. Backward
    and jvp are differentiable ops of the saved output, so autograd can differentiate
    them again (second derivatives, torch.func's grad, jacrev, jacfwd, hessian)."""
    generate_vmap_rule = True

    @staticmethod
    def forward(x, f, derivative):
        return f(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)
        ctx.derivative = inputs[2]

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        d = ctx.derivative(y)  # a fresh tensor: dy multiplies into it, unless a vmap
        return (d * dy if batched(dy) else d.mul_(dy)), None, None  # batches dy (jacrev)

    @staticmethod
    def jvp(ctx, dx, _f, _derivative):
        (y,) = ctx.saved_tensors
        return ctx.derivative(y) * dx


_pointwise = transformable(_Pointwise)


def _relu_derivative(y: torch.Tensor) -> torch.Tensor:
    """1 where y > 0, else 0 (nan too, as torch), as y's dtype: multiplying by a bool
    mask instead is several times slower on a CPU (a mixed-dtype multiply). While a
    graph is recorded (create_graph, torch.func, forward-mode AD) out= is refused: a
    mask converted."""
    if torch.is_grad_enabled() or transformed() or forward_ad():
        return (y > 0).to(y.dtype)
    return torch.gt(y, 0, out=torch.empty_like(y))


def relu_reference(x: torch.Tensor) -> torch.Tensor:
    return _pointwise(x, relu_values, _relu_derivative)


def sigmoid_reference(x: torch.Tensor) -> torch.Tensor:
    return _pointwise(x, sigmoid_values, lambda y: torch.addcmul(y, y, y, value=-1))  # y - y², one pass


def tanh_reference(x: torch.Tensor) -> torch.Tensor:
    return _pointwise(x, tanh_values, lambda y: torch.addcmul(_ONE, y, y, value=-1))  # 1 - y², one pass
