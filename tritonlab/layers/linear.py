"""Linear: torch.nn.Linear with a tier-dispatched forward."""
from __future__ import annotations

import torch
from torch import nn

from ..scratch import linear as scratch
from ._base import LabLayer
from ._checks import check_input, check_like, check_size
from ._dispatch import pick

_LINEAR = {"naive": scratch.linear_naive, "reference": scratch.linear_reference}


class Linear(LabLayer, nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None, *, backend: str | None = None):
        super().__init__(in_features, out_features, bias, device, dtype)
        self._set_backend(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "Linear", (), "")
        if x.dim() == 0:
            raise ValueError("Linear expected an input of shape (*, in_features), got a 0-D tensor")
        check_size(x, -1, self.in_features, "Linear", "input features")
        check_like(x, self.weight, "Linear")
        return pick("linear", _LINEAR, self.backend, x)(x, self.weight, self.bias)
