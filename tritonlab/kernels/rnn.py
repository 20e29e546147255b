"""LSTM and GRU recurrence: the recurrent matmul h·W_hhᵀ, every gate nonlinearity and
the state update fused, forward and backward, one layer-direction at a time.

The input projection x·W_ihᵀ + b of all time steps comes in precomputed (`xp`, one
GEMM before the loop) and the weight gradients leave as GEMMs after it; these kernels
do only what the recurrence forces to run step after step.

Layout (as the reference tier's): rows are time-major, step t owns rows
[off_t, off_t + n_t) of xp, out and every saved buffer; n_t = B unless the input is
packed (then the running sequences are the first n_t of the B state rows; the others
keep their state). Gates sit in W_hh's row order: LSTM i, f, g, o; GRU r, z, n.

Three ways to run the same kernels (`mode` of the launchers):
- STEP: one launch per time step; grid (cdiv(B, BLOCK_B), cdiv(H, BLOCK_H)), a program
  owns BLOCK_B rows x BLOCK_H hidden units of all gates for one step.
- PERSISTENT: one launch for all T steps; grid (cdiv(B, BLOCK_B), 1), a program owns
  its BLOCK_B rows and *all* H hidden units and walks the steps itself, with a
  block-level barrier between steps (the next step reads the h the program's other
  threads just wrote). No cross-program sync: it runs under the interpreter too. Each
  step streams W_hh (4H² or 3H² elements) through one SM, so it pays off for small H.
- PERSISTENT_GRID: one launch for all T steps with STEP's split of the hidden units
  (grid sized so every program is resident at once), and a barrier over the programs
  of a batch block after each step (an atomic counter spin). GPU only: the interpreter
  runs programs one after another, so a wait would never end (it may run only with a
  single hidden block). A program's W_hh slice (4·BLOCK_H x H) is loaded once and stays
  on chip for the whole sequence when it fits RESIDENT_ELEMENTS and the batch block has
  16 rows (H <= 256 with 16-wide blocks: each step then reads only h from L2); larger
  slices (128 KB fp16 at H = 1024) are re-read from L2 each step, spread over all the
  programs.

The forward's h rides in a ping-pong pair of (B, H) buffers: the step numbered s reads
[s % 2] and writes [(s+1) % 2] (a program reads all H columns of h but writes only its
own). The backward moves the one product across hidden units to the start of the next
phase (see _lstm_bwd_kernel), so its carries dh, dc are owned elementwise and updated in
place. Gate math is fp32 (`_math.sigmoid/tanh` from tl.exp); the LSTM cell state and all
backward carries are fp32; saved activations, outputs and gate gradients are in the
input dtype.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..backend import interpreter_enabled
from ._host import cdiv, dot_precision, next_power_of_2, sm_count
from ._math import sigmoid, tanh

INTERPRETED = interpreter_enabled()  # as triton.jit read it for this module's kernels (see _host)

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ---- shared pieces ---------------------------------------------------------------------

# a new step number per launch must not compile a new variant (Triton specializes
# integers equal to 1 or divisible by 16)
_STEP_ARGS = ["s_begin", "s_end"]
STEP, PERSISTENT, PERSISTENT_GRID = 0, 1, 2  # the kernels' MODE
MAX_SPINS = tl.constexpr(1 << 22)  # barrier reads (about 1 us each, an estimate) before a grid barrier gives up
# W_hh elements a persistent-grid program may hold on chip (H = 256 with 16-wide hidden
# blocks): the compiled sm_90 kernels keep the tile in shared memory, 64 KB in fp32; with
# its other tiles the fp32 forward takes 80 KB of a program's 227 KB and the backward
# 128 KB (ahead-of-time compiles of the LSTM at H = 256, Triton 3.6 and 3.9: no spills
# but the 3.9 forward's 8 B a thread; reports/sm90-compile-2026-11-29)
RESIDENT_ELEMENTS = 16384


@triton.jit
def _step_rows(s, T, B, offs_ptr, sizes_ptr, REVERSE: tl.constexpr, PACKED: tl.constexpr):
    """(first row, running rows) of the s-th step visited; REVERSE visits T-1 first (a
    reverse direction's forward, a forward direction's backward). An s outside 0..T-1
    is no step: 0 rows run."""
    valid = (s >= 0) & (s < T)
    if REVERSE:
        t = T - 1 - s
    else:
        t = s
    if PACKED:
        off = tl.load(offs_ptr + t, mask=valid, other=0).to(tl.int64)
        n = tl.load(sizes_ptr + t, mask=valid, other=0)
    else:
        off = t * B
        n = tl.where(valid, B, 0)
    return off, n


@triton.jit
def _w_t_tile(w_ptr, row0, cols, ks, H, G: tl.constexpr, W_T: tl.constexpr):
    """W[row0 + cols, ks]ᵀ, a (BLOCK_K, BLOCK_H) tile of W (G·H, H) row-major, or the same
    tile read from Wᵀ (H, G·H) row-major if W_T; out-of-range entries read 0."""
    mask = (ks < H)[:, None] & (cols < H)[None, :]
    if W_T:
        return tl.load(w_ptr + ks[:, None] * (G * H) + (row0 + cols)[None, :], mask=mask, other=0.0)
    return tl.load(w_ptr + (row0 + cols)[None, :] * H + ks[:, None], mask=mask, other=0.0)


@triton.jit
def _gate_dot(acc, a, w_res, w_ptr, row0, cols, ks, H, G: tl.constexpr, W_T: tl.constexpr,
              PRECISION: tl.constexpr, W_RESIDENT: tl.constexpr):
    """acc + a @ W[row0 + cols, ks]ᵀ, with the tile held on chip (w_res) or read now."""
    if W_RESIDENT:
        w = w_res
    else:
        w = _w_t_tile(w_ptr, row0, cols, ks, H, G, W_T)
    return tl.dot(a, w, acc, input_precision=PRECISION)


@triton.jit
def _hidden_blocks(H, BLOCK_H: tl.constexpr, MODE: tl.constexpr):
    """The range of BLOCK_H-wide hidden-unit blocks this program owns: all of them in
    the one-program persistent mode, else the one of program_id(1)."""
    if MODE == 1:
        lo = 0
        hi = tl.cdiv(H, BLOCK_H)
    else:
        lo = tl.program_id(1)
        hi = lo + 1
    return lo, hi


@triton.jit
def _end_step(sync_ptr, done, MODE: tl.constexpr):
    """Wait until the step's state is in memory for whoever reads it next. MODE 0 (step):
    nothing, the next launch waits. MODE 1 (persistent, one program per batch block): a
    block barrier. MODE 2 (persistent-grid): a barrier over the programs of this batch
    block (program_id(1) = 0..): each adds 1 to its block's counter and spins until all
    have, `done` + 1 times over. The spin gives up after MAX_SPINS reads and raises the
    flag at sync_ptr[num_programs(0)] instead of hanging; later barriers see the flag and
    skip their wait, and the launcher checks it.
    Visibility: block barrier, one thread's release add, its acquire reads (sm_90 PTX:
    red.release.gpu, ld.acquire.gpu), block barrier -- the pattern of CUDA's
    cooperative-groups grid sync, ordered by the PTX memory model. Loads of other
    programs' data also ask for .cg (L2), which the pipeliner may turn into async copies."""
    if MODE == 1:
        tl.debug_barrier()  # this step's stores are done before any thread reads them
    elif MODE == 2:
        count_ptr = sync_ptr + tl.program_id(0)
        target = (done + 1) * tl.num_programs(1)
        tl.debug_barrier()  # every thread's stores are issued before the release below
        tl.atomic_add(count_ptr, 1, sem="release", scope="gpu")
        seen = tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")
        if seen < target:  # read the flag only when there is a wait: not on the last arrival's path
            # once any barrier has timed out the result is wrong anyway: no more waiting, so
            # a grid that is not all resident costs one timeout, not one per step
            failed = tl.load(sync_ptr + tl.num_programs(0), volatile=True)
            spins = tl.where(failed != 0, MAX_SPINS, 0)
            while (seen < target) & (spins < MAX_SPINS):
                seen = tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")
                spins += 1
            if seen < target:
                tl.atomic_xchg(sync_ptr + tl.num_programs(0), 1)
        tl.debug_barrier()  # no thread reads the next step's state before the wait is over


# ---- LSTM ------------------------------------------------------------------------------

@triton.jit(do_not_specialize=_STEP_ARGS)
def _lstm_fwd_kernel(
    xp_ptr, w_ptr, h_ptr, c_ptr, out_ptr, h_in_ptr, c_in_ptr, gates_ptr, c_out_ptr,
    offs_ptr, sizes_ptr, sync_ptr, B, H, T, s_begin, s_end,
    REVERSE: tl.constexpr, PACKED: tl.constexpr, MODE: tl.constexpr, PRECISION: tl.constexpr,
    W_RESIDENT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    W_T: tl.constexpr,
):
    """LSTM steps s_begin..s_end-1: a = xp_t + h W_hhᵀ; i, f, o = σ(a_i, a_f, a_o),
    g = tanh(a_g); c' = f c + i g; h' = o tanh(c').

    Pointers: xp (rows, 4H) input projection with b_ih + b_hh; w (4H, H) W_hh, or W_hhᵀ
    (H, 4H) if W_T (see _transposed_w); h (2, B, H)
    ping-pong state; c (B, H) fp32 state, updated in place; out, h_in, c_in, c_out
    (rows, H): h', the h and c each step read, c'; gates (rows, 4H): i, f, g, o; offs,
    sizes (T,) int32 (PACKED only); sync (cdiv(B, BLOCK_B) + 1,) int32 barrier counters and
    timeout flag (MODE 2 only). Grid: see the module docstring.
    Cost per step: 8·B·H² FLOPs (the recurrent matmul) + ~30·B·H; bytes: W_hh (4H²,
    L2-resident across steps) + B·H·(4 + 3) read (xp, h, c, h again for the update) +
    B·H·(4 + 6) written (gates, out, h_in, c_in, c_out, c, h). B = 8, H = 1024, fp16:
    67 MFLOP, 8.4 MB of W per step -> ~2.8 us if L2 delivers ~3 TB/s (assumed, not
    measured), far above the ~0.07 us of tensor-core math: by this napkin model the step
    is bound by reading W_hh. Measured, a step takes far longer: at B = 8, H = 256, fp32
    (1 MiB of W, ~0.35 us at that assumed rate) the H200 took ~39 us a step
    (persistent-grid, 20.09 ms for T = 512 in reports/h200-2026-11-28/results.csv); what
    bounds it is not measured yet (scripts/rnn_probe.py).
    """
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    in_b = rows < B
    j_lo, j_hi = _hidden_blocks(H, BLOCK_H, MODE)
    w_i, w_f, w_g, w_o = None, None, None, None  # W_hh tiles are read each step unless resident
    if W_RESIDENT:  # MODE 2, one hidden block per program: its W_hh rows load once, stay on chip
        own = j_lo * BLOCK_H + tl.arange(0, BLOCK_H)
        ks_all = tl.arange(0, BLOCK_K)  # BLOCK_K >= H
        w_i = _w_t_tile(w_ptr, 0, own, ks_all, H, 4, W_T)
        w_f = _w_t_tile(w_ptr, H, own, ks_all, H, 4, W_T)
        w_g = _w_t_tile(w_ptr, 2 * H, own, ks_all, H, 4, W_T)
        w_o = _w_t_tile(w_ptr, 3 * H, own, ks_all, H, 4, W_T)
    for s in range(s_begin, s_end):
        off, n = _step_rows(s, T, B, offs_ptr, sizes_ptr, REVERSE, PACKED)
        src = h_ptr + (s % 2) * B * H
        dst = h_ptr + ((s + 1) % 2) * B * H
        run = rows < n
        for j in range(j_lo, j_hi):
            cols = j * BLOCK_H + tl.arange(0, BLOCK_H)
            acc_i = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
            acc_f = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
            acc_g = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
            acc_o = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
            for k in range(0, H, BLOCK_K):
                ks = k + tl.arange(0, BLOCK_K)
                hk = tl.load(src + rows[:, None] * H + ks[None, :], mask=run[:, None] & (ks < H)[None, :], other=0.0,
                             cache_modifier=".cg")
                acc_i = _gate_dot(acc_i, hk, w_i, w_ptr, 0, cols, ks, H, 4, W_T, PRECISION, W_RESIDENT)
                acc_f = _gate_dot(acc_f, hk, w_f, w_ptr, H, cols, ks, H, 4, W_T, PRECISION, W_RESIDENT)
                acc_g = _gate_dot(acc_g, hk, w_g, w_ptr, 2 * H, cols, ks, H, 4, W_T, PRECISION, W_RESIDENT)
                acc_o = _gate_dot(acc_o, hk, w_o, w_ptr, 3 * H, cols, ks, H, 4, W_T, PRECISION, W_RESIDENT)
            state = rows[:, None] * H + cols[None, :]
            in_state = in_b[:, None] & (cols < H)[None, :]
            m = run[:, None] & (cols < H)[None, :]
            gate = (off + rows)[:, None] * (4 * H) + cols[None, :]
            i = sigmoid(acc_i + tl.load(xp_ptr + gate, mask=m, other=0.0).to(tl.float32))
            f = sigmoid(acc_f + tl.load(xp_ptr + gate + H, mask=m, other=0.0).to(tl.float32))
            g = tanh(acc_g + tl.load(xp_ptr + gate + 2 * H, mask=m, other=0.0).to(tl.float32))
            o = sigmoid(acc_o + tl.load(xp_ptr + gate + 3 * H, mask=m, other=0.0).to(tl.float32))
            c_prev = tl.load(c_ptr + state, mask=in_state, other=0.0)
            h_prev = tl.load(src + state, mask=in_state, other=0.0, cache_modifier=".cg")
            c = f * c_prev + i * g
            h = o * tanh(c)
            dt = gates_ptr.dtype.element_ty
            tl.store(gates_ptr + gate, i.to(dt), mask=m)
            tl.store(gates_ptr + gate + H, f.to(dt), mask=m)
            tl.store(gates_ptr + gate + 2 * H, g.to(dt), mask=m)
            tl.store(gates_ptr + gate + 3 * H, o.to(dt), mask=m)
            row = (off + rows)[:, None] * H + cols[None, :]
            tl.store(out_ptr + row, h.to(dt), mask=m)
            tl.store(h_in_ptr + row, h_prev, mask=m)
            tl.store(c_in_ptr + row, c_prev.to(dt), mask=m)
            tl.store(c_out_ptr + row, c.to(dt), mask=m)
            tl.store(c_ptr + state, c, mask=m)  # rows not running keep their c
            tl.store(dst + state, tl.where(run[:, None], h.to(dt), h_prev), mask=in_state)
        _end_step(sync_ptr, s - s_begin, MODE)


@triton.jit
def _w_tile(w_ptr, ks, cols, K, H):
    """W[ks, cols], a (BLOCK_K, BLOCK_H) tile of W (K, H) row-major; out of range reads 0."""
    return tl.load(w_ptr + ks[:, None] * H + cols[None, :], mask=(ks < K)[:, None] & (cols < H)[None, :], other=0.0)


@triton.jit
def _carry_dot(d_ptr, w_ptr, w_res, rows, off, n, cols, H, G: tl.constexpr, PRECISION: tl.constexpr,
               W_RESIDENT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    """d[off + rows] @ W_hh[:, cols] for a step's n running rows (0 for the others): the
    gradient reaching the h that step read. d (rows, G*H) the step's gate gradients, W_hh
    (G*H, H), its tile held on chip (w_res, BLOCK_K >= G*H) or read now. Other programs
    wrote d (see _end_step)."""
    acc = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    run = rows < n
    for k in range(0, G * H, BLOCK_K):
        ks = k + tl.arange(0, BLOCK_K)
        a = tl.load(d_ptr + (off + rows)[:, None] * (G * H) + ks[None, :],
                    mask=run[:, None] & (ks < G * H)[None, :], other=0.0, cache_modifier=".cg")
        if W_RESIDENT:
            w = w_res
        else:
            w = _w_tile(w_ptr, ks, cols, G * H, H)
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
    return acc


@triton.jit(do_not_specialize=_STEP_ARGS)
def _lstm_bwd_kernel(
    w_ptr, d_out_ptr, gates_ptr, c_out_ptr, c_in_ptr, dh_ptr, dc_ptr, d_gates_ptr,
    offs_ptr, sizes_ptr, sync_ptr, B, H, T, s_begin, s_end,
    REVERSE: tl.constexpr, PACKED: tl.constexpr, MODE: tl.constexpr, PRECISION: tl.constexpr,
    W_RESIDENT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """LSTM backward, phases s_begin..s_end-1 of 0..T; steps in reverse of the forward's
    order (the launcher flips REVERSE: s = 0 is the forward's last step).

    Phase s: (1) dh_carry = d_gates_{s-1} W_hh for the rows of the step visited at s-1,
    the only product, whose operand other programs wrote; (2) for step s, with
    dh = dh_carry + d_out and dc = dc_carry + dh o tanh'(c'): d_i = dc g σ'(i),
    d_f = dc c_in σ'(f), d_g = dc i tanh'(g), d_o = dh tanh(c') σ'(o), dc_carry = dc f.
    (2) needs only the program's own hidden units, so one sync per step suffices and no
    gate gradient is computed twice. Phase T runs only (1): dh_carry is then d_h0.

    Pointers: w (4H, H) W_hh; d_out (rows, H); gates (rows, 4H), c_out, c_in (rows, H)
    saved by the forward; dh, dc (B, H) fp32 carries, each element read and written by
    the program owning it; d_gates (rows, 4H) out; offs, sizes, sync as the forward's.
    Cost per step: 8·B·H² FLOPs; W_hh (4H², L2) and the step's d_gates (B·4H) read per
    program column block, ~13·B·H elements of saved state read and written once.
    """
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    in_b = rows < B
    j_lo, j_hi = _hidden_blocks(H, BLOCK_H, MODE)
    w_res = None  # W_hh tiles are read each step unless resident
    if W_RESIDENT:  # MODE 2, one hidden block per program: its W_hh columns load once
        w_res = _w_tile(w_ptr, tl.arange(0, BLOCK_K), j_lo * BLOCK_H + tl.arange(0, BLOCK_H), 4 * H, H)
    for s in range(s_begin, s_end):
        off_p, n_p = _step_rows(s - 1, T, B, offs_ptr, sizes_ptr, REVERSE, PACKED)
        off, n = _step_rows(s, T, B, offs_ptr, sizes_ptr, REVERSE, PACKED)
        run = rows < n
        for j in range(j_lo, j_hi):
            cols = j * BLOCK_H + tl.arange(0, BLOCK_H)
            state = rows[:, None] * H + cols[None, :]
            in_state = in_b[:, None] & (cols < H)[None, :]
            acc = _carry_dot(d_gates_ptr, w_ptr, w_res, rows, off_p, n_p, cols, H, 4, PRECISION, W_RESIDENT,
                             BLOCK_B, BLOCK_H, BLOCK_K)
            dh = tl.where((rows < n_p)[:, None], acc, tl.load(dh_ptr + state, mask=in_state, other=0.0))
            dc = tl.load(dc_ptr + state, mask=in_state, other=0.0)
            m = run[:, None] & (cols < H)[None, :]
            row = (off + rows)[:, None] * H + cols[None, :]
            gate = (off + rows)[:, None] * (4 * H) + cols[None, :]
            i = tl.load(gates_ptr + gate, mask=m, other=0.0).to(tl.float32)
            f = tl.load(gates_ptr + gate + H, mask=m, other=0.0).to(tl.float32)
            g = tl.load(gates_ptr + gate + 2 * H, mask=m, other=0.0).to(tl.float32)
            o = tl.load(gates_ptr + gate + 3 * H, mask=m, other=0.0).to(tl.float32)
            c = tl.load(c_out_ptr + row, mask=m, other=0.0).to(tl.float32)
            c_in = tl.load(c_in_ptr + row, mask=m, other=0.0).to(tl.float32)
            d_total = dh + tl.load(d_out_ptr + row, mask=m, other=0.0).to(tl.float32)
            tc = tanh(c)
            dc_total = dc + d_total * o * (1.0 - tc * tc)
            dt = d_gates_ptr.dtype.element_ty
            tl.store(d_gates_ptr + gate, (dc_total * g * i * (1.0 - i)).to(dt), mask=m)
            tl.store(d_gates_ptr + gate + H, (dc_total * c_in * f * (1.0 - f)).to(dt), mask=m)
            tl.store(d_gates_ptr + gate + 2 * H, (dc_total * i * (1.0 - g * g)).to(dt), mask=m)
            tl.store(d_gates_ptr + gate + 3 * H, (d_total * tc * o * (1.0 - o)).to(dt), mask=m)
            # a running row's dh is replaced by the next phase's product; the others keep theirs
            tl.store(dh_ptr + state, dh, mask=in_state)
            tl.store(dc_ptr + state, tl.where(run[:, None], dc_total * f, dc), mask=in_state)
        _end_step(sync_ptr, s - s_begin, MODE)


# ---- GRU -------------------------------------------------------------------------------

@triton.jit(do_not_specialize=_STEP_ARGS)
def _gru_fwd_kernel(
    xp_ptr, w_ptr, b_hn_ptr, h_ptr, out_ptr, h_in_ptr, gates_ptr, hn_ptr,
    offs_ptr, sizes_ptr, sync_ptr, B, H, T, s_begin, s_end,
    HAS_BHN: tl.constexpr, REVERSE: tl.constexpr, PACKED: tl.constexpr, MODE: tl.constexpr,
    PRECISION: tl.constexpr, W_RESIDENT: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, W_T: tl.constexpr,
):
    """GRU steps s_begin..s_end-1, exactly torch.nn.GRU: r, z = σ(xp_r,z + h W_hr,zᵀ),
    hn = h W_hnᵀ + b_hn, n = tanh(xp_n + r hn), h' = (1 - z) n + z h.

    Pointers: xp (rows, 3H) input projection with b_ih and b_hr, b_hz folded in; w (3H, H)
    W_hh, or W_hhᵀ (H, 3H) if W_T (see _transposed_w); b_hn (H,) (HAS_BHN only); h (2, B, H) ping-pong state; out, h_in, hn (rows, H):
    h', the h each step read, W_hn h + b_hn; gates (rows, 3H): r, z, n; offs, sizes (T,)
    int32 (PACKED only); sync as the LSTM's. Grid: see the module docstring.
    Cost per step: 6·B·H² FLOPs + ~25·B·H; W_hh (3H², L2-resident) read per step, bound
    by that read like the LSTM's; the step's state moves ~11·B·H elements: xp (3·B·H)
    and h (B·H) in, h', h_in, hn (3·B·H) and gates (3·B·H) out.
    """
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    in_b = rows < B
    j_lo, j_hi = _hidden_blocks(H, BLOCK_H, MODE)
    w_r, w_z, w_n = None, None, None  # W_hh tiles are read each step unless resident
    if W_RESIDENT:  # MODE 2, one hidden block per program: its W_hh rows load once, stay on chip
        own = j_lo * BLOCK_H + tl.arange(0, BLOCK_H)
        ks_all = tl.arange(0, BLOCK_K)  # BLOCK_K >= H
        w_r = _w_t_tile(w_ptr, 0, own, ks_all, H, 3, W_T)
        w_z = _w_t_tile(w_ptr, H, own, ks_all, H, 3, W_T)
        w_n = _w_t_tile(w_ptr, 2 * H, own, ks_all, H, 3, W_T)
    for s in range(s_begin, s_end):
        off, n = _step_rows(s, T, B, offs_ptr, sizes_ptr, REVERSE, PACKED)
        src = h_ptr + (s % 2) * B * H
        dst = h_ptr + ((s + 1) % 2) * B * H
        run = rows < n
        for j in range(j_lo, j_hi):
            cols = j * BLOCK_H + tl.arange(0, BLOCK_H)
            acc_r = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
            acc_z = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
            acc_n = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
            for k in range(0, H, BLOCK_K):
                ks = k + tl.arange(0, BLOCK_K)
                hk = tl.load(src + rows[:, None] * H + ks[None, :], mask=run[:, None] & (ks < H)[None, :], other=0.0,
                             cache_modifier=".cg")
                acc_r = _gate_dot(acc_r, hk, w_r, w_ptr, 0, cols, ks, H, 3, W_T, PRECISION, W_RESIDENT)
                acc_z = _gate_dot(acc_z, hk, w_z, w_ptr, H, cols, ks, H, 3, W_T, PRECISION, W_RESIDENT)
                acc_n = _gate_dot(acc_n, hk, w_n, w_ptr, 2 * H, cols, ks, H, 3, W_T, PRECISION, W_RESIDENT)
            if HAS_BHN:
                acc_n += tl.load(b_hn_ptr + cols, mask=cols < H, other=0.0).to(tl.float32)[None, :]
            state = rows[:, None] * H + cols[None, :]
            in_state = in_b[:, None] & (cols < H)[None, :]
            m = run[:, None] & (cols < H)[None, :]
            gate = (off + rows)[:, None] * (3 * H) + cols[None, :]
            r = sigmoid(acc_r + tl.load(xp_ptr + gate, mask=m, other=0.0).to(tl.float32))
            z = sigmoid(acc_z + tl.load(xp_ptr + gate + H, mask=m, other=0.0).to(tl.float32))
            new = tanh(tl.load(xp_ptr + gate + 2 * H, mask=m, other=0.0).to(tl.float32) + r * acc_n)
            h_prev = tl.load(src + state, mask=in_state, other=0.0, cache_modifier=".cg")
            h = (1.0 - z) * new + z * h_prev.to(tl.float32)
            dt = gates_ptr.dtype.element_ty
            tl.store(gates_ptr + gate, r.to(dt), mask=m)
            tl.store(gates_ptr + gate + H, z.to(dt), mask=m)
            tl.store(gates_ptr + gate + 2 * H, new.to(dt), mask=m)
            row = (off + rows)[:, None] * H + cols[None, :]
            tl.store(hn_ptr + row, acc_n.to(dt), mask=m)
            tl.store(out_ptr + row, h.to(dt), mask=m)
            tl.store(h_in_ptr + row, h_prev, mask=m)
            tl.store(dst + state, tl.where(run[:, None], h.to(dt), h_prev), mask=in_state)
        _end_step(sync_ptr, s - s_begin, MODE)


@triton.jit(do_not_specialize=_STEP_ARGS)
def _gru_bwd_kernel(
    w_ptr, d_out_ptr, gates_ptr, hn_ptr, h_in_ptr, dh_ptr, d_xp_ptr, d_hh_ptr,
    offs_ptr, sizes_ptr, sync_ptr, B, H, T, s_begin, s_end,
    REVERSE: tl.constexpr, PACKED: tl.constexpr, MODE: tl.constexpr, PRECISION: tl.constexpr,
    W_RESIDENT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """GRU backward, phases s_begin..s_end-1 of 0..T, in reverse of the forward's order
    (the launcher flips REVERSE), split like the LSTM's: phase s adds d_hh_{s-1} W_hh to
    the carry of the step visited at s-1, then for step s, with dh = dh_carry + d_out:
    d_n = dh (1 - z) tanh'(n), d_z = dh (h_in - n) σ'(z), d_r = d_n hn σ'(r),
    d_hn = d_n r, and the carry restarts at dh z (the direct path h -> h').

    Pointers: w (3H, H) W_hh; d_out, hn, h_in (rows, H); gates (rows, 3H) saved by the
    forward; dh (B, H) fp32 carry, owned elementwise; d_xp (rows, 3H) out: [d_r, d_z, d_n],
    the input projection's gradient; d_hh (rows, 3H) out: [d_r, d_z, d_hn], the gradient
    of h W_hhᵀ + b_hh; offs, sizes, sync as the forward's.
    Cost per step: 6·B·H² FLOPs; W_hh (3H², L2) and the step's d_hh read per program
    column block, ~12·B·H elements of saved state read and written once.
    """
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    in_b = rows < B
    j_lo, j_hi = _hidden_blocks(H, BLOCK_H, MODE)
    w_res = None  # W_hh tiles are read each step unless resident
    if W_RESIDENT:  # MODE 2, one hidden block per program: its W_hh columns load once
        w_res = _w_tile(w_ptr, tl.arange(0, BLOCK_K), j_lo * BLOCK_H + tl.arange(0, BLOCK_H), 3 * H, H)
    for s in range(s_begin, s_end):
        off_p, n_p = _step_rows(s - 1, T, B, offs_ptr, sizes_ptr, REVERSE, PACKED)
        off, n = _step_rows(s, T, B, offs_ptr, sizes_ptr, REVERSE, PACKED)
        run = rows < n
        for j in range(j_lo, j_hi):
            cols = j * BLOCK_H + tl.arange(0, BLOCK_H)
            state = rows[:, None] * H + cols[None, :]
            in_state = in_b[:, None] & (cols < H)[None, :]
            acc = _carry_dot(d_hh_ptr, w_ptr, w_res, rows, off_p, n_p, cols, H, 3, PRECISION, W_RESIDENT,
                             BLOCK_B, BLOCK_H, BLOCK_K)
            dh = tl.load(dh_ptr + state, mask=in_state, other=0.0)
            dh = tl.where((rows < n_p)[:, None], dh + acc, dh)
            m = run[:, None] & (cols < H)[None, :]
            row = (off + rows)[:, None] * H + cols[None, :]
            gate = (off + rows)[:, None] * (3 * H) + cols[None, :]
            r = tl.load(gates_ptr + gate, mask=m, other=0.0).to(tl.float32)
            z = tl.load(gates_ptr + gate + H, mask=m, other=0.0).to(tl.float32)
            new = tl.load(gates_ptr + gate + 2 * H, mask=m, other=0.0).to(tl.float32)
            hn = tl.load(hn_ptr + row, mask=m, other=0.0).to(tl.float32)
            h_in = tl.load(h_in_ptr + row, mask=m, other=0.0).to(tl.float32)
            d_total = dh + tl.load(d_out_ptr + row, mask=m, other=0.0).to(tl.float32)
            d_n = d_total * (1.0 - z) * (1.0 - new * new)
            d_z = d_total * (h_in - new) * z * (1.0 - z)
            d_r = d_n * hn * r * (1.0 - r)
            dt = d_xp_ptr.dtype.element_ty
            tl.store(d_xp_ptr + gate, d_r.to(dt), mask=m)
            tl.store(d_xp_ptr + gate + H, d_z.to(dt), mask=m)
            tl.store(d_xp_ptr + gate + 2 * H, d_n.to(dt), mask=m)
            tl.store(d_hh_ptr + gate, d_r.to(dt), mask=m)
            tl.store(d_hh_ptr + gate + H, d_z.to(dt), mask=m)
            tl.store(d_hh_ptr + gate + 2 * H, (d_n * r).to(dt), mask=m)
            tl.store(dh_ptr + state, tl.where(run[:, None], d_total * z, dh), mask=in_state)
        _end_step(sync_ptr, s - s_begin, MODE)


# ---- launchers -------------------------------------------------------------------------

def _block_b(B: int) -> int:
    # tl.dot: tile sides >= 16; at most 32 rows, a register-budget choice not timed against
    # 64 on a GPU (sm_90 compiles: reports/sm90-compile-2026-11-29)
    return 16 if INTERPRETED or B <= 16 else 32


def _grid_block_h(B: int, H: int, device: torch.device) -> int | None:
    """BLOCK_H for the persistent-grid mode: the narrowest (most programs, so W_hh's
    read spreads over most SMs) that keeps every program co-resident, one per SM at
    most, as the spinning barrier needs; None when none does. Under the interpreter,
    which runs programs one after another, only a single hidden block (no wait)."""
    blocks_b = cdiv(B, _block_b(B))
    if INTERPRETED:
        return 16 if H <= 16 else None
    sms = sm_count(device)
    for block_h in (16, 32, 64, 128):
        if blocks_b * cdiv(H, block_h) <= sms:
            return block_h
    return None


def persistent_grid_fits(B: int, H: int, device: torch.device) -> bool:
    """Whether the persistent-grid mode can launch B rows of H units on `device` with
    every program co-resident (see _grid_block_h)."""
    return _grid_block_h(B, H, device) is not None


def _blocks(B: int, H: int, mode: int, device: torch.device, dtype: torch.dtype,
            w_tiles: int, contraction: int) -> tuple[int, int, int, bool]:
    """(BLOCK_B, BLOCK_H, BLOCK_K, W_RESIDENT) for a kernel whose product contracts over
    `contraction` (H forward, G*H backward) against `w_tiles` tiles of W_hh (G forward,
    1 backward). Under the interpreter 16 everywhere, so small test sizes still cross
    block edges. On a GPU the step mode takes narrow hidden blocks (more programs to
    spread W_hh's read over SMs), the one-program persistent mode wide ones (it walks
    them all). The persistent-grid mode keeps a program's W_hh tiles on chip for the
    whole sequence when they fit RESIDENT_ELEMENTS (then BLOCK_K spans the contraction)."""
    if mode == PERSISTENT_GRID:
        block_h = _grid_block_h(B, H, device)
        if block_h is None:
            raise ValueError(f"the persistent-grid RNN kernel needs all its programs resident at once; "
                             f"B={B}, H={H} need too many on {device} (use the step or persistent variant)")
        span = max(16, next_power_of_2(contraction))  # tl.dot: K >= 16
        # with 32 rows the fp32 backward takes 192 KB of shared memory (W's 64 KB and
        # 128 KB of operand tiles) of a program's 227 KB (sm_90 compile,
        # reports/sm90-compile-2026-11-29): too close to the limit
        if _block_b(B) == 16 and w_tiles * span * block_h <= RESIDENT_ELEMENTS:
            return _block_b(B), block_h, span, True
    elif INTERPRETED:
        block_h = 16
    else:
        block_h = max(16, min(64 if mode == PERSISTENT else 32, next_power_of_2(H)))
    # K chunks of 32 for fp32 or 32-row blocks, 64 otherwise: a register-budget choice
    # (fp32 tiles are twice the bytes); the fp32 step forward compiles without spills
    # either way (80-88 registers a thread at 32-wide K, 105-107 at 64, Triton 3.6 and
    # 3.9, reports/sm90-compile-2026-11-29), and neither was timed on a GPU
    wide = dtype == torch.float32 or _block_b(B) == 32
    block_k = 16 if INTERPRETED else max(16, min(32 if wide else 64, next_power_of_2(H)))
    return _block_b(B), block_h, block_k, False


def _launch(kernel, tensors, flags, sizes: list[int], B: int, H: int, reverse: bool, mode: int,
            dtype: torch.dtype, phases: int, w_tiles: int, contraction: int) -> None:
    """Run `kernel`'s `phases` phases (a forward's T steps, a backward's T + 1): one
    launch per phase (STEP) or one for all. w_tiles, contraction: see _blocks.
    8 warps, 2 stages: a register-budget choice (the forward holds four pointer tiles of
    W_hh); the sm_90 compiles in reports/sm90-compile-2026-11-29 show 8 B of spills a
    thread at most at 4 warps, and the two were never timed against each other on a GPU."""
    if B == 0:
        return
    T, device = len(sizes), tensors[0].device
    offs = counts = None
    if any(n != B for n in sizes):  # packed: the kernel reads each step's rows from tables
        counts = torch.tensor(sizes, dtype=torch.int32)
        offs = (counts.cumsum(0) - counts).to(torch.int32).to(device)
        counts = counts.to(device)
    block_b, block_h, block_k, resident = _blocks(B, H, mode, device, dtype, w_tiles, contraction)
    meta = dict(REVERSE=reverse, PACKED=offs is not None, MODE=mode, PRECISION=dot_precision(dtype),
                W_RESIDENT=resident, BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k,
                num_warps=8, num_stages=2, **flags)
    blocks_b = cdiv(B, block_b)
    if mode == STEP:
        grid = (blocks_b, cdiv(H, block_h))
        for s in range(phases):
            kernel[grid](*tensors, offs, counts, None, B, H, T, s, s + 1, **meta)
    elif mode == PERSISTENT:
        kernel[(blocks_b, 1)](*tensors, offs, counts, None, B, H, T, 0, phases, **meta)
    else:
        sync = torch.zeros(blocks_b + 1, dtype=torch.int32, device=device)  # counters, timeout flag
        kernel[(blocks_b, cdiv(H, block_h))](*tensors, offs, counts, sync, B, H, T, 0, phases, **meta)
        # the timeout flag can only be read back outside CUDA-graph capture (a readback
        # is a host sync, which capture forbids); under capture it goes unchecked
        capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        if not capturing and sync[-1].item():
            raise RuntimeError("the persistent-grid RNN kernel's barrier timed out (its programs were not "
                               "all resident); its result is wrong. Use the step or persistent variant")


def _transposed_w(w_hh: torch.Tensor, fma: bool) -> tuple[torch.Tensor, bool]:
    """(W, W_T) for a forward kernel: W_hhᵀ (H, G·H), copied, where the dot runs on FFMA,
    else W_hh itself. The FFMA dot reads each W tile from shared memory with a warp's
    threads along its columns; stored k-contiguous, as W_hh's rows put them, those columns
    lie a multiple of 128 bytes apart, in the same banks, 16-32 reads of a warp serialised
    (sm_90 compiles, triton 3.6 and 3.9: unswizzled k-major tiles; lesson 08's v3 counts
    it). W_hhᵀ's tiles are column-contiguous. Tensor-core dots read through swizzled
    layouts and keep W_hh. fma: the kernel's dot is "ieee" fp32. The copy costs a launch
    and G·H² elements a call. Not yet timed on a GPU."""
    if fma:
        return w_hh.t().contiguous(), True
    return w_hh.contiguous(), False


def _pingpong(first: torch.Tensor) -> torch.Tensor:
    """A (2, B, H) state pair whose [0] holds `first`."""
    pair = first.new_empty((2, *first.shape))
    pair[0] = first
    return pair


def _check(xp, w_hh, gates: int, states) -> tuple[int, int]:
    """(B, H) after checking the shapes and dtypes the kernels assume."""
    if xp.dtype not in DTYPES:
        raise TypeError(f"the Triton RNN kernels take float32, float16 or bfloat16, got {xp.dtype}")
    H = w_hh.shape[1]
    if tuple(w_hh.shape) != (gates * H, H) or xp.dim() != 2 or xp.shape[1] != gates * H:
        raise ValueError(f"expected W_hh ({gates}H, H) and xp (rows, {gates}H), got W_hh "
                         f"{tuple(w_hh.shape)} and xp {tuple(xp.shape)}")
    for s in states:
        if s.dim() != 2 or s.shape[1] != H or s.dtype != xp.dtype:
            raise ValueError(f"expected states (B, {H}) of {xp.dtype}, got {tuple(s.shape)} of {s.dtype}")
    return states[0].shape[0], H


def lstm_forward(xp, w_hh, h0, c0, sizes: list[int], reverse: bool, mode: int):
    """One LSTM layer-direction over time-major rows. xp (rows, 4H) is x W_ihᵀ + b_ih +
    b_hh; w_hh (4H, H); h0, c0 (B, H); sizes: rows per step (all B unless packed).
    Returns out (rows, H), h_n, c_n (B, H), and what lstm_backward needs:
    (h_in, c_in, gates, c_out)."""
    B, H = _check(xp, w_hh, 4, (h0, c0))
    xp, (w, w_t) = xp.contiguous(), _transposed_w(w_hh, dot_precision(xp.dtype) == "ieee")
    h, c = _pingpong(h0), c0.to(torch.float32, copy=True).contiguous()
    out, h_in, c_in, c_out = (xp.new_empty(xp.shape[0], H) for _ in range(4))
    gates = torch.empty_like(xp)
    _launch(_lstm_fwd_kernel, (xp, w, h, c, out, h_in, c_in, gates, c_out), dict(W_T=w_t),
            sizes, B, H, reverse, mode, xp.dtype, len(sizes), 4, H)
    return out, h[len(sizes) % 2], c.to(xp.dtype), (h_in, c_in, gates, c_out)


def lstm_backward(d_out, d_hn, d_cn, w_hh, saved, sizes: list[int], reverse: bool, mode: int):
    """Backward of lstm_forward through the recurrence: returns d_gates (rows, 4H), the
    gradient of xp and of h W_hhᵀ alike, and d_h0, d_c0 (B, H)."""
    h_in, c_in, gates, c_out = saved
    B, H = d_hn.shape
    dh, dc = (d.to(torch.float32, copy=True).contiguous() for d in (d_hn, d_cn))
    d_gates = torch.empty_like(gates)
    _launch(_lstm_bwd_kernel, (w_hh.contiguous(), d_out.contiguous(), gates, c_out, c_in, dh, dc, d_gates), {},
            sizes, B, H, not reverse, mode, gates.dtype, len(sizes) + 1, 1, 4 * H)
    return d_gates, dh.to(gates.dtype), dc.to(gates.dtype)


def gru_forward(xp, w_hh, b_hn, h0, sizes: list[int], reverse: bool, mode: int):
    """One GRU layer-direction. xp (rows, 3H) is x W_ihᵀ + b_ih + [b_hr, b_hz, 0]; w_hh
    (3H, H); b_hn (H,) or None; h0 (B, H). Returns out (rows, H), h_n (B, H), and what
    gru_backward needs: (h_in, gates, hn)."""
    B, H = _check(xp, w_hh, 3, (h0,))
    xp, (w, w_t) = xp.contiguous(), _transposed_w(w_hh, dot_precision(xp.dtype) == "ieee")
    h = _pingpong(h0)
    out, h_in, hn = (xp.new_empty(xp.shape[0], H) for _ in range(3))
    gates = torch.empty_like(xp)
    _launch(_gru_fwd_kernel, (xp, w, b_hn, h, out, h_in, gates, hn), dict(HAS_BHN=b_hn is not None, W_T=w_t),
            sizes, B, H, reverse, mode, xp.dtype, len(sizes), 3, H)
    return out, h[len(sizes) % 2], (h_in, gates, hn)


def gru_backward(d_out, d_hn, w_hh, saved, sizes: list[int], reverse: bool, mode: int):
    """Backward of gru_forward through the recurrence: returns d_xp (rows, 3H), d_hh
    (rows, 3H) (the gradient of h W_hhᵀ + b_hh) and d_h0 (B, H)."""
    h_in, gates, hn = saved
    B, H = d_hn.shape
    dh = d_hn.to(torch.float32, copy=True).contiguous()
    d_xp, d_hh = torch.empty_like(gates), torch.empty_like(gates)
    _launch(_gru_bwd_kernel, (w_hh.contiguous(), d_out.contiguous(), gates, hn, h_in, dh, d_xp, d_hh), {},
            sizes, B, H, not reverse, mode, gates.dtype, len(sizes) + 1, 1, 3 * H)
    return d_xp, d_hh, dh.to(gates.dtype)
