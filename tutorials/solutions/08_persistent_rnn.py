"""Solutions to the exercises of tutorials/08_persistent_rnn.py, each with a plausible
mistake (`wrong_K`) that its check must reject."""
import os

import torch

if not torch.cuda.is_available():  # no GPU: run every kernel on CPU tensors through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported
import triton
import triton.language as tl

from tritonlab.kernels._math import tanh


# ---- exercise 1: a persistent tanh RNN -------------------------------------------------

@triton.jit
def rnn_persistent_kernel(xp_ptr, w_ptr, hs_ptr, T, B, H, IN_PLACE: tl.constexpr,
                          BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    """All T steps of h' = tanh(xp_t + h W_hhᵀ) in one launch. xp (T, B, H); w (H, H);
    hs (T+1, B, H): hs[0] = h0, step t reads hs[t] and writes hs[t+1].
    Grid: (cdiv(B, BLOCK_B),); a program owns BLOCK_B rows and all H units.
    IN_PLACE=True is the mistake: one (B, H) buffer (hs[0]) read and overwritten by every
    step, so the second hidden block's matmul reads h' of the first block."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    for t in range(T):
        if IN_PLACE:
            h_ptr = hs_ptr
            h_next_ptr = hs_ptr
        else:
            h_ptr = hs_ptr + t * B * H
            h_next_ptr = h_ptr + B * H
        for j in range(0, H, BLOCK_H):
            units = j + tl.arange(0, BLOCK_H)
            acc = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
            for k in range(0, H, BLOCK_K):
                ks = k + tl.arange(0, BLOCK_K)
                hk = tl.load(h_ptr + rows[:, None] * H + ks[None, :], mask=(rows < B)[:, None] & (ks < H)[None, :],
                             other=0.0)
                w = tl.load(w_ptr + units[None, :] * H + ks[:, None], mask=(ks < H)[:, None] & (units < H)[None, :],
                            other=0.0)  # W_hh[units, ks]ᵀ
                acc = tl.dot(hk, w, acc, input_precision="ieee")
            m = (rows < B)[:, None] & (units < H)[None, :]
            state = rows[:, None] * H + units[None, :]
            xp = tl.load(xp_ptr + t * B * H + state, mask=m, other=0.0)
            tl.store(h_next_ptr + state, tanh(acc + xp), mask=m)
            if IN_PLACE:
                tl.store(hs_ptr + (t + 1) * B * H + state, tanh(acc + xp), mask=m)  # the output of step t
        tl.debug_barrier()


def _rnn(x, w_ih, w_hh, b_ih, b_hh, in_place):
    T, B, _ = x.shape
    H = w_hh.shape[0]
    xp = torch.addmm(b_ih + b_hh, x.reshape(T * B, -1), w_ih.t())
    hs = x.new_zeros(T + 1, B, H)
    rnn_persistent_kernel[(triton.cdiv(B, 16),)](xp, w_hh.contiguous(), hs, T, B, H, IN_PLACE=in_place,
                                                 BLOCK_B=16, BLOCK_H=16, BLOCK_K=16)
    return hs[1:]


def exercise_1(x, w_ih, w_hh, b_ih, b_hh):
    return _rnn(x, w_ih, w_hh, b_ih, b_hh, False)


def wrong_1(x, w_ih, w_hh, b_ih, b_hh):
    return _rnn(x, w_ih, w_hh, b_ih, b_hh, True)


# ---- exercise 2: will the grid barrier fit? ---------------------------------------------

def _plan(B, H, sms, count_batch_blocks):
    block_b = 16 if B <= 16 else 32
    blocks_b = triton.cdiv(B, block_b) if count_batch_blocks else 1
    block_h = next((bh for bh in (16, 32, 64, 128) if blocks_b * triton.cdiv(H, bh) <= sms), 0)
    span = max(16, triton.next_power_of_2(H))
    resident = int(block_h > 0 and block_b == 16 and 4 * span * block_h <= 16384)
    return torch.tensor([block_h, resident])


def exercise_2(B, H, sms):
    return _plan(B, H, sms, True)


def wrong_2(B, H, sms):
    """Counts only the hidden blocks: the batch blocks' programs need SMs too."""
    return _plan(B, H, sms, False)
