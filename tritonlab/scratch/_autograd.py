"""A guard for backward passes written out by hand."""
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
