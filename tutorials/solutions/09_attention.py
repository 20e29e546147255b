"""Solutions to the exercises of lesson 09 (flash attention), each with a plausible mistake
(`wrong_K`) that its check must reject. The kernels are the lesson's v2/v3, copied and
extended (a solution file does not run the lesson)."""
import math
import os

import torch

if not torch.cuda.is_available():  # no GPU: run every kernel on CPU tensors through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported
import triton
import triton.language as tl


def _block_e(E: int) -> int:
    return max(16, triton.next_power_of_2(E))


# ---- exercise 1: v2 with an additive key-padding mask ---------------------------------

@triton.jit
def _v2_key_mask_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, o_ptr, scale, H, L, S, E,
                        sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, smb, sob, soh, som,
                        BATCH_ROW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_E: tl.constexpr):
    """The lesson's attention_v2_kernel plus s += mask[b, j]. BATCH_ROW=False reads batch
    0's mask row for every batch (the mistake)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_e = tl.arange(0, BLOCK_E)
    m_ok = offs_m < L
    e_ok = offs_e < E
    q = tl.load(q_ptr + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_e[None, :],
                mask=m_ok[:, None] & e_ok[None, :], other=0.0)
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    mask_row = mask_ptr + b * smb if BATCH_ROW else mask_ptr  # the mistake forgets b * smb
    acc = tl.zeros((BLOCK_M, BLOCK_E), dtype=tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for start in range(0, S, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_ok = offs_n < S
        kt = tl.load(k_base + offs_n[None, :] * skn + offs_e[:, None], mask=e_ok[:, None] & n_ok[None, :], other=0.0)
        am = tl.load(mask_row + offs_n, mask=n_ok, other=float("-inf")).to(tl.float32)  # -inf past S, too
        s = tl.dot(q, kt) * scale + am[None, :]
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + offs_n[:, None] * svn + offs_e[None, :], mask=n_ok[:, None] & e_ok[None, :], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    o = acc / l_i[:, None]
    tl.store(o_ptr + b * sob + h * soh + offs_m[:, None] * som + offs_e[None, :], o.to(o_ptr.dtype.element_ty),
             mask=m_ok[:, None] & e_ok[None, :])


def _key_mask(q, k, v, mask, batch_row):
    B, H, L, E = q.shape
    S = k.shape[2]
    mask = mask.contiguous()
    o = torch.empty_like(q)
    _v2_key_mask_kernel[(triton.cdiv(L, 32), B * H)](
        q, k, v, mask, o, 1 / math.sqrt(E), H, L, S, E, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
        mask.stride(0), *o.stride()[:3], BATCH_ROW=batch_row, BLOCK_M=32, BLOCK_N=16, BLOCK_E=_block_e(E))
    return o


def exercise_1(q, k, v, mask):
    return _key_mask(q, k, v, mask, batch_row=True)


def wrong_1(q, k, v, mask):
    """Forgets the mask's batch offset: every sequence is padded like the first."""
    return _key_mask(q, k, v, mask, batch_row=False)


# ---- exercise 2: sliding-window causal attention ---------------------------------------

@triton.jit
def _window_kernel(q_ptr, k_ptr, v_ptr, o_ptr, scale, W, H, L, S, E,
                   sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som,
                   FIRST_FROM_LAST_ROW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_E: tl.constexpr):
    """Keys i - W < j <= i for query i. The key tiles walked: from the one holding the
    first query's first key, m0 - W + 1, to the diagonal's end, m0 + BLOCK_M; tiles before
    and after are skipped. FIRST_FROM_LAST_ROW: starts at the *last* query's first key,
    m0 + BLOCK_M - W, and loses keys the tile's earlier queries need (the mistake)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_e = tl.arange(0, BLOCK_E)
    m_ok = offs_m < L
    e_ok = offs_e < E
    q = tl.load(q_ptr + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_e[None, :],
                mask=m_ok[:, None] & e_ok[None, :], other=0.0)
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    acc = tl.zeros((BLOCK_M, BLOCK_E), dtype=tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    if FIRST_FROM_LAST_ROW:
        first = m0 + BLOCK_M - W
    else:
        first = m0 - W + 1
    lo = tl.maximum(first, 0) // BLOCK_N * BLOCK_N  # the key tile holding `first`
    hi = tl.minimum(m0 + BLOCK_M, S)
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_ok = offs_n < S
        kt = tl.load(k_base + offs_n[None, :] * skn + offs_e[:, None], mask=e_ok[:, None] & n_ok[None, :], other=0.0)
        s = tl.dot(q, kt) * scale
        visible = n_ok[None, :] & (offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] > offs_m[:, None] - W)
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # nothing visible yet: not -inf - -inf
        p = tl.exp(s - shift[:, None])
        alpha = tl.exp(m_i - shift)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + offs_n[:, None] * svn + offs_e[None, :], mask=n_ok[:, None] & e_ok[None, :], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]  # padding rows past L may see no key
    tl.store(o_ptr + b * sob + h * soh + offs_m[:, None] * som + offs_e[None, :], o.to(o_ptr.dtype.element_ty),
             mask=m_ok[:, None] & e_ok[None, :])


def _window(q, k, v, window, first_from_last_row):
    B, H, L, E = q.shape
    S = k.shape[2]
    assert L == S
    o = torch.empty_like(q)
    _window_kernel[(triton.cdiv(L, 32), B * H)](
        q, k, v, o, 1 / math.sqrt(E), window, H, L, S, E, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
        *o.stride()[:3], FIRST_FROM_LAST_ROW=first_from_last_row, BLOCK_M=32, BLOCK_N=16, BLOCK_E=_block_e(E))
    return o


def exercise_2(q, k, v, window):
    return _window(q, k, v, window, first_from_last_row=False)


def wrong_2(q, k, v, window):
    """Starts the key loop where the tile's last query's window starts: the earlier
    queries of the tile lose their first keys."""
    return _window(q, k, v, window, first_from_last_row=True)


# ---- exercise 3: the backward's delta ---------------------------------------------------

@triton.jit
def _delta_kernel(o_ptr, do_ptr, delta_ptr, H, L, E, sob, soh, som, sdb, sdh, sdm, sde,
                  BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr):
    """delta[b, h, i] = Σ_e dO · O in float32, BLOCK_M queries of one (batch, head).
    Grid (cdiv(L, BLOCK_M), B·H); delta (B, H, L) contiguous."""
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_e = tl.arange(0, BLOCK_E)
    ok = (offs_m[:, None] < L) & (offs_e[None, :] < E)
    o = tl.load(o_ptr + b * sob + h * soh + offs_m[:, None] * som + offs_e[None, :], mask=ok, other=0.0)
    do = tl.load(do_ptr + b * sdb + h * sdh + offs_m[:, None] * sdm + offs_e[None, :] * sde, mask=ok, other=0.0)
    tl.store(delta_ptr + bh * L + offs_m, tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1), mask=offs_m < L)


def _delta(out, dout, own_strides):
    B, H, L, E = out.shape
    out = out.contiguous()
    delta = torch.empty(B, H, L, dtype=torch.float32, device=out.device)
    d_strides = dout.stride() if own_strides else out.stride()  # the mistake: dO read as if laid out like O
    _delta_kernel[(triton.cdiv(L, 16), B * H)](out, dout, delta, H, L, E, *out.stride()[:3], *d_strides,
                                               BLOCK_M=16, BLOCK_E=_block_e(E))
    return delta


def exercise_3(out, dout):
    return _delta(out, dout, own_strides=True)


def wrong_3(out, dout):
    """Reads dO with O's (contiguous) strides: wrong for a transposed view."""
    return _delta(out, dout, own_strides=False)
