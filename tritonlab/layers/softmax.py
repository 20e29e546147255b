"""Softmax, Dropout and SoftmaxDropout: torch.nn's classes with a tier-dispatched forward."""
from __future__ import annotations

import numbers
import warnings

import torch
from torch import nn

from ..scratch import dropout as scratch_dropout
from ..scratch import softmax as scratch_softmax
from . import _autocast
from ._base import LabLayer
from ._checks import check_input
from ._dispatch import lazy, pick

_FUNCTIONS = "softmax"
_SOFTMAX = {"naive": scratch_softmax.softmax_naive, "reference": scratch_softmax.softmax_reference,
            "triton": lazy(_FUNCTIONS, "softmax_triton")}
_DROPOUT = {"naive": scratch_dropout.dropout_naive, "reference": scratch_dropout.dropout_reference,
            "triton": lazy(_FUNCTIONS, "dropout_triton")}
_SOFTMAX_DROPOUT = {"naive": scratch_dropout.softmax_dropout_naive,
                    "reference": scratch_dropout.softmax_dropout_reference,
                    "triton": lazy(_FUNCTIONS, "softmax_dropout_triton")}


def _check_p(p, layer: str) -> float:
    if isinstance(p, torch.Tensor) and p.dim() == 0:
        p = p.item()
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"{layer} probability p must be a number in [0, 1], got {p!r}")
    return float(p)


def _resolve_dim(dim: int | None, x: torch.Tensor, layer: str) -> int:
    """Normalise `dim` for `x`; None follows torch's legacy implicit choice."""
    ndim = x.dim()
    if dim is None:  # what torch.nn.Softmax(dim=None) does, warning included
        warnings.warn(f"Implicit dimension choice for {layer} has been deprecated. "
                      "Change the call to include dim=X as an argument.", stacklevel=3)
        return 0 if ndim in (0, 1, 3) else 1
    lo, hi = -max(ndim, 1), max(ndim, 1) - 1
    if not lo <= dim <= hi:
        raise ValueError(
            f"{layer} dim={dim} is out of range for a {ndim}-D input of shape {tuple(x.shape)} "
            f"(expected a dim in [{lo}, {hi}])"
        )
    return dim % max(ndim, 1) if ndim else 0


class Softmax(LabLayer, nn.Softmax):
    def __init__(self, dim: int | None = None, *, backend: str | None = None):
        super().__init__(dim)
        self._set_backend(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "Softmax", (), "")
        dim = _resolve_dim(self.dim, x, "Softmax")
        return _autocast.call(_autocast.SOFTMAX, pick("softmax", _SOFTMAX, self.backend, x), x, dim)


class Dropout(LabLayer, nn.Dropout):
    """torch.nn.Dropout; the mask comes from torch's generator and is never stored."""

    def __init__(self, p: float = 0.5, inplace: bool = False, *, backend: str | None = None):
        super().__init__(_check_p(p, "Dropout"), inplace)
        self._set_backend(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and (not self.training or self.p == 0):
            return x  # as torch.nn.Dropout does, whatever the dtype
        check_input(x, "Dropout", (), "")
        y = pick("dropout", _DROPOUT, self.backend, x)(x, self.p, self.training)
        return x.copy_(y) if self.inplace and y is not x else y


class SoftmaxDropout(LabLayer, nn.Module):
    """dropout(softmax(x, dim), p) in one op, as attention uses it: the fused kernel
    reads x once and writes the result once; the backward regenerates the mask."""

    def __init__(self, p: float = 0.5, dim: int = -1, *, backend: str | None = None):
        super().__init__()
        self.p = _check_p(p, "SoftmaxDropout")
        self.dim = dim
        self._set_backend(backend)

    def extra_repr(self) -> str:
        base = f"p={self.p}, dim={self.dim}"
        return base if self.backend is None else f"{base}, backend={self.backend!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "SoftmaxDropout", (), "")
        dim = _resolve_dim(self.dim, x, "SoftmaxDropout")
        fn = pick("softmax_dropout", _SOFTMAX_DROPOUT, self.backend, x)
        return _autocast.call(_autocast.SOFTMAX, fn, x, self.p, dim, self.training)  # as softmax, then dropout
