"""Conv2d: torch.nn.Conv2d with a tier-dispatched forward."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..scratch import conv as scratch
from ..scratch._autograd import transformed
from . import _autocast
from ._base import LabLayer
from ._checks import check_input, check_like, check_size
from ._dispatch import lazy, pick_for_dtype

_SCRATCH = {"naive": scratch.conv2d_naive, "reference": scratch.conv2d_reference}
# the triton tier's two paths; `algo=` picks one (the other tiers ignore it)
ALGOS = ("implicit", "im2col")
_CONV = {algo: {**_SCRATCH, "triton": lazy("conv", f"conv2d_{algo}")} for algo in ALGOS}


def _strides_like_channels_last(t: torch.Tensor) -> bool:
    """Tensor.suggest_memory_format() == channels_last, as ATen decides it for a 4-D
    tensor: the strides must grow in the order C, W, H, N, and the ambiguous cases
    (size-1 dimensions, e.g. C == 1) fall back to contiguous as ATen's do."""
    sizes, strides = t.shape, t.stride()
    if strides[1] == 0:
        return False
    smallest = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < smallest:
            return False
        if d == 0 and smallest == strides[1]:
            return False
        smallest = strides[d] * max(sizes[d], 1)
    return True


class Conv2d(LabLayer, nn.Conv2d):
    """torch.nn.Conv2d: stride, padding (int, pair, 'same', 'valid'), dilation, groups,
    bias, every padding_mode, unbatched (C, H, W) input and channels_last memory format.

    `algo` (keyword-only) picks the triton tier's path: "implicit" (default; implicit
    GEMM, no unfolded buffer) or "im2col" (unfold into a buffer, then a GEMM: the
    teaching step, kept for lessons and benchmarks)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", device=None,
                 dtype=None, *, backend: str | None = None, algo: str = "implicit"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)
        self._set_backend(backend)
        if algo not in ALGOS:
            raise ValueError(f"Conv2d algo must be one of {ALGOS}, got {algo!r}")
        self.algo = algo

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return base if self.algo == "implicit" else f"{base}, algo={self.algo!r}"

    def _explicit_padding(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The padding as ((top, bottom), (left, right)). 'same' pads the total
        dilation * (k - 1) with the odd pixel at the bottom/right, as torch does."""
        if self.padding_mode != "zeros":
            left, right, top, bottom = self._reversed_padding_repeated_twice
            return (top, bottom), (left, right)
        if self.padding == "valid":
            return (0, 0), (0, 0)
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            return tuple((t // 2, t - t // 2) for t in totals)
        return tuple((p, p) for p in self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "Conv2d", (3, 4), "(N, C, H, W) or (C, H, W)")
        check_size(x, -3, self.in_channels, "Conv2d", "input channels")
        check_like(x, self.weight, "Conv2d")
        padding = self._explicit_padding()
        self._check_fits(x, padding)
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        if self.padding_mode != "zeros":
            # reflect/replicate/circular padding is data movement: pad first, then
            # convolve with no further padding, exactly as nn.Conv2d does
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = ((0, 0), (0, 0))
        # torch's conv answers in channels_last when its input (padded: circular padding
        # returns NCHW) or the weight is in it
        channels_last = _strides_like_channels_last(x) or _strides_like_channels_last(self.weight)

        conv = pick_for_dtype("conv2d", _CONV[self.algo], self.backend, x)
        y = _autocast.call(_autocast.MATMUL, conv, x, self.weight, self.bias, self.stride, padding, self.dilation,
                           self.groups)
        if channels_last and not transformed():  # vmap cannot re-lay out a batched tensor
            y = y.contiguous(memory_format=torch.channels_last)
        return y.squeeze(0) if unbatched else y

    def _check_fits(self, x: torch.Tensor, padding) -> None:
        """The dilated kernel must fit in the padded input at least once."""
        padded = [x.shape[-2] + sum(padding[0]), x.shape[-1] + sum(padding[1])]
        span = [d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size)]
        if padded[0] < span[0] or padded[1] < span[1]:
            raise ValueError(
                f"Conv2d input is too small: padded input size {padded[0]} x {padded[1]} is "
                f"smaller than the dilated kernel size {span[0]} x {span[1]} (input shape "
                f"{tuple(x.shape)}, kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"padding={self.padding})"
            )
