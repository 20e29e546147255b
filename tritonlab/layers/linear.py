"""Linear: torch.nn.Linear with a tier-dispatched forward.

The layer keeps torch.nn.Linear's signature, so it has no activation; Linear followed
by ReLU/Sigmoid/Tanh as one Triton kernel is
`tritonlab.layers.functions.linear.linear_triton(x, weight, bias, activation="relu")`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..backend import get_backend
from ..scratch import linear as scratch
from ._base import LabLayer
from ._checks import check_input, check_like, check_size
from ._dispatch import lazy, pick

_SCRATCH = {"naive": scratch.linear_naive, "reference": scratch.linear_reference}
_LINEAR = {**_SCRATCH, "triton": lazy(".functions.linear", "linear_triton")}
# dtypes the Triton GEMM takes; `auto` sends others (float64) to the reference tier
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


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
        requested = self.backend if self.backend is not None else get_backend()
        impls = _LINEAR if x.dtype in _TRITON_DTYPES or requested == "triton" else _SCRATCH
        return pick("linear", impls, self.backend, x)(x, self.weight, self.bias)
