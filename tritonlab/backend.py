"""Which tier runs a layer's forward: the global choice and how a call resolves it.

`use_backend(name)` sets the global choice and, used in a `with` block, restores the
previous one on exit. A layer built with `backend=` overrides the global choice.
`auto` means `triton` for CUDA tensors and `reference` otherwise.
"""
from __future__ import annotations

import importlib.util
import os

import torch

BACKENDS = ("auto", "naive", "reference", "triton")
TIERS = ("naive", "reference", "triton")

_current = "auto"


def check_backend(name) -> str:
    """Return `name` if it names a backend, else raise a ValueError listing them."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


def get_backend() -> str:
    """The global backend choice (`auto` unless changed by `use_backend`)."""
    return _current


class use_backend:
    """Set the global backend; as a context manager, restore the previous one on exit.

    >>> tritonlab.use_backend("reference")          # from now on
    >>> with tritonlab.use_backend("naive"): ...    # only inside the block
    """

    def __init__(self, name: str):
        global _current
        self._previous = _current
        _current = check_backend(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _current
        _current = self._previous
        return False


def interpreter_enabled() -> bool:
    """True when Triton kernels run on CPU tensors through the interpreter: TRITON_INTERPRET
    read as Triton reads it (1, true, yes, on or y, any case), so that "false" is off."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on", "y")


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def resolve(layer_backend: str | None, x: torch.Tensor) -> str:
    """The tier that runs for input `x`: the layer's own choice, else the global one.

    `auto` picks `triton` for CUDA tensors and `reference` otherwise. An explicit
    `triton` on CPU tensors needs the interpreter; without it this raises a
    RuntimeError that says how to enable it.
    """
    name = layer_backend if layer_backend is not None else _current
    if name == "auto":
        return "triton" if x.is_cuda and triton_available() else "reference"
    if name == "triton":
        if not triton_available():
            raise RuntimeError(
                "backend 'triton' needs the triton package, which is not installed "
                "(pip install triton; wheels exist for Linux x86-64 and aarch64)"
            )
        if not x.is_cuda and not interpreter_enabled():
            raise RuntimeError(
                f"backend 'triton' got a tensor on {x.device}; Triton kernels run on CUDA "
                "tensors, or on CPU tensors under the interpreter: set TRITON_INTERPRET=1 "
                "in the environment before Python starts"
            )
    return name
