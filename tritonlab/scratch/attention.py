"""Scaled dot-product attention from scratch, two tiers:

    out = dropout(softmax(q kᵀ · scale + mask)) v

q (B, Hq, L, E), k (B, Hkv, S, E), v (B, Hkv, S, Ev), Hq a multiple of Hkv (grouped-query:
query head h reads kv head h // (Hq // Hkv)); mask None or an additive float tensor
(B, Hq, L, S), -inf where a key is masked out (stride 0 allowed); is_causal masks key j > i
for query i (torch's top-left alignment). A row whose keys are all masked out gives 0,
not NaN, as torch's CPU path does. Dropout acts on the probabilities, kept ones scaled by
1 / (1 - p), the mask drawn from a seed (torch's generator) as scratch/dropout.py does,
so both tiers draw the same mask under the same torch.manual_seed.

Napkin math (E = Ev): two matmuls of 2·L·S·E FLOPs each per (batch, head), so
4·B·Hq·L·S·E FLOPs forward (twice that again backward); the softmax adds ~5·B·Hq·L·S.
Both tiers materialise the L·S scores: B·Hq·L·S elements per intermediate (scores,
exp, probabilities, dropout), each written and read again, and kept for backward.
At B=8, H=16, L=S=4096, E=128 in fp16 that is 1.1 TFLOP (~1.1 ms at an H100's
~990 dense fp16 TFLOP/s) against 4.3 GB per materialised L·S tensor (~1.3 ms each at
3.35 TB/s): memory-bound, several times over. A flash kernel (the triton tier) streams
K/V tiles through on-chip memory and moves only q, k, v, out (4·B·H·L·E·2 bytes = 537 MB,
~0.16 ms): compute-bound, which is the point of writing it.

The reference tier's backward is written out (_Attention): it keeps one L·S tensor (the
probabilities) where autograd through the same ops kept several. On the project's
2-core CPU (B=4, H=8, L=S=512, E=64, float32, shared with other jobs) that took the
forward from 86 to 34 ms and forward+backward from 215 to 94 ms (torch's SDPA: 18 and
57 ms), one run each, recorded only here (commit ffe7c67).
"""
from __future__ import annotations

import torch

from ._autograd import first_order, first_order_only, own
from .dropout import draw_seed, keep_mask


def _safe_softmax(s: torch.Tensor) -> torch.Tensor:
    """exp(s - max) / sum along the last dim; a row of only -inf gives zeros (and zero
    gradients): its max is taken as 0 and its sum of 0 divides as 1. The max is a
    constant of the softmax (it cancels), so it is detached rather than differentiated."""
    if s.shape[-1] == 0:  # no keys: nothing to normalise (and no max to take)
        return s.clone()
    m = s.detach().amax(dim=-1, keepdim=True)
    e = torch.exp(s - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
    total = e.sum(dim=-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def _dropout_keep(shape, dropout_p: float, device) -> torch.Tensor | None:
    """The keep-mask for the probabilities (True = kept), one seed from torch's generator."""
    if dropout_p == 0:
        return None
    return keep_mask(draw_seed(), shape, dropout_p, device)


def _scaled_keep(seed, p: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """keep / (1 - dropout_p) in p's dtype, regenerated from the seed."""
    return keep_mask(seed, p.shape, dropout_p, p.device).to(p.dtype) / (1 - dropout_p)


# ---- naive: one Python iteration per (batch, head, query) row ----------------------

def attention_naive(q, k, v, mask, dropout_p: float, is_causal: bool, scale: float) -> torch.Tensor:
    """For each query row: its scores against every key, the softmax from max/exp/sum,
    dropout, and the probability-weighted sum of the values. Autograd differentiates it."""
    B, Hq, L, _ = q.shape
    S, group = k.shape[2], Hq // k.shape[1]
    keep = _dropout_keep((B, Hq, L, S), dropout_p, q.device)
    keys = torch.arange(S, device=q.device)
    rows = []
    for b in range(B):
        for h in range(Hq):
            kv = h // group                               # the kv head this query head reads
            for i in range(L):
                s = (k[b, kv] @ q[b, h, i]) * scale       # (S,) one dot product per key
                if mask is not None:
                    s = s + mask[b, h, i]
                if is_causal:                             # query i sees keys 0..i
                    s = torch.where(keys <= i, s, torch.full_like(s, float("-inf")))
                m = s.detach().max()
                # every key masked out (m = -inf): exp gives all 0, and dividing by 1
                # instead of that 0 sum makes the output 0. Selects, not an `if`, so
                # torch.func.vmap (no data-dependent branches) can run it
                e = torch.exp(s - torch.where(torch.isinf(m), 0.0, m))
                total = e.sum()
                p = e / torch.where(total > 0, total, 1.0)
                if keep is not None:
                    p = p * keep[b, h, i] / (1 - dropout_p)
                rows.append(p @ v[b, kv])                 # (Ev,) weighted sum of values
    out = torch.stack(rows) if rows else q.new_zeros(0, v.shape[-1])
    return out.reshape(B, Hq, L, v.shape[-1])


# ---- reference: vectorized, the scores materialised --------------------------------

def _grouped(q: torch.Tensor, hkv: int) -> torch.Tensor:
    """(B, Hq, L, X) as (B, Hkv, Hq/Hkv, L, X): query heads grouped under their kv head
    (a view when the strides allow), so k and v broadcast over the group uncopied."""
    B, Hq = q.shape[:2]
    return q.reshape(B, hkv, Hq // hkv, *q.shape[2:])


def attention_weights(q, k, mask, dropout_p: float, is_causal: bool, scale: float) -> torch.Tensor:
    """The attention probabilities (B, Hq, L, S) after dropout: what multiplies v.
    MultiheadAttention's need_weights=True returns these (they must be materialised)."""
    B, Hq, L, _ = q.shape
    hkv, S = k.shape[1], k.shape[2]
    s = (_grouped(q, hkv) @ k.unsqueeze(2).transpose(-2, -1)) * scale   # (B, Hkv, G, L, S)
    s = s.reshape(B, Hq, L, S)
    if mask is not None:
        s = s + mask
    if is_causal:
        allowed = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        s = s.masked_fill(~allowed, float("-inf"))
    p = _safe_softmax(s)
    keep = _dropout_keep(p.shape, dropout_p, p.device)
    return p if keep is None else p * keep / (1 - dropout_p)


def _probabilities(q, k, mask, is_causal: bool, scale: float) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask) (B, Hq, L, S) in one buffer, updated in place (no
    graph: _Attention's forward); rows with every key masked out are 0."""
    B, Hq, L, _ = q.shape
    hkv, S = k.shape[1], k.shape[2]
    s = (_grouped(q * scale, hkv) @ k.unsqueeze(2).transpose(-2, -1)).reshape(B, Hq, L, S)
    if mask is not None:
        s += mask
    if is_causal:
        s.masked_fill_(~torch.ones(L, S, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    s -= m.masked_fill_(~torch.isfinite(m), 0)
    s.exp_()
    total = s.sum(dim=-1, keepdim=True)
    return s.div_(total.masked_fill_(total == 0, 1))


class _Attention(torch.autograd.Function):
    """Forward keeps the probabilities P, the output O and the dropout seed (not the
    mask: backward regenerates it). With D = P ⊙ keep / (1 - p), O = D v:
    dv = Dᵀ dO; dP = (dO vᵀ) ⊙ keep / (1 - p); dS = P ⊙ (dP - rowsum(dO ⊙ O)) (the
    softmax backward: rowsum(dP ⊙ P) equals rowsum(dO ⊙ O)); dq = dS k · scale;
    dk = dSᵀ q · scale, summed over the query heads sharing a kv head; dmask = dS."""

    @staticmethod
    def forward(ctx, q, k, v, mask, dropout_p, is_causal, scale, seed):
        B, Hq, L, _ = q.shape
        hkv = k.shape[1]
        p = _probabilities(q, k, mask, is_causal, scale)
        d = p if seed is None else p * _scaled_keep(seed, p, dropout_p)
        out = (_grouped(d, hkv) @ v.unsqueeze(2)).reshape(B, Hq, L, v.shape[-1])
        ctx.save_for_backward(q, k, v, p, out, seed)
        ctx.dropout_p, ctx.scale = dropout_p, scale
        return own(out)

    @staticmethod
    @first_order_only(vmappable=True)  # its in-place ops write into tensors made from dout
    def backward(ctx, dout):
        q, k, v, p, out, seed = ctx.saved_tensors
        hkv, shape = k.shape[1], p.shape
        keep = None if seed is None else _scaled_keep(seed, p, ctx.dropout_p)
        d = p if keep is None else p * keep
        dout_g = _grouped(dout, hkv)
        dv = (_grouped(d, hkv).transpose(-2, -1) @ dout_g).sum(2)
        ds = (dout_g @ v.unsqueeze(2).transpose(-2, -1)).reshape(shape)
        if keep is not None:
            ds *= keep
        ds -= (dout * out).sum(dim=-1, keepdim=True)
        ds *= p
        ds_g = _grouped(ds, hkv)
        dq = (ds_g @ k.unsqueeze(2)).reshape(q.shape) * ctx.scale
        dk = (ds_g.transpose(-2, -1) @ _grouped(q, hkv)).sum(2) * ctx.scale
        return dq, dk, dv, ds if ctx.needs_input_grad[3] else None, None, None, None, None


@first_order
def attention_reference(q, k, v, mask, dropout_p: float, is_causal: bool, scale: float) -> torch.Tensor:
    """All rows at once: the (B, Hq, L, S) probabilities in one buffer, then one batched
    matmul with v; the backward written out (_Attention)."""
    if torch.compiler.is_exporting():
        # torch.export keeps _Attention's forward ops, not its backward, and autograd
        # cannot differentiate their in-place updates: the same math in graph ops
        B, Hq, L, _ = q.shape
        p = attention_weights(q, k, mask, dropout_p, is_causal, scale)
        return (_grouped(p, k.shape[1]) @ v.unsqueeze(2)).reshape(B, Hq, L, v.shape[-1])
    seed = draw_seed() if dropout_p > 0 else None
    return _Attention.apply(q, k, v, mask, dropout_p, is_causal, scale, seed)

