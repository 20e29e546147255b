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
# # 08 · Persistent recurrence: one launch for the whole sequence
#
# Lesson 07 fused one LSTM step into one kernel and predicted that at small batch the
# step would cost about one kernel launch (~5 µs). The H200 measured ~37–41 µs a step
# at B = 8, H = 256 — GPU work, not launches: a one-launch kernel took as long. Launches
# cost host time, and decide the speed only where the host takes longer to issue a step
# than the GPU takes to run it. Either way, every launch starts from scratch: it reads
# W_hh (4H·H numbers) from memory again, and the state h, c makes a round trip through
# memory. This lesson takes the time loop into the kernel and measures what a step costs
# then.
#
# **The new idea: a persistent kernel.** Launch once and put the time loop *inside* the
# kernel: each program runs all T steps, and keeps what it can on chip between them —
# the weights, the state. The catch is that step t+1 needs *all* of step t's h. Where one
# program computes all hidden units of its batch rows that is easy (its own threads
# synchronise with a block barrier). Where several programs share the hidden units — to
# use more SMs — they must wait for each other after every step: a **grid barrier**, which
# is a different beast, and one that Triton's interpreter cannot run.
#
# The ladder: step-per-launch → a persistent kernel written here → one that keeps W_hh and
# h on chip → tritonlab's `algo="persistent"` and `algo="persistent-grid"`, all checked
# against `torch.nn.LSTM`/`GRU`; and CUDA graphs as the other way to get rid of launches.

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
# As in lesson 07: float32 with TF32 off on every rung, weights from `torch.nn.LSTM`, whose
# output is the expected answer, forward only. A helper builds every contender for one
# size: the scratch tiers, cuDNN, tritonlab's layer in each `algo`, and CUDA-graph replays.
#
# `CudaGraphed` is the benchmark's own `graph` provider (`tritonlab/bench/providers.py`): it
# records every kernel a module launches in one call as a CUDA graph, then replays the
# graph with a single launch. The GPU still runs each recorded kernel, one after another;
# what disappears is the CPU's work of launching them.

# %%
from torch import nn

import tritonlab
from tritonlab.bench.ops import OPS
from tritonlab.bench.providers import CudaGraphed
from tritonlab.kernels._math import sigmoid, tanh  # σ and tanh from tl.exp: the interpreter has no libdevice
from tritonlab.scratch import rnn as scratch_rnn

torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 on every rung
torch.backends.cudnn.allow_tf32 = False
dev = device()
GPU = torch.cuda.is_available()


def forward(module, x):
    """A zero-argument callable: module(x) without autograd (we time the forward)."""
    def run():
        with torch.no_grad():
            return module(x)
    return run


def contenders(kind, B, T, I, H, seed=0):
    """Input, expected output, cost and the versions every ladder of this lesson shares,
    for `kind` "lstm" or "gru" at (B, T, I, H)."""
    torch.manual_seed(seed)
    ref = (nn.LSTM if kind == "lstm" else nn.GRU)(I, H).to(dev)  # cuDNN on a GPU
    x = torch.randn(T, B, I, device=dev)
    with torch.no_grad():
        expected, _ = ref(x)
    weights = [tuple(p.detach() for p in ref.parameters()) + (None,)]  # (w_ih, w_hh, b_ih, b_hh, w_hr)
    lab_cls = tritonlab.LSTM if kind == "lstm" else tritonlab.GRU

    def lab(**kw):
        m = lab_cls(I, H, **kw).to(dev)
        m.load_state_dict(ref.state_dict())
        return m

    scratch = {"lstm": (scratch_rnn.lstm_naive, scratch_rnn.lstm_reference),
               "gru": (scratch_rnn.gru_naive, scratch_rnn.gru_reference)}[kind]
    no_graph = "skipped: CUDA graphs need a CUDA device"
    versions = {
        "naive": lambda: scratch[0](x, None, weights),
        "reference": lambda: scratch[1](x, None, weights),
        "torch": forward(ref, x),
        "graph: reference": forward(CudaGraphed(lab(backend="reference")), x) if GPU else no_graph,
        "tritonlab step": forward(lab(backend="triton", algo="step"), x),
        "graph: tritonlab step": forward(CudaGraphed(lab(backend="triton", algo="step")), x) if GPU else no_graph,
        "tritonlab persistent": forward(lab(backend="triton", algo="persistent"), x),
        "tritonlab persistent-grid": forward(lab(backend="triton", algo="persistent-grid"), x),
    }
    cost = OPS[kind].cost({"b": B, "t": T, "i": I, "h": H}, "fwd", 4)
    return x, weights[0][:4], expected, cost, versions


# %% [markdown]
# ## Napkin math: what a step costs, launched or persistent
#
# Per step of an LSTM (float32, 4 bytes; lesson 07): 8·B·H² FLOPs for `h W_hhᵀ`, and W_hh
# is 16·H² bytes, so B/2 FLOPs per byte of weight. Two sizes:
#
# | | the DNA char model (`tritonlab.models`): B=64, H=64, T=128 | the benchmark's batch-1 case: B=1, H=256, T=512 |
# |---|---|---|
# | FLOPs per step | 2.1 M | 0.5 M (8.4 M with B padded to a 16-row `tl.dot` tile) |
# | W_hh per step | 64 KiB | 1 MiB |
# | at full-chip fp32 speed (67 TFLOP/s, 3.35 TB/s) | 0.03 µs | 0.3 µs (reading W_hh) |
# | one launch per step | 128 × ~5 µs ≈ 0.6 ms | 512 × ~5 µs ≈ 2.6 ms |
#
# By this model the launches outweigh the work ~15–160 times over, and a persistent kernel
# pays one launch. (Lesson 07's H200 run already disagreed at B = 8, H = 256. This
# lesson's H200 run, at the end, measured the char model; its batch-1 ladder was cut by
# the run's time limit.)
#
# But a persistent kernel pays something else: **who does the step's work**. With one
# program per block of 16 batch rows, the char model has 4 programs — 4 of the H100's 132
# SMs do everything (tritonlab takes 32-row blocks above B = 16: 2 programs) — and the B=1
# case has *one*. One SM gets about 1/132 of the chip: ~0.5 TFLOP/s of fp32 FMA, and on
# the order of 100 GB/s from L2 (an estimate, not measured here). So:
#
# - char model, one program per 16 rows: 0.5 MFLOP per program per step ≈ 1 µs, and 64 KiB
#   of W_hh ≈ 0.7 µs if it is re-read — persistent should beat step-per-launch by ~3–5×;
# - B=1, H=256: 8.4 MFLOP (mostly padding) ≈ 17 µs and 1 MiB of W_hh ≈ 10 µs *per step*, on
#   one SM — *slower* than launching a kernel per step that spreads the work over 8–16 SMs.
#
# That second line is why the hidden units must be split over many programs again once H
# is large — and then the programs have to wait for each other every step. Keep both
# sizes in mind; the lesson runs a ladder for each. (On the H200 the per-SM estimate
# missed by 10–20×: the persistent kernels took 17–21 µs a step on the char model, not
# ~1, and one program walking H = 256 at B = 8 took ~286 µs a step, not ~27. The end of
# the lesson says what the model leaves out.)

# %% [markdown]
# ## Triton v1 — persistent: one program per batch block walks all T steps
#
# Lesson 07's v2 kernel with two loops moved inside it:
#
# ```
# program pb (rows pb·BLOCK_B …):
#     for t in 0 … T-1:                        # the time loop, on the GPU
#         for each block of BLOCK_H hidden units:   # all H units: this program owns them all
#             4 gate accumulators += h_t[rows, ks] @ W_hh[gate·H + units, ks]ᵀ   (K loop)
#             gates, c' (in place), h_{t+1}[rows, units]
#         block barrier                          # h_{t+1} complete before step t+1 reads it
# ```
#
# Two things need care.
#
# **Where h lives between steps.** A program's hidden-unit blocks are computed one after
# another, and each block's matmul reads *all* of h_t. So h_{t+1} must not overwrite h_t
# while later blocks still read it — lesson 07's rule, now inside one program. We keep one
# (B, H) slot per step, `hs` of shape (T+1, B, H): step t reads `hs[t]` and writes
# `hs[t+1]`, and `hs[1:]` is the output. No h address is ever written twice, which also
# sidesteps stale caches (below).
#
# **The block barrier.** `tl.debug_barrier()` is CUDA's `__syncthreads()`: every thread of
# the program waits until all of them arrive, and memory writes made before it are visible
# to the program's threads after it. Without it, a warp that finishes step t early could
# start step t+1 and read `hs[t+1]` entries that another warp of the same program has not
# written yet. (Under the interpreter a program is one Python thread, so the barrier is a
# no-op there — but on a GPU it is what makes the kernel correct.)
#
# Costs: one launch. Per step, W_hh is still re-read (from L2: 64 KiB at H=64, 1 MiB at
# H=256) and h makes a trip through memory (B·H·4 bytes: small). Grid: cdiv(B, BLOCK_B)
# programs.

# %%
@triton.jit
def w_tile(w_ptr, gate, units, ks, H, W_T: tl.constexpr = False):
    """W_hh[gate*H + units, ks]ᵀ, a (len(ks), len(units)) tile of W_hh (4H, H); 0 outside.
    W_T (v3, below): the same tile read from W_hhᵀ (H, 4H) row-major, units contiguous."""
    if W_T:
        offsets = ks[:, None] * (4 * H) + (gate * H + units)[None, :]
    else:
        offsets = (gate * H + units)[None, :] * H + ks[:, None]
    return tl.load(w_ptr + offsets, mask=(ks < H)[:, None] & (units < H)[None, :], other=0.0)


@triton.jit
def lstm_persistent_kernel(xp_ptr, w_ptr, hs_ptr, c_ptr, T, B, H,
                           BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    """All T steps of an LSTM in one launch. xp (T, B, 4H) input projections with both
    biases; w (4H, H) W_hh; hs (T+1, B, H): hs[0] = h0 in, hs[t+1] = step t's h out;
    c (B, H) cell state, updated in place.
    Grid: (cdiv(B, BLOCK_B),); a program owns BLOCK_B rows and all H units, for all steps."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    for t in range(T):
        h_ptr = hs_ptr + t * B * H  # the h this step reads ...
        h_next_ptr = h_ptr + B * H  # ... and the one it writes
        xp_t = xp_ptr + t * B * 4 * H
        for j in range(0, H, BLOCK_H):
            units = j + tl.arange(0, BLOCK_H)
            acc_i = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
            acc_f = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
            acc_g = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
            acc_o = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
            for k in range(0, H, BLOCK_K):
                ks = k + tl.arange(0, BLOCK_K)
                hk = tl.load(h_ptr + rows[:, None] * H + ks[None, :], mask=(rows < B)[:, None] & (ks < H)[None, :],
                             other=0.0)
                acc_i = tl.dot(hk, w_tile(w_ptr, 0, units, ks, H), acc_i, input_precision="ieee")
                acc_f = tl.dot(hk, w_tile(w_ptr, 1, units, ks, H), acc_f, input_precision="ieee")
                acc_g = tl.dot(hk, w_tile(w_ptr, 2, units, ks, H), acc_g, input_precision="ieee")
                acc_o = tl.dot(hk, w_tile(w_ptr, 3, units, ks, H), acc_o, input_precision="ieee")
            m = (rows < B)[:, None] & (units < H)[None, :]
            xp = xp_t + rows[:, None] * (4 * H) + units[None, :]
            i = sigmoid(acc_i + tl.load(xp, mask=m, other=0.0))
            f = sigmoid(acc_f + tl.load(xp + H, mask=m, other=0.0))
            g = tanh(acc_g + tl.load(xp + 2 * H, mask=m, other=0.0))
            o = sigmoid(acc_o + tl.load(xp + 3 * H, mask=m, other=0.0))
            state = rows[:, None] * H + units[None, :]
            c = f * tl.load(c_ptr + state, mask=m, other=0.0) + i * g
            tl.store(c_ptr + state, c, mask=m)
            tl.store(h_next_ptr + state, o * tanh(c), mask=m)
        tl.debug_barrier()  # step t's h is written, by all threads, before step t+1 reads it


# 16 everywhere under the interpreter, so the toy sizes still cross block edges
BLOCKS = pick(cpu=dict(BLOCK_B=16, BLOCK_H=16, BLOCK_K=16), gpu=dict(BLOCK_B=16, BLOCK_H=32, BLOCK_K=32))


@torch.no_grad()
def lstm_persistent(x, w_ih, w_hh, b_ih, b_hh, BLOCK_B=16, BLOCK_H=32, BLOCK_K=32):
    T, B, _ = x.shape
    H = w_hh.shape[1]
    xp = torch.addmm(b_ih + b_hh, x.reshape(T * B, -1), w_ih.t())  # every step's input projection
    hs = x.new_zeros(T + 1, B, H)  # hs[0] = h0 = 0
    c = x.new_zeros(B, H)
    lstm_persistent_kernel[(triton.cdiv(B, BLOCK_B),)](xp, w_hh.contiguous(), hs, c, T, B, H, BLOCK_B=BLOCK_B,
                                                       BLOCK_H=BLOCK_H, BLOCK_K=BLOCK_K, num_warps=8)
    return hs[1:]


# %% [markdown]
# ## Triton v2 — W_hh and h on chip
#
# v1 still re-reads W_hh every step. If one program's share of W_hh fits on chip, load it
# *once*, before the time loop, and keep it there for all T steps. For a program that owns
# all H units that is all of W_hh: four (H, H) tiles, 64 KiB in fp32 at H = 64 — it fits
# (an SM has 256 KiB of registers and up to 227 KiB of shared memory), at H = 256 (1 MiB)
# it does not. So v2 is a small-H kernel: H ≤ 64 here.
#
# With a single BLOCK_H = H_PAD ≥ H covering all units, h needs no trip through memory at
# all: the (BLOCK_B, H_PAD) tile of h' that the epilogue computes *is* the next step's
# `tl.dot` operand, so it stays a loop variable, on chip. Per step, the kernel reads only
# xp_t and writes only out_t. Padded units (H ≤ u < H_PAD) read zero weights and inputs and
# stay exactly 0, so they never disturb the real ones.
#
# An honest detail: c goes through memory here (its owner's (BLOCK_B, H) rows, read and
# written once per step, so it stays in the SM's L1). Carrying c in registers as well is
# the obvious design, but compiling that version ahead of time for sm_90 with Triton 3.9
# while writing this lesson hit an assertion inside LLVM's SLP vectorizer; this version
# compiles (8 warps, BLOCK_B = 16, H_PAD = 64: 80 registers a thread with Triton 3.9 and
# 3.6 alike, no spills, 68 KiB of shared memory for the weight tiles;
# reports/sm90-compile-2026-11-29). The barrier at the end of each step orders c's and
# out's writes before the next step's reads.
#
# Prediction (char model): per step only the ~1 µs of one SM's arithmetic is left, so
# somewhat faster than v1; it cannot use more than cdiv(B, 16) SMs either.

# %%
@triton.jit
def lstm_on_chip_kernel(xp_ptr, w_ptr, c_ptr, out_ptr, T, B, H, BLOCK_B: tl.constexpr, H_PAD: tl.constexpr,
                        W_T: tl.constexpr):
    """All T steps of an LSTM, W_hh and h kept on chip: xp (T, B, 4H); w (4H, H) W_hh, or
    (H, 4H) W_hhᵀ if W_T (v3), with H <= H_PAD; c (B, H) scratch for the cell state, zero
    on entry; out (T, B, H).
    Grid: (cdiv(B, BLOCK_B),); a program owns BLOCK_B rows and all H units."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    units = tl.arange(0, H_PAD)
    w_i = w_tile(w_ptr, 0, units, units, H, W_T)  # all of W_hh, read once: four (H_PAD, H_PAD) tiles
    w_f = w_tile(w_ptr, 1, units, units, H, W_T)
    w_g = w_tile(w_ptr, 2, units, units, H, W_T)
    w_o = w_tile(w_ptr, 3, units, units, H, W_T)
    m = (rows < B)[:, None] & (units < H)[None, :]
    state = rows[:, None] * H + units[None, :]
    h = tl.zeros((BLOCK_B, H_PAD), tl.float32)  # h0 = 0; then each step's h', never leaving the chip
    for t in range(T):
        xp = xp_ptr + (t * B + rows)[:, None] * (4 * H) + units[None, :]
        i = sigmoid(tl.dot(h, w_i, input_precision="ieee") + tl.load(xp, mask=m, other=0.0))
        f = sigmoid(tl.dot(h, w_f, input_precision="ieee") + tl.load(xp + H, mask=m, other=0.0))
        g = tanh(tl.dot(h, w_g, input_precision="ieee") + tl.load(xp + 2 * H, mask=m, other=0.0))
        o = sigmoid(tl.dot(h, w_o, input_precision="ieee") + tl.load(xp + 3 * H, mask=m, other=0.0))
        c = f * tl.load(c_ptr + state, mask=m, other=0.0) + i * g
        tl.store(c_ptr + state, c, mask=m)
        h = o * tanh(c)
        tl.store(out_ptr + t * B * H + state, h, mask=m)
        tl.debug_barrier()


ON_CHIP_MAX_H = 64


@torch.no_grad()
def lstm_on_chip(x, w_ih, w_hh, b_ih, b_hh, BLOCK_B=16, transposed=False):
    """v2, or v3 with transposed=True (the kernel reads W_hhᵀ, copied once per call)."""
    T, B, _ = x.shape
    H = w_hh.shape[1]
    xp = torch.addmm(b_ih + b_hh, x.reshape(T * B, -1), w_ih.t())
    out = x.new_empty(T, B, H)
    c = x.new_zeros(B, H)
    w = w_hh.t().contiguous() if transposed else w_hh.contiguous()
    lstm_on_chip_kernel[(triton.cdiv(B, BLOCK_B),)](xp, w, c, out, T, B, H, BLOCK_B=BLOCK_B,
                                                    H_PAD=max(16, triton.next_power_of_2(H)), W_T=transposed,
                                                    num_warps=8)
    return out


# %% [markdown]
# ## Triton v3 — the same kernel, W_hh transposed in memory
#
# v2 keeps its four W_hh tiles in shared memory and reads them there every step. With
# float32 and TF32 off, `tl.dot` is not a tensor-core instruction: Triton lowers it to
# FFMA, each thread multiplying a row of h into a few columns of W. So in each read, the
# 32 threads of a warp fetch 32 different columns of W at the same k. How fast that is
# depends on where those 32 words sit. Shared memory is 32 **banks**, 4 bytes wide, and
# address a lies in bank (a / 4) mod 32. A warp's read is served in as many passes
# ("wavefronts") as the most words it needs from any one bank (a word read by several
# threads counts once).
#
# v2 reads W_hh (4H, H) row by row of memory, so k is contiguous: column n of a tile
# starts 64 × 4 = 256 bytes after column n−1. The compiled kernel (sm_90, Triton 3.6
# and 3.9) gives each thread two columns, so the threads of a warp start 512 bytes
# apart. 512 is a multiple of 128 (32 banks × 4 bytes), so all 32 threads hit the same
# banks: each 16-byte read (`LDS.128`) needs 32 passes instead of 4. The loop has 128
# such reads of W a warp per step. By that count, and at one pass a cycle, the SM's
# shared memory needs ~8 warps × 128 × 32 ≈ 33,000 cycles a step, ~17 µs at 1.98 GHz.
# That is an estimate from the compiled code (reports/sm90-compile-2026-11-29 lists the
# instruction counts), not a measurement; a profiler's bank-conflict counter would say.
#
# v3 changes one thing: it reads W_hhᵀ (H, 4H), copied once per call, so a tile's
# columns are contiguous and Triton stores them that way in shared memory (`order =
# [1, 0]` in the compiled kernel's layout, where v2 has `[0, 1]`). A warp's 32 threads
# then read 64 neighbouring columns at one k: 256 contiguous bytes, 2 passes for each of
# its 256 8-byte reads (`LDS.64`) a step, ~4,400 passes a step for the SM, ~2 µs.
#
# Prediction: if the bank conflicts are what v2's step waits on, v3's step drops from
# ~17 µs toward a few µs; if v3 is no faster, the estimate above is wrong and the step
# waits on something else. Not yet run on a GPU.
#
# tritonlab's forward kernels had the same pattern in fp32 with TF32 off (16- to 32-way
# by the same reading of their compiled layouts) and now take the same step: they read
# W_hhᵀ there (`_transposed_w` in `tritonlab/kernels/rnn.py`). Tensor-core dots (TF32,
# fp16, bf16) read through swizzled layouts and keep W_hh. Also not yet timed.

# %% [markdown]
# ## tritonlab's persistent modes
#
# `tritonlab/kernels/rnn.py` runs one kernel, `_lstm_fwd_kernel`, in three modes; a
# compile-time `MODE` picks the grid and what happens at the end of each step
# (`_end_step`):
#
# | algo= | launches | grid | a program owns | end of a step |
# |---|---|---|---|---|
# | `"step"` (lesson 07) | T | (cdiv(B, BLOCK_B), cdiv(H, BLOCK_H)) | BLOCK_B rows × BLOCK_H units | the kernel ends: the next launch waits |
# | `"persistent"` (our v1) | 1 | (cdiv(B, BLOCK_B), 1) | BLOCK_B rows × all H units | `tl.debug_barrier()` |
# | `"persistent-grid"` | 1 | step's grid, ≤ one program per SM | BLOCK_B rows × BLOCK_H units | a **grid barrier** over the programs of its batch block |
#
# `"persistent"` is v1 with the extras lesson 07 listed (packed sequences, reverse
# direction, saved activations for the backward, fp32 cell state, a Triton GEMM for the
# projection); its h rides in a ping-pong pair of (B, H) buffers rather than our (T+1, B, H)
# — with packed sequences the output rows of a step do not hold every sequence's state.
# It re-reads W_hh each step, as v1 does, with BLOCK_H = 64 on a GPU. Under the
# interpreter `"auto"` picks it when H ≤ 256 (`PERSISTENT_MAX_H` in
# `tritonlab/layers/functions/rnn.py`) and `"step"` above. On a GPU the measurement
# bore out the napkin math's second line (one SM doing all of a large H loses to a
# launch per step): at B = 8, H = 256 one program walking all of H took 146 ms for the
# LSTM forward where `"step"` took 20.9 (H200), so there `"auto"` never picks it.
#
# `"persistent-grid"` splits the hidden units over programs as `"step"` does — so W_hh's
# bytes and the FLOPs spread over many SMs again — and keeps each program's slice of
# W_hh (4·BLOCK_H rows × H) on chip for the whole sequence when it fits
# (`RESIDENT_ELEMENTS` = 16384 elements, e.g. H = 256 with BLOCK_H = 16, and 16-row batch
# blocks). Then a step reads only h (B·H numbers, from L2) — but h comes from *every*
# program of the batch block, so after each step they must all wait for each other.

# %% [markdown]
# ## The grid barrier, and why the interpreter cannot run it
#
# Triton has no grid-wide barrier instruction; `_end_step` builds one from an atomic
# counter per batch block (`sync[pb]`, zeroed before the launch):
#
# ```
# tl.debug_barrier()                                   # all my threads' h stores are issued
# tl.atomic_add(count, 1, sem="release", scope="gpu")  # "I am done with step s", publishing them
# while atomic_read(count, sem="acquire") < (s + 1) * num_programs(1):   # everyone done with s?
#     spin                                               # (gives up after MAX_SPINS reads)
# tl.debug_barrier()                                   # none of my threads reads before the wait ends
# ```
#
# The counter only grows, so step s waits for (s+1) × (programs per batch block) arrivals
# and never needs resetting. The `release`/`acquire` pair is what makes the other programs'
# h stores *visible*, not just finished: a release publishes everything this thread (and,
# after the block barrier, its program) wrote before it; an acquire that reads that value
# sees those writes. Loads of other programs' h also use `cache_modifier=".cg"` (L2 only):
# an SM's L1 cache is not kept coherent with other SMs' writes, and the ping-pong buffer
# reuses the same addresses every second step, so an L1 line could hold a stale h.
#
# **The barrier is only safe if every program of the grid is running at the same time.** A
# spinning program keeps its place on its SM until it gets past the barrier; if some
# program it waits for could only start once a running one finishes, both would wait
# forever. CUDA's answer is a cooperative launch, which refuses to start a grid that does
# not fit at once. tritonlab instead sizes the grid to at most one program per SM:
# `_grid_block_h` tries BLOCK_H = 16, 32, 64, 128 and takes the first with
# cdiv(B, BLOCK_B) · cdiv(H, BLOCK_H) ≤ number of SMs, else raises a ValueError. It also
# keeps a safety net, since another kernel occupying SMs at the same time could still break
# the co-residency assumption: after `MAX_SPINS` reads a program gives up and raises a
# flag, and the launcher turns the flag into a RuntimeError instead of a hang.
#
# **Triton's interpreter runs the programs of a grid one after another**, each to
# completion, in a Python loop. Program 0 would spin waiting for program 1, which the
# interpreter starts only after program 0 returns: a deadlock. The toy kernel below shows
# it: every program adds 1 to a counter and waits (a few spins at most) for all of them
# to arrive, then records how many it saw. On a GPU each sees all of them; under the
# interpreter, program k sees k + 1.
#
# So tritonlab does, under the interpreter (see `_grid_block_h` in
# `tritonlab/kernels/rnn.py`): it allows `"persistent-grid"` only when H ≤ 16, where there
# is a single hidden block, so each batch block's "grid" barrier has exactly one
# participant and never waits — the code path runs and is tested, the waiting is not. For
# larger H it raises a ValueError that says to use `"step"` or `"persistent"` (our CPU
# ladders skip it there). That is the project's rule (in its design notes, DESIGN.md,
# kept beside the repository in `../shared/`, not in it): a kernel whose programs wait on
# each other needs a sequential variant under the interpreter. On a GPU `algo="auto"` picks
# `"persistent-grid"` where its programs fit at once and H ≤ 256, and `"step"` elsewhere.
# Two sizes in that range have been measured, and at both it was the fastest of tritonlab's
# three modes (the H200 run at the end of this lesson, B = 64, H = 64; the benchmark's
# B = 8, H = 256); the rest of the range is an extrapolation.

# %%
@triton.jit
def toy_barrier_kernel(count_ptr, seen_ptr, MAX_SPINS: tl.constexpr):
    """Each program arrives at a grid barrier and records how many programs it saw arrive
    before it stopped waiting (all of them, or as many as had after MAX_SPINS reads)."""
    tl.atomic_add(count_ptr, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")  # an atomic read
    spins = 0
    while (seen < tl.num_programs(0)) & (spins < MAX_SPINS):
        seen = tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")
        spins += 1
    tl.store(seen_ptr + tl.program_id(0), seen)


programs = 4  # far fewer than the SMs of any GPU: all resident at once there
count = torch.zeros(1, dtype=torch.int32, device=dev)
seen = torch.zeros(programs, dtype=torch.int32, device=dev)
toy_barrier_kernel[(programs,)](count, seen, MAX_SPINS=pick(cpu=50, gpu=1 << 20))
print(f"arrivals each program saw: {seen.tolist()}",
      "(a GPU: every program waited for all)" if GPU else "(the interpreter: program k ran alone after k others)")

# %% [markdown]
# ## CUDA graphs: fewer launches, same traffic
#
# The other way to get rid of launch overhead needs no new kernel: record the T steps'
# launches once as a CUDA graph and replay them with one call (`CudaGraphed`, above). The
# CPU cost of T × (a few) launches goes; what stays is everything the GPU does per kernel:
# each kernel still starts, runs and drains in turn (a gap of the order of a microsecond
# between dependent kernels), still re-reads W_hh, still passes h and c through memory. So
# we predict a graph of the step kernels between step-per-launch and the persistent
# kernels; a graph of the reference tier (7 kernels per step today, 10 in the H200 run at
# the end) well behind a graph of tritonlab's step mode (1 kernel per step). Graphs have
# constraints of their own: fixed shapes and addresses (a replay reuses the recorded
# tensors), and no CPU work inside.
#
# And the bar moves: for H ≤ 192, PyTorch asks cuDNN for its persistent RNN algorithm
# (`CUDNN_RNN_ALGO_PERSIST_STATIC_SMALL_H`, in `get_algo` of PyTorch's
# `aten/src/ATen/native/cudnn/RNN.cpp`, for the forward of LSTM/GRU in fp32 and fp16, not
# packed input), so at the char model's size `torch` *is* a persistent kernel. At H = 256
# in fp32 it takes cuDNN's standard algorithm.

# %% [markdown]
# ## Ladder 1 — the DNA char model's LSTM (H = 64)
#
# Predictions (made before any GPU run, like lesson 07's; on a GPU the ladder prints what
# happens, and the end of the lesson compares): the naive and reference tiers
# far behind; graphs 2–5× faster than their eager versions; `tritonlab step` at ~5 µs per
# step; the persistent kernels (v1, v2, tritonlab persistent) several times faster than
# step, v2 a little ahead of v1; cuDNN (persistent here) the one to beat.
# `persistent-grid` at B = 64 uses 32-row batch blocks, so its W_hh slice is not kept
# resident; it spreads each step over 8 programs but pays a grid barrier per step (a few
# atomic round trips through L2, ~1–2 µs by estimate), so we do not expect it to beat
# `persistent` at H = 64.

# %%
B, T, I, H = pick(cpu=(3, 8, 16, 32), gpu=(64, 128, 16, 64))
x, (w_ih, w_hh, b_ih, b_hh), expected, cost, versions = contenders("lstm", B, T, I, H)
versions["triton v1: persistent"] = lambda: lstm_persistent(x, w_ih, w_hh, b_ih, b_hh, **BLOCKS)
versions["triton v2: W_hh, h on chip"] = (lambda: lstm_on_chip(x, w_ih, w_hh, b_ih, b_hh)) if H <= ON_CHIP_MAX_H \
    else f"skipped: H={H} > {ON_CHIP_MAX_H}: W_hh does not fit on chip"
versions["triton v3: v2, W_hhᵀ in memory"] = (
    (lambda: lstm_on_chip(x, w_ih, w_hh, b_ih, b_hh, transposed=True)) if H <= ON_CHIP_MAX_H
    else f"skipped: H={H} > {ON_CHIP_MAX_H}: W_hh does not fit on chip")
if not GPU and H > 16:
    versions["tritonlab persistent-grid"] = "skipped: its programs wait on each other (interpreter: H <= 16 only)"
order = ["naive", "reference", "torch", "graph: reference", "tritonlab step", "graph: tritonlab step",
         "triton v1: persistent", "triton v2: W_hh, h on chip", "triton v3: v2, W_hhᵀ in memory",
         "tritonlab persistent", "tritonlab persistent-grid"]
table_char_model = ladder(f"LSTM forward B={B} T={T} I={I} H={H} float32 (char model)",
                          {k: versions[k] for k in order}, expected=expected, cost=cost, baseline="tritonlab step")

# %% [markdown]
# ## Ladder 2 — batch 1, H = 256: the case the napkin math calls launch-bound
#
# Predictions (not yet tested: the H200 run stopped before this ladder): `tritonlab step`
# ~512 × 5 µs ≈ 2.6 ms and its graph below that; v1 and `tritonlab persistent` *slower*
# than step (one SM does a 16-row-padded step and streams 1 MiB of W_hh, ~17 + 10 ≈ 27 µs
# a step by the napkin math); v2 does not apply (H > 64);
# `persistent-grid` — 16 programs of 16 hidden units, each holding its 64 KiB slice of
# W_hh on chip, a grid barrier per step — the fastest Triton rung if the barrier costs the
# couple of microseconds we guess, and the one with a chance against cuDNN here.

# %%
B, T, I, H = pick(cpu=(1, 8, 16, 48), gpu=(1, 512, 128, 256))
x, (w_ih, w_hh, b_ih, b_hh), expected, cost, versions = contenders("lstm", B, T, I, H, seed=1)
versions["triton v1: persistent"] = lambda: lstm_persistent(x, w_ih, w_hh, b_ih, b_hh, **BLOCKS)
versions["triton v2: W_hh, h on chip"] = (lambda: lstm_on_chip(x, w_ih, w_hh, b_ih, b_hh)) if H <= ON_CHIP_MAX_H \
    else f"skipped: H={H} > {ON_CHIP_MAX_H}: W_hh does not fit on chip"
versions["triton v3: v2, W_hhᵀ in memory"] = (
    (lambda: lstm_on_chip(x, w_ih, w_hh, b_ih, b_hh, transposed=True)) if H <= ON_CHIP_MAX_H
    else f"skipped: H={H} > {ON_CHIP_MAX_H}: W_hh does not fit on chip")
if not GPU and H > 16:
    versions["tritonlab persistent-grid"] = "skipped: its programs wait on each other (interpreter: H <= 16 only)"
order.remove("naive")  # the scratch tiers are known to be slow; keep the GPU run short
table_batch1 = ladder(f"LSTM forward B={B} T={T} I={I} H={H} float32 (batch 1)",
                      {k: versions[k] for k in order}, expected=expected, cost=cost, baseline="tritonlab step")

# %% [markdown]
# ## Ladder 3 — GRU, through tritonlab's `algo=` values
#
# The same three modes run `_gru_fwd_kernel`: three gates, and b_hn added inside the kernel
# (it sits under r ⊙ (W_hn h + b_hn), so it cannot be folded into the input projection as
# the other biases are). On CPU this ladder uses H = 16, so `persistent-grid` runs under the
# interpreter with its single hidden block — the case tritonlab allows there.

# %%
B, T, I, H = pick(cpu=(2, 8, 16, 16), gpu=(8, 512, 256, 256))
x, _, expected, cost, versions = contenders("gru", B, T, I, H, seed=2)
if not GPU and H > 16:
    versions["tritonlab persistent-grid"] = "skipped: its programs wait on each other (interpreter: H <= 16 only)"
table_gru = ladder(f"GRU forward B={B} T={T} I={I} H={H} float32",
                   {k: versions[k] for k in ["reference", "torch", "graph: reference", "tritonlab step",
                                             "graph: tritonlab step", "tritonlab persistent",
                                             "tritonlab persistent-grid"]},
                   expected=expected, cost=cost, baseline="tritonlab step")

# %% [markdown]
# ## What the tables should teach (when a GPU prints them)
#
# - Lesson 07 predicted launches per step would be the cost; with one launch per sequence
#   the question becomes *how many SMs share each step's work*, and how much of it comes
#   from memory (and, as the H200 showed, how long each step's chain of dependent loads
#   takes).
# - One program per batch block suits small H (the char model) and loses at large H and
#   small batch; splitting the hidden units needs a grid barrier; keeping W_hh on chip
#   needs its slice to be small — the three pull against each other, which is why
#   tritonlab keeps all three modes and lets you pick (`algo=`).
# - A CUDA graph removes the CPU's launch cost with no kernel work, but not the per-kernel
#   GPU work, the weight re-reads or the state's round trips.
#
# None of these numbers had been measured when this lesson was written (no GPU was
# available); the next cell holds the one H200 run since.

# %% [markdown]
# ## Measured: one run on an NVIDIA H200
#
# What this lesson printed on the project's one GPU run so far (2026-11-28, NVIDIA H200,
# torch 2.11, triton 3.6; one run each, times in ms; the whole output is in
# `reports/h200-2026-11-28/tutorials.txt`). Compare it with the predictions above; a
# rerun prints your own device's ladder. Only the first ladder ran within the run's 22 s
# limit per lesson.
#
# ```
# == LSTM forward B=64 T=128 I=16 H=64 float32 (char model) — NVIDIA H200
#                    version   rel_err status  ms_p50  ms_p20  ms_p80    GB/s  TFLOP/s  frac_of_floor  x_vs_tritonlab step
#                      naive 1.135e-05     ok     106     106     106 0.02551 0.003167      6.186e-05              0.05248
#                  reference 1.129e-05     ok   16.36   15.71   17.55  0.1653  0.02051      0.0004007               0.3399
#                      torch         0     ok  0.2337  0.2029  0.2739   11.57    1.436        0.02804                23.79
#           graph: reference 1.129e-05     ok   2.433   2.429   2.436   1.111   0.1379       0.002694                2.286
#             tritonlab step 1.135e-05     ok   5.561   5.466   5.639  0.4862  0.06034       0.001179                    1
#      graph: tritonlab step 1.135e-05     ok   2.713   2.712   2.714  0.9965   0.1237       0.002416                 2.05
#      triton v1: persistent 1.135e-05     ok   2.538   2.538   2.539   1.065   0.1322       0.002582                2.191
# triton v2: W_hh, h on chip 1.135e-05     ok   2.226   2.225   2.227   1.215   0.1508       0.002945                2.498
#       tritonlab persistent 1.135e-05     ok   2.697   2.696   2.698   1.002   0.1244        0.00243                2.062
#  tritonlab persistent-grid 1.135e-05     ok   2.552   2.447    2.63   1.059   0.1315       0.002568                2.179
# ```

# What it shows, per step (the times over T = 128):
#
# - **Host time is real where the GPU's work is short.** `tritonlab step` took 43 µs a
#   step eager and 21 µs replayed as a CUDA graph: the graph saved ~22 µs a step of host
#   time (Python, argument handling, launches). The reference tier went from 128 to 19 µs
#   a step the same way (the tier as it was that day: ten kernels a step). The graph made
#   `tritonlab step` 2.0× faster (5.561 → 2.713 ms), at the low end of the 2–5× predicted,
#   and the reference 6.7× (16.36 → 2.433 ms), above it: the tier with more host time a
#   step gained more.
# - **With the host out of the way, a step costs ~17–21 µs of GPU work**: the graph of
#   step kernels 21, `persistent` 21, `persistent-grid` 20, v1 20, v2 (W_hh and h on chip)
#   17. One launch or 128 made ~no difference; keeping W_hh and h on chip saved ~12%.
#   The napkin math predicted ~1 µs (per SM) and a 3–5× gain for persistent over step:
#   it measured 2.0–2.5× over eager step, and 1.0–1.2× over a graph of it (v2 the 1.2×).
#   One program per batch block did suit this small H: v2 was the fastest Triton rung,
#   though tritonlab's `persistent` (2.697 ms) trailed `persistent-grid` (2.552).
# - **cuDNN's persistent kernel took 1.8 µs a step** (0.234 ms, with its input
#   projection), near the napkin estimate: the hardware can do a step that fast, and our
#   kernels spend their ~20 µs on something the model leaves out. The first guess, before
#   the compiled code was read, was latency, not throughput: a step is a chain of
#   dependent loads, a serial K loop over H (each chunk waits for its loads before its
#   `tl.dot`), the gate math, a store of h that the next step reads back (through global
#   memory, except in v2), and in `persistent-grid` a grid barrier — with a few warps per
#   SM, too few to hide the waits.
#   How the ~20 µs splits between these was not measured.
# - **The compiled code points elsewhere.** v2's time loop, compiled for sm_90 with Triton
#   3.6 (the H200's), is 1,591 instructions a warp per step, 1,028 of them FFMA
#   (reports/sm90-compile-2026-11-29, `sass_kernel`). Its program's 8 warps share the SM's
#   4 schedulers, each issuing at most one instruction a cycle: 8 × 1,591 / 4 ≈ 3,200
#   cycles, ~1.6 µs at the data sheet's 1.98 GHz boost clock, a lower bound. v2 took
#   17 µs a step. The same code's shared-memory reads of W_hh, counted in the v3 section,
#   need ~17 µs of bank passes a step by estimate: a throughput limit of shared memory,
#   not the latency guessed above. v3 is the experiment that tells; it postdates this run.
#
# What would measure it: a profiler's per-kernel device times; one step (T = 1) against
# T steps, for the fixed cost of a call against the cost of a step; BLOCK_K, BLOCK_H and
# `num_warps` varied (the K loop's length, the warps that hide latency); and the batch-1
# and GRU ladders, which the run's 22 s limit cut.
# `scripts/rnn_probe.py` runs the part of this list the library's own knobs reach: the
# recurrence at T = 16 and at T = 128 split into a fixed and a per-step time; float32
# without and with TF32, and bfloat16; every variant beside cuDNN. (TF32 changes more
# than the arithmetic: its tensor-core dot reads shared memory through a swizzled layout,
# free of v2's bank conflicts, so a TF32 speed-up does not isolate the arithmetic.) It has
# not run on a GPU yet.

# %% [markdown]
# ## Exercises
#
# **Exercise 1 — a persistent plain RNN.** `torch.nn.RNN` (tanh): `h' = tanh(x_t W_ihᵀ +
# b_ih + h W_hhᵀ + b_hh)`, W_hh (H, H). Write v1's design for it: the input projection as
# one torch GEMM, then **one** Triton launch for all T steps, grid (cdiv(B, BLOCK_B),), each
# program looping over time and over blocks of hidden units, with a block barrier between
# steps. The check uses H = 40 with more than one hidden block in mind: think about where
# step t+1's h may be written while step t's is still being read. Return (T, B, H).

# %%
def exercise_1(x, w_ih, w_hh, b_ih, b_hh):
    """torch.nn.RNN's forward from zero initial state: x (T, B, I), w_ih (H, I), w_hh (H, H),
    b_ih, b_hh (H,). One Triton launch for the recurrence. Return (T, B, H)."""
    # @triton.jit
    # def rnn_persistent_kernel(xp_ptr, w_ptr, hs_ptr, T, B, H,
    #                           BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    #     rows = ...
    #     for t in range(T):
    #         for j in range(0, H, BLOCK_H):
    #             ...  # tl.dot over K of h_t with W_hh[units, ks]ᵀ, + xp_t, tanh, store h_{t+1}
    #         tl.debug_barrier()
    raise NotImplementedError


def check_1(fn=None):
    fn = fn or exercise_1  # looked up now, so a rerun exercise cell counts
    g = torch.Generator().manual_seed(3)
    rnn = nn.RNN(8, 40)
    xs = torch.randn(5, 3, 8, generator=g)
    with torch.no_grad():
        want, _ = rnn(xs)
    w = [p.detach().to(dev) for p in (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)]
    return exercise("1: a persistent RNN", lambda: fn(xs.to(dev), *w), expected=want.to(dev))


# %%
check_1()

# %% [markdown]
# **Exercise 2 — will the grid barrier fit?** Re-derive tritonlab's plan for the
# persistent-grid LSTM forward on a GPU with `sms` SMs, from the rules explained above:
#
# - BLOCK_B = 16 if B ≤ 16, else 32;
# - BLOCK_H = the first of 16, 32, 64, 128 for which the whole grid, cdiv(B, BLOCK_B) ·
#   cdiv(H, BLOCK_H) programs, is at most `sms` (one program per SM, all resident); 0 if
#   none is;
# - resident = 1 if a program keeps its W_hh slice on chip: BLOCK_B = 16 and its four
#   (K_SPAN, BLOCK_H) tiles fit, 4 · K_SPAN · BLOCK_H ≤ 16384, with K_SPAN = max(16,
#   next power of two ≥ H); else 0 (and 0 when BLOCK_H is 0).
#
# Return `torch.tensor([BLOCK_H, resident])`.

# %%
def exercise_2(B, H, sms):
    """[BLOCK_H, resident] of tritonlab's persistent-grid LSTM forward for batch B, hidden
    size H on a GPU with `sms` SMs, as a tensor of two ints."""
    raise NotImplementedError


CASES_2 = [(1, 256, 132), (4, 64, 132), (16, 200, 132), (8, 1024, 132), (17, 300, 132), (64, 1024, 132),
           (256, 1024, 132), (512, 1024, 132), (1024, 1024, 132), (32, 512, 16)]
ANSWERS_2 = [[16, 1], [16, 1], [16, 1], [16, 0], [16, 0], [16, 0], [64, 0], [128, 0], [0, 0], [32, 0]]


def check_2(fn=None):
    fn = fn or exercise_2  # looked up now, so a rerun exercise cell counts
    return exercise("2: will the grid barrier fit?", lambda: torch.stack([torch.as_tensor(fn(*c)) for c in CASES_2]),
                    expected=torch.tensor(ANSWERS_2))


# %%
check_2()

# %% [markdown]
# ## What's next
#
# Lesson 09 leaves recurrences for attention: the online softmax of lesson 02 streamed over
# tiles of keys. Before it, run lessons 01–08 on a GPU and compare
# each ladder's numbers with its predictions; `tritonlab bench --ops lstm gru` times the
# same providers (`triton-step`, `triton-persistent`, `triton-persistent-grid`, `graph`,
# `torch`) over the benchmark's cases, forward and backward; the backward kernels
# (`_lstm_bwd_kernel`, `_gru_bwd_kernel` in `tritonlab/kernels/rnn.py`) run the same three
# modes in reverse time — read them next. Open questions worth a GPU session: what the grid
# barrier really costs per step, and where `auto`'s H ≤ 256 switch on a GPU, from
# `persistent-grid` to `step`, should sit.
