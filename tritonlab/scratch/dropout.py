"""Dropout and softmax+dropout from scratch, two tiers.

Randomness comes from torch's default generator: each call draws one integer seed
(a 1-element tensor) from it (so `torch.manual_seed` reproduces the mask), and the
keep-mask is a pure function of that seed and the shape. The forward never saves the mask: the backward
regenerates it from the seed, as the Triton kernels do with Philox. A kept element
is scaled by 1 / (1 - p) so the expected output equals the input.
"""
from __future__ import annotations

import torch

from ._autograd import custom_op, transformable
from .activations import as_rows
from .softmax import softmax_backward, softmax_naive, softmax_reference, softmax_rows


def draw_seed() -> torch.Tensor:
    """A seed (a (1,) int64 tensor) from torch's default CPU generator: no GPU sync,
    reproducible by torch.manual_seed, and no .item() a compiled graph would break at."""
    return torch.randint(0, 2**62, (1,))


@custom_op("keep_mask", "(Tensor seed, SymInt[] shape, float p, Device device) -> Tensor")
def keep_mask(seed: torch.Tensor, shape, p: float, device) -> torch.Tensor:
    """Boolean mask, True where an element is kept (probability 1 - p), a pure function of
    the seed. A custom op: the seeded torch.Generator that draws it is what Dynamo cannot
    trace, so a compiled model sees one opaque node (the rest of dropout is plain ops)."""
    try:
        return _draw(seed, shape, p, device)
    except RuntimeError:
        # A legacy vmap (torch.autograd.grad(is_grads_batched=True), jacobian(vectorize=
        # True): it vmaps the backward) refuses random ops. The mask depends on the saved
        # seed alone, not on the batched gradient, so the draw leaves the vmap and every
        # batch entry gets the forward's mask, as it should. The nesting calls are those
        # torch._vmap_internals makes (the first probes the depth); tried only after a
        # refusal, as they cost 3% of an eager dropout forward+backward.
        depth = torch._C._vmapmode_increment_nesting() - 1
        torch._C._vmapmode_decrement_nesting()
        if depth == 0:  # not a legacy vmap's refusal
            raise
        for _ in range(depth):
            torch._C._vmapmode_decrement_nesting()
        try:
            return _draw(seed, shape, p, device)
        finally:
            for _ in range(depth):
                torch._C._vmapmode_increment_nesting()


def _draw(seed: torch.Tensor, shape, p: float, device) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(int(seed.item()))
    return torch.rand(shape, generator=gen, device=device) >= p


@keep_mask.register_fake
def _(seed, shape, p, device):
    return torch.empty(shape, dtype=torch.bool, device=device)


@keep_mask.register_vmap
def _(info, in_dims, seed, shape, p, device):
    """One mask per seed: an unbatched seed (a backward vmapped by jacrev, or
    randomness="same") gives one mask for all, drawn here outside vmap, whose
    randomness check would refuse the seeded draw; a batched one a mask each."""
    if in_dims[0] is None:
        return keep_mask(seed, shape, p, device), None
    return torch.stack([keep_mask(s, shape, p, device) for s in seed.movedim(in_dims[0], 0)]), 0


def _scale(p: float) -> float:
    """1 / (1 - p), the factor of a kept element; 0 at p == 1, where nothing is kept."""
    return 0.0 if p >= 1 else 1.0 / (1.0 - p)


# ---- naive: one Python iteration per row, forward and backward ----------------------

def _mask_rowwise(t: torch.Tensor, seed: torch.Tensor, p: float) -> torch.Tensor:
    """t times the keep-mask of `seed`, scaled, one row at a time. The forward applies it
    to x, the backward to dy: the same mask, regenerated rather than saved."""
    keep = as_rows(keep_mask(seed, t.shape, p, t.device))
    rows, scale = as_rows(t), _scale(p)
    # stacked, not written into a fresh tensor: a vmapped (batched) t cannot be copied
    # into a plain one
    return torch.stack([rows[i] * keep[i] * scale for i in range(rows.shape[0])]).reshape(t.shape)


class _DropoutNaive(torch.autograd.Function):
    """Linear in x: backward and jvp apply the same regenerated mask."""
    generate_vmap_rule = True

    @staticmethod
    def forward(x, p, seed):
        return _mask_rowwise(x, seed, p)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.p, ctx.seed = inputs

    @staticmethod
    def backward(ctx, dy):
        return _mask_rowwise(dy, ctx.seed, ctx.p), None, None

    @staticmethod
    def jvp(ctx, dx, _p, _seed):
        return _mask_rowwise(dx, ctx.seed, ctx.p)


_dropout_naive = transformable(_DropoutNaive)


def dropout_naive(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p == 0 or x.numel() == 0:
        return x
    return _dropout_naive(x, p, draw_seed())


def softmax_dropout_naive(x: torch.Tensor, p: float, dim: int, training: bool = True) -> torch.Tensor:
    return dropout_naive(softmax_naive(x, dim), p, training)


# ---- reference: vectorized --------------------------------------------------------
# Backwards of differentiable ops (dropout is linear; softmax's backward is ops of y), so
# autograd can differentiate them again, as torch.func.grad does.

def _dropped(t: torch.Tensor, seed: torch.Tensor, p: float) -> torch.Tensor:
    """t times the keep-mask of `seed`, scaled: dropout's forward, backward and jvp alike."""
    return t * keep_mask(seed, t.shape, p, t.device) * _scale(p)


class _Dropout(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, p, seed):
        return _dropped(x, seed, p)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.p, ctx.seed = inputs

    @staticmethod
    def backward(ctx, dy):
        return _dropped(dy, ctx.seed, ctx.p), None, None

    @staticmethod
    def jvp(ctx, dx, _p, _seed):
        return _dropped(dx, ctx.seed, ctx.p)


class _SoftmaxDropout(torch.autograd.Function):
    """(out, y) = (dropout(softmax(x)), softmax(x)). Saves y (needed by its backward) and
    the seed; the mask is regenerated. y is an output (the caller keeps only out) so
    that, saved, it carries its graph into a second derivative."""
    generate_vmap_rule = True

    @staticmethod
    def forward(x, p, dim, seed):
        y = softmax_rows(x, dim)
        return _dropped(y, seed, p), y

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.p, ctx.dim, ctx.seed = inputs
        ctx.save_for_backward(output[1])
        ctx.save_for_forward(output[1])
        ctx.set_materialize_grads(False)  # y's gradient is None unless y is used again

    @staticmethod
    def backward(ctx, dout, dy_direct):
        (y,) = ctx.saved_tensors
        dy = None if dout is None else _dropped(dout, ctx.seed, ctx.p)
        if dy_direct is not None:
            dy = dy_direct if dy is None else dy + dy_direct
        return None if dy is None else softmax_backward(y, dy, ctx.dim), None, None, None

    @staticmethod
    def jvp(ctx, dx, _p, _dim, _seed):
        (y,) = ctx.saved_tensors
        dy = softmax_backward(y, dx, ctx.dim)  # softmax's jvp (see softmax.py's _Softmax)
        return _dropped(dy, ctx.seed, ctx.p), dy


_dropout, _softmax_dropout = transformable(_Dropout), transformable(_SoftmaxDropout)


def dropout_reference(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p == 0 or x.numel() == 0:
        return x
    return _dropout(x, p, draw_seed())


def softmax_dropout_reference(x: torch.Tensor, p: float, dim: int, training: bool = True) -> torch.Tensor:
    if x.numel() == 0:
        return x.clone()
    if not training or p == 0:
        return softmax_reference(x, dim)
    return _softmax_dropout(x, p, dim, draw_seed())[0]
