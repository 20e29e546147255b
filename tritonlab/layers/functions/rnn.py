"""GRU and LSTM on the Triton tier: one autograd node per layer-direction, the custom
ops tritonlab::lstm / tritonlab::gru and their backward ops (see scratch/_autograd.py).

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
  most one program per SM). Each call reads back a barrier-timeout flag (a host sync),
  except while a CUDA graph is captured, where nothing may sync: there the check rests
  on the launch having fit (persistent_grid_fits) and a timeout would go unreported;
- "auto": H <= PERSISTENT_MAX_H takes persistent-grid on a GPU where its programs fit
  at once and persistent under the interpreter; step otherwise. Two sizes in that range
  have been measured (H = 64 and 256), and persistent-grid was the fastest mode at
  both. Measured on an H200 (reports/h200-2026-11-28, float32): LSTM B8 T512 H256
  forward persistent-grid 20.1 ms, step 20.9, persistent 146 (fwd+bwd 28.2 / 40.3 /
  189); GRU 14.9 / 16.2 / 111 (23.1 / 38.0 / 144); the char model's LSTM B64 T128 H64
  forward 2.55 / 5.56 / 2.70 (tutorials.txt, lesson 08). One program walking all of H lost to the spread read at
  H = 256, B = 8 (7x step's forward time) and beat step at H = 64, B = 64; where between
  the two it starts to lose was not measured.
"""
from __future__ import annotations

from functools import partial

import torch

from ...kernels import rnn as kernels
from ...kernels.gemm import epilogue_grad, matmul
from ...scratch.rnn import Cell, _rnn
from ...scratch._autograd import custom_op, register_backward

VARIANTS = ("auto", "step", "persistent", "persistent-grid")
_MODES = {"step": kernels.STEP, "persistent": kernels.PERSISTENT, "persistent-grid": kernels.PERSISTENT_GRID}
variant = "auto"  # the default of every call that passes variant=None
# auto's one-launch variants up to here; above it, step. Measured at H = 64 and 256 only
# (above); at larger H a persistent-grid program re-reads its W_hh slice each step.
PERSISTENT_MAX_H = 256


def _check_variant(choice: str | None) -> str:
    choice = variant if choice is None else choice
    if choice not in VARIANTS:
        raise ValueError(f"RNN triton variant must be one of {VARIANTS}, got {choice!r}")
    return choice


def _mode(choice: str | None, batch: int, hidden: int, device: torch.device) -> int:
    """The kernels' mode for a variant name (None: the module's `variant`) at this size."""
    choice = _check_variant(choice)
    if choice == "auto" and device.type == "cuda":
        grid = hidden <= PERSISTENT_MAX_H and kernels.persistent_grid_fits(batch, hidden, device)
        choice = "persistent-grid" if grid else "step"
    elif choice == "auto":
        choice = "persistent" if hidden <= PERSISTENT_MAX_H else "step"
    return _MODES[choice]


def _column_sums(g: torch.Tensor) -> torch.Tensor:
    return epilogue_grad(g, None, None, True)[1]


# ---- LSTM --------------------------------------------------------------------------

@custom_op("lstm", "(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
                   "int[] sizes, bool reverse, int mode) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")
def lstm_op(x, h0, c0, w_ih, w_hh, b_ih, b_hh, sizes, reverse, mode):
    """One LSTM layer-direction: x (rows, I) time-major rows, h0, c0 (B, H) -> out (rows, H),
    h_n, c_n (B, H), then what the backward reads: h_in, c_in (rows, H), gates (rows, 4H),
    c_out (rows, H)."""
    # every gate adds b_ih + b_hh outside any product: both fold into the projection
    xp = matmul(x, w_ih.t(), None if b_ih is None else b_ih + b_hh)
    out, h_n, c_n, saved = kernels.lstm_forward(xp, w_hh, h0, c0, sizes, reverse, mode)
    return out, h_n, c_n, *saved


@lstm_op.register_fake
def _(x, h0, c0, w_ih, w_hh, b_ih, b_hh, sizes, reverse, mode):
    rows, (batch, hidden) = x.shape[0], h0.shape
    per_row = x.new_empty((rows, hidden))
    return (per_row, x.new_empty((batch, hidden)), x.new_empty((batch, hidden)), torch.empty_like(per_row),
            torch.empty_like(per_row), x.new_empty((rows, 4 * hidden)), torch.empty_like(per_row))


@custom_op("lstm_backward", "(Tensor d_out, Tensor d_hn, Tensor d_cn, Tensor x, Tensor w_ih, Tensor w_hh, "
                            "Tensor h_in, Tensor c_in, Tensor gates, Tensor c_out, int[] sizes, bool reverse, "
                            "int mode, bool[] needs) -> (Tensor?, Tensor, Tensor, Tensor?, Tensor?, Tensor?)")
def lstm_backward_op(d_out, d_hn, d_cn, x, w_ih, w_hh, h_in, c_in, gates, c_out, sizes, reverse, mode, needs):
    """One reverse-time pass gives every step's gate gradients and d_h0, d_c0; then
    dx, dW_ih, dW_hh are GEMMs over all steps and db (= db_ih = db_hh) a column sum.
    needs: [dx, dW_ih, dW_hh, db]."""
    d_gates, d_h0, d_c0 = kernels.lstm_backward(d_out, d_hn, d_cn, w_hh, (h_in, c_in, gates, c_out), sizes,
                                                reverse, mode)
    return (matmul(d_gates, w_ih) if needs[0] else None, d_h0, d_c0,
            matmul(d_gates.t(), x) if needs[1] else None,
            matmul(d_gates.t(), h_in) if needs[2] else None,
            _column_sums(d_gates) if needs[3] else None)


@lstm_backward_op.register_fake
def _(d_out, d_hn, d_cn, x, w_ih, w_hh, h_in, c_in, gates, c_out, sizes, reverse, mode, needs):
    return (x.new_empty(x.shape) if needs[0] else None, torch.empty_like(d_hn, memory_format=torch.contiguous_format),
            torch.empty_like(d_hn, memory_format=torch.contiguous_format),
            w_ih.new_empty(w_ih.shape) if needs[1] else None, w_hh.new_empty(w_hh.shape) if needs[2] else None,
            gates.new_empty(gates.shape[1]) if needs[3] else None)


def _lstm_setup(ctx, inputs, output):
    x, _, _, w_ih, w_hh, b_ih, _, *ctx.config = inputs  # config: sizes, reverse, mode
    ctx.has_bias = b_ih is not None
    ctx.save_for_backward(x, w_ih, w_hh, *output[3:])


def _lstm_backward(ctx, d_out, d_hn, d_cn, *_):
    x, w_ih, w_hh, *saved = ctx.saved_tensors
    need = ctx.needs_input_grad
    dx, d_h0, d_c0, dw_ih, dw_hh, db = lstm_backward_op(
        d_out, d_hn, d_cn, x, w_ih, w_hh, *saved, *ctx.config,
        [need[0], need[3], need[4], ctx.has_bias and (need[5] or need[6])])
    return dx, d_h0, d_c0, dw_ih, dw_hh, db, db, None, None, None


register_backward(lstm_op, _lstm_backward, _lstm_setup)


# ---- GRU ---------------------------------------------------------------------------

@custom_op("gru", "(Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, int[] sizes, "
                  "bool reverse, int mode) -> (Tensor, Tensor, Tensor, Tensor, Tensor)")
def gru_op(x, h0, w_ih, w_hh, b_ih, b_hh, sizes, reverse, mode):
    """One GRU layer-direction: x (rows, I) time-major rows, h0 (B, H) -> out (rows, H),
    h_n (B, H), then what the backward reads: h_in (rows, H), gates (rows, 3H), hn (rows, H)."""
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
    return out, h_n, *saved


@gru_op.register_fake
def _(x, h0, w_ih, w_hh, b_ih, b_hh, sizes, reverse, mode):
    rows, (batch, hidden) = x.shape[0], h0.shape
    return (x.new_empty((rows, hidden)), x.new_empty((batch, hidden)), x.new_empty((rows, hidden)),
            x.new_empty((rows, 3 * hidden)), x.new_empty((rows, hidden)))


@custom_op("gru_backward", "(Tensor d_out, Tensor d_hn, Tensor x, Tensor w_ih, Tensor w_hh, Tensor h_in, "
                           "Tensor gates, Tensor hn, int[] sizes, bool reverse, int mode, bool[] needs) "
                           "-> (Tensor?, Tensor, Tensor?, Tensor?, Tensor?, Tensor?)")
def gru_backward_op(d_out, d_hn, x, w_ih, w_hh, h_in, gates, hn, sizes, reverse, mode, needs):
    """As lstm_backward_op; the projection's gradient d_xp and the recurrent one d_hh
    differ (b_hn sits inside r ⊙ (.)). needs: [dx, dW_ih, dW_hh, db_ih, db_hh]."""
    d_xp, d_hh, d_h0 = kernels.gru_backward(d_out, d_hn, w_hh, (h_in, gates, hn), sizes, reverse, mode)
    return (matmul(d_xp, w_ih) if needs[0] else None, d_h0,
            matmul(d_xp.t(), x) if needs[1] else None,
            matmul(d_hh.t(), h_in) if needs[2] else None,
            _column_sums(d_xp) if needs[3] else None,
            _column_sums(d_hh) if needs[4] else None)


@gru_backward_op.register_fake
def _(d_out, d_hn, x, w_ih, w_hh, h_in, gates, hn, sizes, reverse, mode, needs):
    return (x.new_empty(x.shape) if needs[0] else None, torch.empty_like(d_hn, memory_format=torch.contiguous_format),
            w_ih.new_empty(w_ih.shape) if needs[1] else None, w_hh.new_empty(w_hh.shape) if needs[2] else None,
            gates.new_empty(gates.shape[1]) if needs[3] else None, gates.new_empty(gates.shape[1]) if needs[4] else None)


def _gru_setup(ctx, inputs, output):
    x, _, w_ih, w_hh, b_ih, _, *ctx.config = inputs  # config: sizes, reverse, mode
    ctx.has_bias = b_ih is not None
    ctx.save_for_backward(x, w_ih, w_hh, *output[2:])


def _gru_backward(ctx, d_out, d_hn, *_):
    x, w_ih, w_hh, *saved = ctx.saved_tensors
    need = ctx.needs_input_grad
    dx, d_h0, dw_ih, dw_hh, db_ih, db_hh = gru_backward_op(
        d_out, d_hn, x, w_ih, w_hh, *saved, *ctx.config,
        [need[0], need[2], need[3], ctx.has_bias and need[4], ctx.has_bias and need[5]])
    return dx, d_h0, dw_ih, dw_hh, db_ih, db_hh, None, None, None


register_backward(gru_op, _gru_backward, _gru_setup)


# The driver's cell: no projection before the loop (the Function does it, so the input
# projection and its backward GEMMs belong to the same node), one Function per direction.

def _lstm_run(x, state, w, sizes, reverse, choice):
    w_ih, w_hh, b_ih, b_hh, _ = w
    mode = _mode(choice, state[0].shape[0], w_hh.shape[1], x.device)
    out, h, c, *_ = lstm_op(x, *state, w_ih, w_hh, b_ih, b_hh, sizes, reverse, mode)
    return out, (h, c)


def _gru_run(x, state, w, sizes, reverse, choice):
    w_ih, w_hh, b_ih, b_hh, _ = w
    mode = _mode(choice, state[0].shape[0], w_hh.shape[1], x.device)
    out, h, *_ = gru_op(x, state[0], w_ih, w_hh, b_ih, b_hh, sizes, reverse, mode)
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
    return Cell(lambda rows, w: rows, partial(run, choice=_check_variant(choice)),
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
