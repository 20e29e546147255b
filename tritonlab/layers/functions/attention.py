"""Scaled dot-product attention on the Triton tier: the flash kernels of
kernels/attention.py as the custom ops tritonlab::attention (q, k, v, mask?, dropout_p,
is_causal, scale, seed?) -> (out, lse) and tritonlab::attention_backward.

Saved for backward: q, k, v, the mask (a view, stride 0 where broadcast), out and the
per-row log-sum-exp (4 bytes a query row): the backward recomputes the scores tile by
tile instead of keeping the (L, S) probabilities. Dropout keeps only its seed (a
1-element int64 tensor from torch's generator); the backward regenerates the mask.

`attention_triton(q, k, v, mask, dropout_p, is_causal, scale)` is the tier's entry point
(the contract in scratch/attention.py). A mask that requires grad gets its gradient
from the backward kernel (dS, summed over the dims where the mask broadcasts).
"""
from __future__ import annotations

import torch

from ...backend import interpreter_enabled
from ...kernels.attention import DTYPES, attention_backward, attention_forward
from ...scratch._autograd import custom_op, register_backward
from ._vmap import front, one_seed, per_sample
from .softmax import draw_seed


@custom_op("attention", "(Tensor q, Tensor k, Tensor v, Tensor? mask, float dropout_p, bool is_causal, "
                        "float scale, Tensor? seed) -> (Tensor, Tensor)")
def attention_op(q, k, v, mask, dropout_p, is_causal, scale, seed):
    return attention_forward(q, k, v, mask, dropout_p, is_causal, scale, seed)


@attention_op.register_fake
def _(q, k, v, mask, dropout_p, is_causal, scale, seed):
    B, Hq, L, _ = q.shape
    return (q.new_empty((B, Hq, L, v.shape[-1])),
            q.new_empty((B, Hq, L), dtype=torch.float64 if q.dtype == torch.float64 else torch.float32))


@attention_op.register_vmap
def _(info, in_dims, q, k, v, mask, dropout_p, is_causal, scale, seed):
    """Samples of (N, H, len, dim) fold into one batch of B*N, unless the mask differs
    by sample or by N (folding would copy it B times) or all samples share one dropout
    mask (randomness="same")."""
    args = (q, k, v, mask, dropout_p, is_causal, scale, seed)
    if mask is not None and in_dims[3] is None and mask.dim() == 4 and mask.stride(0) == 0:
        mask = mask[:1]  # broadcast over N (as the layers pass it): over B*N as well
    shared_mask = mask is None or (in_dims[3] is None and (mask.dim() < 4 or mask.shape[0] == 1))
    if not shared_mask or (seed is not None and in_dims[7] is None):
        return per_sample(attention_op, info, in_dims, *args)
    B = info.batch_size
    q, k, v = (front(t, d, B).flatten(0, 1) for t, d in zip((q, k, v), in_dims))
    out, lse = attention_op(q, k, v, mask, dropout_p, is_causal, scale,
                            None if seed is None else one_seed(seed, in_dims[7]))
    return (out.unflatten(0, (B, -1)), lse.unflatten(0, (B, -1))), (0, 0)


@custom_op("attention_backward", "(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor? mask, Tensor out, "
                                 "Tensor lse, float dropout_p, bool is_causal, float scale, Tensor? seed, "
                                 "bool mask_grad) -> (Tensor, Tensor, Tensor, Tensor?)")
def attention_backward_op(dout, q, k, v, mask, out, lse, dropout_p, is_causal, scale, seed, mask_grad):
    return attention_backward(dout, q, k, v, mask, out, lse, dropout_p, is_causal, scale, seed, mask_grad)


@attention_backward_op.register_fake
def _(dout, q, k, v, mask, out, lse, dropout_p, is_causal, scale, seed, mask_grad):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
            mask.new_empty(mask.shape) if mask_grad else None)


def _setup(ctx, inputs, output):
    q, k, v, mask, ctx.dropout_p, ctx.is_causal, ctx.scale, ctx.seed = inputs  # the seed rides on ctx
    ctx.save_for_backward(q, k, v, mask, *output)
    ctx.mark_non_differentiable(output[1])  # lse is the backward's, not a result to differentiate


def _backward(ctx, dout, _dlse):
    q, k, v, mask, out, lse = ctx.saved_tensors
    dq, dk, dv, dmask = attention_backward_op(dout, q, k, v, mask, out, lse, ctx.dropout_p, ctx.is_causal,
                                              ctx.scale, ctx.seed, mask is not None and ctx.needs_input_grad[3])
    return dq, dk, dv, dmask, None, None, None, None


register_backward(attention_op, _backward, _setup)


def _check(q, k, v, mask, dropout_p) -> None:
    """The contract's shapes and dtypes, refused with what was expected and what came."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"attention (triton tier) expects 4-D {name} (B, H, len, dim), got shape {tuple(t.shape)}")
        if t.dtype != q.dtype or t.device != q.device:
            raise TypeError(f"attention (triton tier) expects q, k, v of one dtype and device, got q "
                            f"{q.dtype} on {q.device} and {name} {t.dtype} on {t.device}")
    if q.dtype not in DTYPES:
        raise TypeError(f"attention on the triton tier expects one of {DTYPES}, got dtype {q.dtype}")
    if q.dtype == torch.bfloat16 and not q.is_cuda and interpreter_enabled():
        raise TypeError("attention on the triton tier got bfloat16 on the CPU, but the Triton interpreter "
                        "has no bfloat16; use float16/float32 or CUDA tensors")
    B, Hq, L, E = q.shape
    if k.shape[:2] != v.shape[:2] or k.shape[0] != B or k.shape[2] != v.shape[2] or k.shape[3] != E:
        raise ValueError(f"attention expects k (B, Hkv, S, E) and v (B, Hkv, S, Ev) for q {tuple(q.shape)}, "
                         f"got k {tuple(k.shape)} and v {tuple(v.shape)}")
    if k.shape[1] == 0 or Hq % k.shape[1]:
        raise ValueError(f"attention expects the query heads ({Hq}) to be a multiple of the kv heads ({k.shape[1]})")
    if max(E, v.shape[3]) > 256:
        raise ValueError(f"attention on the triton tier takes head dims up to 256, got E={E}, Ev={v.shape[3]}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"attention expects dropout_p in [0, 1), got {dropout_p}")
    if mask is not None:
        if mask.dtype != q.dtype:
            raise TypeError(f"attention expects an additive mask of q's dtype {q.dtype}, got {mask.dtype}")
        try:
            torch.broadcast_shapes(mask.shape, (B, Hq, L, k.shape[2]))
        except RuntimeError:
            raise ValueError(f"attention expects a mask broadcastable to {(B, Hq, L, k.shape[2])}, "
                             f"got shape {tuple(mask.shape)}") from None


def attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                     dropout_p: float, is_causal: bool, scale: float) -> torch.Tensor:
    """out (B, Hq, L, Ev) = dropout(softmax(scale q kᵀ + mask, causal)) v, flash-style."""
    _check(q, k, v, mask, dropout_p)
    if mask is not None and is_causal:
        raise ValueError("attention takes a mask or is_causal, not both (as torch's scaled_dot_product_attention)")
    seed = draw_seed(q.device) if dropout_p > 0 else None
    return attention_op(q, k, v, mask, float(dropout_p), bool(is_causal), float(scale), seed)[0]
