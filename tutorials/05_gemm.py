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
# # Lesson 05 — GEMM: tiles, `tl.dot`, and the order programs run in
#
# Lessons 01–04 were *memory-bound*: each element was loaded once, touched by a few
# FLOPs and stored, so the best a kernel could do was move its bytes at the speed of
# HBM. A matrix multiply is the opposite. `C = A @ B` with `A (M, K)` and `B (K, N)`
# does `2·M·N·K` FLOPs on only `M·K + K·N + M·N` elements: every element of A is
# used N times, every element of B M times. The lesson is how to make those reuses
# happen **on chip** instead of going back to memory for each one:
#
# 1. **Tiles.** One program computes one `BLOCK_M × BLOCK_N` tile of C. It walks the
#    K dimension in steps of `BLOCK_K`, loading a `BLOCK_M × BLOCK_K` tile of A and a
#    `BLOCK_K × BLOCK_N` tile of B each step and multiplying them with **`tl.dot`**,
#    which runs on the tensor cores. A loaded element then serves BLOCK_N (or BLOCK_M)
#    multiply-adds, not one.
# 2. **Program order.** Which tiles run *at the same time* decides how much of A and B
#    stays in the L2 cache between programs. A grouped order reads less.
# 3. **Autotuning.** The best tile sizes depend on the GPU, the dtype and the shape:
#    let Triton time a few candidates once and keep the fastest.
# 4. **A fused epilogue.** `relu(A @ B + bias)` (a Linear layer with its activation)
#    costs the same as the GEMM alone if the bias and the ReLU are applied to the
#    tile while it is still in registers — the fusion idea of lesson 02, at the end
#    of a GEMM.
#
# The ladder: a Python triple loop → the lab's scratch tiers → torch (cuBLAS) →
# Triton v1 (one tile per program) → v2 (grouped order) → v3 (autotuned) → v4 (bias
# and ReLU fused) → `tritonlab.kernels.gemm.matmul`, plus split-K for skinny shapes.

# %%
import os

import torch

if not torch.cuda.is_available():  # no GPU: run every kernel on CPU tensors through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported
import triton
import triton.language as tl

from tritonlab.bench.ladder import Cost, device, exercise, ladder, pick

# %% [markdown]
# ## The problem, and which dtype
#
# On a GPU we multiply two 4096 × 4096 matrices (the benchmark's `linear` case,
# `tritonlab/bench/ops.py`); on a CPU, under the interpreter, a tiny 80 × 56 by
# 56 × 72 — sizes that are *not* multiples of the tiles, so the masks at the edges
# are exercised.
#
# **dtype.** An H100's tensor cores do ~990 TFLOP/s in float16 or bfloat16, ~495 in
# TF32 and its plain fp32 units only ~67: a GEMM in fp32 leaves 15× on the table.
# On the GPU this lesson uses **float16**: the same tensor-core speed as bfloat16 and
# 8 more bits of mantissa (bfloat16 trades them for float32's exponent range, which
# is what training needs and random test matrices do not), so the check against a
# float64 result is tighter. Every kernel here accumulates in **float32** whatever
# the input dtype and rounds once, at the store. On the CPU it is **float32**: the
# interpreter has no bfloat16 at all (`tritonlab.kernels.gemm.matmul` refuses it on
# CPU tensors rather than return garbage), and it does `tl.dot` as an exact numpy
# fp32 product.

# %%
torch.manual_seed(0)
dev = device()
dtype = pick(cpu=torch.float32, gpu=torch.float16)
M, N, K = pick(cpu=(80, 72, 56), gpu=(4096, 4096, 4096))
a = torch.randn(M, K, device=dev, dtype=dtype)
b = torch.randn(K, N, device=dev, dtype=dtype)
expected = (a.double() @ b.double()).to(dtype)  # float64 truth, rounded once to the dtype
es = a.element_size()
print(f"A {tuple(a.shape)} @ B {tuple(b.shape)} in {dtype} on {dev}")

# %% [markdown]
# ## Napkin math
#
# - **FLOPs:** `2·M·N·K` (a multiply and an add per term). 4096³: **137 GFLOP**.
# - **Bytes it must move:** read A and B once, write C once: `(M·K + K·N + M·N)·2`
#   bytes in fp16 = **101 MB**.
# - **Floor on an H100:** 137 GFLOP / 990 TFLOP/s = **0.139 ms** of tensor-core time
#   against 101 MB / 3.35 TB/s = 0.030 ms of HBM time: **compute-bound** by ~4.6×.
#   Its arithmetic intensity, 137e9 / 101e6 ≈ 1365 FLOP per byte, is far above the
#   H100's balance point (990e12 / 3.35e12 ≈ 295 FLOP/byte).
#
# So, unlike lessons 01–04, the goal is to keep the tensor cores busy, and the bytes
# only matter if we move many *more* than 101 MB — which a naive tiling does: each
# program re-reads a whole row panel of A and column panel of B, so all programs
# together read `M·N·K·(1/BLOCK_N + 1/BLOCK_M)` elements. With 64 × 64 tiles that is
# 4096³·(2/64)·2 B = 4.3 GB, 43× the floor's bytes — 1.3 ms at HBM speed, 9× the
# compute floor, *unless* most of it hits in the 50 MB L2 cache. Bigger tiles and a
# good program order (v2) are how it does.

# %%
cost = Cost(bytes=(M * K + K * N + M * N) * es, flops=2 * M * N * K)
floor_ms = max(cost.flops / 990e12, cost.bytes / 3.35e12) * 1e3
print(f"{cost.flops / 1e9:.3g} GFLOP, {cost.bytes / 1e6:.3g} MB; H100 floor at this size (an H200's too: "
      f"same tensor cores, and compute-bound): {floor_ms * 1e3:.3g} us "
      f"({'compute' if cost.flops / 990e12 > cost.bytes / 3.35e12 else 'memory'}-bound), "
      f"intensity {cost.flops / cost.bytes:.0f} FLOP/byte")

# %% [markdown]
# ## The bottom rungs: loops, the lab's scratch tiers, cuBLAS
#
# - **naive:** the textbook triple loop, one Python multiply-add per term. At 4096³
#   that is 69 billion Python iterations (hours), so it runs only at the CPU size.
# - **naive rows** (`tritonlab.scratch.linear.linear_naive`, the lab's naive Linear):
#   one Python iteration per row of C, each a vectorised `(weight * row).sum(1)`.
#   On a GPU: 4096 iterations, each reading all of B (32 MB) and writing and
#   re-reading a 32 MB temporary: ~400 GB of traffic, we predict ~0.2 s, >1000× the
#   floor.
# - **reference** (`linear_reference`): the lab's vectorised tier, which for a GEMM
#   is `x @ W.t()` — the very same cuBLAS call as the **torch** rung. For a plain
#   GEMM there is nothing to vectorise except into matmul itself; expect the two to
#   tie (a useful check of the timing). cuBLAS is the bar: hand-tuned per GPU
#   generation; we expect it to reach roughly 60–80 % of the tensor-core peak here.

# %%
from tritonlab.scratch.linear import linear_naive, linear_reference


def matmul_naive(a, b):
    """C[i][j] = sum over k of A[i][k] * B[k][j], one Python multiply-add per term."""
    A, B = a.tolist(), b.tolist()
    rows, inner, cols = len(A), len(B), len(B[0])
    C = [[0.0] * cols for _ in range(rows)]
    for i in range(rows):
        for j in range(cols):
            s = 0.0
            for k in range(inner):
                s += A[i][k] * B[k][j]
            C[i][j] = s
    return torch.tensor(C, dtype=a.dtype, device=a.device)


tiny = M * N * K <= 1e6  # the triple loop only at the CPU size

# %% [markdown]
# ## Triton v1: one output tile per program
#
# The grid has one program per tile of C: `cdiv(M, BLOCK_M) · cdiv(N, BLOCK_N)`
# programs. Program `pid` finds its tile row-major (`pid_m = pid // num_pid_n`,
# `pid_n = pid % num_pid_n`), builds the row indices `rm` and column indices `rn` of
# its tile, and loops over K:
#
# ```
# acc (BLOCK_M, BLOCK_N) fp32 = 0
# for k0 in 0, BLOCK_K, 2·BLOCK_K, ...:
#     a = A[rm, k0:k0+BLOCK_K]        # a 2-D tile: pointers rm[:, None]*stride_am + rk[None, :]*stride_ak
#     b = B[k0:k0+BLOCK_K, rn]
#     acc = tl.dot(a, b, acc)         # acc += a @ b on the tensor cores
# C[rm, rn] = acc
# ```
#
# New pieces:
#
# - **2-D blocks of pointers.** `rm[:, None]` is a column, `rk[None, :]` a row;
#   adding them broadcasts to a `BLOCK_M × BLOCK_K` block of addresses, one per
#   element, exactly as in torch. Strides are passed in, so any layout works
#   (`B = W.t()` is a view: no copy).
# - **`tl.dot(a, b, acc)`** multiplies two tiles and adds into `acc`. Its operands
#   must be at least 16 in every dimension. For fp16/bf16 it runs on the tensor
#   cores; for **fp32 inputs Triton's default is TF32** (10-bit mantissa) on the
#   GPU — pass `input_precision="ieee"` for full fp32. The interpreter ignores this.
# - **The accumulator is fp32** (`tl.zeros(..., tl.float32)`), cast to C's dtype
#   once at the store: summing 4096 products in fp16 would lose most of the bits.
# - **Masks on three sides.** Rows past M and columns past N are masked at the load
#   and the store (as in lesson 01); the last K step may run past K, and there the
#   masked loads return `other=0.0`, so the extra terms add zero.
#
# **Predict:** far from cuBLAS. With 64 × 64 tiles each element is reused only 64
# times per load, and row-major order makes every wave of programs read all of B
# (below). We predict 30–60 % of cuBLAS.

# %%
@triton.jit
def matmul_v1_kernel(a_ptr, b_ptr, c_ptr, M, N, K,
                     stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """c (M, N) = a (M, K) @ b (K, N). Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N),),
    one BLOCK_M x BLOCK_N tile of c per program, tiles in row-major order."""
    pid = tl.program_id(0)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    pid_m = pid // num_pid_n
    pid_n = pid % num_pid_n

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # the tile's rows of c (and of a)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # the tile's columns of c (and of b)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + rk
        a = tl.load(a_ptr + rm[:, None] * stride_am + ks[None, :] * stride_ak,
                    mask=(rm[:, None] < M) & (ks[None, :] < K), other=0.0)
        b = tl.load(b_ptr + ks[:, None] * stride_bk + rn[None, :] * stride_bn,
                    mask=(ks[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc)
    tl.store(c_ptr + rm[:, None] * stride_cm + rn[None, :] * stride_cn, acc.to(c_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


# fixed tiles: 64 x 64 x 32 on the GPU; the interpreter takes 32 x 32 x 16
TILE = pick(cpu=dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16), gpu=dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32))


def matmul_v1(a, b):
    M, K = a.shape
    N = b.shape[1]
    c = torch.empty((M, N), device=a.device, dtype=a.dtype)
    grid = (triton.cdiv(M, TILE["BLOCK_M"]) * triton.cdiv(N, TILE["BLOCK_N"]),)
    matmul_v1_kernel[grid](a, b, c, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                           c.stride(0), c.stride(1), **TILE)
    return c


# %% [markdown]
# ## v2: grouped program order, for L2 reuse
#
# The GPU runs programs roughly in `pid` order, about one **wave** of them at a time
# (a few per SM; the H100 SXM has 132 SMs). In row-major order a wave covers a few rows
# of tiles *across all the columns*: it needs a few row panels of A but **every**
# column panel of B. Grouped order walks `GROUP_M` row-tiles down one column before
# moving right, so a wave covers a squarish block of tiles and needs fewer panels:
#
# ```
# num_pid_in_group = GROUP_M * num_pid_n       # programs in one band of GROUP_M row-tiles
# group_id    = pid // num_pid_in_group
# first_pid_m = group_id * GROUP_M
# group_size_m = min(num_pid_m - first_pid_m, GROUP_M)   # the last band may be shorter
# pid_m = first_pid_m + (pid % num_pid_in_group) % group_size_m
# pid_n = (pid % num_pid_in_group) // group_size_m
# ```
#
# The same kernel body, a different map from `pid` to tile. Here is the map, run in
# plain Python on a 6 × 8 grid of tiles (each number is the `pid` that computes that
# tile), and the bytes one wave of 132 programs (one per SM) must bring on chip at 4096³
# with 128 × 128 tiles, and with the 64 × 64 tiles v1 and v2 use on a GPU:

# %%
def tile_of(pid, num_pid_m, num_pid_n, group_m):
    """The kernel's pid -> (pid_m, pid_n), in Python; group_m=1 is plain row-major order."""
    num_pid_in_group = group_m * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * group_m
    group_size_m = min(num_pid_m - first_pid_m, group_m)
    return first_pid_m + (pid % num_pid_in_group) % group_size_m, (pid % num_pid_in_group) // group_size_m


def show_order(num_pid_m, num_pid_n, group_m):
    grid = [[0] * num_pid_n for _ in range(num_pid_m)]
    for pid in range(num_pid_m * num_pid_n):
        m, n = tile_of(pid, num_pid_m, num_pid_n, group_m)
        grid[m][n] = pid
    print(f"GROUP_M={group_m}:\n" + "\n".join(" ".join(f"{v:3d}" for v in row) for row in grid))


def wave_bytes(size, block, group_m, wave=132, itemsize=2):
    """Bytes of A row panels and B column panels the first `wave` programs read."""
    tiles = [tile_of(pid, triton.cdiv(size, block), triton.cdiv(size, block), group_m)
             for pid in range(min(wave, triton.cdiv(size, block) ** 2))]
    panels = len({m for m, _ in tiles}) + len({n for _, n in tiles})
    return panels * block * size * itemsize


show_order(6, 8, 1)
show_order(6, 8, 3)
for block in (128, 64):
    for g in (1, 8):
        print(f"4096^3 fp16, {block}x{block} tiles, GROUP_M={g}: one wave of 132 programs reads "
              f"{wave_bytes(4096, block, g) / 1e6:.1f} MB of A and B panels")

# %% [markdown]
# 128 × 128 tiles, row-major: a wave reads 5 row panels and all 32 column panels (39 MB,
# most of the 50 MB L2); grouped: 8 row panels and 17 column panels (26 MB). With v1's
# and v2's 64 × 64 tiles, 132 programs cover 3 rows of all 64 column panels (35 MB)
# against 8 rows and 17 columns of half-width panels (13 MB): grouping saves more there,
# in relative terms. (Smaller tiles also let several programs share an SM, so a real
# wave is larger than 132 programs; the ratio is the point, not the megabytes.) Every
# byte a wave needs but the L2 no longer holds comes from HBM.
#
# **Predict:** at 4096² in fp16 all of B is 32 MB and largely fits in L2 either way,
# so v2 should gain only a little over v1 here (≤ ~10–20 %); the gain grows with
# the matrix (or in fp32, twice the bytes), when row-major's working set overflows
# the L2. Program order costs nothing — a few integer operations per program.

# %%
@triton.jit
def matmul_v2_kernel(a_ptr, b_ptr, c_ptr, M, N, K,
                     stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     GROUP_M: tl.constexpr):
    """v1 with grouped program order: GROUP_M row-tiles walk the columns together."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % num_pid_in_group) % group_size_m
    pid_n = (pid % num_pid_in_group) // group_size_m

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + rk
        a = tl.load(a_ptr + rm[:, None] * stride_am + ks[None, :] * stride_ak,
                    mask=(rm[:, None] < M) & (ks[None, :] < K), other=0.0)
        b = tl.load(b_ptr + ks[:, None] * stride_bk + rn[None, :] * stride_bn,
                    mask=(ks[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc)
    tl.store(c_ptr + rm[:, None] * stride_cm + rn[None, :] * stride_cn, acc.to(c_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


def matmul_v2(a, b, group_m=pick(cpu=2, gpu=8)):
    M, K = a.shape
    N = b.shape[1]
    c = torch.empty((M, N), device=a.device, dtype=a.dtype)
    grid = (triton.cdiv(M, TILE["BLOCK_M"]) * triton.cdiv(N, TILE["BLOCK_N"]),)
    matmul_v2_kernel[grid](a, b, c, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                           c.stride(0), c.stride(1), GROUP_M=group_m, **TILE)
    return c


# %% [markdown]
# ## v3: autotuning
#
# v1 and v2 guessed 64 × 64 × 32. The right tile depends on the GPU, the dtype and
# the shape, and on two knobs that are not block sizes:
#
# - **`num_warps`**: how many warps (groups of 32 threads) run one program. A
#   128 × 256 tile of fp32 accumulators is 32K values: spread over 8 warps that is
#   128 registers per thread, over 4 warps it would not fit.
# - **`num_stages`**: software pipelining. The compiler turns the K loop into a
#   pipeline that loads the tiles of the next `num_stages - 1` steps into shared
#   memory while the tensor cores multiply the current one, so the loads hide
#   behind the math. Each stage costs `(BLOCK_M + BLOCK_N) · BLOCK_K · itemsize` bytes
#   of shared memory: 3 stages of 128 × 256 × 64 in fp16 are 147 KB of the 227 KB one
#   program may use on an H100 (228 KB per SM, data sheet); in fp32 they would not fit
#   (the sm_90 compile asks for 147,456 and 294,912 bytes, reports/sm90-compile-2026-11-29;
#   the fp32 kernel fails to load with OutOfResources and the autotuner drops that config).
#
# Bigger tiles reuse each load more (a 128 × 256 tile does 85 FLOPs per byte loaded
# from L2, a 64 × 64 one 32) but give fewer programs: 4096² has 512 tiles of
# 128 × 256, only ~3.9 per SM — and small problems may not fill the GPU at all.
#
# `triton.autotune(configs, key)` wraps the **same** jitted kernel: on the first call
# for a new value of the `key` arguments it compiles and times every config, then
# remembers the winner for that key. The grid must then be a function of the chosen
# meta-parameters. The first call costs seconds (the ladder keeps it out of the
# timing, as the benchmark does: `first_call_ms`). On the CPU we give it **one**
# config: with a single config the autotuner times nothing, so the interpreter runs
# the same code path.
#
# **Predict:** the biggest step of the ladder — from ~half of cuBLAS to ~80–100 % of
# it, since the configs below are the tile shapes cuBLAS-class kernels use on Hopper.

# %%
GEMM_CONFIGS = pick(
    cpu=[triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 16, "GROUP_M": 2})],
    gpu=[triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
         for bm, bn, bk, w, s in [(128, 256, 64, 8, 3), (128, 128, 64, 8, 4), (128, 128, 32, 4, 4),
                                  (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (64, 64, 64, 4, 3)]])

matmul_v3_kernel = triton.autotune(configs=GEMM_CONFIGS, key=["M", "N", "K"])(matmul_v2_kernel)


def matmul_v3(a, b):
    M, K = a.shape
    N = b.shape[1]
    c = torch.empty((M, N), device=a.device, dtype=a.dtype)

    def grid(meta):  # the tile size is the autotuner's choice, so the grid asks for it
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    matmul_v3_kernel[grid](a, b, c, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                           c.stride(0), c.stride(1))
    return c


# %% [markdown]
# ## The final rung: `tritonlab.kernels.gemm.matmul`
#
# The lab's kernel (`_matmul_kernel`) is v3 plus what a launcher shared by Linear,
# Conv2d and the RNNs needs. Read it next to v3; the differences:
#
# - **int64 offsets** (`pid_m.to(tl.int64)`): `row · stride` passes 2³¹ on big
#   tensors; v1–v3 would silently wrap.
# - **No row/column masks on the loads**: out-of-range rows and columns are
#   *wrapped* (`rm % M`, `rn % N`) to read valid memory, and only the store is
#   masked. Unmasked loads are simpler for the compiler to vectorise.
# - **`EVEN_K`** (a `triton.heuristics`): when BLOCK_K divides K the K mask is dropped
#   too; it sits inside the autotuner because it depends on the BLOCK_K chosen.
# - **Autotune key** `M_BUCKET` (M rounded up to a power of two, capped at 4096), not
#   M itself: a new batch size does not re-tune unless it changes bucket. `LAYOUT`
#   (which operands are contiguous along K and N) is in the key too: Linear's
#   forward, dX and dW have the same M, N, K at a square layer but load their tiles
#   differently. Configs that overflow shared memory for the dtype are pruned before
#   they are compiled.
#   GEMMs of ≤ 2²¹ multiply-adds skip tuning (one small tile): they are launch-bound.
# - **Precision**: fp32 uses TF32 exactly when `torch.backends.cuda.matmul.allow_tf32`
#   is set (torch's own flag, off by default), IEEE fp32 otherwise.
# - **The epilogue** (bias, activation) and **split-K**, the two sections below.
#
# Its configs and heuristics were chosen from the H100's sizes and compiled for
# sm_90 without a GPU. We predicted a tie with v3 on this square case (same tiles; the
# extras matter on other shapes and for safety), and the H200 run gave one: 0.222 ms
# against v3's 0.220 (end of the lesson).
#
# Running this cell on a GPU prints the ladder's timings (median of CUDA-event
# runs, L2 flushed), TFLOP/s and the fraction of the floor each version reaches; on
# a CPU it validates every version and times nothing.

# %%
from tritonlab.kernels.gemm import matmul

table_gemm = ladder(f"GEMM {M}x{K} @ {K}x{N} {dtype}", {
    "naive": (lambda: matmul_naive(a, b)) if tiny else "skipped: a Python triple loop at this size would take hours",
    "naive rows": lambda: linear_naive(a, b.t(), None),
    "reference": lambda: linear_reference(a, b.t(), None),
    "torch": lambda: a @ b,
    "triton v1": lambda: matmul_v1(a, b),
    "triton v2 grouped": lambda: matmul_v2(a, b),
    "triton v3 autotuned": lambda: matmul_v3(a, b),
    "tritonlab matmul": lambda: matmul(a, b),
}, expected=expected, cost=cost, baseline="torch")

# %% [markdown]
# ## v4: bias and ReLU fused into the epilogue
#
# A Linear layer with a ReLU is `relu(x @ W.t() + b)`. Done as three ops, the GEMM
# writes C, the bias add reads and writes C, the ReLU reads and writes C: five
# passes over `M·N` elements where one would do. At 4096² fp16 one pass is 33.5 MB
# = 10 us at 3.35 TB/s, so the unfused version pays ~40 us on top of a 139 us floor.
# `torch.addmm(bias, a, b)` folds the bias into cuBLAS's GEMM, leaving one extra
# pass (read + write, ~20 us) for the ReLU.
#
# The fused version adds two lines after the K loop, while the tile is still in
# registers: load `BLOCK_N` bias values (a tiny, masked 1-D load, broadcast over the
# tile's rows with `[None, :]`) and take the max with 0. No extra bytes but N bias
# values, no extra launch.
#
# **Predict:** v4 ≈ v3 alone, and ~1.2–1.3× faster than v3 followed by torch's bias
# add and ReLU; ~1.1× faster than torch's addmm + relu if v3 matches cuBLAS.

# %%
@triton.jit
def matmul_v4_kernel(a_ptr, b_ptr, bias_ptr, c_ptr, M, N, K,
                     stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     GROUP_M: tl.constexpr):
    """c = relu(a @ b + bias), bias (N,): v2's body with a fused epilogue."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % num_pid_in_group) % group_size_m
    pid_n = (pid % num_pid_in_group) // group_size_m

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + rk
        a = tl.load(a_ptr + rm[:, None] * stride_am + ks[None, :] * stride_ak,
                    mask=(rm[:, None] < M) & (ks[None, :] < K), other=0.0)
        b = tl.load(b_ptr + ks[:, None] * stride_bk + rn[None, :] * stride_bn,
                    mask=(ks[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc)
    # the epilogue: the tile is still in registers, in fp32
    bias = tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
    acc = tl.maximum(acc + bias[None, :], 0.0)
    tl.store(c_ptr + rm[:, None] * stride_cm + rn[None, :] * stride_cn, acc.to(c_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


matmul_v4_tuned = triton.autotune(configs=GEMM_CONFIGS, key=["M", "N", "K"])(matmul_v4_kernel)


def matmul_bias_relu_v4(a, b, bias):
    M, K = a.shape
    N = b.shape[1]
    c = torch.empty((M, N), device=a.device, dtype=a.dtype)

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    matmul_v4_tuned[grid](a, b, bias, c, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                          c.stride(0), c.stride(1))
    return c


# %% [markdown]
# The lab's launcher takes the epilogue as arguments: `matmul(a, b, bias,
# activation)` with `activation` one of `None, "relu", "sigmoid", "tanh"` (a
# compile-time constant, so each combination is its own specialised kernel; sigmoid
# and tanh are built from `tl.exp` in `tritonlab/kernels/_math.py`, which also runs
# under the interpreter). Its ReLU keeps NaN as NaN, like `torch.relu`
# (`tl.maximum` may drop it). `tritonlab.LinearActivation` is this op as a layer.

# %%
bias = torch.randn(N, device=dev, dtype=dtype)
expected_relu = torch.relu(a.double() @ b.double() + bias.double()).to(dtype)
cost_relu = Cost(bytes=(M * K + K * N + M * N + N) * es, flops=2 * M * N * K)

table_epilogue = ladder(f"GEMM + bias + ReLU {M}x{K} @ {K}x{N} {dtype}", {
    "naive": (lambda: torch.relu(matmul_naive(a, b) + bias)) if tiny else "skipped: a Python triple loop",
    "reference": lambda: torch.relu(linear_reference(a, b.t(), bias)),
    "torch": lambda: torch.relu(torch.addmm(bias, a, b)),
    "triton v3 + torch bias, relu": lambda: torch.relu(matmul_v3(a, b) + bias),
    "triton v4 fused": lambda: matmul_bias_relu_v4(a, b, bias),
    "tritonlab matmul": lambda: matmul(a, b, bias, "relu"),
}, expected=expected_relu, cost=cost_relu, baseline="torch")

# %% [markdown]
# ## Split-K: when the output has too few tiles
#
# A GEMM with a small output and a long K — the weight gradient of a Linear layer,
# `dW = dYᵀ @ X` summed over many rows — has few tiles. 512 × 512 with K = 32768
# in fp16: 17.2 GFLOP (17 us at 990 TFLOP/s) on 67 MB (20 us): balanced. But with
# 128 × 128 tiles there are only **16 programs** for 132 SMs: at most 12 % of the
# tensor cores work, each program walking all 32768 of K — ≥ ~140 us.
#
# **Split-K** cuts K into S ranges and gives each (tile, range) pair its own
# program: S× the programs. Each writes its fp32 partial tile to an `(S, M, N)`
# workspace; a second small kernel sums the S partials in order (deterministic,
# unlike atomics) and applies the bias and activation. The price is the workspace:
# `2·S·M·N·4` bytes, 8.4 MB (2.5 us) for S = 4.
#
# `matmul(..., split_k=None)` decides by itself on a GPU (`_split_k` in gemm.py):
# when even 64 × 64 tiles cannot fill half the SMs and K ≥ 4096, it picks S so that
# tiles · S is about one wave, each range keeping ≥ 1024 of K. `split_k=1` turns
# it off, `split_k=n` forces up to n ranges (which is how the CPU run below
# exercises it: on the CPU "auto" never splits).
#
# **Predict:** on the GPU, v3 and `split_k=1` leave most SMs idle whatever tile
# they pick (even 64 × 64 tiles make only 64 programs for 132 SMs, each walking all
# of K); `auto` (3 ranges on a 132-SM H100: 192 programs) and `split_k=4` should be
# ~2–4× faster, about where cuBLAS (which splits too) lands.

# %%
from tritonlab.kernels.gemm import _split_k  # the launcher's private rule, to print what "auto" chose

Ms, Ns, Ks = pick(cpu=(24, 40, 400), gpu=(512, 512, 32768))
xs = torch.randn(Ms, Ks, device=dev, dtype=dtype)
ys = torch.randn(Ks, Ns, device=dev, dtype=dtype)
expected_split = (xs.double() @ ys.double()).to(dtype)
cost_split = Cost(bytes=(Ms * Ks + Ks * Ns + Ms * Ns) * es, flops=2 * Ms * Ns * Ks)

table_split_k = ladder(f"skinny GEMM {Ms}x{Ks} @ {Ks}x{Ns} {dtype}", {
    "torch": lambda: xs @ ys,
    "triton v3 autotuned": lambda: matmul_v3(xs, ys),
    "tritonlab split_k=1": lambda: matmul(xs, ys, split_k=1),
    "tritonlab split_k=auto": lambda: matmul(xs, ys),
    "tritonlab split_k=4": lambda: matmul(xs, ys, split_k=4),
}, expected=expected_split, cost=cost_split, baseline="torch")

print(f"split_k=auto cut K into {_split_k(Ms, Ns, Ks, dev, None)[0]} range(s) on this device")

# %% [markdown]
# ## Measured: one run on an NVIDIA H200
#
# What this lesson printed on the project's one GPU run so far (2026-11-28, NVIDIA H200,
# torch 2.11, triton 3.6; one run each, times in ms; the whole output is in
# `reports/h200-2026-11-28/tutorials.txt`). Compare it with the predictions above; a
# rerun prints your own device's ladder. Only the first ladder ran within the run's 22 s limit
# per lesson (the epilogue and split-K ladders did not).
#
# ```
# == GEMM 4096x4096 @ 4096x4096 torch.float16 — NVIDIA H200
#             version                                                      status   rel_err  ms_p50  ms_p20  ms_p80   GB/s  TFLOP/s  frac_of_floor  x_vs_torch
#               naive skipped: a Python triple loop at this size would take hours       NaN     NaN     NaN     NaN    NaN      NaN            NaN         NaN
#          naive rows                                                          ok 0.0006325     258     258     258 0.3902   0.5328      0.0007891   0.0007717
#           reference                                                          ok 0.0006325   0.197  0.1951  0.1985  511.1    697.8          1.033       1.011
#               torch                                                          ok 0.0006325  0.1991  0.1956  0.2003  505.7    690.4          1.023           1
#           triton v1                                                          ok 0.0006325  0.4598  0.4557  0.4645  218.9    298.9         0.4427      0.4329
#   triton v2 grouped                                                          ok 0.0006325  0.4369  0.4344  0.4394  230.4    314.6         0.4659      0.4557
# triton v3 autotuned                                                          ok 0.0006325    0.22  0.2176  0.2213  457.6    624.8         0.9254       0.905
#    tritonlab matmul                                                          ok 0.0006325   0.222  0.2113  0.2227  453.5    619.2         0.9171      0.8969
# ```

# **Why `frac_of_floor` passes 1 here.** For a compute-bound op the floor is FLOPs over a
# *measured* FLOP rate: `tritonlab/bench/ceilings.py` times torch's own fp16 matmul
# (the best of 4096² and 8192²) when the lesson starts, so on a GPU this column is close
# to "fraction of cuBLAS", not of the data sheet. That quick measurement gave ~675 TFLOP/s
# (torch's 690 TFLOP/s here over its 1.023); the reference and torch rungs, cuBLAS again,
# ran 2–3% faster than it: two timings of the same library, a few percent apart. Against
# the data sheet (~990 TFLOP/s of dense fp16 on the H200, as on the H100; the printed 139
# us), torch reached 70%, and v3 and tritonlab 63%. The prediction for v2 (a gain of at
# most 10–20% over v1) held at its low end: 0.437 ms against 0.460, 5%.

# %% [markdown]
# ## Exercises
#
# Each exercise has a stub that raises `NotImplementedError` and a check: run the
# check cell, fill in the stub, rerun. Solutions: `tutorials/solutions/05_gemm.py`.
#
# ### Exercise 1: a different epilogue
#
# Write `exercise_1(a, b, bias)` returning `leaky_relu(a @ b + bias, 0.1)`
# (`x` where `x > 0`, else `0.1·x`) in **one** kernel: start from v4 and change
# its epilogue (`tl.where`). Shapes in the check are not multiples of any tile.

# %%
def exercise_1(a, b, bias):
    """leaky_relu(a @ b + bias, negative_slope=0.1) in one Triton kernel; a (M, K), b (K, N), bias (N,)."""
    raise NotImplementedError


def check_1(fn=None):
    fn = fn or exercise_1  # looked up now, so a rerun exercise cell counts
    g = torch.Generator().manual_seed(1)
    dt = pick(cpu=torch.float32, gpu=torch.float16)
    a1, b1, bias1 = (torch.randn(*s, generator=g).to(dev, dt) for s in ((37, 45), (45, 50), (50,)))
    want = torch.nn.functional.leaky_relu(a1.double() @ b1.double() + bias1.double(), 0.1).to(dt)
    return exercise("1: GEMM + bias + leaky ReLU, fused", lambda: fn(a1, b1, bias1), expected=want)


# %%
check_1()

# %% [markdown]
# ### Exercise 2: a batched GEMM
#
# Write `exercise_2(a, b)` for `a (B, M, K) @ b (B, K, N)` → `(B, M, N)` with a
# **second grid axis** for the batch: program `(t, z)` computes tile `t` of batch
# `z = tl.program_id(1)`. Pass the batch strides (`a.stride(0)`, ...) and offset
# each pointer by `z · stride` before the tile arithmetic.

# %%
def exercise_2(a, b):
    """Batched a (B, M, K) @ b (B, K, N) -> (B, M, N): grid (tiles, B), tl.program_id(1) is the batch."""
    raise NotImplementedError


def check_2(fn=None):
    fn = fn or exercise_2  # looked up now, so a rerun exercise cell counts
    g = torch.Generator().manual_seed(2)
    dt = pick(cpu=torch.float32, gpu=torch.float16)
    a2, b2 = (torch.randn(*s, generator=g).to(dev, dt) for s in ((3, 33, 20), (3, 20, 40)))
    return exercise("2: batched GEMM", lambda: fn(a2, b2), expected=(a2.double() @ b2.double()).to(dt))


# %%
check_2()

# %% [markdown]
# ### Exercise 3: grouping the other way
#
# v2 groups `GROUP_M` row-tiles that walk across the columns. Write the mirror
# image: `GROUP_N` **column**-tiles walk *down the rows* together (useful when B is
# the big operand). `exercise_3(num_pid_m, num_pid_n, group_n)` returns a
# `(num_pid_m · num_pid_n, 2)` int64 tensor whose row `pid` is the `(pid_m, pid_n)`
# that program `pid` computes. Mind the last group when `group_n` does not divide
# `num_pid_n`. (Plain Python is fine: it is the arithmetic the kernel would do.)

# %%
def exercise_3(num_pid_m, num_pid_n, group_n):
    """(num_pid_m * num_pid_n, 2) tensor: row pid = (pid_m, pid_n) in column-grouped order."""
    raise NotImplementedError


def check_3(fn=None):
    fn = fn or exercise_3  # looked up now, so a rerun exercise cell counts
    pm, pn, gn = 5, 7, 3
    # the mirror image of v2's order: swap the roles of rows and columns
    want = torch.tensor([tile_of(pid, pn, pm, gn)[::-1] for pid in range(pm * pn)], dtype=torch.int64)
    return exercise("3: column-grouped program order", lambda: fn(pm, pn, gn), expected=want)


# %%
check_3()

# %% [markdown]
# ## What's next
#
# Lesson 06 turns a convolution into this GEMM: first by unfolding the input into a
# big matrix (im2col) and calling `matmul`, then by doing the unfolding *inside* the
# K loop's loads — an implicit GEMM that never writes the unfolded matrix.
