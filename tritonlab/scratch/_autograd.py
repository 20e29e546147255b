"""Backward passes written out by hand: the first-order guard, and the helpers that
register an op and its backward as torch.library custom ops."""
from __future__ import annotations

import functools

import torch
from torch.autograd.function import once_differentiable


def first_order_only(backward):
    """Wrap a hand-written backward: run it without building a graph, and refuse a
    second derivative (create_graph=True) with a clear error. once_differentiable alone
    refuses only when the incoming gradient requires grad; otherwise it would silently
    treat this backward as constant and return a wrong gradient of the gradient."""
    inner = once_differentiable(backward)

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "this tritonlab op's backward (reference or triton tier) is written by hand "
                "and cannot be differentiated again (create_graph=True); use "
                "backend='naive' for second derivatives"
            )
        return inner(ctx, *grads)
    return wrapper


# ---- torch.library custom ops ------------------------------------------------------
# What Dynamo cannot trace (Triton launches; a dropout mask drawn from a seeded
# torch.Generator) becomes a functional custom op "tritonlab::<name>": an explicit
# schema (the same on torch 2.4+ whatever the annotations), a fake that gives the
# outputs' shapes, dtypes and strides without computing them (for torch.compile's
# tracing and torch.library.opcheck), and a backward that calls a backward op, itself a
# custom op, so forward and backward graphs each see one opaque node and no graph break.
# What a backward needs beyond the inputs is an extra output of the forward op; random
# ops take their seed as a tensor argument, drawn outside the op from torch's generator.

def custom_op(name: str, schema: str):
    """Decorator: the function as the functional custom op `tritonlab::<name>`."""
    return torch.library.custom_op(f"tritonlab::{name}", mutates_args=(), schema=schema)


def register_backward(op, backward, setup_context) -> None:
    """Differentiate custom op `op` by `backward(ctx, *grads)` (which calls a backward op);
    a second derivative is refused as first_order_only refuses it."""
    op.register_autograd(first_order_only(backward), setup_context=setup_context)


def needs(ctx, *indices: int) -> list[bool]:
    """ctx.needs_input_grad at `indices`, as the bool[] a backward op takes."""
    return [bool(ctx.needs_input_grad[i]) for i in indices]
