"""How the triton tier's ops become torch.library custom ops (namespace "tritonlab").

Each family file declares a forward op and a backward op with `custom_op` (explicit
schemas: the same on torch 2.4+ whatever the annotations), a fake of each for
torch.compile's tracing (output shapes, dtypes and strides, without running a kernel),
and joins them with `register_autograd`, whose backward calls the backward op. So
Dynamo and AOTAutograd see each op as one opaque node, forward and backward, and a
swapped model compiles without graph breaks around the Triton launches (which they
could not trace, least of all under the interpreter).

What the backward needs beyond the inputs (RNN activations, softmax's log-sum-exp) is
an extra output of the forward op, so the fakes describe it too. Random ops take their
seed as a tensor argument, drawn outside the op from torch's generator.

Registration runs when a family file is imported, which is on the triton tier's first
use (the layers reach these files through `_dispatch.lazy`): `import tritonlab` never
imports triton, and the ops exist before Dynamo traces a call into them.
"""
from __future__ import annotations

import torch

from ...scratch._autograd import first_order_only


def custom_op(name: str, schema: str):
    """Decorator: the function as the functional custom op `tritonlab::<name>`."""
    return torch.library.custom_op(f"tritonlab::{name}", mutates_args=(), schema=schema)


def autograd(forward, backward, setup_context) -> None:
    """Differentiate `forward` by `backward(ctx, *grads)`; a second derivative is refused
    with first_order_only's error (the backward ops are written by hand)."""
    forward.register_autograd(first_order_only(backward), setup_context=setup_context)


def needs(ctx, *indices: int) -> list[bool]:
    """ctx.needs_input_grad at `indices`, as the bool[] a backward op takes."""
    return [bool(ctx.needs_input_grad[i]) for i in indices]
