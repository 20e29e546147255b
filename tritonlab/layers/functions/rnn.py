"""GRU and LSTM on the Triton tier: one autograd node per layer-direction.

Forward: the input projection of all time steps is one GEMM (`kernels.gemm.matmul`,
biases fused), then the recurrence runs in `kernels.rnn` (fused step kernels, or one
persistent launch). Backward: one reverse-time pass of the recurrence kernels gives the
pre-activation gate gradients of every step and d_h0 (d_c0); dx, dW_ih and dW_hh are
then three GEMMs over all steps at once, the biases' gradients column sums.

Layers, directions, batch_first, unbatched and packed input, dropout between layers and
the initial state are the scratch tiers' shared driver (`scratch.rnn._rnn`); this tier
only supplies the per-direction run. Not supported here: proj_size (NotImplementedError)
and float64 (TypeError); use backend="reference" for them.

Which recurrence kernel runs (`variant`, module-wide default or per call; the modes of
kernels.rnn):
- "step": one launch per time step, the hidden units split over programs;
- "persistent": one launch for the whole sequence, one program per block of batch rows
  walking all H hidden units;
- "persistent-grid": one launch for the whole sequence, the hidden units split over
  programs that meet at a grid barrier after each step (GPU only; B and H must leave at
  most one program per SM);
- "auto": persistent when H <= PERSISTENT_MAX_H, else step. It does not pick
  persistent-grid: that kernel has not yet run on a GPU (no device in the session that
  wrote it); add it here once `pytest -m gpu tests/test_triton_rnn.py` passes.
"""
from __future__ import annotations

from functools import partial

import torch

from ...kernels import rnn as kernels
from ...kernels.gemm import epilogue_grad, matmul
from ...scratch._autograd import first_order_only
from ...scratch.rnn import Cell, _rnn

VARIANTS = ("auto", "step", "persistent", "persistent-grid")
_MODES = {"step": kernels.STEP, "persistent": kernels.PERSISTENT, "persistent-grid": kernels.PERSISTENT_GRID}
variant = "auto"  # the default of every call that passes variant=None
# One SM streams all of W_hh (4H² elements) each step in the persistent variant: past a
# few hundred hidden units the step variant, which spreads that read over many SMs, wins.
PERSISTENT_MAX_H = 256


def _mode(choice: str | None, hidden: int) -> int:
    """The kernels' mode for a variant name (None: the module's `variant`)."""
    choice = variant if choice is None else choice
    if choice not in VARIANTS:
        raise ValueError(f"RNN triton variant must be one of {VARIANTS}, got {choice!r}")
    if choice == "auto":
        choice = "persistent" if hidden <= PERSISTENT_MAX_H else "step"
    return _MODES[choice]


def _column_sums(g: torch.Tensor) -> torch.Tensor:
    return epilogue_grad(g, None, None, True)[1]


class LSTMFunction(torch.autograd.Function):
    """One LSTM layer-direction: x (rows, I) time-major rows, h0, c0 (B, H) ->
    out (rows, H), h_n, c_n (B, H)."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, sizes, reverse, mode):
        # every gate adds b_ih + b_hh outside any product: both fold into the projection
        xp = matmul(x, w_ih.t(), None if b_ih is None else b_ih + b_hh)
        out, h_n, c_n, saved = kernels.lstm_forward(xp, w_hh, h0, c0, sizes, reverse, mode)
        ctx.save_for_backward(x, w_ih, w_hh, *saved)
        ctx.sizes, ctx.reverse, ctx.mode, ctx.has_bias = sizes, reverse, mode, b_ih is not None
        return out, h_n, c_n

    @staticmethod
    @first_order_only
    def backward(ctx, d_out, d_hn, d_cn):
        x, w_ih, w_hh, *saved = ctx.saved_tensors
        d_gates, d_h0, d_c0 = kernels.lstm_backward(d_out, d_hn, d_cn, w_hh, saved, ctx.sizes,
                                                    ctx.reverse, ctx.mode)
        need = ctx.needs_input_grad
        dx = matmul(d_gates, w_ih) if need[0] else None
        dw_ih = matmul(d_gates.t(), x) if need[3] else None
        dw_hh = matmul(d_gates.t(), saved[0]) if need[4] else None  # saved[0]: each step's h_in
        db = _column_sums(d_gates) if ctx.has_bias and (need[5] or need[6]) else None
        return dx, d_h0, d_c0, dw_ih, dw_hh, db, db, None, None, None


class GRUFunction(torch.autograd.Function):
    """One GRU layer-direction: x (rows, I) time-major rows, h0 (B, H) -> out (rows, H),
    h_n (B, H)."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, sizes, reverse, mode):
        hidden = w_hh.shape[1]
        bias = b_hn = None
        if b_ih is not None:
            # b_hr and b_hz add outside any product and fold into the projection; b_hn sits
            # inside r ⊙ (W_hn h + b_hn), so the step kernel adds it
            bias = b_ih.clone()
            bias[:2 * hidden] += b_hh[:2 * hidden]
            b_hn = b_hh[2 * hidden:]
        xp = matmul(x, w_ih.t(), bias)
        out, h_n, saved = kernels.gru_forward(xp, w_hh, b_hn, h0, sizes, reverse, mode)
        ctx.save_for_backward(x, w_ih, w_hh, *saved)
        ctx.sizes, ctx.reverse, ctx.mode, ctx.has_bias = sizes, reverse, mode, b_ih is not None
        return out, h_n

    @staticmethod
    @first_order_only
    def backward(ctx, d_out, d_hn):
        x, w_ih, w_hh, *saved = ctx.saved_tensors
        d_xp, d_hh, d_h0 = kernels.gru_backward(d_out, d_hn, w_hh, saved, ctx.sizes, ctx.reverse, ctx.mode)
        need = ctx.needs_input_grad
        dx = matmul(d_xp, w_ih) if need[0] else None
        dw_ih = matmul(d_xp.t(), x) if need[2] else None
        dw_hh = matmul(d_hh.t(), saved[0]) if need[3] else None  # saved[0]: each step's h_in
        db_ih = _column_sums(d_xp) if ctx.has_bias and need[4] else None
        db_hh = _column_sums(d_hh) if ctx.has_bias and need[5] else None
        return dx, d_h0, dw_ih, dw_hh, db_ih, db_hh, None, None, None


# The driver's cell: no projection before the loop (the Function does it, so the input
# projection and its backward GEMMs belong to the same node), one Function per direction.

def _lstm_run(x, state, w, sizes, reverse, mode):
    w_ih, w_hh, b_ih, b_hh, _ = w
    out, h, c = LSTMFunction.apply(x, *state, w_ih, w_hh, b_ih, b_hh, sizes, reverse, mode)
    return out, (h, c)


def _gru_run(x, state, w, sizes, reverse, mode):
    w_ih, w_hh, b_ih, b_hh, _ = w
    out, h = GRUFunction.apply(x, state[0], w_ih, w_hh, b_ih, b_hh, sizes, reverse, mode)
    return out, (h,)


def _cell(run, x, weights, choice, name: str) -> Cell:
    if x.dtype not in kernels.DTYPES:
        raise TypeError(f"{name} on the triton tier takes float32, float16 or bfloat16, got {x.dtype}; "
                        f"use backend='reference' for {x.dtype}")
    if x.dtype == torch.bfloat16 and not x.is_cuda:
        raise TypeError(f"{name} on the triton tier got bfloat16 on the CPU, but the Triton interpreter has "
                        "no bfloat16; use float16/float32 or a CUDA tensor")
    if weights[0][4] is not None:
        raise NotImplementedError(f"{name} with proj_size has no Triton kernel; use backend='reference'")
    hidden = weights[0][1].shape[1]
    return Cell(lambda rows, w: rows, partial(run, mode=_mode(choice, hidden)),
                lambda w: (w[1].shape[1],) * (2 if name == "LSTM" else 1))


def lstm_triton(x, hx, weights, *, variant: str | None = None, **options):
    """LSTM, triton tier; the scratch tiers' signature (see scratch.rnn) plus `variant`
    (one of VARIANTS; None: the module's `variant`). Returns (output, (h_n, c_n))."""
    return _rnn(_cell(_lstm_run, x, weights, variant, "LSTM"), x, hx, weights, **options)


def gru_triton(x, h0, weights, *, variant: str | None = None, **options):
    """GRU, triton tier; as lstm_triton, h0 a tensor or None. Returns (output, h_n)."""
    cell = _cell(_gru_run, x, weights, variant, "GRU")
    out, (h_n,) = _rnn(cell, x, None if h0 is None else (h0,), weights, **options)
    return out, h_n
