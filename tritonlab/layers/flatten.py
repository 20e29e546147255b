"""Flatten: torch.nn.Flatten with a tier-dispatched forward."""
from __future__ import annotations

import torch
from torch import nn

from ..scratch import flatten as scratch
from ._base import LabLayer
from ._dispatch import pick

_FLATTEN = {"naive": scratch.flatten_naive, "reference": scratch.flatten_reference}


class Flatten(LabLayer, nn.Flatten):
    def __init__(self, start_dim: int = 1, end_dim: int = -1, *, backend: str | None = None):
        super().__init__(start_dim, end_dim)
        self._set_backend(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"Flatten expected a torch.Tensor, got {type(x).__name__}")
        # any dtype: flattening token ids or masks is a reshape like any other
        if x.dim() == 0:  # torch.flatten treats a scalar as one element
            x = x.reshape(1)
        n = x.dim()
        start, end = self.start_dim, self.end_dim
        if not (-n <= start < n and -n <= end < n) or start % n > end % n:
            raise ValueError(
                f"Flatten(start_dim={start}, end_dim={end}) does not fit a {n}-D input of shape "
                f"{tuple(x.shape)} (expected -{n} <= start_dim <= end_dim < {n} after wrapping)"
            )
        return pick("flatten", _FLATTEN, self.backend, x)(x, start % n, end % n)
