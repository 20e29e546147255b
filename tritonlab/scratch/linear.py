"""Linear (y = x Wᵀ + b over any leading dimensions) from scratch, two tiers."""
from __future__ import annotations

import math

import torch


def linear_naive(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """One Python iteration per output row: each output feature is a dot product."""
    rows = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])  # not -1: in_features may be 0
    out = []
    for i in range(rows.shape[0]):
        y = (weight * rows[i]).sum(dim=1)  # out_features dot products of length in_features
        out.append(y + bias if bias is not None else y)
    if out:
        y = torch.stack(out)
    else:  # no rows: the same formula over all zero of them, so the graph still reaches x, W and b
        y = (weight * rows[:, None]).sum(dim=2)
        y = y + bias if bias is not None else y
    return y.reshape(*x.shape[:-1], weight.shape[0])


def linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """All leading dimensions folded into one matmul: (M, K) @ (K, N) + b."""
    rows = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])  # not -1: in_features may be 0
    y = rows @ weight.t()
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], weight.shape[0])
