"""Attention: `scaled_dot_product_attention` (torch.nn.functional's signature and
semantics) and MultiheadAttention (torch.nn's class with a tier-dispatched forward).

The functional checks its inputs, brings them to the tiers' 4-D contract
(q (B, Hq, L, E), k (B, Hkv, S, E), v (B, Hkv, S, Ev), an additive float mask broadcast
to (B, Hq, L, S) without a copy where the strides allow), runs the tier and restores the
leading dims. scratch/attention.py states the contract in full.
"""
from __future__ import annotations

import math
import numbers
import warnings

import torch
from torch import nn

from ..backend import check_backend, get_backend
from ..scratch import attention as scratch
from . import _autocast
from ._base import LabLayer
from ._checks import check_input, check_like
from ._dispatch import TRITON_DTYPES, lazy, pick_for_dtype
from .linear import linear_tier

_ATTENTION = {"naive": scratch.attention_naive, "reference": scratch.attention_reference,
              "triton": lazy("attention", "attention_triton")}
_SDPA = "scaled_dot_product_attention"


def _linear(backend, x, weight, bias):
    """x Wᵀ + b on the Linear tier this call resolves to (the triton tier's GEMM kernel)."""
    return _autocast.call(_autocast.MATMUL, linear_tier(backend, x), x, weight, bias)


# ---- the functional ------------------------------------------------------------------

def _check_qkv(query, key, value) -> None:
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_input(t, f"{_SDPA} {name}", (), "")
        if t.dim() < 2:
            raise ValueError(f"{_SDPA} expected {name} with at least 2 dimensions (..., seq, features), "
                             f"got shape {tuple(t.shape)}")
    one_dtype = query.dtype == key.dtype == value.dtype
    if not one_dtype and not all(_autocast.eligible_pair(query, t) for t in (key, value)):
        raise TypeError(f"{_SDPA} expected query, key and value of one dtype, got {query.dtype}, "
                        f"{key.dtype} and {value.dtype}")
    if not query.device == key.device == value.device:
        raise ValueError(f"{_SDPA} expected query, key and value on one device, got {query.device}, "
                         f"{key.device} and {value.device}")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"{_SDPA} expected key with the query's {query.shape[-1]} features in its last "
                         f"dimension, got query {tuple(query.shape)} and key {tuple(key.shape)}")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"{_SDPA} expected value with the key's sequence length {key.shape[-2]} in "
                         f"dimension -2, got key {tuple(key.shape)} and value {tuple(value.shape)}")


def _leading(query, key, value, enable_gqa: bool) -> tuple[tuple, int, int]:
    """(batch dims, query heads, key/value heads) of the broadcast inputs: heads are
    dim -3 (1 for 2-D inputs), the batch dims those before it, broadcast as torch does."""
    n = max(t.dim() for t in (query, key, value)) - 2
    lead = [(1,) * (n - t.dim() + 2) + tuple(t.shape[:-2]) for t in (query, key, value)]
    if n == 0:
        return (), 1, 1
    try:
        batch = torch.broadcast_shapes(*(s[:-1] for s in lead))
    except RuntimeError:
        raise ValueError(f"{_SDPA} expected batch dimensions (all but the last three) that broadcast, "
                         f"got query {tuple(query.shape)}, key {tuple(key.shape)} and value "
                         f"{tuple(value.shape)}") from None
    hq, hk, hv = (s[-1] for s in lead)
    if hk != hv and 1 not in (hk, hv):
        raise ValueError(f"{_SDPA} expected key and value with one number of heads (dim -3), "
                         f"got key {tuple(key.shape)} and value {tuple(value.shape)}")
    hkv = max(hk, hv)
    if enable_gqa:
        if hkv == 0 or hq % hkv:
            raise ValueError(f"{_SDPA} with enable_gqa expected query heads (dim -3) divisible by the "
                             f"key/value heads, got {hq} query and {hkv} key/value heads")
    elif hq != hkv and 1 not in (hq, hkv):
        raise ValueError(f"{_SDPA} expected query, key and value with the same number of heads (dim -3), "
                         f"got {hq} and {hkv}; pass enable_gqa=True for grouped-query attention")
    else:
        hq = hkv = max(hq, hkv)
    return tuple(batch), hq, hkv


def _as_4d(t: torch.Tensor, batch: tuple, heads: int) -> torch.Tensor:
    """t (..., X, Y) expanded to (*batch, heads, X, Y) and folded to (B, heads, X, Y)."""
    lead = len(batch) + 1
    t = t.reshape((1,) * (lead - t.dim() + 2) + tuple(t.shape))
    return t.expand(*batch, heads, *t.shape[-2:]).reshape(math.prod(batch), heads, *t.shape[-2:])


def _additive_mask(attn_mask, query, scores: tuple) -> torch.Tensor:
    """attn_mask (bool: True takes part; or float, added) as an additive float mask of the
    query's dtype, broadcast to the scores' shape, not yet folded."""
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"{_SDPA} expected attn_mask to be a torch.Tensor or None, got {type(attn_mask).__name__}")
    if attn_mask.dtype not in (torch.bool, query.dtype) and not _autocast.eligible_pair(attn_mask, query):
        raise TypeError(f"{_SDPA} expected attn_mask of dtype torch.bool or the query's {query.dtype}, "
                        f"got {attn_mask.dtype}")
    if attn_mask.device != query.device:
        raise ValueError(f"{_SDPA} expected attn_mask on the query's device {query.device}, got {attn_mask.device}")
    try:
        ok = attn_mask.dim() <= len(scores) and torch.broadcast_shapes(attn_mask.shape, scores) == scores
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"{_SDPA} expected attn_mask broadcastable to the attention scores' shape "
                         f"{scores} (batch..., heads, L, S), got shape {tuple(attn_mask.shape)}")
    if attn_mask.dtype == torch.bool:
        attn_mask = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device).masked_fill(
            ~attn_mask, float("-inf"))
    return attn_mask.expand(scores)


def _check_dropout(p) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p < 1:
        raise ValueError(f"{_SDPA} expected dropout_p, a number in [0, 1), got {p!r}")
    return float(p)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False, *, backend: str | None = None):
    """torch.nn.functional.scaled_dot_product_attention on a tritonlab tier.

    query (..., Hq, L, E), key (..., Hkv, S, E), value (..., Hkv, S, Ev); leading dims
    broadcast; attn_mask bool (True = takes part) or float (added), broadcastable to
    (..., Hq, L, S); is_causal masks key j > i for query i (never with attn_mask); scale
    defaults to 1/sqrt(E); enable_gqa lets Hq be a multiple of Hkv. A row with every key
    masked out gives 0. `backend=None` follows tritonlab.use_backend.
    """
    _check_qkv(query, key, value)
    dropout_p = _check_dropout(dropout_p)
    if backend is not None:
        check_backend(backend)
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, numbers.Real)):
        raise TypeError(f"{_SDPA} expected scale to be a number or None, got {type(scale).__name__}")
    if is_causal and attn_mask is not None:
        raise ValueError(f"{_SDPA} expected either attn_mask or is_causal=True, not both "
                         "(is_causal is the lower-triangular mask)")
    batch, hq, hkv = _leading(query, key, value, enable_gqa)
    L, E, S, Ev = query.shape[-2], query.shape[-1], key.shape[-2], value.shape[-1]
    out_shape = (*batch, hq, L, Ev) if max(query.dim(), key.dim(), value.dim()) > 2 else (L, Ev)
    mask = None
    if attn_mask is not None:
        scores = (*batch, hq, L, S) if len(out_shape) > 2 else (L, S)
        mask = _as_4d(_additive_mask(attn_mask, query, scores), batch, hq)
    q, k, v = _as_4d(query, batch, hq), _as_4d(key, batch, hkv), _as_4d(value, batch, hkv)
    scale = 1 / math.sqrt(E) if scale is None else float(scale)
    return _attention_4d(q, k, v, mask, dropout_p, bool(is_causal), scale, backend).reshape(out_shape)


def _attention_4d(q, k, v, mask, dropout_p: float, is_causal: bool, scale: float, backend) -> torch.Tensor:
    """The tier's function on inputs already in the 4-D contract."""
    if 0 in q.shape[:3] or k.shape[2] == 0:
        # nothing to attend to (or nobody asking): zeros, still connected to the inputs
        # so backward gives their (zero) gradients, as torch does
        return q.new_zeros(*q.shape[:-1], v.shape[-1]) + 0 * (q.sum() + k.sum() + v.sum())
    return _autocast.call(_autocast.MATMUL, pick_for_dtype("attention", _ATTENTION, backend, q),
                          q, k, v, mask, dropout_p, is_causal, scale)


# ---- MultiheadAttention ---------------------------------------------------------------

class MultiheadAttention(LabLayer, nn.MultiheadAttention):
    """torch.nn.MultiheadAttention: its constructor, parameters, initialisation and
    state_dict keys; forward(query, key, value, key_padding_mask=None, need_weights=True,
    attn_mask=None, average_attn_weights=True, is_causal=False) with torch's semantics.

    The projections run on the Linear tier; need_weights=False sends the heads through
    scaled_dot_product_attention's tier (the triton tier: the flash kernel), while
    need_weights=True materialises the probabilities (scratch attention_weights) to
    return them. A query whose keys are all masked out gives 0 on both paths; torch's
    need_weights=True path gives NaN there (its need_weights=False path gives 0 too)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device=None, dtype=None, *,
                 backend: str | None = None):
        super().__init__(embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn, kdim, vdim,
                         batch_first, device, dtype)
        self._set_backend(backend)

    # -- checks ---------------------------------------------------------------------

    def _check(self, query, key, value) -> bool:
        """Shapes, dtype and device as torch requires them; returns whether batched."""
        name = type(self).__name__
        layout = "(N, L, E)" if self.batch_first else "(L, N, E)"
        check_input(query, f"{name} query", (2, 3), f"{layout} batched or (L, E) unbatched")
        if query.shape[-1] != self.embed_dim:
            raise ValueError(f"{name} expected query with embed_dim={self.embed_dim} features in its last "
                             f"dimension, got shape {tuple(query.shape)}")
        for what, t, features in (("key", key, self.kdim), ("value", value, self.vdim)):
            check_input(t, f"{name} {what}", (), "")
            if t.dim() != query.dim():
                raise ValueError(f"{name} expected a {query.dim()}-D {what} for a {query.dim()}-D query, "
                                 f"got {what} of shape {tuple(t.shape)}")
            if t.shape[-1] != features:
                raise ValueError(f"{name} expected {what} with {features} features in its last dimension, "
                                 f"got shape {tuple(t.shape)}")
        seq = 1 if self.batch_first and query.dim() == 3 else 0
        if key.shape[seq] != value.shape[seq] or (query.dim() == 3 and not
                                                   query.shape[1 - seq] == key.shape[1 - seq] == value.shape[1 - seq]):
            raise ValueError(f"{name} expected key and value of one sequence length and query, key and value "
                             f"of one batch size, got query {tuple(query.shape)}, key {tuple(key.shape)} and "
                             f"value {tuple(value.shape)}")
        for what, t in (("query", query), ("key", key), ("value", value)):
            check_like(t, self.out_proj.weight, name, what)
        requested = self.backend if self.backend is not None else get_backend()
        if requested == "triton" and query.dtype not in TRITON_DTYPES:  # before the projections' own error
            raise TypeError(f"{name} on the triton tier supports float32, float16 and bfloat16, got dtype "
                            f"{query.dtype}; use backend='reference' (or 'auto') for other dtypes")
        return query.dim() == 3

    def _float_mask(self, mask, what: str, query) -> torch.Tensor | None:
        """torch's canonical form: a bool mask (True = masked out) as 0 / -inf in the query's dtype."""
        if mask is None:
            return None
        name = type(self).__name__
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"{name} expected {what} to be a torch.Tensor or None, got {type(mask).__name__}")
        if mask.dtype not in (torch.bool, query.dtype) and not _autocast.eligible_pair(mask, query):
            raise TypeError(f"{name} expected {what} of dtype torch.bool or the query's {query.dtype}, got {mask.dtype}")
        if mask.device != query.device:
            raise ValueError(f"{name} expected {what} on the query's device {query.device}, got {mask.device}")
        if mask.dtype == torch.bool:
            return torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(mask, float("-inf"))
        return mask

    def _merged_mask(self, attn_mask, key_padding_mask, N: int, L: int, S: int) -> torch.Tensor | None:
        """attn_mask (L, S) or (N·heads, L, S) and key_padding_mask (N, S) as one additive
        mask broadcastable to (N, heads, L, S)."""
        name, H = type(self).__name__, self.num_heads
        mask = None
        if attn_mask is not None:
            expected = {2: (L, S), 3: (N * H, L, S)}.get(attn_mask.dim())
            if tuple(attn_mask.shape) != expected:
                raise ValueError(f"{name} expected attn_mask of shape {(L, S)} or (N * num_heads, L, S) = "
                                 f"{(N * H, L, S)}, got {tuple(attn_mask.shape)}")
            mask = attn_mask.reshape(-1, H, L, S) if attn_mask.dim() == 3 else attn_mask
        if key_padding_mask is not None:
            if tuple(key_padding_mask.shape) != (N, S):
                raise ValueError(f"{name} expected key_padding_mask of shape (N, S) = {(N, S)} "
                                 f"((S,) for unbatched input), got {tuple(key_padding_mask.shape)}")
            kpm = key_padding_mask.reshape(N, 1, 1, S)
            mask = kpm if mask is None else mask + kpm
        return mask

    # -- forward --------------------------------------------------------------------

    def _project(self, query, key, value):
        """The input projections (N, *, E), one GEMM for the packed q/k/v of self-attention."""
        lin, E = (lambda x, w, b: _linear(self.backend, x, w, b)), self.embed_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        if not self._qkv_same_embed_dim:
            bq, bk, bv = (None,) * 3 if b is None else b.chunk(3)
            return lin(query, self.q_proj_weight, bq), lin(key, self.k_proj_weight, bk), lin(value, self.v_proj_weight, bv)
        if query is key and key is value:
            return lin(query, w, b).chunk(3, dim=-1)
        if key is value:
            kv = lin(key, w[E:], None if b is None else b[E:]).chunk(2, dim=-1)
            return (lin(query, w[:E], None if b is None else b[:E]), *kv)
        return tuple(lin(x, wi, bi) for x, wi, bi in zip((query, key, value), w.chunk(3),
                                                          (None,) * 3 if b is None else b.chunk(3)))

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True, attn_mask=None,
                average_attn_weights: bool = True, is_causal: bool = False):
        batched = self._check(query, key, value)
        kpm = self._float_mask(key_padding_mask, "key_padding_mask", query)
        am = self._float_mask(attn_mask, "attn_mask", query)
        if kpm is not None and attn_mask is not None and key_padding_mask.dtype != attn_mask.dtype:
            warnings.warn("Support for mismatched key_padding_mask and attn_mask is deprecated. "
                          "Use same type for both instead.", stacklevel=2)
        if is_causal and attn_mask is None:
            raise ValueError(f"{type(self).__name__} is_causal=True is a hint that attn_mask is the causal mask: "
                             "pass that mask too (e.g. nn.Transformer.generate_square_subsequent_mask(L)), "
                             "as torch.nn.MultiheadAttention requires")
        # torch's rule: the hint replaces the mask only where nothing else needs the mask
        causal = bool(is_causal) and kpm is None and not need_weights
        if causal:
            am = None
        # work batch-first: (N, L, E)
        same_qk, same_kv = query is key, key is value
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            kpm = None if kpm is None else kpm.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        if same_kv:
            value = key
            if same_qk:
                key = value = query
        N, L, S = query.shape[0], query.shape[1], key.shape[1]
        mask = self._merged_mask(am, kpm, N, L, S)
        q, k, v = self._project(query, key, value)
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.expand(N, 1, -1)], dim=1)
            v = torch.cat([v, self.bias_v.expand(N, 1, -1)], dim=1)
            mask = None if mask is None else nn.functional.pad(mask, (0, 1))
        H, D = self.num_heads, self.head_dim
        q, k, v = (t.unflatten(-1, (H, D)).transpose(1, 2) for t in (q, k, v))   # (N, H, *, D)
        if self.add_zero_attn:
            k, v = (torch.cat([t, t.new_zeros(N, H, 1, D)], dim=2) for t in (k, v))
            mask = None if mask is None else nn.functional.pad(mask, (0, 1))
        S = k.shape[2]
        if mask is not None:
            mask = mask.expand(N, H, L, S)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            weights = _autocast.call(_autocast.MATMUL, scratch.attention_weights, q, k, mask, p, False,
                                     1 / math.sqrt(D))
            out = weights @ v
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if not batched:
                weights = weights.squeeze(0)
        else:
            out = _attention_4d(q, k, v, mask, p, causal, 1 / math.sqrt(D), self.backend)
        # heads merged in the output's own order: (L, N, E) comes out contiguous, as torch's
        seq_first = batched and not self.batch_first
        rows = out.permute(2, 0, 1, 3) if seq_first else out.transpose(1, 2)
        out = _linear(self.backend, rows.reshape(*rows.shape[:2], self.embed_dim),
                      self.out_proj.weight, self.out_proj.bias)
        return (out if batched else out.squeeze(0)), weights

