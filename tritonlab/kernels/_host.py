"""Integer helpers for the launchers' host code.

triton.cdiv and triton.next_power_of_2 are constexpr_functions (Triton 3.6 and later):
callable from host code, but each call unwraps its arguments as constexprs first, ~2 us
on this project's 2-core CPU against ~0.1 us for the arithmetic. A Linear forward and
backward makes ~20 such calls, so the launchers use these plain twins (same results,
tests/test_kernels_host.py). Inside @triton.jit code, keep tl.cdiv / triton's own.
"""
from ..backend import interpreter_enabled

# Whether this process's kernels run in Triton's interpreter. triton.jit reads
# TRITON_INTERPRET once, when it decorates a kernel (as these modules load), so the
# launchers read it once too, with the kernels: a read of the environment costs ~1 us
# and a MultiheadAttention forward and backward made ~20. (backend.interpreter_enabled
# stays live: it decides whether the triton tier may take CPU tensors at all.)
INTERPRETED = interpreter_enabled()


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for integers, as triton.cdiv."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of 2 >= n for n >= 1 (0 for 0), as triton.next_power_of_2."""
    return 1 << (n - 1).bit_length() if n > 0 else 0
