"""Which tier runs a layer's forward: the global choice and how a call resolves it.

`use_backend(name)` sets the global choice and, used in a `with` block, restores the
previous one on exit. A layer built with `backend=` overrides the global choice.
`auto` means `triton` for CUDA tensors and `reference` otherwise.
"""
from __future__ import annotations

import contextlib
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


def _tf32_nodes(kind: str):
    """(legacy switch holder, fp32_precision node or None) of torch's TF32 setting for
    float32 matmuls ("matmul") or cuDNN's convolutions ("conv") and RNNs ("rnn")."""
    if kind == "matmul":
        return torch.backends.cuda.matmul, torch.backends.cuda.matmul
    return torch.backends.cudnn, getattr(torch.backends.cudnn, kind, None)


def tf32_enabled(kind: str = "matmul") -> bool:
    """Whether torch lets float32 `kind` ("matmul", "conv", "rnn") use TF32 tensor cores.

    torch >= 2.9 also takes the choice as fp32_precision settings ("tf32", "ieee"; "none"
    while unset), and once a program sets the two APIs apart, reading the legacy
    allow_tf32 flag raises. So the op's own resolved setting decides where it is set;
    while it reads "none", the legacy flag, and off if even that cannot be read."""
    legacy, node = _tf32_nodes(kind)
    precision = getattr(node, "fp32_precision", "none")
    if precision != "none":
        return precision == "tf32"
    try:
        return bool(legacy.allow_tf32)
    except RuntimeError:  # torch: "allow_tf32 ... without a specific op" in a mixed state
        return False


@contextlib.contextmanager
def same_tf32(enabled: bool):
    """TF32 on or off for float32 matmuls, convolutions and cuDNN's RNNs alike meanwhile,
    the caller's settings restored after. torch keeps two switches (matmuls follow
    torch.backends.cuda.matmul, convolutions and RNNs torch.backends.cudnn, True by
    default), so setting one alone times convolutions with TF32 in a run labelled
    without. The legacy allow_tf32 flags are set while they read back (their setters
    keep torch >= 2.9's fp32_precision settings in step, so code that reads either API
    inside agrees), and only where they differ from `enabled`; once a program has set
    the two APIs apart, reading them raises, and the fp32_precision settings are set
    instead. After: the flags, the matmul precision (torch.get_float32_matmul_precision),
    then each fp32_precision setting that reads otherwise than before, parents first
    (a child inheriting where that reads back what it held): every setting reads as it
    did. torch cannot unset a setting, so one written here may stop following a later
    change of its parent; none is written that already reads right."""
    nodes = [node for node in (torch.backends, torch.backends.cuda.matmul, torch.backends.cudnn,
                               getattr(torch.backends.cudnn, "conv", None), getattr(torch.backends.cudnn, "rnn", None))
             if hasattr(node, "fp32_precision")]
    before = [node.fp32_precision for node in nodes]
    try:
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        matmul_precision = torch.get_float32_matmul_precision()
    except RuntimeError:
        saved = None
    if saved is None:
        for kind in ("matmul", "conv", "rnn"):
            _tf32_nodes(kind)[1].fp32_precision = "tf32" if enabled else "ieee"
    else:
        for holder, value in zip((torch.backends.cuda.matmul, torch.backends.cudnn), saved):
            if value != enabled:  # an unneeded write would still pin the settings
                holder.allow_tf32 = enabled
    try:
        yield
    finally:
        if saved is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
            torch.set_float32_matmul_precision(matmul_precision)  # "medium" is more than a flag holds
        for node, precision in zip(nodes, before):
            if node.fp32_precision == precision:
                continue  # a write would pin it: it would no longer follow its parent
            if node is not torch.backends:
                node.fp32_precision = "none"  # inherit, if that is what it held
                if node.fp32_precision == precision:
                    continue
            node.fp32_precision = precision
