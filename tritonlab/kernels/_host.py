"""Integer helpers, the SM count and the dots' precision for the launchers' host code.

triton.cdiv and triton.next_power_of_2 are constexpr_functions (Triton 3.6 and later):
callable from host code, but each call unwraps its arguments as constexprs first, ~2 us
on this project's 2-core CPU against ~0.1 us for the arithmetic (commit 3f1cd59's
measurement, not in a report). A Linear forward and
backward makes ~20 such calls, so the launchers use these plain twins (same results,
tests/test_kernels_host.py). Inside @triton.jit code, keep tl.cdiv / triton's own.

Each kernel module also holds INTERPRETED, TRITON_INTERPRET as it read when its
kernels were decorated (triton.jit reads it then, per kernel): the launchers branch on
it (the interpreter's fixed small tiles) without reading the environment on every
launch (~1 us a read, ~20 reads a MultiheadAttention forward and backward, as commit
1c55a33 reports).
"""

import torch

from ..backend import tf32_enabled


def dot_precision(dtype: torch.dtype, kind: str = "matmul") -> str:
    """tl.dot's input_precision for inputs of `dtype`: "ieee" (full precision; fp32 then
    runs on FFMA, not tensor cores) for float64, and for float32 unless torch lets `kind`
    ("matmul"; "conv" for convolutions, which follow cuDNN's flag) use TF32; else "tf32"
    (16-bit inputs ignore it: their dots are tensor-core dots either way). Read at every
    call, as torch reads its flags."""
    full = dtype == torch.float64 or (dtype == torch.float32 and not tf32_enabled(kind))
    return "ieee" if full else "tf32"


def sm_count(device: torch.device) -> int:
    """The CUDA device's streaming multiprocessor count, which the launchers size their
    grids and splits by; each caller decides what a CPU (the interpreter) gets."""
    return torch.cuda.get_device_properties(device).multi_processor_count


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for integers, as triton.cdiv."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of 2 >= n for n >= 1 (0 for 0), as triton.next_power_of_2."""
    return 1 << (n - 1).bit_length() if n > 0 else 0
