"""Pick the function that runs one op on the tier a call resolves to."""
from __future__ import annotations

from typing import Callable

import torch

from ..backend import get_backend, resolve
from ..scratch._autograd import differentiating, dual, forward_ad, transformed


def pick(op: str, impls: dict[str, Callable], layer_backend: str | None, x: torch.Tensor) -> Callable:
    """The implementation of `op` for input `x`.

    `impls` maps tier names to functions. An op with no Triton kernel (Flatten, a view
    that moves no data) has no "triton" entry: `auto` then falls back to the reference tier, while an
    explicit request for `triton` raises NotImplementedError that says what to use.

    Under a torch.func transform (grad, vmap, jacrev, ...) or inside a forward-mode AD
    dual_level, which differentiate with create_graph=True or need jvps, `auto` takes
    the reference tier unless its backward is first order only (scratch/_autograd.py's
    first_order mark), then the naive tier (autograd through every op); never triton,
    whose backwards are all first order. An explicit first-order tier is refused under a
    transform or for a dual `x`, with that advice (with a plain `x` and dual weights,
    torch's own error says the tier has no jvp); vmap alone may run the triton tier (a
    custom op with a vmap rule, functions/_vmap.py).
    """
    requested = layer_backend if layer_backend is not None else get_backend()
    # auto: any open dual_level, as the tangent may come through the weights
    if requested == "auto" and (transformed() or forward_ad()):
        return next(fn for tier in ("reference", "naive")
                    if (fn := impls.get(tier)) is not None and not getattr(fn, "first_order", False))
    tier = resolve(layer_backend, x)
    fn = impls.get(tier)
    if (fn is not None and (transformed() or dual(x)) and getattr(fn, "first_order", False)
            and (tier != "triton" or differentiating())):
        if not differentiating():  # vmap alone: the reference Function has no vmap support
            raise RuntimeError(f"{op} on the {tier} tier is a hand-written autograd.Function that torch.vmap "
                               f"cannot batch; use backend='triton' (its kernels take the batch), 'naive', or "
                               f"'auto', which takes the naive tier under a transform")
        raise RuntimeError(f"{op} on the {tier} tier has a hand-written first-order backward, which torch.func "
                           f"transforms (grad, vmap, jacrev, ...) and forward-mode AD cannot go through; use "
                           f"backend='naive', or 'auto', which takes the naive tier under a transform")
    if fn is not None:
        return fn
    if requested == "auto":
        return impls["reference"]
    raise NotImplementedError(
        f"tritonlab has no Triton kernel for {op} yet; use backend='reference' "
        f"(vectorized torch) or 'naive' (textbook loops)"
    )


# the dtypes the Triton kernels take; `auto` sends others (float64) to the reference tier
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def pick_for_dtype(op: str, impls: dict[str, Callable], layer_backend: str | None, x: torch.Tensor) -> Callable:
    """pick(), but unless "triton" is asked for by name, a dtype the kernels do not take
    (float64) goes to the reference tier, as an op without kernels does."""
    requested = layer_backend if layer_backend is not None else get_backend()
    if x.dtype not in TRITON_DTYPES and requested != "triton":
        impls = {tier: fn for tier, fn in impls.items() if tier != "triton"}
    return pick(op, impls, layer_backend, x)


def lazy(family: str, name: str) -> Callable:
    """`functions.<family>.<name>`, the triton tier's entry point, imported on first call:
    the Triton tier's files import triton, which `import tritonlab` must not do (the CPU
    path works without triton). Importing them registers the tritonlab:: custom ops."""

    def call(*args, **kwargs):
        # an import statement, not importlib.import_module: Dynamo runs the statement
        # while it traces (importlib is a graph break), so a model compiled before its
        # first eager triton-tier call traces as well
        from . import functions
        return getattr(getattr(functions, family), name)(*args, **kwargs)

    call.__name__ = name
    call.first_order = True  # every triton-tier backward is first order only (scratch/_autograd.py)
    return call
