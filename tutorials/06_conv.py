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
# # Lesson 06 — Convolution: im2col, then implicit GEMM
#
# Lesson 05 built a fast GEMM. This lesson turns a 2-D convolution into that GEMM,
# twice:
#
# 1. **im2col + GEMM.** Copy every patch the kernel sees into one row of a big matrix
#    (the *column matrix*), then multiply it by the flattened filters. Simple, and
#    every conv becomes one `matmul` — but the matrix is `R·S` times the input (9×
#    for a 3×3 conv), written to memory and read back.
# 2. **Implicit GEMM.** The same GEMM, except that the A tile of each K step is
#    *gathered straight from the input* with the im2col index arithmetic, inside the
#    K loop. The column matrix is never stored.
#
# The new idea is that **a GEMM's operand need not exist in memory**: all the GEMM
# needs is the address of A[m, k], and for a convolution that is a formula.
#
# The ladder: naive loops → im2col by tensor ops + matmul (the lab's reference tier)
# → torch (cuDNN) → Triton v1: a Triton im2col kernel + the lab's GEMM → Triton v2:
# an implicit GEMM written here → `tritonlab.kernels.conv.conv2d_fwd`.

# %%
import os

import torch

if not torch.cuda.is_available():  # no GPU: run every kernel on CPU tensors through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported
import triton
import triton.language as tl

from tritonlab.bench.ladder import Cost, Mismatch, device, exercise, ladder, pick

# %% [markdown]
# ## The op, as a GEMM
#
# `x (N, C, H, W)`, `weight (O, C, R, S)`, `bias (O,)`, stride `st`, zero padding
# `pad`. The output `y (N, O, P, Q)` with `P = (H + 2·pad − R) // st + 1` (same for
# Q) is
#
# ```
# y[n, o, p, q] = bias[o] + Σ over c, r, s of  x[n, c, p·st − pad + r, q·st − pad + s] · weight[o, c, r, s]
# ```
#
# (0 where the index falls in the padding). Name the output positions
# `m = (n, p, q)` and the taps `k = (c, r, s)`; then it is a GEMM
#
# ```
# y[m, o] = Σ_k A[m, k] · B[k, o],   A[m, k] = x[n, c, p·st − pad + r, q·st − pad + s],   B[k, o] = weight[o, c, r, s]
# ```
#
# with `M = N·P·Q`, `K = C·R·S`, `N_gemm = O`. `B` is just the weight viewed as an
# `(O, K)` matrix and transposed: no copy. `A` is the **im2col matrix**: row `m`
# holds the `C·R·S` input values output position `m` sees.
#
# **Sizes.** On a GPU: ResNet-50's 3×3, 64 → 64 channel layer at 56 × 56, batch
# 32 — the benchmark's conv case (`tritonlab/bench/ops.py`) — in **float16** (the
# tensor cores; lesson 05 explains the choice) and **channels_last** (NHWC) memory,
# the layout cuDNN and the lab's kernel are fastest in. On a CPU: a 2 × 8 × 9 × 9
# input, float32, under the interpreter.

# %%
import torch.nn.functional as F

torch.manual_seed(0)
dev = device()
dtype = pick(cpu=torch.float32, gpu=torch.float16)
Nb, C, H, W, O, R, S, stride, pad = pick(cpu=(2, 8, 9, 9, 12, 3, 3, 1, 1), gpu=(32, 64, 56, 56, 64, 3, 3, 1, 1))
P = (H + 2 * pad - R) // stride + 1
Q = (W + 2 * pad - S) // stride + 1
x = torch.randn(Nb, C, H, W, device=dev, dtype=dtype).to(memory_format=torch.channels_last)
weight = torch.randn(O, C, R, S, device=dev, dtype=dtype) / (C * R * S) ** 0.5
bias = torch.randn(O, device=dev, dtype=dtype)
expected = F.conv2d(x.double().contiguous(), weight.double(), bias.double(), stride, pad).to(dtype)  # float64 truth
es = x.element_size()
Mg, Kg = Nb * P * Q, C * R * S
print(f"x {tuple(x.shape)} (channels_last) * weight {tuple(weight.shape)} -> y {tuple(expected.shape)}, {dtype}; "
      f"as a GEMM: M={Mg}, K={Kg}, N={O}")

# %% [markdown]
# ## What im2col makes
#
# One 4 × 4 image with one channel, a 3 × 3 kernel, no padding: 2 × 2 output
# positions, so the column matrix has 4 rows of 9. Row 0 is the top-left 3 × 3
# patch, row 1 the same patch moved one pixel right, and so on — each input pixel
# shows up in up to 9 rows. This matrix comes from the lab's Triton im2col kernel
# (`tritonlab.kernels.im2col.im2col`), used in v1 below.

# %%
from tritonlab.kernels.im2col import buffer_bytes, im2col

demo = torch.arange(16.0, device=dev).view(1, 1, 4, 4)
print(demo[0, 0])
print(im2col(demo, kernel=(3, 3), stride=(1, 1), pad=(0, 0), dilation=(1, 1), out_size=(2, 2)))

# %% [markdown]
# ## Napkin math
#
# - **FLOPs:** `2·M·K·O = 2·N·P·Q·O·C·R·S`. ResNet 3×3 at batch 32: 7.4 GFLOP.
# - **Bytes it must move:** x once, the weights once, y once: 12.8 + 0.07 + 12.8 MB
#   = 25.8 MB in fp16.
# - **Floor on an H100:** 7.4 GFLOP at 990 TFLOP/s = 7.5 us, 25.8 MB at 3.35 TB/s =
#   7.7 us: **balanced** — to reach the floor, a kernel must keep both the tensor
#   cores and HBM near their peaks. (Much smaller than lesson 05's GEMM: K is only
#   576.)
# - **The im2col buffer:** `N·P·Q × C·R·S` elements, `buffer_bytes` in
#   `tritonlab.kernels.im2col`: 32 · 3136 · 576 · 2 B = **116 MB**, 9× the input.
#   im2col writes it and the GEMM reads it back: 231 MB, 69 us of HBM time on its
#   own — **9× the whole op's floor**. The table below shows the factor for every
#   ResNet-50 layer: `R·S / stride²` (1× for a 1×1 conv, which needs no im2col at all).

# %%
from tritonlab.bench.ops import RESNET50

cost = Cost(bytes=(x.numel() + weight.numel() + expected.numel() + O) * es, flops=2 * Mg * Kg * O)
buf = buffer_bytes(Nb, C, (P, Q), (R, S), es)
print(f"this run: {cost.flops / 1e9:.3g} GFLOP, {cost.bytes / 1e6:.3g} MB; im2col buffer {buf / 1e6:.3g} MB "
      f"= {buf / (x.numel() * es):.1f}x the input")
print("\nResNet-50 at batch 32, fp16 (H100: 990 TFLOP/s, 3.35 TB/s)")
print(f"{'C->O':>10} {'HxW':>7} {'RxS/st':>7} {'x MB':>7} {'buffer MB':>10} {'floor us':>9} {'+buffer us':>11}")
for c_, o_, h_, k_, s_ in RESNET50:
    p_ = (h_ + 2 * (k_ // 2) - k_) // s_ + 1
    x_mb = 32 * c_ * h_ * h_ * 2
    b_mb = buffer_bytes(32, c_, (p_, p_), (k_, k_), 2)
    flops = 2 * 32 * p_ * p_ * o_ * c_ * k_ * k_
    floor = max(flops / 990e12, (x_mb + 32 * o_ * p_ * p_ * 2 + o_ * c_ * k_ * k_ * 2) / 3.35e12)
    print(f"{c_:>4}->{o_:<5} {h_:>3}x{h_:<3} {f'{k_}x{k_}/{s_}':>7} {x_mb / 1e6:7.1f} {b_mb / 1e6:10.1f} "
          f"{floor * 1e6:9.1f} {2 * b_mb / 3.35e12 * 1e6:11.1f}")

# %% [markdown]
# ## The bottom rungs
#
# - **naive** (`tritonlab.scratch.conv.conv2d_naive`): one Python iteration per output
#   position `(p, q)`: cut out the patch under the kernel for the whole batch and
#   multiply it with the filters. 3136 iterations of a few small torch ops each on
#   the GPU: we predict ~0.1–0.3 s, launch-bound (~5 us per op).
# - **reference** (`conv2d_reference`, the lab's CPU tier): im2col *by tensor ops* —
#   `as_strided` makes a `(N, C, R, S, P, Q)` view of the padded input without a
#   copy (neighbouring patches overlap in memory), one `clone` lays it out as the
#   column matrix, one batched `matmul` does the rest. It pays the 116 MB buffer
#   (plus the padded copy of x): we predict ~100 us, within ~2× of the Triton
#   im2col path.
# - **torch** (`F.conv2d`, cuDNN): picks among implicit-GEMM, Winograd and FFT
#   kernels per shape. The bar: we predict 10–20 us here (≥ 40–75 % of the floor).

# %%
from tritonlab.scratch.conv import conv2d_naive, conv2d_reference

conv_args = ((stride, stride), ((pad, pad), (pad, pad)), (1, 1), 1)  # stride, explicit padding, dilation, groups

# %% [markdown]
# ## Triton v1: im2col kernel + GEMM
#
# `tritonlab.kernels.im2col.im2col` launches one program per `BLOCK_M × BLOCK_K`
# tile of the column matrix. It decodes its rows into output positions and its
# columns into taps with integer division — the arithmetic every later version
# reuses:
#
# ```
# q = m % Q;   p = (m // Q) % P;   n = m // (P·Q)          # row m -> output position
# s = k % S;   r = (k // S) % R;   c = k // (R·S)          # column k -> tap (weight's own order)
# h = p·st − pad + r;   w = q·st − pad + s                # 2-D blocks by broadcasting
# vals = tl.load(x + n·sxn + c·sxc + h·sxh + w·sxw, mask=in_tile & (0 ≤ h < H) & (0 ≤ w < W), other=0)
# ```
#
# The padding is never stored: a tap that falls outside the image is masked and
# loads 0. Then lesson 05's `matmul` multiplies `cols (M, K)` by `weight.view(O, K).t()`
# with the bias fused in its epilogue, writing `(M, O)` — which, read as
# `(N, P, Q, O)`, *is* the output in channels_last layout, so a `permute` view
# gives `(N, O, P, Q)` with no copy.
#
# **Predict:** the buffer's 231 MB at 3.35 TB/s is 69 us; plus the GEMM's own
# ~8–15 us: ~80–100 us, 5–10× slower than cuDNN. Correct, simple, memory-bound.

# %%
from tritonlab.kernels import gemm
from tritonlab.kernels.gemm import matmul


def conv_im2col_gemm(x, weight, bias):
    cols = im2col(x, (R, S), (stride, stride), (pad, pad), (1, 1), (P, Q))  # (N*P*Q, C*R*S): the buffer
    y = matmul(cols, weight.reshape(O, -1).t(), bias)  # (N*P*Q, O), bias fused
    return y.view(Nb, P, Q, O).permute(0, 3, 1, 2)  # (N, O, P, Q) in channels_last memory: a view


# %% [markdown]
# ## Triton v2: implicit GEMM
#
# Take lesson 05's v1 GEMM kernel — one `BLOCK_M × BLOCK_N` tile of `y[m, o]` per
# program, a K loop of `tl.dot` — and replace its A load: instead of reading
# `cols[m, k]` from a buffer, compute the address in x from `(m, k)` with exactly
# the im2col decoding above and load from x directly. The row decoding
# (`n, p, q` and the top-left corner `h0, w0` of each patch) does not depend on k,
# so it is done once, before the loop; each K step decodes its `BLOCK_K` taps and
# broadcasts them against the rows.
#
# - **B** is the weight as an `(O, K)` matrix: the tile `B[k, o]` is at
#   `w + o·K + k`, a transposed read of the contiguous weight.
# - **Masks:** rows past M, taps past K, output channels past O, and the padding
#   (`0 ≤ h < H`, `0 ≤ w < W`) — four conditions, `&`-ed into one mask per tile.
# - **The epilogue** adds the bias (lesson 05's v4), and the store writes
#   `y[n, o, p, q]` through y's strides, so any output layout works.
# - `R` and `S` are `tl.constexpr`: division by a compile-time constant compiles to
#   a multiply and a shift, not a slow integer division.
#
# Napkin: x is read once per N-tile of the output (here `O = 64 = BLOCK_N`: once,
# and each pixel about 9 times from L1/L2 as neighbouring patches overlap); nothing
# extra is written. The traffic drops back to ~26 MB.
#
# **Predict:** much faster than v1 (no 231 MB round trip), but not cuDNN: our
# `k = (c, r, s)` order means that in channels_last memory, consecutive k of a tile
# are *not* adjacent in memory (a step in s moves C elements), so each A tile is a
# gather of 2-byte values that the compiler can neither vectorise nor stage
# efficiently through shared memory. We predict ~30–60 us, 2–4× behind cuDNN.

# %%
@triton.jit
def conv_implicit_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    H, W, O, P, Q, M, K,
    sxn, sxc, sxh, sxw, syn, syc, syp, syq,
    stride, pad,
    R: tl.constexpr, S: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y = conv2d(x, w) + b as the GEMM y[m, o] = sum_k A[m, k] * w[o, k] + b[o], with
    m = (n, p, q), k = (c, r, s), A gathered from x inside the K loop.
    Grid: (cdiv(M, BLOCK_M), cdiv(O, BLOCK_N)). Pointers: x (N, C, H, W) and y
    (N, O, P, Q) with their strides; w the contiguous weight (O, C, R, S) = (O, K); b (O,)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_o = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    o_ok = offs_o < O
    # GEMM row m -> output position (n, p, q) and its patch's top-left input pixel
    n = offs_m // (P * Q)
    p = (offs_m // Q) % P
    q = offs_m % Q
    h0 = p * stride - pad
    w0 = q * stride - pad
    x_rows = x_ptr + n * sxn  # (BLOCK_M,) pointers to each row's image

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < K
        # GEMM column k -> tap (c, r, s): im2col's addressing, with no buffer
        c = k // (R * S)
        r = (k // S) % R
        s = k % S
        h = h0[:, None] + r[None, :]  # (BLOCK_M, BLOCK_K) input rows
        w = w0[:, None] + s[None, :]  # ... and columns
        a_ok = m_ok[:, None] & k_ok[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        a = tl.load(x_rows[:, None] + c[None, :] * sxc + h * sxh + w * sxw, mask=a_ok, other=0.0)
        b = tl.load(w_ptr + offs_o[None, :] * K + k[:, None], mask=k_ok[:, None] & o_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc)

    acc += tl.load(b_ptr + offs_o, mask=o_ok, other=0.0).to(tl.float32)[None, :]
    y_off = (n * syn + p * syp + q * syq)[:, None] + offs_o[None, :] * syc
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & o_ok[None, :])


TILE = pick(cpu=dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16), gpu=dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32))


def conv_implicit(x, weight, bias):
    y = torch.empty((Nb, O, P, Q), device=x.device, dtype=x.dtype).to(memory_format=torch.channels_last)
    w = weight.contiguous()  # (O, C, R, S) = an (O, K) matrix
    grid = (triton.cdiv(Mg, TILE["BLOCK_M"]), triton.cdiv(O, TILE["BLOCK_N"]))
    conv_implicit_kernel[grid](x, w, bias, y, H, W, O, P, Q, Mg, Kg, *x.stride(), *y.stride(),
                               stride, pad, R=R, S=S, **TILE)
    return y


# %% [markdown]
# ## The final rung: `tritonlab.kernels.conv.conv2d_fwd`
#
# The lab's forward kernel (`_conv_fwd_kernel`) is v2 with these changes — read it
# next to v2:
#
# - **K in `(r, s, c)` order, one tap at a time.** The K loop runs over (tap,
#   channel block): within one K tile, r and s are fixed and c runs over `BLOCK_K`
#   consecutive channels. In channels_last memory those are **adjacent**, so the A
#   tile is `BLOCK_M` contiguous rows of `BLOCK_K` channels: vectorised 16-byte
#   loads, pipelined through shared memory like a plain GEMM's. The padding check
#   becomes one per row (`h, w` depend on the row only), and the per-element
#   division by `R·S` disappears. For few input channels (`C < 16`, e.g. the RGB
#   stem) a tile of one tap would be mostly padding, so it falls back to v2's flat
#   K (`FLAT_K`), in `(r, s, c)` order.
# - **Packed weights**: `packed()` stores the weight `(R, S, C, O)`-contiguous so the
#   B tile also loads along unit stride (a 73 KB copy per call).
# - **Groups** on the grid's second axis; **dilation**; int64 pointer offsets.
# - **Bias and activation** fused in the epilogue (`Conv2d` + ReLU is one kernel).
# - **Autotuned** over ten tile shapes, keyed (`_KEY`) on the layer's shape (channels,
#   kernel, output size), `PRECISION` (TF32 or not) and `M_BUCKET`: the GEMM's rows
#   N·P·Q rounded up to a power of two, capped at 65536 — never the raw batch, so a new
#   batch size in a tuned bucket reuses its pick, while batch 1 and batch 32 (other
#   buckets) tune apart. Configs that overflow shared memory for the dtype, or are wider
#   than the layer's channels, are pruned first.
# - Its backward (dgrad, wgrad) are implicit GEMMs too, in the same file.
#
# **Predict** (made before any GPU run): within ~1.5× of cuDNN, and ~2× faster than v2
# from the contiguous loads. The H200 run measured 1.74× cuDNN's time and 4× faster
# than v2 (end of the lesson). (The layer also sends a 1×1, stride-1 conv on channels_last input straight
# to the plain GEMM: exercise 3.)
#
# On a GPU the ladder times every version (median of CUDA-event runs, L2 flushed)
# and prints TFLOP/s and the fraction of the floor; on a CPU it validates them.

# %%
from tritonlab.kernels.conv import conv2d_fwd


def conv_tritonlab(x, weight, bias):
    y = torch.empty((Nb, O, P, Q), device=x.device, dtype=x.dtype).to(memory_format=torch.channels_last)
    return conv2d_fwd(x, weight, bias, y, (stride, stride), (pad, pad), (1, 1), 1)


table_conv = ladder(f"conv2d N{Nb} {C}->{O} {H}x{W} k{R}/{stride} channels_last {dtype}", {
    "naive": lambda: conv2d_naive(x, weight, bias, *conv_args),
    "reference (im2col by tensor ops)": lambda: conv2d_reference(x, weight, bias, *conv_args),
    "torch": lambda: F.conv2d(x, weight, bias, stride, pad),
    "triton v1 im2col + GEMM": lambda: conv_im2col_gemm(x, weight, bias),
    "triton v2 implicit GEMM": lambda: conv_implicit(x, weight, bias),
    "tritonlab conv2d_fwd": lambda: conv_tritonlab(x, weight, bias),
}, expected=expected, cost=cost, baseline="torch")

# %% [markdown]
# ## Measured: one run on an NVIDIA H200
#
# What this lesson printed on the project's one GPU run so far (2026-11-28, NVIDIA H200,
# torch 2.11, triton 3.6; one run each, times in ms; the whole output is in
# `reports/h200-2026-11-28/tutorials.txt`). Compare it with the predictions above; a
# rerun prints your own device's ladder.
#
# ```
# == conv2d N32 64->64 56x56 k3/1 channels_last torch.float16 — NVIDIA H200
#                          version   rel_err status  ms_p50  ms_p20  ms_p80   GB/s  TFLOP/s  frac_of_floor  x_vs_torch
#                            naive 0.0005571     ok   184.5   184.5   184.5 0.1396   0.0401      5.882e-05   0.0002704
# reference (im2col by tensor ops) 0.0005571     ok  0.2799  0.2791  0.2808  92.04    26.43        0.03877      0.1782
#                            torch 0.0005571     ok 0.04989 0.04557 0.07177  516.4    148.3         0.2175           1
#          triton v1 im2col + GEMM 0.0005571     ok  0.4731   0.472  0.4741  54.46    15.64        0.02294      0.1055
#          triton v2 implicit GEMM 0.0005571     ok  0.3488  0.3478  0.3502  73.85    21.21        0.03111       0.143
#             tritonlab conv2d_fwd 0.0005571     ok 0.08688 0.08656  0.0873  296.5    85.16         0.1249      0.5742
# exercise 1: an im2col kernel: not attempted yet (replace the NotImplementedError, then rerun this cell)
# exercise 2: implicit GEMM with dilation: not attempted yet (replace the NotImplementedError, then rerun this cell)
# exercise 3: 1x1 conv as one GEMM: not attempted yet (replace the NotImplementedError, then rerun this cell)
# ```

# **The predictions missed by 2.5–12×, and only part of it is explained.** What the run
# shows, with the H200's floor for this layer: 7.4 GFLOP at the fp16 matmul speed the
# lesson measured (~680 TFLOP/s) is ~11 us, 25.8 MB at the run's measured 4.12 TB/s 6 us.
#
# - **torch (cuDNN): 50 us**, predicted 10–20 (0.22 of the floor). Its p20–p80 spread,
#   46–72 us, is wide for a fixed amount of GPU work. Which kernels cuDNN chose, and
#   whether it ran more than one (a layout or weight transform first), was not recorded:
#   unexplained. `torch.profiler` around one call lists its kernels and their device times.
# - **v1 (im2col + GEMM): 473 us**, predicted 80–100. The buffer's 231 MB round trip is
#   56 us at the measured copy speed: memory traffic of that size explains an eighth of
#   it. The ladder times the two kernels together, so where the rest goes was not
#   measured. Two suspects: the im2col kernel's loads (columns in `(c, r, s)` order read
#   channels_last memory C elements apart, the same scattered 2-byte gather as v2's), and
#   lesson 05's matmul on a skinny (100352 × 576) @ (576 × 64) shape its configs were
#   not chosen for. The reference (280 us), which pads, copies the same buffer with
#   torch's copy kernel and multiplies with cuBLAS, beat v1 while moving as many bytes,
#   which points at our two kernels rather than the buffer. Timing `im2col(...)` and the
#   `matmul` on its output apart would say which (unverified).
# - **v2 (implicit GEMM): 349 us**, predicted 30–60. The section above blamed its
#   scattered A loads and guessed 2–4× behind cuDNN; it was 7×. tritonlab's kernel, whose
#   `(r, s, c)` order makes those loads contiguous, took 87 us, 4× faster than v2 (2×
#   predicted). That fits the gather being v2's main cost, but the two kernels also
#   differ in tiles, autotuning and packed weights, so it does not prove it.

# %% [markdown]
# ## Exercises
#
# Stubs raise `NotImplementedError`; run a check, fill in its stub, rerun.
# Solutions: `tutorials/solutions/06_conv.py`.
#
# ### Exercise 1: write the im2col kernel
#
# `exercise_1(x, kernel_size, stride, pad)` for `x (N, C, H, W)` (any strides) and a
# square kernel returns the `(N·P·Q, C·R·S)` column matrix, columns in `(c, r, s)`
# order, zeros in the padding — the job of `tritonlab.kernels.im2col`, written by you
# (one program per `BLOCK_M × BLOCK_K` tile; the decoding is in v1's section). The
# check compares with `torch.nn.functional.unfold`.

# %%
def exercise_1(x, kernel_size, stride, pad):
    """The im2col matrix of x: (N*P*Q, C*R*S), row m = (n, p, q), column k = (c, r, s), in a Triton kernel."""
    raise NotImplementedError


def check_1(fn=None):
    fn = fn or exercise_1  # looked up now, so a rerun exercise cell counts
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(2, 3, 7, 6, generator=g).to(dev)
    k1, st1, pad1 = 3, 2, 1
    want = F.unfold(x1, k1, padding=pad1, stride=st1).transpose(1, 2).reshape(-1, 3 * k1 * k1)
    return exercise("1: an im2col kernel", lambda: fn(x1, k1, st1, pad1), expected=want)


# %%
check_1()

# %% [markdown]
# ### Exercise 2: dilation in the implicit GEMM
#
# A dilated convolution spaces its taps `d` pixels apart: tap `(r, s)` of output
# `(p, q)` reads `x[..., p·st − pad + r·d, q·st − pad + s·d]`, and
# `P = (H + 2·pad − d·(R − 1) − 1) // st + 1`. Write `exercise_2(x, weight, bias,
# stride, pad, dilation)` (NCHW or channels_last x, no groups) as an implicit GEMM:
# copy v2 and change its addressing.

# %%
def exercise_2(x, weight, bias, stride, pad, dilation):
    """conv2d(x, weight, bias, stride, pad, dilation) as an implicit GEMM Triton kernel; returns (N, O, P, Q)."""
    raise NotImplementedError


def check_2(fn=None):
    fn = fn or exercise_2  # looked up now, so a rerun exercise cell counts
    g = torch.Generator().manual_seed(2)
    dt = pick(cpu=torch.float32, gpu=torch.float16)
    x2 = torch.randn(2, 4, 11, 10, generator=g).to(dev, dt)
    w2 = (torch.randn(6, 4, 3, 3, generator=g) / 6).to(dev, dt)
    b2 = torch.randn(6, generator=g).to(dev, dt)
    want = F.conv2d(x2.double().contiguous(), w2.double(), b2.double(), 1, 2, 2).to(dt)
    return exercise("2: implicit GEMM with dilation", lambda: fn(x2, w2, b2, 1, 2, 2), expected=want)


# %%
check_2()

# %% [markdown]
# ### Exercise 3: a 1×1 convolution needs no im2col
#
# For a 1×1 kernel with stride 1 and no padding, `A[m, k] = x[n, c, p, q]`: the
# column matrix *is* the input. In channels_last memory the input already is an
# `(N·H·W, C)` row-major matrix. Write `exercise_3(x, weight, bias)` for a
# channels_last `x (N, C, H, W)` and `weight (O, C, 1, 1)` with **one call** to
# `tritonlab.kernels.gemm.matmul` and views only — no copy of x — returning
# `(N, O, H, W)`. (This is what the lab's Conv2d layer does for such convs.) The check
# watches `matmul`: it must be called once, on an A that shares x's memory.

# %%
def exercise_3(x, weight, bias):
    """1x1 conv of a channels_last x as one matmul over views: returns (N, O, H, W)."""
    raise NotImplementedError


def check_3(fn=None):
    fn = fn or exercise_3  # looked up now, so a rerun exercise cell counts
    g = torch.Generator().manual_seed(3)
    dt = pick(cpu=torch.float32, gpu=torch.float16)
    x3 = torch.randn(2, 8, 5, 6, generator=g).to(dev, dt).to(memory_format=torch.channels_last)
    w3 = (torch.randn(12, 8, 1, 1, generator=g) / 3).to(dev, dt)
    b3 = torch.randn(12, generator=g).to(dev, dt)
    want = F.conv2d(x3.double().contiguous(), w3.double(), b3.double()).to(dt)
    a_is_x = []  # per matmul call: does its A share x3's memory (a view, not a copy)?
    real = gemm.matmul

    def spy(a, *args, **kwargs):
        a_is_x.append(a.untyped_storage().data_ptr() == x3.untyped_storage().data_ptr())
        return real(a, *args, **kwargs)

    def expected(out):
        if a_is_x != [True]:
            raise Mismatch("matmul's A is a copy of x, not a view of it" if a_is_x == [False] else
                           f"tritonlab.kernels.gemm.matmul called {len(a_is_x)} times, expected once")
        return want

    # matmul as the exercise sees it: a name bound in its module, or gemm.matmul
    names = [k for k, v in fn.__globals__.items() if v is real]
    try:
        for k in names:
            fn.__globals__[k] = spy
        gemm.matmul = spy
        return exercise("3: 1x1 conv as one GEMM", lambda: fn(x3, w3, b3), expected=expected)
    finally:
        gemm.matmul = real
        for k in names:
            fn.__globals__[k] = real


# %%
check_3()

# %% [markdown]
# ## What's next
#
# Lessons 05 and 06 were about one big GEMM. Lesson 07 meets the opposite: an
# LSTM/GRU step is a *small* GEMM followed by a handful of elementwise gate
# operations, repeated once per time step — where fusing the gates into the GEMM's
# epilogue, and launch overhead, decide the speed.
