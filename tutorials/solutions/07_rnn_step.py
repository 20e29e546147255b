"""Solutions to the exercises of tutorials/07_rnn_step.py, each with a plausible mistake
(`wrong_K`) that its check must reject."""
import os

import torch

if not torch.cuda.is_available():  # no GPU: run every kernel on CPU tensors through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported
import triton
import triton.language as tl

from tritonlab.kernels._math import sigmoid, tanh


# ---- exercise 1: fused GRU gates ------------------------------------------------------

@triton.jit
def gru_gates_kernel(gx_ptr, gh_ptr, h_ptr, out_ptr, B, H, Z_KEEPS_H: tl.constexpr, BLOCK: tl.constexpr):
    """h' of one GRU step. gx, gh (B, 3H): x W_ihᵀ + b_ih and h W_hhᵀ + b_hh, gates r, z, n;
    h, out (B, H). Grid: cdiv(B*H, BLOCK). Z_KEEPS_H: torch's convention, z weights the old h
    (False: the mistake of weighting the new candidate n by z)."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < B * H
    row, unit = idx // H, idx % H
    gate = row * (3 * H) + unit
    r = sigmoid(tl.load(gx_ptr + gate, mask=mask, other=0.0) + tl.load(gh_ptr + gate, mask=mask, other=0.0))
    z = sigmoid(tl.load(gx_ptr + gate + H, mask=mask, other=0.0) + tl.load(gh_ptr + gate + H, mask=mask, other=0.0))
    n = tanh(tl.load(gx_ptr + gate + 2 * H, mask=mask, other=0.0)
             + r * tl.load(gh_ptr + gate + 2 * H, mask=mask, other=0.0))
    h = tl.load(h_ptr + idx, mask=mask, other=0.0)
    if Z_KEEPS_H:
        new = (1.0 - z) * n + z * h
    else:
        new = z * n + (1.0 - z) * h
    tl.store(out_ptr + idx, new, mask=mask)


def _gru_gates(gx, gh, h, z_keeps_h):
    B, H = h.shape
    out = torch.empty_like(h)
    BLOCK = 128
    gru_gates_kernel[(triton.cdiv(B * H, BLOCK),)](gx.contiguous(), gh.contiguous(), h.contiguous(), out, B, H,
                                                   Z_KEEPS_H=z_keeps_h, BLOCK=BLOCK)
    return out


def exercise_1(gx, gh, h):
    return _gru_gates(gx, gh, h, True)


def wrong_1(gx, gh, h):
    """The GRU paper's other convention, h' = z n + (1 - z) h: not torch.nn.GRU's."""
    return _gru_gates(gx, gh, h, False)


# ---- exercise 2: one kernel per step of a tanh RNN -------------------------------------

@triton.jit
def rnn_step_kernel(xp_ptr, w_ptr, h_ptr, h_next_ptr, B, H, TRANSPOSE_W: tl.constexpr,
                    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    """h_next = tanh(xp + h W_hhᵀ). xp, h, h_next (B, H); w (H, H).
    Grid: (cdiv(B, BLOCK_B), cdiv(H, BLOCK_H)). TRANSPOSE_W=False is the mistake of
    multiplying by W_hh instead of W_hhᵀ (the shapes agree, the numbers do not)."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    acc = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    for k in range(0, H, BLOCK_K):
        ks = k + tl.arange(0, BLOCK_K)
        hk = tl.load(h_ptr + rows[:, None] * H + ks[None, :], mask=(rows < B)[:, None] & (ks < H)[None, :],
                     other=0.0)
        wmask = (ks < H)[:, None] & (units < H)[None, :]
        if TRANSPOSE_W:  # W_hh[units, ks]ᵀ
            w = tl.load(w_ptr + units[None, :] * H + ks[:, None], mask=wmask, other=0.0)
        else:  # W_hh[ks, units]
            w = tl.load(w_ptr + ks[:, None] * H + units[None, :], mask=wmask, other=0.0)
        acc = tl.dot(hk, w, acc, input_precision="ieee")
    m = (rows < B)[:, None] & (units < H)[None, :]
    state = rows[:, None] * H + units[None, :]
    tl.store(h_next_ptr + state, tanh(acc + tl.load(xp_ptr + state, mask=m, other=0.0)), mask=m)


def _rnn(x, w_ih, w_hh, b_ih, b_hh, transpose_w):
    T, B, _ = x.shape
    H = w_hh.shape[0]
    xp = torch.addmm(b_ih + b_hh, x.reshape(T * B, -1), w_ih.t()).view(T, B, H)
    out = x.new_empty(T, B, H)
    h = x.new_zeros(B, H)
    grid = (triton.cdiv(B, 16), triton.cdiv(H, 16))
    for t in range(T):  # h is read from one buffer, written to another (out[t])
        rnn_step_kernel[grid](xp[t], w_hh.contiguous(), h, out[t], B, H, TRANSPOSE_W=transpose_w,
                              BLOCK_B=16, BLOCK_H=16, BLOCK_K=16)
        h = out[t]
    return out


def exercise_2(x, w_ih, w_hh, b_ih, b_hh):
    return _rnn(x, w_ih, w_hh, b_ih, b_hh, True)


def wrong_2(x, w_ih, w_hh, b_ih, b_hh):
    return _rnn(x, w_ih, w_hh, b_ih, b_hh, False)
