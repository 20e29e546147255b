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
  each step is one matmul h W_hhᵀ for all gates at once, split afterwards. The LSTM
  runs a second, leaner loop when no gradient is wanted (`_lstm_inference`).

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

from ._autograd import first_order, first_order_only, own, wants_grad
from .activations import _constant, sigmoid_formula, tanh_formula

Weights = tuple  # (w_ih, w_hh, b_ih, b_hh, w_hr), entries may be None
State = tuple  # (h,) for GRU, (h, c) for LSTM


class Cell(NamedTuple):
    project: Callable[[torch.Tensor, Weights], torch.Tensor]  # whole sequence, before the loop
    # the time loop of one direction: (projected rows, initial state, weights, sizes,
    # reverse) -> (output rows, final state)
    run: Callable[..., tuple[torch.Tensor, State]]
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
            gate[name] = tanh_formula(from_x + gate["r"] * from_h)
        else:
            gate[name] = sigmoid_formula(from_x + from_h)
    return ((1 - gate["z"]) * gate["n"] + gate["z"] * h,)


def _lstm_step_naive(x_t, state, w):
    h, c = state
    w_ih, w_hh, b_ih, b_hh, w_hr = w
    size = c.shape[1]
    gate = {}
    for k, (name, act) in enumerate(zip("ifgo", (sigmoid_formula, sigmoid_formula, tanh_formula, sigmoid_formula))):
        from_x = _affine(x_t, _rows(w_ih, k, size), _rows(b_ih, k, size))
        from_h = _affine(h, _rows(w_hh, k, size), _rows(b_hh, k, size))
        gate[name] = act(from_x + from_h)
    c = gate["f"] * c + gate["i"] * gate["g"]
    h = gate["o"] * tanh_formula(c)
    if w_hr is not None:
        h = h @ w_hr.t()
    return h, c


# ---- reference: input projection hoisted, one gate matmul per step ------------------
# One layer-direction, all its time steps, is one autograd node with its backward
# written out from the saved gate activations (σ' = s(1 - s), tanh' = 1 - t²): on a
# CPU, each small op costs microseconds of dispatch whatever its size, so the loops
# below do as few as they can. The forward loop writes every step into slices of
# preallocated (rows, ·) buffers, in place. The backward loop does only what the
# recurrence needs (dh and dc flow from step to step); everything that does not depend
# on it -- the gates' local derivatives, dW_hh, d(input projection) -- is one op over
# all steps at once. σ and tanh are torch's kernels here, as the matmul is (the Sigmoid
# and Tanh layers build them from exp in their own tiers): σ from exp is four kernels,
# and in a time loop every kernel is paid T times. Without autograd the LSTM keeps
# nothing for a backward and steps in a few small buffers instead (`_lstm_inference`).
#
# Rows are time-major (step t is rows sum(sizes[:t]) up to sizes[t] more); `.split(sizes)`
# once gives each buffer's per-step views. A state tensor keeps all B rows; step t reads
# and replaces its first sizes[t] (all of them unless packed), and the backward carries
# dh (and dc) the same way, so rows of sequences not running at t pass through untouched.


def _steps(sizes: list[int], reverse: bool, backward: bool = False):
    """Time steps in the order the forward (or the backward) loop visits them."""
    return reversed(range(len(sizes))) if reverse != backward else range(len(sizes))


def _per_step(buf: torch.Tensor, sizes: list[int], parts: int = 1):
    """Views of each step's rows of `buf`, per part (gate) of its columns when parts > 1:
    one split up front instead of slicing in every step of the loop."""
    if parts == 1:
        return buf.split(sizes)
    return list(zip(*(part.split(sizes) for part in buf.chunk(parts, 1))))


def _rows_in(state: torch.Tensor, n: int) -> torch.Tensor:
    """The first n rows of `state`: the sequences running at a step of n."""
    return state if n == state.shape[0] else state[:n]  # a slice costs a microsecond


def _next_state(state: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """`state` with its first rows replaced by the step's `new` ones."""
    n = new.shape[0]
    return new if n == state.shape[0] else torch.cat((new, state[n:]))


def _gru_project(x, w):
    w_ih, _, b_ih, _, _ = w
    return _affine(x, w_ih, b_ih)


class _GRU(torch.autograd.Function):
    """One GRU layer-direction: xp (rows, 3H) input projection, h0 (B, H) -> (out, h_n)."""

    @staticmethod
    def forward(ctx, xp, h0, w_hh, b_hh, sizes, reverse):
        rows, size = xp.shape[0], h0.shape[1]
        # pre = [x W_irzᵀ + b_irz + b_hrz, b_hn] before the loop, + h W_hhᵀ in it: the r, z
        # columns are then the whole pre-activation and the n columns stay W_hn h + b_hn,
        # which r gates
        pre = xp.new_zeros(rows, 3 * size) if b_hh is None else b_hh.repeat(rows, 1)
        pre[:, :2 * size] += xp[:, :2 * size]
        rz, n, out = xp.new_empty(rows, 2 * size), xp.new_empty(rows, size), xp.new_empty(rows, size)
        pre_t, pre_rz, pre_n = (_per_step(b, sizes) for b in (pre, pre[:, :2 * size], pre[:, 2 * size:]))
        xp_n, rz_t, n_t, out_t = (_per_step(b, sizes) for b in (xp[:, 2 * size:], rz, n, out))
        r_z = _per_step(rz, sizes, 2)
        h, h_in, w_t = h0, [None] * len(sizes), w_hh.t()
        for t in _steps(sizes, reverse):
            h_in[t] = _rows_in(h, sizes[t])
            pre_t[t].addmm_(h_in[t], w_t)
            r, z = r_z[t]
            torch.sigmoid(pre_rz[t], out=rz_t[t])
            torch.tanh(torch.addcmul(xp_n[t], r, pre_n[t], out=n_t[t]), out=n_t[t])
            h = _next_state(h, torch.lerp(n_t[t], h_in[t], z, out=out_t[t]))  # (1 - z) n + z h
        ctx.save_for_backward(torch.cat(h_in), w_hh, pre[:, 2 * size:], rz, n)
        ctx.sizes, ctx.reverse, ctx.has_bias = sizes, reverse, b_hh is not None
        return own((out, h))

    @staticmethod
    @first_order_only  # the saved gates carry no graph: a second derivative would be wrong
    def backward(ctx, d_out, d_hn):
        h_in, w_hh, from_hn, rz, n = ctx.saved_tensors
        rows, size, sizes = n.shape[0], n.shape[1], ctx.sizes
        r, z = rz.chunk(2, 1)
        # each pre-activation's gradient per unit of dh' (the gradient of the step's
        # output), for all steps at once: through n (tanh), z, and r (inside n)
        d_n = (1 - z) * (1 - n * n)
        d_z = (h_in - n) * z * (1 - z)
        d_r = d_n * from_hn * r * (1 - r)
        per_xp = torch.stack((d_r, d_z, d_n), 1)  # (rows, 3, H): for the input projection
        per_h = torch.stack((d_r, d_z, d_n * r), 1)  # for h W_hhᵀ (+ b_hh): r gates W_hn h
        d_h = torch.empty_like(n)  # dh' of every step
        d_from_h = n.new_empty(rows, 3, size)
        d_h_t, d_out_t, z_t = _per_step(d_h, sizes), _per_step(d_out, sizes), _per_step(z, sizes)
        per_h_t, d_from_h_t = _per_step(per_h, sizes), _per_step(d_from_h, sizes)
        carry = d_hn.clone()  # dh flowing back into each step's h_in, B rows
        for t in _steps(sizes, ctx.reverse, backward=True):
            dh = _rows_in(carry, sizes[t])
            torch.add(dh, d_out_t[t], out=d_h_t[t])
            torch.mul(per_h_t[t], d_h_t[t].unsqueeze(1), out=d_from_h_t[t])
            torch.mul(d_h_t[t], z_t[t], out=dh).addmm_(d_from_h_t[t].flatten(1), w_hh)
        d_from_h = d_from_h.flatten(1)
        d_xp = (per_xp * d_h.unsqueeze(1)).flatten(1)
        dw_hh = d_from_h.t() @ h_in if ctx.needs_input_grad[2] else None
        db_hh = d_from_h.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return d_xp, carry, dw_hh, db_hh, None, None


def _gru_run(xp, state, w, sizes, reverse):
    out, h = _GRU.apply(xp, state[0], w[1], w[3], sizes, reverse)
    return out, (h,)


def _lstm_project(x, w):
    w_ih, _, b_ih, b_hh, _ = w
    # every LSTM gate adds b_ih + b_hh outside any product, so both biases fold in here
    return _affine(x, w_ih, None if b_ih is None else b_ih + b_hh)


def _lstm_scaled(xp: torch.Tensor, w_hh: torch.Tensor):
    """xp and W_hhᵀ with the g gate's columns scaled by -2, so that one σ serves all four
    gates: tanh(a) = 1 - 2σ(-2a), and on a CPU torch's σ is several times faster than
    its tanh. A step's σ then gives i, f, o and s = σ(-2 a_g), g = 1 - 2s, and
        c' = f c + i g = (i + f c) - 2 i s,   r = σ(-2c'),   h = o tanh(c') = o - 2 o r
    (`_lstm_update`). 1 - 2σ(-2a) keeps tanh's absolute error (~1e-7 in float32) but not
    its relative one where |a| is tiny (|a| ~ 1e-6 has none left)."""
    size = w_hh.shape[0] // 4
    scale = xp.new_ones(4 * size)
    scale[2 * size:3 * size] = -2
    return xp * scale, (w_hh * scale[:, None]).t()


def _lstm_update(i, f, s, o, c, ct, rt, ht) -> None:
    """One step after the gates' σ (i, f, s, o; see _lstm_scaled): c' into ct, σ(-2c')
    into rt, h = o tanh(c') into ht. ct may be c itself: each element is read, then written."""
    torch.addcmul(i, f, c, out=ct).addcmul_(i, s, value=-2)
    # -2 as a cached 0-d CPU tensor: a Python number is wrapped anew on every call, and a
    # CUDA one would be a host-to-device copy, which a CUDA graph cannot capture
    torch.mul(ct, _constant(-2.0, ct.dtype), out=rt).sigmoid_()
    torch.addcmul(o, o, rt, value=-2, out=ht)


class _LSTM(torch.autograd.Function):
    """One LSTM layer-direction: xp (rows, 4H) input projection with both biases,
    h0 (B, P), c0 (B, H) -> (out, h_n, c_n); P = H unless projected by w_hr."""

    @staticmethod
    def forward(ctx, xp, h0, c0, w_hh, w_hr, sizes, reverse):
        rows, size = xp.shape[0], c0.shape[1]
        gates, w_t = _lstm_scaled(xp, w_hh)  # the pre-activations, then each step's activations in place
        c, r, hid = (xp.new_empty(rows, size) for _ in range(3))  # c', σ(-2c'), o tanh(c')
        out = hid if w_hr is None else xp.new_empty(rows, w_hr.shape[0])
        gates_t, ifgo_t = _per_step(gates, sizes), _per_step(gates, sizes, 4)
        c_t, r_t, hid_t = (_per_step(b, sizes) for b in (c, r, hid))
        out_t = hid_t if w_hr is None else _per_step(out, sizes)
        h, cell, h_in, c_in = h0, c0, [None] * len(sizes), [None] * len(sizes)
        w_hr_t = None if w_hr is None else w_hr.t()
        for t in _steps(sizes, reverse):
            h_in[t], c_in[t] = hp, cp = _rows_in(h, sizes[t]), _rows_in(cell, sizes[t])
            ct, ot = c_t[t], out_t[t]
            gates_t[t].addmm_(hp, w_t).sigmoid_()
            _lstm_update(*ifgo_t[t], cp, ct, r_t[t], hid_t[t])
            if w_hr is not None:
                torch.mm(hid_t[t], w_hr_t, out=ot)
            h, cell = _next_state(h, ot), _next_state(cell, ct)
        ctx.save_for_backward(torch.cat(h_in), torch.cat(c_in), w_hh, w_hr, gates, r, hid)
        ctx.sizes, ctx.reverse = sizes, reverse
        return own((out, h, cell))

    @staticmethod
    @first_order_only
    def backward(ctx, d_out, d_hn, d_cn):
        h_in, c_in, w_hh, w_hr, gates, r, hid = ctx.saved_tensors
        sizes, size = ctx.sizes, r.shape[1]
        i, f, s, o = gates.chunk(4, 1)
        g, tc = 1 - 2 * s, 1 - 2 * r  # tanh(a_g), tanh(c')
        # each pre-activation's gradient per unit of dc (i, f, g) or of d_hid (o), and dc
        # per unit of d_hid, for all steps at once: σ' = s(1 - s), tanh' = 1 - t²
        per_dc = torch.stack((g * i * (1 - i), c_in * f * (1 - f), i * (1 - g * g)), 1)
        per_dhid = tc * o * (1 - o)
        dc_per_dhid = o * (1 - tc * tc)
        d_gates = torch.empty_like(gates)
        d_h = None if w_hr is None else torch.empty_like(d_out)  # dh of every step, for dW_hr
        d_ifg_t = _per_step(d_gates.view(-1, 4, size)[:, :3], sizes)
        d_o_t, d_gates_t = _per_step(d_gates[:, 3 * size:], sizes), _per_step(d_gates, sizes)
        per_dc_t, per_dhid_t, dc_per_dhid_t = (_per_step(b, sizes) for b in (per_dc, per_dhid, dc_per_dhid))
        d_out_t, f_t = _per_step(d_out, sizes), _per_step(f, sizes)
        d_h_t = None if w_hr is None else _per_step(d_h, sizes)
        dh_carry, dc_carry = d_hn.clone(), d_cn.clone()  # flowing back into h_in, c_in
        for t in _steps(sizes, ctx.reverse, backward=True):
            dh, dc = _rows_in(dh_carry, sizes[t]), _rows_in(dc_carry, sizes[t])
            if w_hr is None:
                d_hid = dh.add_(d_out_t[t])  # dh's rows are free until the mm below
            else:
                d_hid = torch.add(dh, d_out_t[t], out=d_h_t[t]) @ w_hr
            dc.addcmul_(d_hid, dc_per_dhid_t[t])
            _mul_into(per_dc_t[t], dc.unsqueeze(1), d_ifg_t[t])  # dc feeds i, f, g alike
            _mul_into(d_hid, per_dhid_t[t], d_o_t[t])
            dc.mul_(f_t[t])
            torch.mm(d_gates_t[t], w_hh, out=dh)
        dw_hh = d_gates.t() @ h_in if ctx.needs_input_grad[3] else None
        dw_hr = d_h.t() @ hid if w_hr is not None and ctx.needs_input_grad[4] else None
        return d_gates, dh_carry, dc_carry, dw_hh, dw_hr, None, None


def _mul_into(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """a * b written into `out`, a strided slice: with out= (no temporary) in eager mode;
    under torch.compile, which refuses a non-contiguous out=, as a copy it may fuse."""
    if torch.compiler.is_compiling():
        return out.copy_(a * b)
    return torch.mul(a, b, out=out)


def _lstm_inference(xp, h0, c0, w_hh, w_hr, sizes, reverse):
    """_LSTM's forward when no gradient is wanted: nothing is kept for a backward, so each
    step works in a few (B, ·) buffers that stay in cache, and only its output rows
    outlive it."""
    batch, size = c0.shape
    xs, w_t = _lstm_scaled(xp, w_hh)
    out = xp.new_empty(xp.shape[0], h0.shape[1])
    xs_t, out_t = _per_step(xs, sizes), _per_step(out, sizes)
    gates, cell_buf, r = xp.new_empty(batch, 4 * size), xp.new_empty(batch, size), xp.new_empty(batch, size)
    hid = None if w_hr is None else xp.new_empty(batch, size)  # o tanh(c'), before the projection
    ifso = gates.chunk(4, 1)
    w_hr_t = None if w_hr is None else w_hr.t()
    h, cell = h0, c0
    for t in _steps(sizes, reverse):
        n = sizes[t]
        g, ct = _rows_in(gates, n), _rows_in(cell_buf, n)
        ht = out_t[t] if w_hr is None else _rows_in(hid, n)
        torch.addmm(xs_t[t], _rows_in(h, n), w_t, out=g).sigmoid_()
        # fewer rows than the batch: packed input
        _lstm_update(*(ifso if n == batch else g.chunk(4, 1)), _rows_in(cell, n), ct, _rows_in(r, n), ht)
        if w_hr is not None:
            torch.mm(ht, w_hr_t, out=out_t[t])
        h, cell = _next_state(h, out_t[t]), _next_state(cell, ct)
    return out, h, cell


def _lstm_run(xp, state, w, sizes, reverse):
    args = (xp, *state, w[1], w[4])
    if wants_grad(*args):
        out, h, c = _LSTM.apply(*args, sizes, reverse)
    else:
        out, h, c = _lstm_inference(*args, sizes, reverse)
    return out, (h, c)


def _gru_sizes(w):
    return (w[1].shape[1],)


def _lstm_sizes(w):
    return (w[1].shape[1], w[1].shape[0] // 4)  # h is proj_size wide when projected


def _stepwise(step: Callable[[torch.Tensor, State, Weights], State]):
    """A cell's time loop from its one-step function, each step recorded by autograd."""
    def run(xp, state, w, sizes, reverse):
        # one split, not a slice per step: each slice's backward would write a gradient
        # the size of the whole sequence, T of them
        xs = xp.split(sizes)
        outs = [None] * len(sizes)
        for t in _steps(sizes, reverse):
            n = sizes[t]  # packed: only the first n sequences are running at step t
            new = step(xs[t], tuple(s[:n] for s in state), w)
            state = tuple(_next_state(s, a) for s, a in zip(state, new))
            outs[t] = new[0]
        return torch.cat(outs), state
    return run


# ---- while torch.export traces: the reference's math as plain differentiable ops ----
# Export keeps a Function's forward ops, never its backward, and autograd cannot
# differentiate the reference loops' out= writes; these steps do what the reference's
# do (input projection hoisted, one h W_hhᵀ per step, torch's σ and tanh) as ops
# autograd records. On a 2-core CPU, LSTM(64, 128) over (100, 8, 64), exported: 8 ms
# a forward, against 47 ms with the naive cells' per-gate steps and exp-built σ/tanh.

def _gru_step_export(xp_t, state, w):
    (h,) = state
    size = h.shape[1]
    hh = _affine(h, w[1], w[3])
    r, z = torch.sigmoid(xp_t[:, :2 * size] + hh[:, :2 * size]).chunk(2, 1)
    n = torch.tanh(xp_t[:, 2 * size:] + r * hh[:, 2 * size:])
    return (n + z * (h - n),)


def _lstm_step_export(xp_t, state, w):
    h, c = state
    i, f, g, o = (xp_t + h @ w[1].t()).chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return (h if w[4] is None else h @ w[4].t()), c


GRU_NAIVE = Cell(lambda x, w: x, _stepwise(_gru_step_naive), _gru_sizes)
LSTM_NAIVE = Cell(lambda x, w: x, _stepwise(_lstm_step_naive), _lstm_sizes)
GRU_REFERENCE = Cell(_gru_project, _gru_run, _gru_sizes)
LSTM_REFERENCE = Cell(_lstm_project, _lstm_run, _lstm_sizes)
GRU_EXPORT = Cell(_gru_project, _stepwise(_gru_step_export), _gru_sizes)
LSTM_EXPORT = Cell(_lstm_project, _stepwise(_lstm_step_export), _lstm_sizes)


# ---- the shared driver ---------------------------------------------------------------

def _direction(cell: Cell, x, state: State, w: Weights, sizes: list[int], reverse: bool):
    """One layer, one direction over time-major rows `x`; returns (outputs, final state)."""
    return cell.run(cell.project(x, w), state, w, sizes, reverse)


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


# While torch.export traces, the reference entry points run the export cells (above).
#
# Options (keyword-only, torch.nn's defaults): bidirectional, batch_first, dropout,
# training, dropout_fn(x, p, training) -> x, batch_sizes (None unless x is packed rows).
# x is (T, B, I), (B, T, I) with batch_first, (T, I) unbatched, or packed rows (N, I).

def gru_naive(x, h0, weights, **options):
    """GRU, textbook tier; returns (output, h_n) shaped like torch.nn.GRU's."""
    return _gru(GRU_NAIVE, x, h0, weights, options)


@first_order
def gru_reference(x, h0, weights, **options):
    """GRU, vectorized tier; returns (output, h_n) shaped like torch.nn.GRU's."""
    return _gru(GRU_EXPORT if torch.compiler.is_exporting() else GRU_REFERENCE, x, h0, weights, options)


def lstm_naive(x, hx, weights, **options):
    """LSTM, textbook tier; hx is (h0, c0) or None; returns (output, (h_n, c_n))."""
    return _rnn(LSTM_NAIVE, x, hx, weights, **options)


@first_order
def lstm_reference(x, hx, weights, **options):
    """LSTM, vectorized tier; hx is (h0, c0) or None; returns (output, (h_n, c_n))."""
    return _rnn(LSTM_EXPORT if torch.compiler.is_exporting() else LSTM_REFERENCE, x, hx, weights, **options)
