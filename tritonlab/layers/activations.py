"""ReLU, Sigmoid, Tanh: torch.nn's classes with a tier-dispatched forward."""
from __future__ import annotations

import torch
from torch import nn

from ..scratch import activations as scratch
from ._base import LabLayer
from ._checks import check_input
from ._dispatch import lazy, pick

_FUNCTIONS = "activations"
_RELU = {"naive": scratch.relu_naive, "reference": scratch.relu_reference,
         "triton": lazy(_FUNCTIONS, "relu_triton")}
_SIGMOID = {"naive": scratch.sigmoid_naive, "reference": scratch.sigmoid_reference,
            "triton": lazy(_FUNCTIONS, "sigmoid_triton")}
_TANH = {"naive": scratch.tanh_naive, "reference": scratch.tanh_reference,
         "triton": lazy(_FUNCTIONS, "tanh_triton")}


def _integral(x) -> bool:
    """An integer or bool tensor: torch.nn's activations take one (no gradient flows
    through it); the tiers are floating-point kernels, so the layers do as torch does."""
    return isinstance(x, torch.Tensor) and not (x.is_floating_point() or x.is_complex())


def _complex(x) -> bool:
    """A complex tensor: torch.sigmoid and tanh take one; the tiers are real-valued
    kernels, so the layers hand it to torch's op, as ReLU does integer input."""
    return isinstance(x, torch.Tensor) and x.is_complex()


def _promoted(x):
    """`x`, an integer or bool one in the default float dtype: torch.sigmoid's and tanh's
    type promotion."""
    return x.to(torch.get_default_dtype()) if _integral(x) else x


class ReLU(LabLayer, nn.ReLU):
    """torch.nn.ReLU; `inplace=True` writes the result back into the input, as torch does."""

    def __init__(self, inplace: bool = False, *, backend: str | None = None):
        super().__init__(inplace)
        self._set_backend(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _integral(x):  # torch's own op: an integer result, and torch's error for bool
            return torch.relu_(x) if self.inplace else torch.relu(x)
        check_input(x, "ReLU", (), "")
        y = pick("relu", _RELU, self.backend, x)(x)
        return x.copy_(y) if self.inplace else y


class Sigmoid(LabLayer, nn.Sigmoid):
    def __init__(self, *, backend: str | None = None):
        super().__init__()
        self._set_backend(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _complex(x):
            return torch.sigmoid(x)
        x = _promoted(x)
        check_input(x, "Sigmoid", (), "")
        return pick("sigmoid", _SIGMOID, self.backend, x)(x)


class Tanh(LabLayer, nn.Tanh):
    def __init__(self, *, backend: str | None = None):
        super().__init__()
        self._set_backend(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _complex(x):
            return torch.tanh(x)
        x = _promoted(x)
        check_input(x, "Tanh", (), "")
        return pick("tanh", _TANH, self.backend, x)(x)
