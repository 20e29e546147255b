"""tritonlab: classic deep-learning layers three ways (textbook loops, vectorized
from-scratch torch, Triton kernels) behind one torch.nn-compatible API.

Importing tritonlab never imports triton: the Triton tier is loaded on first use.
"""
from .backend import BACKENDS, get_backend, use_backend
from .layers import *  # noqa: F401,F403
from .layers import __all__ as _layers
from .swap import SwapReport, swap, unswap

__version__ = "0.1.0"
__all__ = ["BACKENDS", "get_backend", "use_backend", "swap", "unswap", "SwapReport", *_layers]
