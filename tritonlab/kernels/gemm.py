"""GEMM with a fused epilogue: c = act(a @ b + bias), and the epilogue's backward.

`matmul` is the launcher Linear, Conv2d (implicit GEMM / im2col) and the RNNs share.

Precision: tiles accumulate in fp32. float16/bfloat16 inputs run on the tensor cores.
float32 inputs use TF32 tensor cores exactly when `torch.backends.cuda.matmul.allow_tf32`
is True (torch's own flag for its matmuls, False by default; or its successor
`torch.backends.cuda.matmul.fp32_precision == "tf32"`, see backend.tf32_enabled),
full-precision fp32 FMA otherwise; the setting is read at every call. The interpreter
ignores the choice (numpy fp32).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..backend import interpreter_enabled
from ._host import cdiv, dot_precision, next_power_of_2, sm_count
from ._math import ACTIVATIONS, activate, activate_grad

INTERPRETED = interpreter_enabled()  # as triton.jit read it for this module's kernels (see _host)

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_M_BUCKET_CAP = 4096  # autotune per power-of-two bucket of M up to this, then once for all larger M


def _configs():
    """A handful of H100/H200 configs: large tiles for 16-bit tensor cores, narrower K for
    fp32/TF32 (twice the bytes per element, so half the K per stage), and small tiles for
    skinny problems (few rows, e.g. batch-1 inference or an RNN step)."""
    c = triton.Config
    return [
        c({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=3),
        c({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=4),
        c({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=8, num_stages=3),
        c({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=4),
        c({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=4),
        c({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=3),
        c({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4),
        c({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8}, num_warps=4, num_stages=4),
    ]


_SMEM_BUDGET = 200 * 1024  # bytes of shared memory per block, under the H100/H200's 227 KB


def _fits_smem(configs, named_args, **kwargs):
    """Drop configs whose pipelined A and B tiles overflow shared memory for this dtype
    (fp32 tiles take twice the bytes of 16-bit ones) before they are compiled and timed."""
    size = named_args["a_ptr"].element_size()
    return [c for c in configs if c.num_stages * size * c.kwargs["BLOCK_K"]
            * (c.kwargs["BLOCK_M"] + c.kwargs["BLOCK_N"]) <= _SMEM_BUDGET]


# Under the interpreter one small fixed tile (autotuning would time configs there): several
# programs per test shape, so grouping, ragged edges and the K tail all run.
_INTERPRET_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2, "num_warps": 4, "num_stages": 1}
# GEMMs of at most this many multiply-adds take one fixed small tile on the GPU: they are
# launch-bound (128^3 is ~4 ns of tensor-core work against a launch of several us: the
# H200 run's smallest op took 4.6 us, reports/h200-2026-11-28), so timing
# configs would buy nothing and cost a compile of every config per new shape class.
_TUNE_MIN_MACS = 1 << 21
_SMALL_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 4}


@triton.jit(do_not_specialize=["M_BUCKET", "LAYOUT"])
def _matmul_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr,
    M, N, K, K_PER_SPLIT, M_BUCKET, LAYOUT,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cs, stride_cm, stride_cn,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, PRECISION: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, EVEN_K: tl.constexpr,
):
    """c = act(a @ b + bias), fp32 accumulation, cast to c's dtype at the store.

    Pointers: a (M, K), b (K, N), c (M, N), each with its own strides; bias (N,)
    contiguous (unused unless HAS_BIAS). ACT is an activation code of `_math`.
    M_BUCKET and LAYOUT only feed the autotune key (a power-of-two bucket of M; which
    operands are contiguous along K and N, see _layout).
    Split-K (SPLIT): program (t, s) sums only k in [s * K_PER_SPLIT, (s+1) * K_PER_SPLIT)
    and stores its raw fp32 partial at c + s * stride_cs, c being then an (S, M, N)
    workspace; `_split_k_sum_kernel` adds the partials and applies the epilogue.
    Without it K_PER_SPLIT = K and the grid's second axis is 1.
    Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N), S): one program per BLOCK_M x BLOCK_N
    tile of c (and K range), in grouped order: GROUP_M row-tiles walk the columns
    together, so the b panel a group reads stays in L2 while its programs run.
    Cost: 2*M*N*K FLOPs; HBM bytes at least (M*K + K*N + M*N) * itemsize (+ N bias,
    + 2*S*M*N*4 for a split-K workspace), more when panels fall out of L2. 4096^3 bf16:
    137 GFLOP, ~100 MB: the floor is ~0.14 ms at the data sheet's ~990 TFLOP/s on an
    H100/H200 (~0.19 ms at the 741 TFLOP/s torch's bf16 matmul reached on the H200),
    compute-bound by ~4.6x over the ~30 us the bytes take at an H100's 3.35 TB/s (~24 us
    at the H200's measured 4.12 TB/s); TF32 ~0.28 ms and fp32 FMA ~2 ms by the data
    sheet (~0.38 and ~2.7 ms at the 358 and 51.2 TFLOP/s the H200 run measured).
    """
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % num_pid_in_group) % group_size_m
    pid_n = (pid % num_pid_in_group) // group_size_m
    pid_s = tl.program_id(1)

    # int64 offsets: rows * stride can pass 2**31 elements. Out-of-range rows and
    # columns wrap (% M, % N) to read valid memory unmasked; the store drops them.
    rm = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    k0 = pid_s.to(tl.int64) * K_PER_SPLIT
    k_len = min(K - pid_s * K_PER_SPLIT, K_PER_SPLIT)  # int32 loop bound: K itself < 2**31
    a_ptrs = a_ptr + (rm % M)[:, None] * stride_am + (k0 + rk)[None, :] * stride_ak
    b_ptrs = b_ptr + (k0 + rk)[:, None] * stride_bk + (rn % N)[None, :] * stride_bn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(k_len, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            k_left = k_len - k * BLOCK_K
            a = tl.load(a_ptrs, mask=rk[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=rk[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    c_ptrs = c_ptr + pid_s.to(tl.int64) * stride_cs + rm[:, None] * stride_cm + rn[None, :] * stride_cn
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    if SPLIT:
        tl.store(c_ptrs, acc, mask=mask)
    else:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        acc = activate(acc, ACT)
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _split_k_sum_kernel(
    ws_ptr, bias_ptr, c_ptr, M, N, S, stride_ws, stride_cm, stride_cn,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """c = act(sum_s ws[s] + bias): the epilogue of a split-K matmul.

    Pointers: ws (S, M, N) fp32 contiguous partial products (stride_ws = M * N); bias
    (N,) (unused unless HAS_BIAS); c (M, N) with its strides. Grid: (cdiv(M, BLOCK_M), cdiv(N, BLOCK_N)),
    one tile of c per program, summing its S partials in order (deterministic).
    Cost: reads S*M*N*4 bytes, writes M*N*itemsize; S*M*N adds.
    """
    rm = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    ws_ptrs = ws_ptr + rm[:, None] * N + rn[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for _ in range(0, S):
        acc += tl.load(ws_ptrs, mask=mask, other=0.0)
        ws_ptrs += stride_ws  # a Python int from the launcher: int64 once M * N needs it
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    acc = activate(acc, ACT)
    tl.store(c_ptr + rm[:, None] * stride_cm + rn[None, :] * stride_cn, acc.to(c_ptr.dtype.element_ty), mask=mask)


# EVEN_K drops the K-tail mask when every K step is a full tile; it depends on the
# BLOCK_K autotune picks, so the heuristic sits inside the autotuner.
_even_k = triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0
                            and args["K_PER_SPLIT"] % args["BLOCK_K"] == 0})
_matmul_fixed = _even_k(_matmul_kernel)
# The key holds no raw M: a new batch size retunes only when it enters a new bucket.
# The autotuner adds every tensor argument's dtype to the key itself.
_matmul_tuned = triton.autotune(configs=_configs(),
                                key=["M_BUCKET", "N", "K", "K_PER_SPLIT", "PRECISION", "LAYOUT"],
                                prune_configs_by={"early_config_prune": _fits_smem})(_matmul_fixed)


def _layout(a: torch.Tensor, b: torch.Tensor) -> int:
    """2 if a's rows are contiguous (a K-major tile load), plus 1 if b's are (N-major):
    Linear's forward (x @ Wᵀ: 2; 3 where _b_for_ffma copies Wᵀ), dX (g @ W: 3) and dW
    (gᵀ @ x: 1) share M, N and K at a square layer, yet load their tiles differently, so
    each is tuned on its own."""
    return 2 * (a.stride(1) == 1) + (b.stride(1) == 1)


def _check_2d(t, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"matmul expected {name} to be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"matmul expected {name} to be 2-D, got shape {tuple(t.shape)}")
    if t.dtype not in DTYPES:
        raise TypeError(f"matmul supports float32, float16 and bfloat16, got {name} of dtype {t.dtype}")


def _check(a, b, bias, activation, out):
    _check_2d(a, "a")
    _check_2d(b, "b")
    if a.dtype != b.dtype:
        raise TypeError(f"matmul expected a and b of one dtype, got a {a.dtype} and b {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"matmul expected a and b on one device, got a on {a.device} and b on {b.device}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(
            f"matmul expected b of shape ({a.shape[1]}, N) for a of shape {tuple(a.shape)}, "
            f"got b of shape {tuple(b.shape)}"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"matmul activation must be one of {list(ACTIVATIONS)}, got {activation!r}"
        )
    M, N = a.shape[0], b.shape[1]
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"matmul expected bias to be a torch.Tensor or None, got {type(bias).__name__}")
        if tuple(bias.shape) != (N,):
            raise ValueError(f"matmul expected bias of shape ({N},), got {tuple(bias.shape)}")
        if bias.dtype != a.dtype:
            raise TypeError(f"matmul expected bias of dtype {a.dtype}, got {bias.dtype}")
        if bias.device != a.device:
            raise ValueError(f"matmul expected bias on {a.device}, got it on {bias.device}")
    if out is not None:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"matmul expected out to be a torch.Tensor or None, got {type(out).__name__}")
        if tuple(out.shape) != (M, N):
            raise ValueError(f"matmul expected out of shape ({M}, {N}), got {tuple(out.shape)}")
        if out.dtype not in DTYPES:
            raise TypeError(f"matmul expected out of dtype float32, float16 or bfloat16, got {out.dtype}")
        if out.device != a.device:
            raise ValueError(f"matmul expected out on {a.device}, got it on {out.device}")


def _split_k(M: int, N: int, K: int, device: torch.device, split_k: int | None) -> tuple[int, int]:
    """(S, K_PER_SPLIT): how many K ranges the GEMM is cut into, and their length.

    Automatic on CUDA: when even 64x64 tiles of the output cannot fill half the SMs
    (e.g. dW of a small layer summed over many rows; smaller tiles are the autotuner's
    cheaper way to more programs, so they go first) and K is long, cut K so that tiles
    * S is about one wave, each range keeping >= 1024 of K. K_PER_SPLIT is a multiple of
    the largest BLOCK_K, so only the last range has a ragged tail.
    """
    if split_k is None:
        split_k = 1
        if device.type == "cuda" and K >= 4096:
            sms = sm_count(device)
            tiles = cdiv(M, 64) * cdiv(N, 64)
            if 2 * tiles <= sms:
                split_k = min(cdiv(sms, tiles), K // 1024, 32)
    if split_k == 1 or K == 0:
        return 1, K
    grain = _INTERPRET_CONFIG["BLOCK_K"] if INTERPRETED else max(c.kwargs["BLOCK_K"] for c in _configs())
    # at most 65535 ranges: the CUDA limit of the grid's second axis
    per = cdiv(cdiv(K, min(split_k, 65535)), grain) * grain
    return cdiv(K, per), per


# from this many rows of a (and past _TUNE_MIN_MACS), an FFMA GEMM reads a k-contiguous
# b from a column-contiguous copy (see _b_for_ffma)
FFMA_COPY_B_MIN_M = 256


def _b_for_ffma(b: torch.Tensor, M: int, K: int, ffma: bool) -> torch.Tensor:
    """b as the kernel should read it. The fp32 dot with TF32 off runs on FFMA and reads
    each B tile from shared memory with a warp's threads along its columns. A
    k-contiguous b (`weight.t()`, a Linear's forward) puts those columns 512 bytes apart,
    all in the same banks: 32-way conflicts. By count, in the sm_90 compile of the
    128x128x32 config (triton 3.6, 8 warps: 128 broadcast reads of A and 32 of B a warp
    per K tile, 2,048 FFMA), that is ~9,200 shared-memory cycles a K tile against ~4,100
    of FFMA issue: at most ~45% of the FFMA peak (~67 TFLOP/s by the data sheet), ~0.58x
    of the 51.2 TFLOP/s cuBLAS reached on the H200. That run measured the 4096^3 float32
    Linear at 0.44x cuBLAS (0.33 of peak; reports/h200-2026-11-28): the conflicts would
    account for most of the gap, not all. Every fp32 config compiles B this way. A
    column-contiguous copy reads without conflicts (~2,000 cycles, under the FFMA
    issue). It costs a pass over b (8·K·N bytes, a launch, and 4·K·N bytes of memory
    while the kernel runs), repaid by the same count from M ~50; copied from
    FFMA_COPY_B_MIN_M rows, and only where the GEMM is not launch-bound. Not yet timed
    on a GPU."""
    big = M >= FFMA_COPY_B_MIN_M and M * b.shape[1] * K > _TUNE_MIN_MACS
    if ffma and big and K > 1 and b.stride(0) == 1 and b.stride(1) != 1:
        return b.contiguous()
    return b


def matmul(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
           activation: str | None = None, *, out: torch.Tensor | None = None,
           split_k: int | None = None) -> torch.Tensor:
    """c = act(a @ b + bias) in one kernel (two with split-K).

    a (M, K) and b (K, N) of one dtype (float32, float16, bfloat16), any strides (b may
    be `weight.t()`, a view: no copy); bias (N,) of that dtype or None; activation None,
    "relu", "sigmoid" or "tanh", applied in fp32 before the store. Returns c (M, N) in
    a.dtype, or writes it into `out` ((M, N), any strides, any of the three dtypes) and
    returns `out`. `out` must not overlap a or b. float32 runs in TF32 exactly when
    torch.backends.cuda.matmul.allow_tf32 is True (see the module docstring).
    split_k: None picks it (see `_split_k`), 1 never splits, n cuts K into at most n
    ranges summed in fp32 by a second kernel that applies bias and activation.
    """
    _check(a, b, bias, activation, out)
    if split_k is not None and (not isinstance(split_k, int) or split_k < 1):
        raise ValueError(f"matmul expected split_k to be None or an int >= 1, got {split_k!r}")
    if not a.is_cuda and not INTERPRETED:
        raise ValueError(
            f"matmul runs on CUDA tensors, or on CPU tensors under Triton's interpreter; got "
            f"tensors on {a.device}: move them to CUDA or set TRITON_INTERPRET=1 before Python starts"
        )
    if not a.is_cuda and torch.bfloat16 in (a.dtype, None if out is None else out.dtype):
        raise TypeError("matmul got bfloat16 on the CPU, but the Triton interpreter has no bfloat16 (it "
                        "would compute garbage); use float16/float32 or CUDA tensors")
    M, K = a.shape
    N = b.shape[1]
    if out is None:
        out = torch.empty((M, N), device=a.device, dtype=a.dtype)
    if M == 0 or N == 0:
        return out
    splits, k_per_split = _split_k(M, N, K, a.device, split_k)
    # split-K: raw fp32 partials go to an (S, M, N) workspace, the epilogue runs after
    c = out if splits == 1 else torch.empty((splits, M, N), device=a.device, dtype=torch.float32)
    precision = dot_precision(a.dtype)
    b = _b_for_ffma(b, M, K, precision == "ieee")
    bias_ptr = bias if bias is not None else out  # a placeholder pointer when there is no bias
    args = (
        a, b, c, bias_ptr, M, N, K, k_per_split, min(next_power_of_2(M), _M_BUCKET_CAP), _layout(a, b),
        a.stride(0), a.stride(1), b.stride(0), b.stride(1),
        c.stride(0) if splits > 1 else 0, c.stride(-2), c.stride(-1),
    )
    meta = dict(HAS_BIAS=bias is not None, ACT=ACTIVATIONS[activation], SPLIT=splits > 1,
                PRECISION=precision)
    if INTERPRETED or M * N * K <= _TUNE_MIN_MACS:
        cfg = _INTERPRET_CONFIG if INTERPRETED else _SMALL_CONFIG
        grid = (cdiv(M, cfg["BLOCK_M"]) * cdiv(N, cfg["BLOCK_N"]), splits)
        _matmul_fixed[grid](*args, **meta, **cfg)
    else:
        def grid(m):
            return (cdiv(M, m["BLOCK_M"]) * cdiv(N, m["BLOCK_N"]), splits)
        _matmul_tuned[grid](*args, **meta)
    if splits > 1:
        block_m, block_n = 32, 64
        _split_k_sum_kernel[(cdiv(M, block_m), cdiv(N, block_n))](
            c, bias_ptr, out, M, N, splits, c.stride(0), out.stride(0), out.stride(1),
            HAS_BIAS=bias is not None, ACT=ACTIVATIONS[activation], BLOCK_M=block_m, BLOCK_N=block_n,
        )
    return out


@triton.jit
def _epilogue_grad_kernel(
    dy_ptr, y_ptr, g_ptr, db_ptr,
    M, N, ROWS_PER_PROGRAM,
    stride_dym, stride_dyn, stride_ym, stride_yn, stride_gm, stride_gn,
    ACT: tl.constexpr, HAS_DB: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Backward of the epilogue: g = dy * act'(y) and the column sums of g (db).

    Pointers: dy, y, g (M, N) with their own strides (y and g unused when ACT is NONE:
    then g = dy and nothing is written but the sums); db (cdiv(M, ROWS_PER_PROGRAM), N)
    contiguous: row s holds the sum over rows [s * ROWS_PER_PROGRAM, (s+1) *
    ROWS_PER_PROGRAM) (unused unless HAS_DB). ROWS_PER_PROGRAM is a multiple of BLOCK_M.
    Grid: (cdiv(N, BLOCK_N), cdiv(M, ROWS_PER_PROGRAM)); a program walks its row range in
    BLOCK_M x BLOCK_N tiles and keeps its BLOCK_N column sums in fp32 registers.
    Cost: reads dy (+ y), writes g: 3*M*N*itemsize bytes with an activation, M*N*itemsize
    for db alone; a few FLOPs per element, so bandwidth-bound (4096x4096 bf16 with an
    activation: 100 MB, ~30 us at 3.35 TB/s).
    """
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = rn < N
    row0 = pid_s.to(tl.int64) * ROWS_PER_PROGRAM
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for r in range(0, ROWS_PER_PROGRAM, BLOCK_M):
        rm = row0 + r + tl.arange(0, BLOCK_M)
        mask = (rm < M)[:, None] & mask_n[None, :]
        g = tl.load(dy_ptr + rm[:, None] * stride_dym + rn[None, :] * stride_dyn, mask=mask, other=0.0)
        g = g.to(tl.float32)
        if ACT != 0:
            y = tl.load(y_ptr + rm[:, None] * stride_ym + rn[None, :] * stride_yn, mask=mask, other=0.0)
            g = activate_grad(g, y.to(tl.float32), ACT)
            tl.store(g_ptr + rm[:, None] * stride_gm + rn[None, :] * stride_gn,
                     g.to(g_ptr.dtype.element_ty), mask=mask)
        if HAS_DB:
            acc += tl.sum(g, axis=0)  # masked entries loaded dy = 0, so g = 0 there
    if HAS_DB:
        tl.store(db_ptr + pid_s.to(tl.int64) * N + rn, acc.to(db_ptr.dtype.element_ty), mask=mask_n)


def _programs_wanted(device: torch.device) -> int:
    """Enough programs to fill the GPU a few times over; few under the interpreter
    (each one runs in Python), but more than one so the split-and-sum path runs there."""
    if device.type != "cuda":
        return 4
    return 4 * sm_count(device)


def epilogue_grad(dy: torch.Tensor, y: torch.Tensor | None, activation: str | None,
                  bias_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(g, db) for c = act(a @ b + bias): g = dy * act'(y), the gradient at the GEMM's
    output (dy itself, no copy, without an activation), and db = g summed over rows
    (None unless `bias_grad`), both in dy's dtype, db summed in fp32.

    dy and y: (M, N), any strides; y is the saved forward output, needed only with an
    activation. Chosen over a prologue in the backward GEMMs: those would each reload y
    and recompute act' once per tile that reads an element (N/BLOCK_N and K/BLOCK_N
    times) and route their A operand through registers; here g costs one write and two
    reads of M*N more than the prologue (dX and dW then read g, not dy and y), and db
    comes out of the same pass.

    Rows are split over programs so that small N still fills the GPU; the per-split
    partial sums (fp32) are then summed by the same kernel in a second, small launch.
    """
    M, N = dy.shape
    act = ACTIVATIONS[activation]
    g = torch.empty((M, N), device=dy.device, dtype=dy.dtype) if act else dy
    if not act and not bias_grad:
        return g, None
    if M == 0 or N == 0:  # nothing to launch over; an empty sum is zero
        return g, (torch.zeros(N, device=dy.device, dtype=dy.dtype) if bias_grad else None)
    return g, _epilogue_grad(dy, y, g, act, bias_grad, dy.dtype)


def _epilogue_grad(dy, y, g, act, bias_grad, db_dtype):
    """Launch `_epilogue_grad_kernel`; returns db ((N,), db_dtype) or None."""
    M, N = dy.shape
    block_m, block_n = (16, 32) if INTERPRETED else (32, 128)
    col_programs = cdiv(N, block_n)
    splits = max(1, min(cdiv(M, block_m), _programs_wanted(dy.device) // col_programs))
    rows = cdiv(cdiv(M, splits), block_m) * block_m
    splits = cdiv(M, rows)
    db = None
    if bias_grad:
        db = torch.empty((splits, N), device=dy.device, dtype=torch.float32 if splits > 1 else db_dtype)
    ys = y if act else dy  # placeholder pointers where the kernel reads or writes nothing
    _epilogue_grad_kernel[(col_programs, splits)](
        dy, ys, g, db if bias_grad else dy, M, N, rows,
        dy.stride(0), dy.stride(1), ys.stride(0), ys.stride(1), g.stride(0), g.stride(1),
        ACT=act, HAS_DB=bias_grad, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=8,
    )
    if not bias_grad:
        return None
    if splits > 1:  # sum the fp32 partial sums, a (splits, N) matrix, the same way
        return _epilogue_grad(db, None, db, 0, True, db_dtype)
    return db.view(N)
