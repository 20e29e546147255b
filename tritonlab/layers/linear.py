"""Linear: torch.nn.Linear with a tier-dispatched forward, and LinearActivation,
act(Linear(x)) as one module whose triton tier is one GEMM with the activation fused
into its epilogue.

The functional form of the fused op is
`tritonlab.layers.functions.linear.linear_triton(x, weight, bias, activation="relu")`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..scratch import activations as scratch_act
from ..scratch import linear as scratch
from . import _autocast
from ._base import LabLayer
from ._checks import check_input, check_like, check_size
from ._dispatch import lazy, pick_for_dtype

_SCRATCH = {"naive": scratch.linear_naive, "reference": scratch.linear_reference}
_LINEAR = {**_SCRATCH, "triton": lazy("linear", "linear_triton")}
ACTIVATIONS = ("relu", "sigmoid", "tanh")


def linear_tier(backend: str | None, x: torch.Tensor):
    """The Linear function of the tier a call with `backend` (None: the global one) on x
    resolves to, (x, weight, bias) -> x Wᵀ + b; other layers' projections use it too."""
    return pick_for_dtype("linear", _LINEAR, backend, x)


class Linear(LabLayer, nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None, *, backend: str | None = None):
        super().__init__(in_features, out_features, bias, device, dtype)
        self._set_backend(backend)

    def _linear(self, x: torch.Tensor):
        """Check x, then the function of the tier this call resolves to."""
        check_input(x, type(self).__name__, (), "")
        if x.dim() == 0:
            raise ValueError(f"{type(self).__name__} expected an input of shape (*, in_features), got a 0-D tensor")
        check_size(x, -1, self.in_features, type(self).__name__, "input features")
        check_like(x, self.weight, type(self).__name__)
        return linear_tier(self.backend, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _autocast.call(_autocast.MATMUL, self._linear(x), x, self.weight, self.bias)


class LinearActivation(Linear):
    """act(x Wᵀ + b) with act one of "relu", "sigmoid", "tanh": Linear's parameters and
    state_dict keys, so it loads an nn.Linear's weights. On the triton tier one GEMM
    whose epilogue applies the activation (no round trip of the pre-activation through
    memory); on the other tiers that tier's Linear, then that tier's activation."""

    def __init__(self, in_features: int, out_features: int, activation: str, bias: bool = True,
                 device=None, dtype=None, *, backend: str | None = None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"LinearActivation activation must be one of {ACTIVATIONS}, got {activation!r}")
        super().__init__(in_features, out_features, bias, device, dtype, backend=backend)
        self.activation = activation

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linear = self._linear(x)
        if linear is _LINEAR["triton"]:
            return _autocast.call(_autocast.MATMUL, linear, x, self.weight, self.bias, activation=self.activation)
        tier = "naive" if linear is scratch.linear_naive else "reference"
        y = _autocast.call(_autocast.MATMUL, linear, x, self.weight, self.bias)
        return getattr(scratch_act, f"{self.activation}_{tier}")(y)  # in y's dtype, as torch's activations
