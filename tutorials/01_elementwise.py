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
# # 01 · Elementwise: programs, blocks and masks
#
# Your first GPU kernels. The ops are the simplest in deep learning, ReLU, sigmoid and
# tanh, one output element per input element. What is new is how the work is split:
# **programs**, the **grid** of them, the **block** of elements each one handles, and the
# **mask** that keeps the last block inside the tensor.
#
# Every lesson of this path climbs the same ladder, one version per rung:
#
# 1. **naive**: a textbook Python loop (`tritonlab.scratch`), easy to read and very slow;
# 2. **reference**: the same math vectorized with torch ops (`tritonlab.scratch`);
# 3. **torch**: PyTorch's own op, the bar to beat;
# 4. **triton v1, v2, ...**: kernels written here, each one idea better than the last;
# 5. **tritonlab**: the kernel this project ships (`tritonlab.kernels`), and what it adds.
#
# `ladder(...)` (from `tritonlab.bench.ladder`, the same harness the benchmark uses)
# checks every version against the right answer before it times any. **On a CPU** the
# kernels run in Triton's *interpreter* at small sizes: every version is checked, nothing
# is timed. **On a GPU** the sizes are real and each table also shows the median time,
# GB/s, the speed-up over torch and the fraction of the device's floor reached. This file
# quotes the timings of one H200 run at the end, before the exercises; run it on your GPU
# and the tables fill in.

# %%
import os

import torch

if not torch.cuda.is_available():  # no GPU: run every kernel on CPU tensors through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported
import triton
import triton.language as tl

from tritonlab.bench.ladder import Cost, device, exercise, ladder, pick

# %% [markdown]
# ## How a Triton kernel runs
#
# A **kernel** is a function that runs on the GPU. You write it once; the GPU runs many
# copies of it at the same time. Triton calls each copy a **program** (CUDA would say a
# *thread block*). All programs run the same code; the only thing that tells them apart
# is their id, `tl.program_id(0)`: 0, 1, 2, ...
#
# The **grid** is how many programs you launch: a tuple of 1 to 3 numbers, so programs
# can also be numbered along a second and third axis (`tl.program_id(1)`, ...). For an
# elementwise op one axis is enough.
#
# A program does not handle one element but a **block** of `BLOCK` elements at once.
# In Triton the values you compute with are whole blocks (small tensors), not scalars:
# `tl.arange(0, BLOCK)` is the block `[0, 1, ..., BLOCK-1]`, and an operation on a block
# acts on every element of it. `BLOCK` must be a power of two and known when the kernel
# is compiled (a `tl.constexpr`), because the compiler spreads the block over the
# program's threads: `num_warps` warps (default 4) of 32 threads each, so with
# `BLOCK = 1024` and 4 warps each of the 128 threads holds 8 elements.
#
# So for `n` elements we launch `cdiv(n, BLOCK)` programs (`cdiv` is division rounded
# up), and program `pid` owns the **offsets** `pid * BLOCK + [0, 1, ..., BLOCK-1]`.
#
# A torch tensor passed to a kernel arrives as a **pointer** to its first element.
# `x_ptr + offs` is a block of `BLOCK` pointers; `tl.load` reads them all and
# `tl.store` writes a block to a block of pointers.
#
# `n` is rarely a multiple of `BLOCK`, so the last program's offsets run past the end
# of the tensor. The **mask** `offs < n` is True where the offset is real: `tl.load(ptrs,
# mask=mask)` does not touch the masked-off lanes (they get the value `other=`, or
# garbage you must not use), and `tl.store(ptrs, v, mask=mask)` does not write them.
# Without a mask the last program would read and write memory that is not the tensor's:
# a wrong result, another tensor silently overwritten, or a crash.
#
# Here is the split for 10 elements and `BLOCK = 4`, computed in plain torch (the same
# arithmetic each program does):

# %%
n, BLOCK = 10, 4
grid = (triton.cdiv(n, BLOCK),)  # ceil(10 / 4) = 3 programs
for pid in range(grid[0]):  # on a GPU they run at the same time, in no fixed order
    offs = pid * BLOCK + torch.arange(BLOCK)
    mask = offs < n
    print(f"program {pid}: offsets {offs.tolist()}  mask {mask.int().tolist()}")

# %% [markdown]
# **`TRITON_INTERPRET=1`.** Without a GPU, the first code cell set this environment
# variable before importing `triton`: kernels then run in Triton's *interpreter*, which
# executes the programs one after another on the CPU with numpy, on CPU tensors. Same
# code, same results, thousands of times slower; so on CPU `pick(cpu=..., gpu=...)`
# chooses small sizes. The interpreter is also the best debugger you will get: a plain
# `print(x)` inside a kernel prints the block. (On a GPU use `tl.device_print`.)
#
# ## ReLU: the ladder
#
# `y = max(x, 0)`. The two rungs from scratch: `relu_naive` loops over the rows of the
# tensor in Python, `relu_reference` is one vectorized `torch.maximum`. On a GPU we use
# a 4096 x 4096 float32 tensor (16.8M elements, the benchmark's size); on CPU 256 x 999,
# so that the element count (255,744 = 2⁸ · 999) is not a multiple of the blocks used
# here (1024 and up): the masks matter.

# %%
from tritonlab.kernels.activations import activation_backward, activation_forward, collapse, is_dense
from tritonlab.scratch.activations import relu_naive, relu_reference, sigmoid_naive, sigmoid_reference, tanh_naive

torch.manual_seed(0)
shape = pick(cpu=(256, 999), gpu=(4096, 4096))
x = torch.randn(shape, device=device())
numel, esize = x.numel(), x.element_size()
print(f"x: {tuple(x.shape)} float32, {numel:,} elements, {numel * esize / 1e6:.1f} MB")

# %% [markdown]
# **Napkin math before code.** ReLU must read every input once and write every output
# once: `2 x 4 bytes` per float32 element. At 4096 x 4096 that is 134 MB, which takes
# 134e6 / 3.35e12 s ≈ **40 us** at an H100's ~3.35 TB/s of HBM bandwidth. Its work is one
# comparison per element: 16.8M operations, ~0.25 us at ~67 fp32 TFLOP/s. So the op is
# **memory-bound**: time is bytes moved, and on an H100 no version can beat ~40 us (a
# faster memory lowers the floor: see the H200 run at the end). (An op becomes
# compute-bound only above ~67e12 / 3.35e12 ≈ 20 FLOPs per byte moved; ReLU does 1/8.)
# Launching a kernel costs ~5 us (a rule of thumb; the H200 run's benchmark measured 4.6 us
# for its smallest op), small against 40 us.
#
# Predictions, before measuring anything:
# - **naive**: 4096 Python iterations, each launching 2 small GPU ops (`row <= 0`,
#   `torch.where`), plus the final `torch.stack`. Each launch costs ~5-10 us of Python and
#   driver time whatever its size: ~40-80 ms in all, about 1000x the floor. It is bound
#   by launches, not bytes.
# - **reference** and **torch**: one kernel each, moving exactly the 134 MB: both near
#   the floor. (The harness measures the device's own copy bandwidth when it starts, and
#   `frac_of_floor` compares each version with what a copy of the same bytes takes there.)
# - **triton v1**: one pass, same bytes: we predict it matches torch within ~10%.
#
# ## Triton v1: one program per block of 1024 elements

# %%
@triton.jit
def relu_v1_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    """y = max(x, 0) for n contiguous elements. Grid: (cdiv(n, BLOCK),); one program
    computes the BLOCK consecutive elements starting at program_id * BLOCK."""
    pid = tl.program_id(0)  # which program am I: 0, 1, ..., grid - 1
    offs = pid * BLOCK + tl.arange(0, BLOCK)  # the BLOCK indices this program owns
    mask = offs < n  # the last program may run past the end: those lanes are off
    x = tl.load(x_ptr + offs, mask=mask)  # read BLOCK values at once
    y = tl.maximum(x, 0.0)  # computed on the whole block, in registers
    tl.store(y_ptr + offs, y, mask=mask)  # write BLOCK values at once


def relu_v1(x: torch.Tensor, block: int = 1024) -> torch.Tensor:
    assert x.is_contiguous(), "v1 walks memory element by element: contiguous tensors only"
    y = torch.empty_like(x)
    n = x.numel()
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK"]),)  # noqa: E731
    relu_v1_kernel[grid](x, y, n, BLOCK=block)
    return y


print(relu_v1(torch.randn(10, device=device()), block=4))  # 3 programs, the last one masked

# %% [markdown]
# **Launching.** `relu_v1_kernel[grid](x, y, n, BLOCK=block)` launches the kernel on a
# grid of programs. Tensor arguments become pointers, Python ints become scalars, and
# `tl.constexpr` arguments are compile-time constants: the first launch with a new value
# of `BLOCK` compiles a version of the kernel specialised for it (Triton is a
# just-in-time compiler; later launches reuse the cached binary).
#
# The grid can be a tuple, or, as here, a function that receives the launch's
# meta-parameters (`meta["BLOCK"]`, the constexpr values) and returns the tuple. The
# function form keeps the grid computed from the very `BLOCK` the kernel compiles with;
# it becomes necessary when an autotuner picks `BLOCK` for you (lesson 05).
#
# The output is allocated by the launcher with `torch.empty_like` (no need to zero it:
# every element is written once). The launch returns at once; the GPU runs the kernel
# in the background, in order with other work on the same stream.

# %%
table_relu = ladder(f"relu forward {shape[0]}x{shape[1]} float32", {
    "naive": lambda: relu_naive(x),
    "reference": lambda: relu_reference(x),
    "torch": lambda: torch.relu(x),
    "triton v1": lambda: relu_v1(x),
    "tritonlab": lambda: activation_forward(x, "relu"),
}, expected=torch.relu(x), cost=Cost(bytes=2 * numel * esize, flops=numel), baseline="torch")

# %% [markdown]
# ## Sigmoid and tanh: more math, still one pass
#
# `sigmoid(x) = 1 / (1 + exp(-x))` and `tanh(x) = (1 - exp(-2x)) / (1 + exp(-2x))`. In a
# kernel we build both from `tl.exp` (the interpreter has no libdevice, the GPU math
# library, so `tl.exp`, `tl.abs`, `tl.where` keep one code path for both). Two cares:
#
# - sigmoid: for x < -88 `exp(-x)` overflows to `inf` in float32, and `1 / (1 + inf)` is
#   exactly the right 0. No special case needed.
# - tanh: the formula as written gives `inf / inf = nan` for x < -44. Instead use
#   `e = exp(-2|x|)`, which is at most 1, compute `(1 - e) / (1 + e)` and put the sign
#   back with `tl.where(x < 0, -t, t)`.
#
# **Napkin math.** The bytes are the same as ReLU's (134 MB, ~40 us floor); the math is
# a few FLOPs and one `exp` per element, still far from compute-bound. What differs is the
# *reference*: `sigmoid_values` runs 4 torch kernels (`x * -log2(e)`, `exp2`, `+ 1`,
# `1 / .`), each reading and writing the whole tensor: 4 x 8 = 32 bytes per element
# instead of 8. Predictions: **reference ~4x slower than torch.sigmoid**; naive again
# launch-bound (~8 small ops per row); **triton v2 at torch's speed, ~4x the reference**,
# because all the math happens in registers between one load and one store. Doing
# several operations in one pass over memory is called **fusion**, and it is the main way
# a hand-written kernel beats a chain of library calls.
#
# ## Triton v2: one kernel, three activations, chosen at compile time
#
# The activation is a `tl.constexpr` string: `if ACT == "sigmoid"` is decided when the
# kernel compiles, so each activation gets its own specialised binary with no branch at
# run time. Half-precision inputs (float16, bfloat16) are computed in float32 and cast
# back on the store (`y_ptr.dtype.element_ty` is the output's element type).

# %%
@triton.jit
def activation_v2_kernel(x_ptr, y_ptr, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    """y = act(x), act in "relu", "sigmoid", "tanh", for n contiguous elements.
    Grid: (cdiv(n, BLOCK),); one program computes BLOCK consecutive elements."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
    if ACT == "relu":
        y = tl.maximum(x, 0.0)
    elif ACT == "sigmoid":
        y = 1.0 / (1.0 + tl.exp(-x))
    else:  # "tanh", in a form that never overflows
        e = tl.exp(-2.0 * tl.abs(x))
        t = (1.0 - e) / (1.0 + e)
        y = tl.where(x < 0, -t, t)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def activation_v2(x: torch.Tensor, act: str, block: int = 1024) -> torch.Tensor:
    assert x.is_contiguous()
    y = torch.empty_like(x)
    n = x.numel()
    activation_v2_kernel[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](x, y, n, ACT=act, BLOCK=block)
    return y


# the corners: huge inputs that would overflow exp, tiny ones where precision matters.
# (On CPU the interpreter computes with numpy, which warns "overflow encountered in exp":
# that inf is the one sigmoid relies on, so the warning is silenced here.)
import warnings

warnings.filterwarnings("ignore", "overflow encountered in exp")
corners = torch.tensor([-1000.0, -100.0, -44.5, -1e-4, 0.0, 1e-4, 44.5, 100.0, 1000.0], device=device())
torch.testing.assert_close(activation_v2(corners, "sigmoid"), torch.sigmoid(corners))
torch.testing.assert_close(activation_v2(corners, "tanh"), torch.tanh(corners))
print("sigmoid and tanh agree with torch at the corners:", activation_v2(corners, "tanh").tolist())

# %%
table_sigmoid = ladder(f"sigmoid forward {shape[0]}x{shape[1]} float32", {
    "naive": lambda: sigmoid_naive(x),
    "reference": lambda: sigmoid_reference(x),
    "torch": lambda: torch.sigmoid(x),
    "triton v2": lambda: activation_v2(x, "sigmoid"),
    "tritonlab": lambda: activation_forward(x, "sigmoid"),
}, expected=torch.sigmoid(x), cost=Cost(bytes=2 * numel * esize, flops=4 * numel), baseline="torch")

# %% [markdown]
# ## The backward: derivatives from the output
#
# For training, autograd needs `dx = dy * f'(x)` from the gradient `dy` of the output.
# For these three, `f'` can be written from the output `y` alone:
# ReLU: `f' = 1 if y > 0 else 0`; sigmoid: `f' = y (1 - y)`; tanh: `f' = 1 - y²`. So the
# forward keeps `y` (which the next layer needs anyway) and the backward never
# recomputes `x`.
#
# **Napkin math.** Read `dy` and `y`, write `dx`: 12 bytes per float32 element, 201 MB at
# 4096 x 4096, a floor of **~60 us**. Predictions, for tanh:
# - **reference** `dy * (1 - y * y)`: 3 torch kernels (`y * y`, `1 - .`, `dy * .`) moving
#   8 + 8 + 12 = 28 bytes per element instead of 12: **~2.3x slower** than one pass.
# - **torch** `aten.tanh_backward(dy, y)` (what autograd calls): one pass, at the floor.
# - **naive** (autograd through the row loop, forward included): launch-bound again.
# - **triton v3**: two loads and one store per block, one pass: **at torch's speed**.

# %%
@triton.jit
def activation_backward_v3_kernel(dy_ptr, y_ptr, dx_ptr, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    """dx = dy * act'(x), written with the forward's output y. All three pointers:
    n contiguous elements. Grid: (cdiv(n, BLOCK),)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dy = tl.load(dy_ptr + offs, mask=mask).to(tl.float32)
    y = tl.load(y_ptr + offs, mask=mask).to(tl.float32)
    if ACT == "relu":
        dx = tl.where(y > 0, dy, 0.0)
    elif ACT == "sigmoid":
        dx = dy * y * (1.0 - y)
    else:  # "tanh"
        dx = dy * (1.0 - y * y)
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def activation_backward_v3(y: torch.Tensor, dy: torch.Tensor, act: str, block: int = 1024) -> torch.Tensor:
    assert y.is_contiguous() and dy.is_contiguous() and y.shape == dy.shape
    dx = torch.empty_like(y)
    n = y.numel()
    activation_backward_v3_kernel[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](dy, y, dx, n, ACT=act, BLOCK=block)
    return dx


def tanh_backward_naive():
    """Autograd through the naive tier's formula: the forward runs too."""
    leaf = x.detach().clone().requires_grad_()
    tanh_naive(leaf).backward(dy)
    return leaf.grad


y = torch.tanh(x)
dy = torch.randn_like(x)
x64 = x.double().requires_grad_()  # the expected gradient, by autograd in float64
torch.tanh(x64).backward(dy.double())

table_tanh_backward = ladder(f"tanh backward {shape[0]}x{shape[1]} float32", {
    "naive": tanh_backward_naive,
    "reference": lambda: dy * (1 - y * y),
    "torch": lambda: torch.ops.aten.tanh_backward(dy, y),
    "triton v3": lambda: activation_backward_v3(y, dy, "tanh"),
    "tritonlab": lambda: activation_backward(y, dy, "tanh"),
}, expected=x64.grad.float(), cost=Cost(bytes=3 * numel * esize, flops=3 * numel), baseline="torch")

# %% [markdown]
# ## Views: when element k is not at `x_ptr + k`
#
# So far each kernel assumed element `k` of the tensor lives at `x_ptr + k`: a
# contiguous tensor. Two other cases are common.
#
# **Dense, other order.** `x.t()` of a contiguous `x`, or a `channels_last` image batch,
# fills its memory exactly, with no gaps and no overlap, only in another order. An
# elementwise op does not care about order, as long as `y` uses the same layout as `x`:
# run the flat kernel over the memory as it lies, and give `y` the same strides
# (`torch.empty_like` does).
#
# **Views with gaps.** A slice like `base[:, ::2]` skips every other element of its
# memory: a flat pass would read the skipped ones too. Two ways out:
#
# 1. `x.contiguous()` first, then the flat kernel: a copy (one more read and write of
#    the data) before the real pass.
# 2. A **strided** kernel: each program turns its logical indices `idx` (row-major
#    over the view's shape) into coordinates `row = idx // n_cols`, `col = idx % n_cols`,
#    and reads `x_ptr + row * stride_row + col * stride_col`. A view passed to a kernel
#    arrives as a pointer to *its* first element, and `x.stride()` says how far apart
#    its elements are. The division and modulo add a few integer operations per element,
#    nothing against the memory floor.
#
# **Napkin math** for `base[:, ::2]` with `base` 4096 x 8192 (the view is 4096 x 4096):
# the useful bytes are the same 134 MB (floor ~40 us), but memory is read in 32-byte
# sectors, so reading every other float32 brings the skipped half through too: ~134 MB
# read + 67 MB written ≈ 201 MB, ~60 us, for the strided kernel (and for torch, which
# handles strides the same way). The copy route moves ~201 MB for the copy and 134 MB for
# the ReLU: 335 MB. Prediction: **v4 ~1.7x faster than copy + v1**, about torch's speed.

# %%
@triton.jit
def relu_strided_v4_kernel(x_ptr, y_ptr, n, n_cols, stride_row, stride_col, BLOCK: tl.constexpr):
    """y = max(x, 0) for a 2-D x of any strides (n = rows * n_cols elements);
    y: contiguous (rows, n_cols). Grid: (cdiv(n, BLOCK),); one program computes BLOCK
    consecutive logical (row-major) indices."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    row = idx // n_cols
    col = idx % n_cols
    x = tl.load(x_ptr + row * stride_row + col * stride_col, mask=mask)
    tl.store(y_ptr + idx, tl.maximum(x, 0.0), mask=mask)  # y is contiguous: logical index = offset


def relu_strided_v4(x: torch.Tensor, block: int = 1024) -> torch.Tensor:
    assert x.dim() == 2
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous
    n = x.numel()
    relu_strided_v4_kernel[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](
        x, y, n, x.shape[1], x.stride(0), x.stride(1), BLOCK=block)
    return y


base = torch.randn(shape[0], 2 * shape[1], device=device())
view = base[:, ::2]  # every other column: strides (2 * cols, 2), gaps in memory
print("view", tuple(view.shape), "strides", view.stride(), "contiguous:", view.is_contiguous(),
      "dense:", is_dense(view))
print("x.t() strides", x.t().stride(), "contiguous:", x.t().is_contiguous(), "dense:", is_dense(x.t()))

table_view = ladder(f"relu of a strided view {view.shape[0]}x{view.shape[1]} float32", {
    "naive": lambda: relu_naive(view),
    "reference": lambda: relu_reference(view),
    "torch": lambda: torch.relu(view),
    "triton v1 on a copy": lambda: relu_v1(view.contiguous()),
    "triton v4 strided": lambda: relu_strided_v4(view),
    "tritonlab": lambda: activation_forward(view, "relu"),
}, expected=torch.relu(view), cost=Cost(bytes=2 * view.numel() * esize, flops=view.numel()), baseline="torch")

# %% [markdown]
# ## What `tritonlab.kernels.activations` adds
#
# The shipped kernels (read `tritonlab/kernels/activations.py`) are v2, v3 and v4 joined
# and hardened:
#
# - **One flat kernel** `_flat_kernel` for forward and backward of all three activations
#   (`ACT` and `BACKWARD` are constexprs: six specialised binaries, no run-time branch).
#   The activation math lives in `tritonlab/kernels/_math.py`, shared with the GEMM's
#   fused epilogue (lesson 05); ReLU keeps a `nan` input as `nan`, as `torch.relu` does
#   (`tl.maximum` alone may drop it).
# - **64-bit offsets**: `tl.program_id(0).to(tl.int64) * BLOCK`. Our v1 computes offsets
#   in int32, which wraps around past 2**31 elements (8.6 GB of float32, a size real
#   activations reach). Only the index arithmetic pays for the wider type.
# - **Any dense layout takes the flat path**: `is_dense` and a layout check send
#   contiguous, transposed, channels_last and any permuted tensors to the flat kernel, and
#   the output keeps the input's layout.
# - **A strided kernel for up to 4 dims**, after `collapse` merges every pair of dims
#   that all tensors step over as one (a 4-D `x[:, :, ::2]` becomes 3 dims or fewer);
#   only a view that stays above 4 dims after that is copied first.
# - **float16 / bfloat16 / float64**: half precision computed in float32, float64 kept.
# - **Block sizes**: `BLOCK = 2048` with 8 warps for the flat kernel (8 elements per
#   thread: two 16-byte vector loads of float32), 1024 with 4 warps for the strided one.
#   These follow the usual guidance for memory-bound kernels; they have not been measured
#   against other choices on a GPU yet. The one H200 run (end of this lesson) put the
#   flat kernel at 0.85–0.86 of the copy floor, within 4% of torch.
# - **Short host code.** The launcher's Python runs before every launch, and for a small
#   tensor it, not the kernel, sets the time. Two costs on the project's 2-core CPU:
#   `triton.cdiv` is a `constexpr_function` (callable in kernels and on the host) whose
#   host call took ~1.9 us against ~0.1 us for `-(-a // b)`, and `is_dense` loops over
#   strides in Python where `t.is_contiguous()` answers the common case in C++. With
#   plain `cdiv` (`kernels/_host.py`) and that shortcut, the ReLU layer's host code went
#   from 18.0 to 10.3 us a forward (reports/cpu-2026-11-29/host-overhead.txt, trees
#   7c76880 and 64b387a). `scripts/host_overhead.py` measures it on any machine,
#   every launch replaced by a no-op so only the Python is timed.

# %%
xt = x.t()  # dense, not contiguous: the flat kernel runs, and y keeps the transposed layout
yt = activation_forward(xt, "relu")
print("x.t() ->", xt.stride(), " y ->", yt.stride(), " same values as torch:", torch.equal(yt, torch.relu(xt)))
# collapse: the (size, [stride per tensor]) dims the strided kernel walks
print("a contiguous 3-D tensor collapses to", collapse((2, 3, 4), (12, 4, 1)))
# base[:, ::2] is every other float of one buffer (row stride = 2 x cols): it collapses to one dim of stride 2
print("the view base[:, ::2]:", collapse(view.shape, view.stride()))
print("a slice of columns, base[:, :100], keeps two dims:", collapse(base[:, :100].shape, base[:, :100].stride()))

# %% [markdown]
# ## Measured: one run on an NVIDIA H200
#
# What this lesson printed on the project's one GPU run so far (2026-11-28, NVIDIA H200,
# torch 2.11, triton 3.6; one run each, times in ms; the whole output is in
# `reports/h200-2026-11-28/tutorials.txt`). Compare it with the predictions above; a
# rerun prints your own device's ladder.
#
# **The floor moved.** The napkin math used an H100's 3.35 TB/s; the H200 has HBM3e,
# ~4.8 TB/s on its data sheet, and the run's benchmark measured 4.12 TB/s for a large copy
# (`reports/h200-2026-11-28/summary.md`). There the 134 MB of a 4096 x 4096 ReLU take
# **32.5 us** at the measured copy speed (28 us at the data sheet's): torch's 36.8 us beats
# the H100 floor of ~40 us but not the H200's. `frac_of_floor` divides by the copy speed
# the lesson measured when it started, about the same (0.88 for torch).
#
# **Not measured.** The run gave each lesson 22 s, and this one stopped after the sigmoid
# ladder: the backward and strided-view ladders, and their predictions (v3 at torch's
# speed, v4 ~1.7x faster than copy + v1), have not run on a GPU yet.
#
# ```
# == relu forward 4096x4096 float32 — NVIDIA H200
#   version  rel_err status  ms_p50  ms_p20  ms_p80  GB/s   TFLOP/s  frac_of_floor  x_vs_torch
#     naive        0     ok   134.1   134.1   134.1 1.001 0.0001252      0.0002411   0.0002748
# reference        0     ok 0.05693 0.05629 0.05779  2358    0.2947         0.5678       0.647
#     torch        0     ok 0.03683 0.03642 0.03815  3644    0.4555         0.8777           1
# triton v1        0     ok 0.03747 0.03667 0.03856  3582    0.4477         0.8627      0.9829
# tritonlab        0     ok 0.03773 0.03741 0.03798  3558    0.4447         0.8568      0.9763
# sigmoid and tanh agree with torch at the corners: [-1.0, -1.0, -1.0, -9.999678877647966e-05, 0.0, 9.999678877647966e-05, 1.0, 1.0, 1.0]
#
# == sigmoid forward 4096x4096 float32 — NVIDIA H200
#   version   rel_err status  ms_p50  ms_p20  ms_p80   GB/s   TFLOP/s  frac_of_floor  x_vs_torch
#     naive 1.196e-07     ok   691.5   691.5   691.5 0.1941 9.705e-05      4.675e-05   5.326e-05
# reference 1.196e-07     ok  0.1423  0.1415  0.1436    943    0.4715         0.2271      0.2588
#     torch         0     ok 0.03683 0.03645 0.03814   3644     1.822         0.8777           1
# triton v2 1.795e-07     ok 0.03648  0.0361 0.03786   3679      1.84         0.8861        1.01
# tritonlab 1.795e-07     ok 0.03821 0.03744 0.03907   3513     1.756         0.8461       0.964
# ```

# %% [markdown]
# ## Exercises
#
# Each exercise has a stub that raises `NotImplementedError`; replace it, then run the
# cell with `check_K()` below it. Solutions: `tutorials/solutions/01_elementwise.py`.
#
# **Exercise 1: leaky ReLU.** `y = x if x > 0 else slope * x`. Write a kernel and its
# launcher for a contiguous tensor of any size, writing into `out`. The check uses 1000
# elements, not a multiple of your `BLOCK`, and hands you `out` as the first 1000 floats
# of a longer buffer: a kernel without a mask writes past them, and the check sees it
# (on a real GPU such a write could land in another tensor, or crash much later).
# `slope` is a plain float argument.

# %%
def exercise_1(x: torch.Tensor, slope: float, out: torch.Tensor) -> torch.Tensor:
    """Write leaky_relu(x, slope) into `out` with your Triton kernel and return `out`
    (x and out contiguous, same size).

    Skeleton:
        @triton.jit
        def leaky_relu_kernel(x_ptr, y_ptr, n, slope, BLOCK: tl.constexpr):
            offs = ...; mask = ...
            x = tl.load(...)
            tl.store(..., tl.where(x > 0, x, slope * x), mask=mask)
    """
    raise NotImplementedError


SENTINEL = 7.0  # what the buffer holds past `out`; it must still hold it after your kernel
_in1 = torch.randn(2048, generator=torch.Generator().manual_seed(1)).to(device())
x1 = _in1[:1000]  # reads past x1 stay inside _in1 (no crash), but land in the output's tail


def check_1(fn=None):
    fn = fn or exercise_1  # looked up now, so a rerun exercise cell counts
    def run():
        buf = torch.full((2048,), SENTINEL, device=device())
        fn(x1, 0.1, buf[:1000])
        return buf
    want = torch.cat((torch.where(x1 > 0, x1, 0.1 * x1), torch.full((1048,), SENTINEL, device=device())))
    return exercise("1: leaky ReLU (and nothing written past out)", run, expected=want)


# %%
check_1()

# %% [markdown]
# **Exercise 2: a backward that needs x.** SiLU, `y = x * sigmoid(x)`, is used in many
# recent models. Its derivative is `s + x * s * (1 - s)` with `s = sigmoid(x)`: it
# cannot be written from `y` alone, so the backward reads `x` (and `dy`). Write the
# backward kernel: `dx = dy * (s + x * s * (1 - s))`, contiguous tensors of any size.

# %%
def exercise_2(x: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Return dx for y = silu(x) given the output gradient dy, by a Triton kernel that
    loads x and dy and stores dx (one pass, masks for the last block)."""
    raise NotImplementedError


_g2 = torch.Generator().manual_seed(2)
x2, dy2 = torch.randn(3, 777, generator=_g2).to(device()), torch.randn(3, 777, generator=_g2).to(device())
_s2 = torch.sigmoid(x2)


def check_2(fn=None):
    fn = fn or exercise_2  # looked up now, so a rerun exercise cell counts
    return exercise("2: SiLU backward", lambda: fn(x2, dy2), expected=dy2 * (_s2 + x2 * _s2 * (1 - _s2)))


# %%
check_2()

# %% [markdown]
# **Exercise 3: ReLU of any 2-D view.** Extend v4's idea: return `relu(x)` as a new
# contiguous tensor for a 2-D `x` of any strides. The check runs it on a slice of every
# third column and on a transposed slice (the two results are flattened and joined).
# Read each element where its strides put it. The check compares values only: it cannot
# see a `.contiguous()` copy before a flat kernel, which passes it but is the extra pass
# over memory this exercise is about avoiding.

# %%
def exercise_3(x: torch.Tensor) -> torch.Tensor:
    """Return relu(x) for a 2-D x of any strides, as a contiguous tensor of x's shape,
    by a Triton kernel (pass x.stride(0) and x.stride(1) to it)."""
    raise NotImplementedError


_base3 = torch.randn(40, 90, generator=torch.Generator().manual_seed(3)).to(device())
views3 = [_base3[:, 1::3], _base3[5:, 2:70].t()]


def check_3(fn=None):
    fn = fn or exercise_3  # looked up now, so a rerun exercise cell counts
    return exercise("3: ReLU of a view", lambda: torch.cat([fn(v).reshape(-1) for v in views3]),
                    expected=torch.cat([torch.relu(v).reshape(-1) for v in views3]))


# %%
check_3()

# %% [markdown]
# ## What's next
#
# Every output here depended on one input element. In **lesson 02 (softmax)** each output
# depends on a whole row: one program per row, reductions (`tl.max`, `tl.sum`) inside a
# program, and fusion of five torch ops into a single read and a single write, then an
# online softmax for rows too long to hold at once.
