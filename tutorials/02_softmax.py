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
# # 02 · Softmax: a reduction per row, fused
#
# In lesson 01 every output element depended on one input element, so any program could
# take any block. Softmax is different: each output depends on its **whole row**
# (through the row's maximum and sum). New ideas, one after the other:
#
# - **a program per row**: the grid is the number of rows, and one program reads a row,
#   reduces it (`tl.max`, `tl.sum`) and writes it;
# - **fusion**, counted with **napkin math**: torch's vectorized softmax makes five
#   passes over memory; one kernel can make one read and one write;
# - **the online softmax**: rows too long to hold on chip at once are read in pieces,
#   with a running maximum and a running sum rescaled as the maximum grows.
#
# As in lesson 01: on CPU the kernels run in Triton's interpreter at small sizes and every
# version is checked; on a GPU the sizes are real and the tables show timings. This file
# quotes the timings of one H200 run at the end, before the exercises.

# %%
import os

import torch

if not torch.cuda.is_available():  # no GPU: run every kernel on CPU tensors through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported
import triton
import triton.language as tl

from tritonlab.bench.ladder import Cost, device, exercise, ladder, pick

# %% [markdown]
# ## The math, and why we subtract the maximum
#
# For a row `x` of `n` numbers, `softmax(x)_j = exp(x_j) / sum_k exp(x_k)`. Written like
# that it breaks on ordinary inputs: in float32 `exp(89)` is already `inf`, and
# `inf / inf` is `nan`. The fix costs one more reduction: subtract the row's maximum `m`
# first. `exp(x_j - m) / sum_k exp(x_k - m)` is the same number (the factor `exp(-m)`
# cancels), every exponent is now `<= 0` so nothing overflows, and the largest term is
# `exp(0) = 1`, so the sum is at least 1: no division by zero either.

# %%
row = torch.tensor([1000.0, 1001.0, 1002.0])
print("without the max:", (torch.exp(row) / torch.exp(row).sum()).tolist())
print("with the max:   ", (torch.exp(row - row.max()) / torch.exp(row - row.max()).sum()).tolist())
print("torch.softmax:  ", torch.softmax(row, 0).tolist())

# %% [markdown]
# ## The ladder, and the napkin math
#
# From scratch (`tritonlab/scratch/softmax.py`): `softmax_naive` loops over the rows in
# Python (max, subtract, exp, sum, divide per row); `softmax_rows` does the same five
# steps on all rows at once. On a GPU we use 8192 rows of 4096 float32 columns (the
# benchmark's case, the shape of attention scores); on CPU 128 x 999.
#
# **The floor.** Softmax must read `x` once and write `y` once: 8 bytes per element,
# 8192 x 4096 x 8 = 268 MB, **~80 us** at an H100's ~3.35 TB/s. Its arithmetic is ~5
# FLOPs and one `exp` per element, 170 MFLOP: a few us at most. Memory-bound again.
#
# **What the reference really moves.** `torch.exp(x - x.amax(1, keepdim=True))`, then
# `e / e.sum(1, keepdim=True)` is five torch kernels, each a full pass over memory:
#
# | kernel | reads | writes |
# |---|---|---|
# | `amax` | x | (one number per row) |
# | `x - m` | x | t |
# | `exp` | t | e |
# | `sum` | e | (one number per row) |
# | `e / s` | e | y |
#
# Five reads and three writes of the full tensor: 32 bytes per element instead of 8, so
# we **predict the reference ~4x slower than the floor**. The naive loop makes ~5 small
# launches per row: 8192 rows x 5 x ~5-10 us is a fraction of a second, thousands of times
# the floor (at this size it is skipped; it runs up to 4096 rows). `torch.softmax` is one
# fused kernel: we **predict it near the floor**.

# %%
from tritonlab.kernels.softmax import softmax_dropout_forward
from tritonlab.scratch.softmax import softmax_naive, softmax_rows

torch.manual_seed(0)
rows, cols = pick(cpu=(128, 999), gpu=(8192, 4096))
x = torch.randn(rows, cols, device=device())
esize = x.element_size()
print(f"x: {rows} x {cols} float32, {x.numel() * esize / 1e6:.1f} MB")

# %% [markdown]
# ## Triton v1: one program per row
#
# The grid is `(n_rows,)`: `tl.program_id(0)` is the row this program owns. The row's
# address is `x_ptr + row * stride`, where `x.stride(0)` is how many elements apart two
# rows start (`cols` for a contiguous tensor; passing it also allows row slices of a
# larger tensor).
#
# The block is the whole row, rounded up to a power of two (`BLOCK` must be one):
# `triton.next_power_of_2(999) = 1024` on CPU. The mask turns off the 25 padding columns, and
# `other=float("-inf")` gives them a value that changes neither result: the max ignores
# `-inf`, and `exp(-inf - m) = 0` adds nothing to the sum.
#
# **Reductions.** `tl.max(x, axis=0)` and `tl.sum(e, axis=0)` reduce the block to one
# number. The block is spread over the program's threads, so the compiler emits the
# combining steps: within each warp of 32 threads, then across warps through shared
# memory. You write one line; each program reduces its own row.
#
# Between the load and the store everything lives in registers: max, subtract, exp,
# sum, divide are **fused**. One read, one write: **predict ~4x faster than the reference
# and about torch's speed.** The limit is the row length: the whole row stays in the
# registers of one program (at the GPU size, 4096 floats over 4 warps: 32 per thread).

# %%
@triton.jit
def softmax_v1_kernel(x_ptr, y_ptr, n_cols, stride_x, stride_y, BLOCK: tl.constexpr):
    """y = softmax(x) along the rows of a 2-D x (row stride stride_x, unit column
    stride); y: row stride stride_y. Grid: (n_rows,); one program computes one whole row,
    BLOCK = next_power_of_2(n_cols) columns."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=float("-inf"))
    m = tl.max(x, axis=0)  # one number: the row's maximum
    e = tl.exp(x - m)  # every exponent <= 0
    s = tl.sum(e, axis=0)  # one number: the row's sum (padding adds exp(-inf) = 0)
    tl.store(y_ptr + row * stride_y + cols, e / s, mask=mask)


def softmax_v1(x: torch.Tensor) -> torch.Tensor:
    assert x.dim() == 2 and x.stride(1) == 1, "rows of contiguous columns"
    n_rows, n_cols = x.shape
    y = torch.empty_like(x)
    softmax_v1_kernel[(n_rows,)](x, y, n_cols, x.stride(0), y.stride(0), BLOCK=triton.next_power_of_2(n_cols))
    return y


# %%
table_softmax = ladder(f"softmax {rows}x{cols} float32", {
    "naive": (lambda: softmax_naive(x, 1)) if rows <= 4096 else "skipped: one Python iteration per row, 8192 of them",
    "reference": lambda: softmax_rows(x, 1),
    "torch": lambda: torch.softmax(x, 1),
    "triton v1": lambda: softmax_v1(x),
    "tritonlab": lambda: softmax_dropout_forward(x, 1, 0.0, None)[0],
}, expected=torch.softmax(x, 1), cost=Cost(bytes=2 * x.numel() * esize, flops=5 * x.numel()), baseline="torch")

# %% [markdown]
# ## Rows too long to hold: the online softmax
#
# v1 keeps a whole row in registers, the fastest memory and the scarcest: an H100 SM
# (streaming multiprocessor, the unit that runs programs) has 64K 32-bit registers
# (256 KB) for all the programs it runs at once, and one thread may use at most 255. A
# row of 32768 float32 over v1's 4 warps (128 threads) is 256 floats per thread before any
# temporaries: more than a thread can have, so the compiler **spills** values to "local
# memory" (off-chip, behind the caches). More warps spread the row thinner (32 warps: 32
# floats a thread), but then one program's 1024 threads take most of an SM's register
# file (below: ~50 registers each, over 50,000 of 65,536), one program runs per SM,
# and too few loads are in flight to hide memory latency. Long rows
# are real (a 32K-token attention row, a 50K-word vocabulary): they need another plan.
#
# You can check such claims without a GPU: Triton compiles for a given GPU ahead of time,
# and the `ptxas` it ships reports registers and spills (`scripts/sm90_resources.py`;
# its output for triton 3.9 and 3.6 is in reports/sm90-compile-2026-11-29). For sm_90
# (H100), specialized as the GPU run launches it: v1 at 4096 columns, 4 warps: 48
# registers a thread with triton 3.9 (54 with 3.6), no spills. At 32768 columns, 4 warps:
# with 3.6, all 255 registers and ~0.5 KB (520 bytes) of spill stores a thread; 3.9's
# ptxas keeps 32 registers instead and spills ~4 KB. At 32768 columns with 32 warps: 49
# (3.9) or 53 (3.6) registers a thread, no spills, but 1024 threads x 53 registers is
# 54,272 of an SM's 65,536: one program per SM.
#
# So read the row in blocks of `BLOCK` columns, in a loop inside the program. The sum
# needs the maximum, which is only known at the end of the row. Three passes would do it
# (max, then sum, then write: x read three times). The **online softmax** (Milakov and
# Gimelshein, 2018) merges the first two: keep a running maximum `m` and a running sum `s`
# of `exp(x - m)`, and when a block raises the maximum from `m` to `m_new`, rescale what
# was summed so far:
#
# `s = s * exp(m - m_new) + sum(exp(x_block - m_new))`
#
# After the loop, `m` is the row's maximum and `s` the sum of `exp(x - m)`, exactly. A
# second loop reads the row again and writes `exp(x - m) / s`.
#
# **Napkin math** at 2048 rows x 32768 columns (the benchmark's long-row case, 67M
# elements, 268 MB per tensor): the floor is one read and one write, 537 MB, **~160 us**.
# v2 reads x twice: 805 MB, **~240 us**, if the second read comes from HBM; nearer 160 us
# if it hits the 50 MB L2 cache. Which one depends on how many rows are in flight at
# once: a row is 128 KB, so 132 SMs each running 3 or more programs already stream more
# than 50 MB between a row's first and second read. **Predict v2 at 160-240 us, 1.0-1.5x the
# floor's time.** torch's kernel for long rows is a different design (it may keep a row in
# shared memory), so the GPU run decides which is closer. **Predict v1 much slower here**:
# it spills. (The H200 run disagreed; the end of the lesson says how.)

# %%
@triton.jit
def softmax_online_v2_kernel(x_ptr, y_ptr, n_cols, stride_x, stride_y, BLOCK: tl.constexpr):
    """y = softmax(x) along the rows, any row length. Pointers as softmax_v1_kernel.
    Grid: (n_rows,); one program computes one row, BLOCK columns per loop step:
    an online pass for max and sum, then a pass that writes (x is read twice)."""
    row = tl.program_id(0)
    x_row = x_ptr + row * stride_x
    y_row = y_ptr + row * stride_y
    cols = tl.arange(0, BLOCK)
    m = float("-inf")  # running maximum of the blocks seen so far
    s = 0.0  # running sum of exp(x - m) over them
    for start in range(0, n_cols, BLOCK):
        c = start + cols
        x = tl.load(x_row + c, mask=c < n_cols, other=float("-inf"))
        m_new = tl.maximum(m, tl.max(x, axis=0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)  # rescale the old sum
        m = m_new
    for start in range(0, n_cols, BLOCK):
        c = start + cols
        mask = c < n_cols
        x = tl.load(x_row + c, mask=mask, other=float("-inf"))
        tl.store(y_row + c, tl.exp(x - m) / s, mask=mask)


def softmax_online_v2(x: torch.Tensor, block: int = 4096) -> torch.Tensor:
    assert x.dim() == 2 and x.stride(1) == 1
    n_rows, n_cols = x.shape
    y = torch.empty_like(x)
    block = min(block, triton.next_power_of_2(n_cols))
    softmax_online_v2_kernel[(n_rows,)](x, y, n_cols, x.stride(0), y.stride(0), BLOCK=block, num_warps=8)
    return y


# the rescaling at work: a row whose maximum grows block after block (block = 4 columns)
ramp = torch.arange(12.0, device=device())[None, :] * 3
torch.testing.assert_close(softmax_online_v2(ramp, block=4), torch.softmax(ramp, 1))
print("online softmax of a rising row:", softmax_online_v2(ramp, block=4)[0, -3:].tolist())

# %% [markdown]
# `num_warps=8` is a launch option like `BLOCK`, but not a kernel argument: it sets how
# many warps (groups of 32 threads) each program has. With 4096 columns a step, 8 warps
# give each thread 16 floats.
#
# On CPU the long rows are 4 x 20000 (past the 16384 columns where `tritonlab` switches
# to its own looped kernel, so its looped path runs here too).

# %%
long_rows, long_cols = pick(cpu=(4, 20000), gpu=(2048, 32768))
xl = torch.randn(long_rows, long_cols, device=device())

table_long_rows = ladder(f"softmax, long rows {long_rows}x{long_cols} float32", {
    "naive": (lambda: softmax_naive(xl, 1)) if long_rows <= 4096 else "skipped: too many rows",
    "reference": lambda: softmax_rows(xl, 1),
    "torch": lambda: torch.softmax(xl, 1),
    "triton v1 (whole row)": lambda: softmax_v1(xl),
    "triton v2 (online)": lambda: softmax_online_v2(xl),
    "tritonlab": lambda: softmax_dropout_forward(xl, 1, 0.0, None)[0],
}, expected=torch.softmax(xl, 1), cost=Cost(bytes=2 * xl.numel() * esize, flops=5 * xl.numel()), baseline="torch")

# %% [markdown]
# ## What `tritonlab.kernels.softmax` adds
#
# The shipped forward (`_fwd_kernel` in `tritonlab/kernels/softmax.py`, launched by
# `softmax_dropout_forward(x, dim, p, seed)`) is v1 and v2 in one kernel, plus:
#
# - **Dropout fused in**, compiled out here: `seed=None` sets the constexpr
#   `DROPOUT=False`, so the code that would draw the mask is not even in the binary.
#   Lesson 03 builds the dropout, lesson 04 the fused pair with its backward.
# - **One path per row length**, picked by `_config`: rows up to 16384 columns
#   (`SINGLE_PASS_MAX_COLS`) take v1's single pass; longer rows take the online loop,
#   4096 columns a step (`LOOP_BLOCK`) with 8 warps.
# - **Several rows per program when rows are short**: each program handles
#   `ROWS = 2048 // BLOCK_N` rows (a 2-D block `(ROWS, BLOCK_N)`, reduced with
#   `axis=1`), so a 128-column row does not leave most of a program idle. At 4096 columns
#   that is one row, as in v1.
# - **Warps from the block size**: `num_warps = BLOCK_N * ROWS // 512`, between 4 and 32,
#   about 16 elements a thread (v1 always uses 4). At 4096 columns: 8 warps. The
#   thresholds (2048 elements a program, 16K single-pass, 4096 a step) come from the
#   register budget and the usual guidance; they have not yet been compared with other
#   choices on a GPU. The one H200 run (end of this lesson) timed only these choices, and
#   on 32K-column rows it found the looped path (0.203 ms) slower than v1's spilling
#   single pass (0.187 ms), so the 16K threshold is open to question.
# - **Any dim, any strides, without a transpose**: the tensor is viewed as
#   `(outer, n, inner)` around the softmax dim, and a row is `n` elements `inner` apart.
#   A transpose to make the dim last would cost a full extra read and write.
# - **Robust edges**: 64-bit row offsets (`program_id(0).to(tl.int64)`); padding rows of
#   the last program read a real row instead of `-inf - (-inf) = nan`; a block of only
#   `-inf` (a fully masked attention row) does not turn the online rescale into `nan`;
#   float16/bfloat16 accumulate in float32 and float64 stays float64.
# - **For the backward**, it can also write each row's `log(sum) + max` (4 bytes a row),
#   so the fused softmax+dropout's backward can rebuild `y` instead of storing it
#   (lesson 04).
#
# One detail of the launcher: `dim` must be given non-negative (the layers,
# `tritonlab.Softmax(dim=-1)`, normalise it before they call it).

# %%
xd = torch.randn(pick(cpu=(300, 40), gpu=(4096, 512)), device=device())
y_dim0 = softmax_dropout_forward(xd, 0, 0.0, None)[0]  # softmax down the columns: rows 40 apart in memory
torch.testing.assert_close(y_dim0, torch.softmax(xd, 0))
print("softmax over dim 0 of", tuple(xd.shape), "matches torch; column sums:", y_dim0.sum(0)[:4].tolist())

# %% [markdown]
# ## Measured: one run on an NVIDIA H200
#
# What this lesson printed on the project's one GPU run so far (2026-11-28, NVIDIA H200,
# torch 2.11, triton 3.6; one run each, times in ms; the whole output is in
# `reports/h200-2026-11-28/tutorials.txt`). Compare it with the predictions above; a
# rerun prints your own device's ladder.
#
# **Floors on the H200.** The napkin math used an H100's 3.35 TB/s; the H200 has HBM3e,
# ~4.8 TB/s on its data sheet, and the run's benchmark measured 4.12 TB/s for a large copy
# (`reports/h200-2026-11-28/summary.md`). At that speed the 268 MB of the 8192 x 4096
# softmax take **65 us** (56 at the data sheet's), not 80: v1's 70.6 us is 0.92 of it. The
# long rows' 537 MB take **130 us** (v2's 805 MB if its second read misses L2: 195 us).
#
# ```
# == softmax 8192x4096 float32 — NVIDIA H200
#   version                                              status   rel_err  ms_p50  ms_p20  ms_p80  GB/s  TFLOP/s  frac_of_floor  x_vs_torch
#     naive skipped: one Python iteration per row, 8192 of them       NaN     NaN     NaN     NaN   NaN      NaN            NaN         NaN
# reference                                                  ok 9.738e-08  0.3543  0.3535  0.3554 757.7   0.4736         0.1825      0.3113
#     torch                                                  ok         0  0.1103  0.1098  0.1107  2434    1.521         0.5863           1
# triton v1                                                  ok 9.738e-08 0.07056 0.06957  0.0713  3804    2.378         0.9162       1.563
# tritonlab                                                  ok 9.738e-08 0.07053 0.06928 0.07107  3806    2.379         0.9166       1.564
# online softmax of a rising row: [0.0023553429637104273, 0.04730832204222679, 0.9502130150794983]
#
# == softmax, long rows 2048x32768 float32 — NVIDIA H200
#               version   rel_err status  ms_p50  ms_p20  ms_p80  GB/s  TFLOP/s  frac_of_floor  x_vs_torch
#                 naive 1.244e-07     ok   128.6   128.6   128.6 4.176  0.00261       0.001006    0.001653
#             reference 1.244e-07     ok  0.6781   0.677  0.6788 791.7   0.4948         0.1907      0.3134
#                 torch         0     ok  0.2125  0.2119  0.2133  2526    1.579         0.6083           1
# triton v1 (whole row) 1.659e-07     ok  0.1866  0.1856  0.1873  2878    1.799         0.6931       1.139
#    triton v2 (online) 8.294e-08     ok   0.205  0.2044  0.2057  2619    1.637         0.6308       1.037
#             tritonlab 8.294e-08     ok  0.2028  0.2021  0.2036  2648    1.655         0.6377       1.048
# softmax over dim 0 of (4096, 512) matches torch; column sums: [1.0, 0.9999999403953552, 1.0000001192092896, 1.0]
# exercise 1: log-softmax: not attempted yet (replace the NotImplementedError, then rerun this cell)
# exercise 2: softmax over dim 0: not attempted yet (replace the NotImplementedError, then rerun this cell)
# exercise 3: online log-sum-exp: not attempted yet (replace the NotImplementedError, then rerun this cell)
# ```
#
# **The long rows overruled a prediction.** v1, which spills, was the fastest rung on
# 32K-column rows: 0.187 ms against 0.205 for the online v2, 0.203 for tritonlab's looped
# path and 0.213 for torch. What the data shows: a single pass with spills beat two reads
# of x here, by ~9%. What it does not show is why; two explanations fit and neither was
# measured. Spilled values go to "local memory", which is cached: ~0.5 KB a thread, ~65 KB a
# program, may have stayed in the SM's L1 and the 50 MB L2 instead of reaching HBM. And
# v2's second read of x (805 MB in all if it misses L2) costs more than the spills did:
# v2's 205 us is close to the 195 us that a second read from HBM predicts. (The spill
# figures are from an ahead-of-time compile with triton 3.6, the run's version; triton
# 3.9 spills ~4 KB a thread instead: reports/sm90-compile-2026-11-29.) A profiler's
# memory counters (Nsight Compute: local-memory and L2 traffic) would separate the two.

# %% [markdown]
# ## Exercises
#
# Replace each stub, then run the `check_K()` cell below it. Solutions:
# `tutorials/solutions/02_softmax.py`.
#
# **Exercise 1: log-softmax.** `log_softmax(x)_j = x_j - m - log(sum_k exp(x_k - m))`,
# one program per row, one read and one write. The check's inputs are large (up to a
# few hundred): `exp` overflows unless you subtract the maximum.

# %%
def exercise_1(x: torch.Tensor) -> torch.Tensor:
    """Return log_softmax(x, dim=1) for a 2-D x with contiguous rows, by a Triton kernel
    with one program per row (tl.log is available)."""
    raise NotImplementedError


x1 = 60 * torch.randn(64, 300, generator=torch.Generator().manual_seed(1)).to(device())


def check_1(fn=None):
    fn = fn or exercise_1  # looked up now, so a rerun exercise cell counts
    return exercise("1: log-softmax", lambda: fn(x1), expected=torch.log_softmax(x1, 1))


# %%
check_1()

# %% [markdown]
# **Exercise 2: softmax down the columns.** For a contiguous 2-D `x`, return
# `softmax(x, dim=0)` without transposing: one program per *column*, whose elements are
# `x.stride(0)` apart in memory.

# %%
def exercise_2(x: torch.Tensor) -> torch.Tensor:
    """Return softmax(x, dim=0) of a contiguous 2-D x by a Triton kernel with one
    program per column, loading x_ptr + col + rows * stride_row."""
    raise NotImplementedError


x2 = torch.randn(37, 50, generator=torch.Generator().manual_seed(2)).to(device())


def check_2(fn=None):
    fn = fn or exercise_2  # looked up now, so a rerun exercise cell counts
    return exercise("2: softmax over dim 0", lambda: fn(x2), expected=torch.softmax(x2, 0))


# %%
check_2()

# %% [markdown]
# **Exercise 3: online log-sum-exp.** `logsumexp(x) = m + log(sum exp(x - m))` per row,
# the quantity the tritonlab kernel saves for its backward. Compute it in **one** pass
# over each row, looping over blocks of 128 columns with a running max and a rescaled
# running sum. The check's rows rise from left to right, so the maximum changes in almost
# every block: forget the rescale and it shows.

# %%
def exercise_3(x: torch.Tensor) -> torch.Tensor:
    """Return torch.logsumexp(x, dim=1) (shape (n_rows,)) for a 2-D x with contiguous
    rows, by a Triton kernel: one program per row, a loop over blocks of 128 columns
    keeping m and s as in softmax_online_v2_kernel, then store m + tl.log(s)."""
    raise NotImplementedError


_g3 = torch.Generator().manual_seed(3)
x3 = (torch.linspace(0, 20, 1000)[None, :] + torch.randn(8, 1000, generator=_g3)).to(device())


def check_3(fn=None):
    fn = fn or exercise_3  # looked up now, so a rerun exercise cell counts
    return exercise("3: online log-sum-exp", lambda: fn(x3), expected=torch.logsumexp(x3, 1))


# %%
check_3()

# %% [markdown]
# ## What's next
#
# **Lesson 03 (dropout)** adds randomness to a kernel: Philox random numbers from a seed
# and the element's position, so that the backward can regenerate the mask instead of
# storing it, and then folds it into the softmax you just wrote.
