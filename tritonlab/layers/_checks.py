"""Input checks shared by the layers: a clear ValueError/TypeError naming what was
expected and what came, raised before any tier runs (so never a Triton compile error
or a silently wrong result)."""
from __future__ import annotations

import torch

from . import _autocast


def check_input(x, layer: str, ndims: tuple[int, ...], layout: str) -> None:
    """`x` must be a floating-point tensor with one of `ndims` dimensions.

    `layout` names the dimensions for the error message, e.g. "(N, C, H, W)".
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{layer} expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{layer} expected a floating-point tensor (float16, bfloat16, float32 or "
            f"float64), got dtype {x.dtype}"
        )
    if ndims and x.dim() not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(
            f"{layer} expected a {want} input {layout}, got a {x.dim()}-D tensor of "
            f"shape {tuple(x.shape)}"
        )


def check_size(x: torch.Tensor, dim: int, expected: int, layer: str, what: str) -> None:
    """Dimension `dim` of `x` must hold `expected` entries (`what` names them)."""
    if x.shape[dim] != expected:
        raise ValueError(
            f"{layer} expected {expected} {what} in dimension {dim % x.dim()} of the "
            f"input, got {x.shape[dim]} (input shape {tuple(x.shape)})"
        )


def check_like(x: torch.Tensor, weight: torch.Tensor, layer: str, what: str = "input") -> None:
    """`x` must live on the weight's device and share its dtype (torch.nn would fail
    later with a less helpful message), unless autocast will cast both to one. `what`
    names `x` in the message, e.g. "initial state h0"; it follows "an"."""
    if x.device != weight.device:
        raise ValueError(
            f"{layer} has its weights on {weight.device} but got an {what} on {x.device}; "
            f"move one of them (e.g. x.to('{weight.device}'))"
        )
    if x.dtype != weight.dtype and not _autocast.eligible_pair(x, weight):
        raise TypeError(
            f"{layer} has {weight.dtype} weights but got a {x.dtype} {what}; "
            f"cast one of them (e.g. x.to({weight.dtype}))"
        )
