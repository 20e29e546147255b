"""Flatten from scratch: merge dimensions start_dim..end_dim into one.

No data moves when the input is contiguous over those dimensions: flattening is a
new shape for the same memory (a view). Otherwise a copy is made, as torch does.
"""
from __future__ import annotations

import math

import torch


def flatten_naive(x: torch.Tensor, start_dim: int, end_dim: int) -> torch.Tensor:
    """The merged size written out as a loop over the merged dimensions."""
    merged = 1
    for d in range(start_dim, end_dim + 1):
        merged *= x.shape[d]
    return x.reshape(*x.shape[:start_dim], merged, *x.shape[end_dim + 1:])


def flatten_reference(x: torch.Tensor, start_dim: int, end_dim: int) -> torch.Tensor:
    return x.reshape(*x.shape[:start_dim], math.prod(x.shape[start_dim:end_dim + 1]), *x.shape[end_dim + 1:])
