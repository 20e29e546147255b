# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · An LSTM step with fused gates
#
# Lessons 01–06 wrote kernels for ops whose outputs are independent: every element of a
# softmax row, every tile of a GEMM or a convolution can be computed at the same time. A
# recurrent network cannot do that along time. An LSTM reads a sequence x_0 … x_{T-1} and
# carries a state (h, c) from one step to the next:
#
# ```
# a       = x_t W_ihᵀ + b_ih + h W_hhᵀ + b_hh        # (B, 4H): the pre-activations of 4 gates
# i, f, o = σ(a_i), σ(a_f), σ(a_o)                    # input, forget, output gates
# g       = tanh(a_g)                                 # the candidate cell value
# c'      = f ⊙ c + i ⊙ g
# h'      = o ⊙ tanh(c')                              # the step's output and next h
# ```
#
# Step t+1 needs the h of step t, so the T steps run one after another. Only the half of
# the work that does not depend on h — the input projection x W_ihᵀ of *all* steps — can
# be done up front, as one big GEMM (lesson 05). What is left per step is small: one
# matmul h W_hhᵀ of a (B, H) state with a (4H, H) weight, then a handful of elementwise
# gate operations on (B, 4H) numbers.
#
# **The one new idea of this lesson: fuse everything one step does into as few kernels
# as possible** — first the gate arithmetic into one elementwise kernel, then the
# recurrent matmul and the gates into a single kernel per step — and ask, with napkin
# math and then a GPU, what a small-batch step's time is made of: launches, bytes, or
# something else. (The napkin math says launches; the one GPU run so far says otherwise
# for the fused rungs: see the end of the lesson. Lesson 08 removes the last launch per
# step.)

# %%
import os

import torch

if not torch.cuda.is_available():  # no GPU: run every kernel on CPU tensors through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported
import triton
import triton.language as tl

from tritonlab.bench.ladder import Cost, device, exercise, ladder, pick

# %% [markdown]
# ## Setup
#
# One LSTM layer, its weights taken from `torch.nn.LSTM` so that every rung computes the
# same function and `torch.nn.LSTM`'s output is the expected answer. Sizes: on a GPU one
# of the benchmark's cases (`tritonlab/bench/ops.py`, B=8 sequences of T=512 steps, 256
# inputs, 256 hidden units); on CPU a toy size the interpreter finishes in seconds.
#
# Everything is float32 with TF32 off, on every rung (cuBLAS, cuDNN and our `tl.dot`s):
# then all rungs do the same arithmetic and differ only in rounding order, and the check
# can be tight. (Lesson 05 showed what TF32 and bf16 buy on the matmul.)
#
# We time the forward pass only; `torch.no_grad()` keeps autograd out of it.

# %%
import inspect

from torch import nn

import tritonlab
from tritonlab.bench.ops import OPS
from tritonlab.kernels._math import sigmoid, tanh  # σ and tanh from tl.exp: the interpreter has no libdevice
from tritonlab.scratch import rnn as scratch_rnn

torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 on every rung
torch.backends.cudnn.allow_tf32 = False

torch.manual_seed(0)
dev = device()
B, T, I, H = pick(cpu=(4, 6, 16, 32), gpu=(8, 512, 256, 256))
lstm_torch = nn.LSTM(I, H).to(dev)  # cuDNN on a GPU
x = torch.randn(T, B, I, device=dev)  # time-major: (T, B, I), torch.nn.LSTM's default layout
w_ih, w_hh, b_ih, b_hh = (p.detach() for p in (lstm_torch.weight_ih_l0, lstm_torch.weight_hh_l0,
                                               lstm_torch.bias_ih_l0, lstm_torch.bias_hh_l0))
with torch.no_grad():
    expected, _ = lstm_torch(x)  # (T, B, H): every step's h
# the benchmark's cost model of this op: x in, every h out, the weights read once; 2 FLOPs per multiply-add
cost = OPS["lstm"].cost({"b": B, "t": T, "i": I, "h": H}, "fwd", 4)
print(f"B={B} T={T} I={I} H={H} on {dev}: floor {cost.bytes / 1e6:.3g} MB, {cost.flops / 1e9:.3g} GFLOP")

# %% [markdown]
# ## Rung 1 — naive: one matmul per gate
#
# `tritonlab.scratch.rnn` holds the textbook version: every step, every gate computes its
# own `x_t W_{i·}ᵀ + b + h W_{h·}ᵀ + b` from its slice of the weights. Eight small matmuls
# and a dozen elementwise ops per step, each a separate kernel on a GPU.

# %%
print(inspect.getsource(scratch_rnn._lstm_step_naive))


def lstm_naive():
    return scratch_rnn.lstm_naive(x, None, [(w_ih, w_hh, b_ih, b_hh, None)])


# %% [markdown]
# ## Rung 2 — reference: one gate matmul per step; rung 3 — cuDNN
#
# The reference tier (`scratch_rnn.lstm_reference`) makes two changes. The input
# projection of all T steps is one GEMM before the loop (`x` as a (T·B, I) matrix times
# W_ihᵀ, with both biases folded in). And each step does *one* matmul `h W_hhᵀ` for all
# four gates at once — W_hh stores the gates' rows stacked i, f, g, o, so the (B, 4H)
# result holds the four pre-activations side by side — followed by a handful of in-place
# elementwise torch ops for the gates (six; `tritonlab/scratch/rnn.py`, `_LSTM.forward`).
#
# `torch.nn.LSTM` on a GPU calls cuDNN: one call for the whole sequence, with cuDNN's own
# kernels launched from C++. That is the bar. (At this size — H = 256, float32 — PyTorch
# asks cuDNN for its standard algorithm; lesson 08 meets the persistent one it uses for
# small H.)

# %%
def lstm_reference():
    return scratch_rnn.lstm_reference(x, None, [(w_ih, w_hh, b_ih, b_hh, None)])


def lstm_cudnn():
    with torch.no_grad():
        return lstm_torch(x)


# %% [markdown]
# ## Napkin math: what one step costs
#
# One step, float32 (4 bytes), at the GPU size B=8, H=256:
#
# | per step | amount | at B=8, H=256 |
# |---|---|---|
# | FLOPs of `h W_hhᵀ` | 2·B·H·4H = 8·B·H² | 4.2 MFLOP |
# | bytes of W_hh | 4H·H·4 | 1 MiB |
# | bytes of state (xp_t in, h, c in and out) | ≈ B·4H·4 + 4·B·H·4 | 64 KiB |
# | FLOPs per byte | ≈ 8BH² / 16H² = B/2 | 4 |
#
# W_hh is read again every step: the step's matmul has nothing else to multiply it with.
# Its arithmetic intensity is B/2 FLOP per byte, far below what the H100 needs to be
# compute-bound (67 TFLOP/s fp32 / 3.35 TB/s ≈ 20 FLOP/byte; for bf16 tensor cores ≈ 300).
# So at small batch a step is bound by *reading W_hh* — 1 MiB at 3.35 TB/s is 0.3 µs (less
# if it stays in the 50 MB L2, as a 1 MiB matrix should) — and the 4.2 MFLOP take 0.06 µs at full fp32
# speed. Both are far below the **~5 µs it takes to launch a kernel** (lesson 01's rule of
# thumb). A step that needs k launches costs at least k × 5 µs, whatever it computes: the
# prediction is that at B=8 **the recurrence is launch-bound**. (On the H200 that held for
# the reference tier as it ran that day, with ten small kernels a step where today's has
# seven: most of its time was host time. It did not hold for the one-kernel rungs, whose
# step took ~40 µs of GPU work. The end of the lesson has the numbers and what this model
# leaves out.)
#
# Scale the batch to B=256 and H=1024 (the benchmark's largest case): one step is now 2.1
# GFLOP, 32 µs at fp32 FMA speed (~2 µs on bf16 tensor cores), intensity 128 FLOP/byte —
# compute-bound, and launches stop mattering. Small batches are the hard case; they are
# also the common one (inference, sampling one sequence at a time).
#
# The whole forward at B=8, T=512: the floor above is 10.5 MB and 4.3 GFLOP, i.e. 64 µs at
# 67 TFLOP/s, the projection GEMM and the T recurrent matmuls included. One launch per
# step alone is 512 × 5 µs ≈ 2.6 ms, forty times that floor.
#
# Launches per step, and the prediction that follows (written before any GPU run; the
# one run's ladder is at the end of the lesson):
#
# | rung | launches per step | predicted |
# |---|---|---|
# | naive | ~25 (8 matmuls, activations, products) | slowest, ~100 µs per step |
# | reference | 7 (1 matmul + 6 in-place gate ops) | ~2–3× faster than naive |
# | torch (cuDNN) | its own, launched from C++ | a few µs per step: the bar |
# | triton v1 | 2 (cuBLAS matmul + 1 fused gate kernel) | ~3–5× faster than the reference |
# | triton v2 | 1 (matmul and gates in one kernel) | ~2× faster than v1 |
#
# The Python loop itself also costs microseconds per step (slicing, a Triton launch's
# argument handling on the host): that is why even v2 should not quite reach cuDNN.

# %% [markdown]
# ## Triton v1 — the gates as one elementwise kernel
#
# Keep the matmul `a = xp_t + h W_hhᵀ` in torch (one cuBLAS `addmm` per step) and replace
# the six gate ops by one kernel, an elementwise kernel like lesson 01's: each program
# takes BLOCK of the B·H (row, unit) pairs, reads that unit's four pre-activations
# a[row, unit], a[row, H + unit], a[row, 2H + unit], a[row, 3H + unit] and c[row, unit], and
# writes c' and h'. The intermediate i, f, g, o never leave registers.
#
# Bytes per step of the gate part: the reference makes 6 passes over (B, H)- to (B, 4H)-sized
# buffers; the fused kernel reads a and c once and writes c and h once. At B=8 that saves
# a few hundred KiB per step: ~0.1 µs at 3.35 TB/s, nothing next to the ~5 µs of each of
# the five launches per step it removes. The gain we expect is from launches (7 → 2 per
# step), not from bytes.
#
# `c` is updated in place: each element is read and written by the same program, so no
# program can read a value another one has already overwritten. `h'` goes straight into
# `out[t]`, the output the layer returns, which is also the next step's h.

# %%
@triton.jit
def lstm_gates_kernel(a_ptr, c_ptr, h_ptr, B, H, BLOCK: tl.constexpr):
    """One LSTM step's gates. a (B, 4H): the pre-activations i, f, g, o side by side;
    c (B, H): the cell state, updated in place; h (B, H): h' out.
    Grid: cdiv(B*H, BLOCK) programs, each BLOCK of the B*H (row, unit) pairs."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < B * H
    row, unit = idx // H, idx % H
    a = a_ptr + row * (4 * H) + unit  # gate i of (row, unit); f, g, o follow H, 2H, 3H further on
    i = sigmoid(tl.load(a, mask=mask, other=0.0))
    f = sigmoid(tl.load(a + H, mask=mask, other=0.0))
    g = tanh(tl.load(a + 2 * H, mask=mask, other=0.0))
    o = sigmoid(tl.load(a + 3 * H, mask=mask, other=0.0))
    c = f * tl.load(c_ptr + idx, mask=mask, other=0.0) + i * g
    tl.store(c_ptr + idx, c, mask=mask)
    tl.store(h_ptr + idx, o * tanh(c), mask=mask)


@torch.no_grad()
def lstm_v1(x, w_ih, w_hh, b_ih, b_hh, BLOCK=256):
    T, B, _ = x.shape
    H = w_hh.shape[1]
    # the input projection of every step: one GEMM, both biases folded in
    xp = torch.addmm(b_ih + b_hh, x.reshape(T * B, -1), w_ih.t()).view(T, B, 4 * H)
    out = x.new_empty(T, B, H)
    h, c = x.new_zeros(B, H), x.new_zeros(B, H)
    grid = (triton.cdiv(B * H, BLOCK),)
    for t in range(T):
        a = torch.addmm(xp[t], h, w_hh.t())  # launch 1: the one gate matmul (cuBLAS)
        lstm_gates_kernel[grid](a, c, out[t], B, H, BLOCK=BLOCK)  # launch 2: all the gate math
        h = out[t]
    return out


# %% [markdown]
# ## Triton v2 — one kernel per step: the matmul and the gates together
#
# Now move `h W_hhᵀ` into the kernel too, as a small GEMM (lesson 05) whose epilogue is the
# gate math. The grid is 2-D: program (pb, ph) owns BLOCK_B batch rows and BLOCK_H hidden
# units — of *all four gates*, which is the point: unit j's c' needs i, f, g, o of unit j,
# so one program computes four (BLOCK_B, BLOCK_H) accumulators side by side, walking the
# contraction dimension K = H in BLOCK_K chunks:
#
# ```
# acc_i += h[rows, ks] @ W_hh[0H + units, ks]ᵀ      (and f: 1H, g: 2H, o: 3H)
# ```
#
# W_hh is (4H, H) row-major, so the (BLOCK_K, BLOCK_H) tile `W[gate·H + units, ks]ᵀ` is
# read with the row index along the tile's columns — a transpose by pointer arithmetic,
# nothing is copied. Masks (lesson 01) cover the edges: rows ≥ B, units ≥ H and ks ≥ H
# read 0, which adds nothing to a dot. `tl.dot` needs tile sides of at least 16, so B=8
# still uses a 16-row tile, half of it masked.
#
# One new hazard: **the state is now read and written by the same launch.** Every program
# reads *all* H units of h (its contraction) but writes only its own BLOCK_H. Programs run
# in no particular order, so if h were updated in place, a program could read units that
# another program has already overwritten with the next step's values. So h is read from
# one buffer and written to another: here `out[t-1]` → `out[t]`, which exist anyway. (c is
# still safe to update in place: each element is read and written only by its owner.)
#
# Per step: one launch; W_hh read once (1 MiB), spread over the cdiv(B, BLOCK_B) ×
# cdiv(H, BLOCK_H) programs; no (B, 4H) pre-activation ever written to memory. But note
# how few programs there are at B=8: cdiv(256, 32) = 8, so W_hh's megabyte flows through 8
# of the H100's 132 SMs, and a single SM pulls only a fraction of the chip's bandwidth. A
# narrower BLOCK_H gives more programs, each with less work per launch. With the launch
# cost dominating anyway, we predict about half of v1's time: one launch per step, not two.
#
# (Compiled ahead of time for sm_90 as the GPU run launches it, at BLOCK_B = 16,
# BLOCK_H = BLOCK_K = 32 and the default 4 warps: 96 registers a thread with Triton 3.9 and
# 3.6 alike, no spills, 36 KiB of shared memory; reports/sm90-compile-2026-11-29. On the
# H200 it took 37 µs a step, two thirds of v1's 56: the end of the lesson.)

# %%
@triton.jit
def w_tile(w_ptr, gate, units, ks, H):
    """W_hh[gate*H + units, ks]ᵀ, a (BLOCK_K, BLOCK_H) tile of W_hh (4H, H); 0 outside."""
    return tl.load(w_ptr + (gate * H + units)[None, :] * H + ks[:, None],
                   mask=(ks < H)[:, None] & (units < H)[None, :], other=0.0)


@triton.jit
def lstm_step_kernel(xp_ptr, w_ptr, h_ptr, c_ptr, h_next_ptr, B, H,
                     BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    """One LSTM step: a = xp + h W_hhᵀ, the gates, c' (in place) and h'.
    xp (B, 4H) this step's input projection; w (4H, H); h (B, H) read; c (B, H);
    h_next (B, H) written (never h itself: other programs are still reading it).
    Grid: (cdiv(B, BLOCK_B), cdiv(H, BLOCK_H)); a program owns BLOCK_B rows x BLOCK_H units
    of all four gates."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    acc_i = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    acc_f = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    acc_g = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    acc_o = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    for k in range(0, H, BLOCK_K):  # the contraction over h's H units, BLOCK_K at a time
        ks = k + tl.arange(0, BLOCK_K)
        hk = tl.load(h_ptr + rows[:, None] * H + ks[None, :], mask=(rows < B)[:, None] & (ks < H)[None, :],
                     other=0.0)
        acc_i = tl.dot(hk, w_tile(w_ptr, 0, units, ks, H), acc_i, input_precision="ieee")
        acc_f = tl.dot(hk, w_tile(w_ptr, 1, units, ks, H), acc_f, input_precision="ieee")
        acc_g = tl.dot(hk, w_tile(w_ptr, 2, units, ks, H), acc_g, input_precision="ieee")
        acc_o = tl.dot(hk, w_tile(w_ptr, 3, units, ks, H), acc_o, input_precision="ieee")
    # the epilogue: v1's gate math on the accumulators, still in registers
    m = (rows < B)[:, None] & (units < H)[None, :]
    xp = xp_ptr + rows[:, None] * (4 * H) + units[None, :]
    i = sigmoid(acc_i + tl.load(xp, mask=m, other=0.0))
    f = sigmoid(acc_f + tl.load(xp + H, mask=m, other=0.0))
    g = tanh(acc_g + tl.load(xp + 2 * H, mask=m, other=0.0))
    o = sigmoid(acc_o + tl.load(xp + 3 * H, mask=m, other=0.0))
    state = rows[:, None] * H + units[None, :]
    c = f * tl.load(c_ptr + state, mask=m, other=0.0) + i * g
    tl.store(c_ptr + state, c, mask=m)
    tl.store(h_next_ptr + state, o * tanh(c), mask=m)


# 16 everywhere under the interpreter, so the toy sizes still cross block edges
BLOCKS = pick(cpu=dict(BLOCK_B=16, BLOCK_H=16, BLOCK_K=16), gpu=dict(BLOCK_B=16, BLOCK_H=32, BLOCK_K=32))


@torch.no_grad()
def lstm_v2(x, w_ih, w_hh, b_ih, b_hh, BLOCK_B=16, BLOCK_H=32, BLOCK_K=32):
    T, B, _ = x.shape
    H = w_hh.shape[1]
    xp = torch.addmm(b_ih + b_hh, x.reshape(T * B, -1), w_ih.t()).view(T, B, 4 * H)
    out = x.new_empty(T, B, H)
    h, c = x.new_zeros(B, H), x.new_zeros(B, H)
    w_hh = w_hh.contiguous()
    grid = (triton.cdiv(B, BLOCK_B), triton.cdiv(H, BLOCK_H))
    for t in range(T):  # one launch per step
        lstm_step_kernel[grid](xp[t], w_hh, h, c, out[t], B, H, BLOCK_B=BLOCK_B, BLOCK_H=BLOCK_H, BLOCK_K=BLOCK_K)
        h = out[t]  # read by the next step, which writes out[t + 1]
    return out


# %% [markdown]
# ## The final rung — tritonlab's STEP mode
#
# `tritonlab.LSTM(..., backend="triton", algo="step")` runs `_lstm_fwd_kernel` of
# `tritonlab/kernels/rnn.py` once per step — the same design as v2: grid (cdiv(B, BLOCK_B),
# cdiv(H, BLOCK_H)), four gate accumulators, `tl.dot` over K, the gates as the epilogue.
# Read it next to v2; what it adds:
#
# - **The input projection is a Triton GEMM** (`kernels.gemm.matmul`, lesson 05) with
#   b_ih + b_hh fused into its epilogue, instead of cuBLAS.
# - **It saves what the backward needs.** Each step also stores i, f, g, o, the h and c it
#   read and c' (seven (B, H)-sized writes instead of two); `_lstm_bwd_kernel` walks the
#   steps in reverse and turns them into gate gradients, and the weight gradients are then
#   three GEMMs over all steps at once. Forward and backward are registered as a torch
#   custom op, `tritonlab::lstm`, with its backward (`tritonlab/layers/functions/rnn.py`)
#   — lesson 04's autograd.Function idea, in a form torch.compile can trace around.
# - **h rides in a ping-pong pair** of (B, H) buffers — step s reads `[s % 2]` and writes
#   `[(s + 1) % 2]` — the same read-one-write-the-other rule as v2's `out[t-1]` → `out[t]`,
#   in a form that also works when one launch runs many steps (lesson 08).
# - **The cell state is fp32** whatever the input dtype (fp16/bf16 inputs keep c from
#   losing precision over hundreds of steps); gate math is fp32 too.
# - **Packed sequences and the reverse direction**: `_step_rows` maps step s to its rows
#   (per-step row offsets and counts for a PackedSequence; T-1-s when reversed); rows of
#   finished sequences keep their state.
# - **Launch details**: int64 row offsets; the step numbers are `do_not_specialize` (Triton
#   compiles a separate variant for integer arguments equal to 1 or divisible by 16 — it
#   must not recompile every 16th step); 8 warps and BLOCK_H = 32 on a GPU. `_launch` and
#   `_blocks` give the reasons: a register budget, and more programs to spread W_hh's
#   read. The register reason is unproven: the compiles in reports/sm90-compile-2026-11-29
#   show at most 8 B of spills a thread for the fp32 step kernel at 4 warps, and 4 and 8
#   warps were never timed against each other.
# - fp32 inputs use `tl.dot(..., input_precision="ieee")` unless
#   `torch.backends.cuda.matmul.allow_tf32` is on, then TF32.
#
# On the one H200 run, tritonlab's step mode took 41 µs a step, within 10% of v2 (whose
# kernel saves nothing for a backward).

# %%
lab_step = tritonlab.LSTM(I, H, backend="triton", algo="step").to(dev)
lab_step.load_state_dict(lstm_torch.state_dict())  # the same weights, torch.nn's own state_dict keys


def lstm_tritonlab_step():
    with torch.no_grad():
        return lab_step(x)


# %% [markdown]
# ## The ladder
#
# `ladder` validates every version against cuDNN's output first, then (on a GPU only) times
# those that passed and prints milliseconds, GB/s and TFLOP/s against the floor computed
# above. On CPU it validates only: the interpreter runs kernels in Python, so its times mean
# nothing. Compare what a GPU prints with the predictions in the table of the napkin math.

# %%
table_lstm = ladder(f"LSTM forward B={B} T={T} I={I} H={H} float32", {
    "naive": lstm_naive if T * B <= 8192 else "skipped: one Python iteration per step and gate",
    "reference": lstm_reference,
    "torch": lstm_cudnn,
    "triton v1 (addmm + fused gates)": lambda: lstm_v1(x, w_ih, w_hh, b_ih, b_hh),
    "triton v2 (one kernel per step)": lambda: lstm_v2(x, w_ih, w_hh, b_ih, b_hh, **BLOCKS),
    "tritonlab step": lstm_tritonlab_step,
}, expected=expected, cost=cost, baseline="reference")

# %% [markdown]
# What to look for on a GPU: whether times scale with *launches per step*, as predicted,
# or with something else (the "frac_of_floor" column is tiny for every rung at B=8 either
# way). Divide each time by T for the cost of a step. Try `B = 256` (and H = 1024): the
# matmul's FLOPs grow 32× (512× with H = 1024 too), and we expect cuDNN's tuned GEMMs to
# pull ahead of a simple `tl.dot` loop.

# %% [markdown]
# ## Measured: one run on an NVIDIA H200
#
# What this lesson printed on the project's one GPU run so far (2026-11-28, NVIDIA H200,
# torch 2.11, triton 3.6; one run each, times in ms; the whole output is in
# `reports/h200-2026-11-28/tutorials.txt`). Compare it with the predictions above; a
# rerun prints your own device's ladder. The reference rung ran the tier as it was that
# day, with 9 elementwise ops per step instead of today's 6.
#
# ```
# == LSTM forward B=8 T=512 I=256 H=256 float32 — NVIDIA H200
#                         version   rel_err status  ms_p50  ms_p20  ms_p80    GB/s  TFLOP/s  frac_of_floor  x_vs_reference
#                           naive 7.644e-07     ok   346.9   346.9   346.9 0.03023  0.01238      0.0002418          0.1721
#                       reference 3.931e-07     ok   59.71   59.71   59.71  0.1756  0.07193       0.001405               1
#                           torch         0     ok   7.019   6.966   7.069   1.494   0.6119        0.01195           8.507
# triton v1 (addmm + fused gates) 2.621e-07     ok   28.83   28.69   29.07  0.3637    0.149       0.002909           2.071
# triton v2 (one kernel per step) 3.494e-07     ok   19.11   19.09   19.12  0.5488   0.2248        0.00439           3.125
#                  tritonlab step 3.494e-07     ok   20.95   20.94   20.95  0.5006    0.205       0.004005           2.851
# exercise 1: fused GRU gates: not attempted yet (replace the NotImplementedError, then rerun this cell)
# exercise 2: one kernel per RNN step: not attempted yet (replace the NotImplementedError, then rerun this cell)
# ```

# **What the run showed: launches were not the cost of the fused rungs.** Per step (the
# times over T = 512): naive 678 µs, reference 117, v1 56, v2 37, tritonlab step 41, and
# cuDNN 14. The prediction (v2 ≈ one ~5 µs launch a step) missed by ~7×, and the
# benchmark run the same day (`reports/h200-2026-11-28/results.csv`, lstm B8 T512 I256
# H256) shows where the time is not: tritonlab's `persistent-grid` mode, which runs all
# 512 steps in **one** launch, took 20.1 ms against 20.9 ms for its `step` mode's 512
# launches. Removing 511 launches saved ~1.5 µs each; the other ~39 µs of every step is
# GPU work. A launch is host work that overlaps the GPU's: it decides the time only when
# the host takes longer to issue a step than the GPU takes to run it.
#
# That did happen to the reference tier: the benchmark's `graph` row, the same reference
# loop captured once as a CUDA graph and replayed without Python or launches, took
# 9.3 ms against 63.5 ms eager — ~106 µs of every eager step was host time, ~18 µs GPU
# work for its ten small kernels. (Lesson 08 does the same with tritonlab's step mode on a
# smaller model: the graph saves ~22 µs a step of host time there.)
#
# Why ~37–39 µs of GPU work for 4.2 MFLOP and 1 MiB? The napkin model divides work by
# an FMA rate and a bandwidth. With the whole chip's it predicts 0.3 µs a step, and
# misses by over 100×. With only the share of the 8 SMs v2 uses (~1–2 µs, lesson 08's
# per-SM estimate) it still misses by ~20–40×. The likely reason, not yet measured: a
# small step is a **chain of dependent latencies**, not a stream of throughput. Each of
# v2's 8 programs (4 warps, one per SM) walks a serial K loop over H
# in BLOCK_K chunks, each chunk waiting for its W_hh and h loads before its `tl.dot`; too
# few warps run to hide those waits; h goes out to global memory at the end of the step
# and comes back at the start of the next (in the persistent-grid mode, across a grid
# barrier too). cuDNN's 14 µs a step shows the same hardware does better. The data does
# not show how the ~39 µs split between these; it was not measured. What would separate
# host from device time, and device time into parts: the same run at T = 1 and T = N
# (a fixed cost per call against a cost per step), a CUDA graph against eager (lesson
# 08), and a profiler's per-kernel device times (`torch.profiler`, Nsight Systems);
# changing BLOCK_K, BLOCK_H and `num_warps` moves the K loop's length and the warps
# available to hide latency.

# %% [markdown]
# ## Exercises
#
# **Exercise 1 — fused GRU gates.** A GRU (torch.nn.GRU's convention) has three gates r, z,
# n. Given the two projections of one step, `gx = x W_ihᵀ + b_ih` and `gh = h W_hhᵀ + b_hh`
# (both (B, 3H), gates in the order r, z, n), and h (B, H):
#
# ```
# r = σ(gx_r + gh_r)      z = σ(gx_z + gh_z)
# n = tanh(gx_n + r ⊙ gh_n)                      # r gates the *projected* h
# h' = (1 - z) ⊙ n + z ⊙ h
# ```
#
# Write one elementwise Triton kernel (like v1's) that computes h' and return it. The check
# compares with `torch.nn.GRUCell`.

# %%
def exercise_1(gx, gh, h):
    """h' of one GRU step from gx, gh (B, 3H) and h (B, H), by one Triton kernel with a
    grid over the B*H (row, unit) pairs. Return h' (B, H)."""
    # @triton.jit
    # def gru_gates_kernel(gx_ptr, gh_ptr, h_ptr, out_ptr, B, H, BLOCK: tl.constexpr):
    #     idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    #     mask = idx < B * H
    #     row, unit = idx // H, idx % H
    #     ...  # gate r of (row, unit) is at row * 3H + unit, z at + H, n at + 2H
    raise NotImplementedError


def check_1(fn=None):
    fn = fn or exercise_1  # looked up now, so a rerun exercise cell counts
    g = torch.Generator().manual_seed(1)
    cell = nn.GRUCell(8, 20)
    xt, h = torch.randn(3, 8, generator=g), torch.randn(3, 20, generator=g)
    with torch.no_grad():
        want = cell(xt, h)
        gx = torch.addmm(cell.bias_ih, xt, cell.weight_ih.t())
        gh = torch.addmm(cell.bias_hh, h, cell.weight_hh.t())
    return exercise("1: fused GRU gates", lambda: fn(gx.to(dev), gh.to(dev), h.to(dev)), expected=want.to(dev))


# %%
check_1()

# %% [markdown]
# **Exercise 2 — one kernel per step for a plain RNN.** `torch.nn.RNN` (tanh) has a
# single gate: `h' = tanh(x_t W_ihᵀ + b_ih + h W_hhᵀ + b_hh)`, W_hh (H, H). Write v2's
# design for it: the input projection as one torch GEMM before the loop, then per step one
# Triton kernel with a 2-D grid over (batch rows, hidden units) that does the `tl.dot` over
# K and the tanh. Return every step's h, (T, B, H). The check uses H = 40, so your blocks
# must handle edges (masks) and, with BLOCK_H = 16 or 32, more than one hidden block —
# and remember which buffer you must not write.

# %%
def exercise_2(x, w_ih, w_hh, b_ih, b_hh):
    """torch.nn.RNN's forward from zero initial state: x (T, B, I), w_ih (H, I),
    w_hh (H, H), b_ih, b_hh (H,). One Triton kernel launch per step. Return (T, B, H)."""
    # @triton.jit
    # def rnn_step_kernel(xp_ptr, w_ptr, h_ptr, h_next_ptr, B, H,
    #                     BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    #     rows = ...; units = ...
    #     acc = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    #     for k in range(0, H, BLOCK_K):
    #         ...  # acc = tl.dot(h tile (BLOCK_B, BLOCK_K), W_hh[units, ks]ᵀ tile (BLOCK_K, BLOCK_H), acc)
    #     ...  # tanh(acc + xp), store to h_next
    raise NotImplementedError


def check_2(fn=None):
    fn = fn or exercise_2  # looked up now, so a rerun exercise cell counts
    g = torch.Generator().manual_seed(2)
    rnn = nn.RNN(8, 40)
    xs = torch.randn(4, 5, 8, generator=g)
    with torch.no_grad():
        want, _ = rnn(xs)
    w = [p.detach().to(dev) for p in (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)]
    return exercise("2: one kernel per RNN step", lambda: fn(xs.to(dev), *w), expected=want.to(dev))


# %%
check_2()

# %% [markdown]
# ## What's next
#
# v2 is down to one launch per step, yet on the H200 its step still took ~37 µs of GPU
# work, with W_hh and the state re-read from memory every step. Lesson
# 08 (`08_persistent_rnn.py`) puts the time loop *inside* the kernel — one launch for the
# whole sequence, state and weights kept on chip — and meets the problem that comes with
# it: programs that must wait for each other (a grid barrier), which Triton's interpreter
# cannot run.
