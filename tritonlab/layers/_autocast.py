"""torch.autocast for the layers. Each layer casts what it computes with as autocast
casts the torch op it replaces (the policy lists of ATen's autocast_mode.cpp), then runs
its tier with autocast off, so every tier computes exactly as for inputs of that dtype:
the triton tier's kernels get one dtype, and the reference tier's in-place steps never
meet autocast's per-op casts. Outside autocast a call pays one check of torch's
any-autocast flag (~0.2 us); a broadcast view is cast without materialising it."""
from __future__ import annotations

import torch
from torch.utils._pytree import tree_map

LOWER, FP32 = "lower", "fp32"
# linear, conv2d, the RNNs, scaled_dot_product_attention: torch computes them in the
# autocast dtype on CUDA and CPU. (On a CPU torch leaves nn.GRU alone, as it is no
# oneDNN op there; tritonlab's GRU casts on every device, as its LSTM does.)
MATMUL = {"cuda": LOWER, "cpu": LOWER}
# softmax: in float32 under CUDA autocast, in the input's dtype on a CPU
SOFTMAX = {"cuda": FP32}
# the dtypes autocast casts (float64 and integer tensors pass as they are)
_ELIGIBLE = (torch.float16, torch.bfloat16, torch.float32)


def eligible_pair(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether autocast (on for a's device type) will bring `a` and `b` to one dtype."""
    return torch.is_autocast_enabled(a.device.type) and a.dtype in _ELIGIBLE and b.dtype in _ELIGIBLE


def call(policy: dict[str, str], fn, x: torch.Tensor, *args, **kwargs):
    """fn(x, *args, **kwargs) as autocast runs the op `policy` describes (device type ->
    LOWER or FP32; a device type it does not name keeps every dtype): the floating
    tensors among x and args (nested in tuples and lists too) on x's device type cast,
    then fn with autocast off. Without autocast, fn as called."""
    if not torch._C._is_any_autocast_enabled():  # first: x.device costs more than this
        return fn(x, *args, **kwargs)
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type):
        return fn(x, *args, **kwargs)
    target = policy.get(device_type)
    if target is not None:
        dtype = torch.get_autocast_dtype(device_type) if target == LOWER else torch.float32

        def cast(t):
            eligible = isinstance(t, torch.Tensor) and t.dtype in _ELIGIBLE and t.device.type == device_type
            return _cast(t, dtype) if eligible else t
        x, args = cast(x), tree_map(cast, args)
    with torch.autocast(device_type, enabled=False):
        return fn(x, *args, **kwargs)


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t.to(dtype), but a broadcast view (stride 0, e.g. an (L, S) attention mask
    expanded to (B, H, L, S)) stays one: its base is cast, then broadcast again."""
    if t.dtype == dtype or 0 not in t.stride():
        return t.to(dtype)
    base = t
    for dim, (size, stride) in enumerate(zip(t.shape, t.stride())):
        if stride == 0 and size > 1:
            base = base.narrow(dim, 0, 1)
    return base.to(dtype).expand(t.shape)
