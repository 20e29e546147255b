"""GRU and LSTM from scratch, two tiers, with torch.nn.GRU/LSTM's exact math.

GRU (gates r, z, n in the rows of W_ih / W_hh, in that order):
    r = σ(W_ir x + b_ir + W_hr h + b_hr)
    z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))     # r gates the *projected* h
    h' = (1 - z) ⊙ n + z ⊙ h
LSTM (gates i, f, g, o):
    i, f, o = σ(W_i* x + b_i* + W_h* h + b_h*),  g = tanh(W_ig x + b_ig + W_hg h + b_hg)
    c' = f ⊙ c + i ⊙ g,   h' = o ⊙ tanh(c')       (with proj_size: h' = (o ⊙ tanh(c')) W_hrᵀ)

Both tiers share one driver (`_rnn`) for layers, directions, batch_first, dropout,
initial state, unbatched and packed input; a tier is a *cell*: how the input is
projected before the time loop and what one time step does.

- naive: nothing is hoisted; each step loops over the gates and computes each one
  from its own slice of the weights, x_t W_gᵀ + b_ig + h W_hgᵀ + b_hg.
- reference: the input projection of all time steps is one matmul before the loop;
  each step is one matmul h W_hhᵀ for all gates at once, split afterwards.

Weights come per (layer, direction), layer-major like torch's h_n, as tuples
(w_ih, w_hh, b_ih, b_hh, w_hr) with None for what the module does not have.

Packed input is given as its data (sum of lengths, I) plus `batch_sizes` (how many
sequences are still running at each step, non-increasing): step t updates only the
first batch_sizes[t] rows of the state and leaves the others as they are, so a
finished sequence keeps its last state and, running backwards, a sequence starts from
its initial state at its own last step.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch.autograd.function import once_differentiable

from .activations import sigmoid_reference, sigmoid_values, tanh_reference, tanh_values

Weights = tuple  # (w_ih, w_hh, b_ih, b_hh, w_hr), entries may be None
State = tuple  # (h,) for GRU, (h, c) for LSTM


class Cell(NamedTuple):
    project: Callable[[torch.Tensor, Weights], torch.Tensor]  # whole sequence, before the loop
    step: Callable[[torch.Tensor, State, Weights], State]  # one time step
    state_sizes: Callable[[Weights], tuple]  # feature size of each state tensor


def _affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return x @ w.t() if b is None else torch.addmm(b, x, w.t())


def _rows(t: torch.Tensor | None, k: int, size: int) -> torch.Tensor | None:
    """Gate k's slice of a stacked weight or bias."""
    return None if t is None else t[k * size:(k + 1) * size]


# ---- naive: per gate, from its slice of the weights ----------------------------------

def _gru_step_naive(x_t, state, w):
    (h,) = state
    w_ih, w_hh, b_ih, b_hh, _ = w
    size = h.shape[1]
    gate = {}
    for k, name in enumerate("rzn"):
        from_x = _affine(x_t, _rows(w_ih, k, size), _rows(b_ih, k, size))
        from_h = _affine(h, _rows(w_hh, k, size), _rows(b_hh, k, size))
        if name == "n":
            gate[name] = tanh_reference(from_x + gate["r"] * from_h)
        else:
            gate[name] = sigmoid_reference(from_x + from_h)
    return ((1 - gate["z"]) * gate["n"] + gate["z"] * h,)


def _lstm_step_naive(x_t, state, w):
    h, c = state
    w_ih, w_hh, b_ih, b_hh, w_hr = w
    size = c.shape[1]
    gate = {}
    for k, (name, act) in enumerate(zip("ifgo", (sigmoid_reference, sigmoid_reference, tanh_reference, sigmoid_reference))):
        from_x = _affine(x_t, _rows(w_ih, k, size), _rows(b_ih, k, size))
        from_h = _affine(h, _rows(w_hh, k, size), _rows(b_hh, k, size))
        gate[name] = act(from_x + from_h)
    c = gate["f"] * c + gate["i"] * gate["g"]
    h = gate["o"] * tanh_reference(c)
    if w_hr is not None:
        h = h @ w_hr.t()
    return h, c


# ---- reference: input projection hoisted, one gate matmul per step ------------------
# Each step is one autograd node with its backward written out from the saved gate
# activations (σ' = s(1 - s), tanh' = 1 - t²), as the activations' reference tier does:
# recording the ~30 small ops of a step one by one would cost more than the math.

def _gru_project(x, w):
    w_ih, _, b_ih, _, _ = w
    return _affine(x, w_ih, b_ih)


class _GRUStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp_t, h, w_hh, b_hh):
        size = h.shape[1]
        from_h = _affine(h, w_hh, b_hh)  # b_hh stays here: b_hn must sit inside r ⊙ (...)
        rz = sigmoid_values(xp_t[:, :2 * size] + from_h[:, :2 * size])
        r, z = rz[:, :size], rz[:, size:]
        n = tanh_values(xp_t[:, 2 * size:] + r * from_h[:, 2 * size:])
        ctx.save_for_backward(h, w_hh, from_h, rz, n)
        ctx.has_bias = b_hh is not None
        return n + z * (h - n)  # = (1 - z) n + z h with one multiply

    @staticmethod
    @once_differentiable  # the saved gates carry no graph: a second derivative would be wrong
    def backward(ctx, dh_next):
        h, w_hh, from_h, rz, n = ctx.saved_tensors
        size = h.shape[1]
        r, z = rz[:, :size], rz[:, size:]
        d_n = dh_next * (1 - z) * (1 - n * n)  # through tanh: gradient of n's pre-activation
        d_rz = torch.cat((d_n * from_h[:, 2 * size:], dh_next * (h - n)), 1) * rz * (1 - rz)
        d_xp = torch.cat((d_rz, d_n), 1)
        d_from_h = torch.cat((d_rz, d_n * r), 1)
        dh = dh_next * z + d_from_h @ w_hh
        dw_hh = d_from_h.t() @ h if ctx.needs_input_grad[2] else None
        db_hh = d_from_h.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return d_xp, dh, dw_hh, db_hh


def _gru_step(xp_t, state, w):
    return (_GRUStep.apply(xp_t, state[0], w[1], w[3]),)


def _lstm_project(x, w):
    w_ih, _, b_ih, b_hh, _ = w
    # every LSTM gate adds b_ih + b_hh outside any product, so both biases fold in here
    return _affine(x, w_ih, None if b_ih is None else b_ih + b_hh)


class _LSTMStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp_t, h, c, w_hh, w_hr):
        size = c.shape[1]
        gates = torch.addmm(xp_t, h, w_hh.t())
        # tanh(g) = 2σ(2g) - 1, so one σ call covers all four gates
        gates[:, 2 * size:3 * size] *= 2
        s = sigmoid_values(gates)
        i, f, o = s[:, :size], s[:, size:2 * size], s[:, 3 * size:]
        g = 2 * s[:, 2 * size:3 * size] - 1
        c_next = f * c + i * g
        tc = tanh_values(c_next)
        out = o * tc
        ctx.save_for_backward(h, c, w_hh, w_hr, s, g, tc, out)
        return (out if w_hr is None else out @ w_hr.t()), c_next

    @staticmethod
    @once_differentiable
    def backward(ctx, dh_next, dc_next):
        h, c, w_hh, w_hr, s, g, tc, out = ctx.saved_tensors
        size = c.shape[1]
        i, f, o = s[:, :size], s[:, size:2 * size], s[:, 3 * size:]
        d_out = dh_next if w_hr is None else dh_next @ w_hr
        dc = dc_next + d_out * o * (1 - tc * tc)
        # d/dpre of σ is s(1 - s) for i, f, o; of tanh(g) = 2σ(2g) - 1 it is 4 s(1 - s) = 1 - g²
        d_gates = torch.cat((dc * g, dc * c, 4 * dc * i, d_out * tc), 1) * s * (1 - s)
        dh = d_gates @ w_hh
        dw_hh = d_gates.t() @ h if ctx.needs_input_grad[3] else None
        dw_hr = dh_next.t() @ out if w_hr is not None and ctx.needs_input_grad[4] else None
        return d_gates, dh, dc * f, dw_hh, dw_hr


def _lstm_step(xp_t, state, w):
    return _LSTMStep.apply(xp_t, *state, w[1], w[4])


def _gru_sizes(w):
    return (w[1].shape[1],)


def _lstm_sizes(w):
    return (w[1].shape[1], w[1].shape[0] // 4)  # h is proj_size wide when projected


GRU_NAIVE = Cell(lambda x, w: x, _gru_step_naive, _gru_sizes)
LSTM_NAIVE = Cell(lambda x, w: x, _lstm_step_naive, _lstm_sizes)
GRU_REFERENCE = Cell(_gru_project, _gru_step, _gru_sizes)
LSTM_REFERENCE = Cell(_lstm_project, _lstm_step, _lstm_sizes)


# ---- the shared driver ---------------------------------------------------------------

def _direction(cell: Cell, x, state: State, w: Weights, sizes: list[int], reverse: bool):
    """One layer, one direction over time-major rows `x`; returns (outputs, final state)."""
    # one split, not a slice per step: each slice's backward would write a gradient the
    # size of the whole sequence, T of them
    xs = cell.project(x, w).split(sizes)
    batch = sizes[0]
    outs = [None] * len(sizes)
    for t in (reversed(range(len(sizes))) if reverse else range(len(sizes))):
        n = sizes[t]
        if n == batch:
            state = cell.step(xs[t], state, w)
            outs[t] = state[0]
        else:  # packed: only the first n sequences are running at step t
            new = cell.step(xs[t], tuple(s[:n] for s in state), w)
            state = tuple(torch.cat((a, s[n:])) for a, s in zip(new, state))
            outs[t] = new[0]
    return torch.cat(outs), state


def _rnn(cell: Cell, x, hx: State | None, weights: Sequence[Weights], *, bidirectional=False,
         batch_first=False, dropout=0.0, training=False, dropout_fn=None, batch_sizes=None):
    dirs = 2 if bidirectional else 1
    packed = batch_sizes is not None
    unbatched = not packed and x.dim() == 2
    if packed:
        sizes = batch_sizes.tolist()
        rows = x
    else:
        if unbatched:
            x = x.unsqueeze(1)
        elif batch_first:
            x = x.transpose(0, 1)
        steps, batch = x.shape[:2]
        sizes = [batch] * steps
        rows = x.reshape(steps * batch, x.shape[2])  # time-major rows, as packed data is
    if hx is None:
        hx = tuple(rows.new_zeros(len(weights), sizes[0], n) for n in cell.state_sizes(weights[0]))
    elif unbatched:
        hx = tuple(s.unsqueeze(1) for s in hx)
    if dropout > 0 and training and dropout_fn is None:
        raise ValueError("dropout > 0 in training mode needs a dropout_fn(x, p, training)")

    finals = []
    for layer in range(len(weights) // dirs):
        if layer and dropout > 0 and training:  # between layers only, never after the last
            rows = dropout_fn(rows, dropout, training)
        outs = []
        for d in range(dirs):
            k = layer * dirs + d
            out, state = _direction(cell, rows, tuple(s[k] for s in hx), weights[k], sizes, reverse=d == 1)
            outs.append(out)
            finals.append(state)
        rows = torch.cat(outs, 1) if dirs == 2 else outs[0]
    h_n = tuple(torch.stack(s) for s in zip(*finals))

    if packed:
        return rows, h_n
    out = rows.reshape(len(sizes), sizes[0], rows.shape[1])
    if unbatched:
        return out.squeeze(1), tuple(s.squeeze(1) for s in h_n)
    return (out.transpose(0, 1) if batch_first else out), h_n


def _gru(cell: Cell, x, h0, weights, options):
    out, (h_n,) = _rnn(cell, x, None if h0 is None else (h0,), weights, **options)
    return out, h_n


# Options (keyword-only, torch.nn's defaults): bidirectional, batch_first, dropout,
# training, dropout_fn(x, p, training) -> x, batch_sizes (None unless x is packed rows).
# x is (T, B, I), (B, T, I) with batch_first, (T, I) unbatched, or packed rows (N, I).

def gru_naive(x, h0, weights, **options):
    """GRU, textbook tier; returns (output, h_n) shaped like torch.nn.GRU's."""
    return _gru(GRU_NAIVE, x, h0, weights, options)


def gru_reference(x, h0, weights, **options):
    """GRU, vectorized tier; returns (output, h_n) shaped like torch.nn.GRU's."""
    return _gru(GRU_REFERENCE, x, h0, weights, options)


def lstm_naive(x, hx, weights, **options):
    """LSTM, textbook tier; hx is (h0, c0) or None; returns (output, (h_n, c_n))."""
    return _rnn(LSTM_NAIVE, x, hx, weights, **options)


def lstm_reference(x, hx, weights, **options):
    """LSTM, vectorized tier; hx is (h0, c0) or None; returns (output, (h_n, c_n))."""
    return _rnn(LSTM_REFERENCE, x, hx, weights, **options)
