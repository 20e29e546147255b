"""Solutions to lesson 05's exercises (GEMM), each with a plausible mistake `wrong_K`
that its check must reject."""
import os

import torch

if not torch.cuda.is_available():  # no GPU: run every kernel on CPU tensors through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported
import triton
import triton.language as tl

BLOCK = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=16) if not torch.cuda.is_available() else \
    dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32)


# ---- exercise 1: GEMM + bias + leaky ReLU in one kernel ---------------------------------

@triton.jit
def _tile(a_ptr, b_ptr, rm, rn, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """The (rm, rn) tile of a @ b, accumulated in fp32 over K: a device function both
    exercise kernels call (a @triton.jit function called from a kernel is inlined)."""
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + rk
        a = tl.load(a_ptr + rm[:, None] * stride_am + ks[None, :] * stride_ak,
                    mask=(rm[:, None] < M) & (ks[None, :] < K), other=0.0)
        b = tl.load(b_ptr + ks[:, None] * stride_bk + rn[None, :] * stride_bn,
                    mask=(ks[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def _leaky_kernel(a_ptr, b_ptr, bias_ptr, c_ptr, M, N, K,
                  stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                  SLOPE: tl.constexpr, BIAS_FIRST: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = _tile(a_ptr, b_ptr, rm, rn, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                BLOCK_M, BLOCK_N, BLOCK_K)
    bias = tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    if BIAS_FIRST:
        acc = acc + bias
        acc = tl.where(acc > 0, acc, SLOPE * acc)
    else:  # the mistake: the bias lands after the activation
        acc = tl.where(acc > 0, acc, SLOPE * acc)
        acc = acc + bias
    tl.store(c_ptr + rm[:, None] * stride_cm + rn[None, :] * stride_cn, acc.to(c_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


def _leaky(a, b, bias, bias_first):
    M, K = a.shape
    N = b.shape[1]
    c = torch.empty((M, N), device=a.device, dtype=a.dtype)
    grid = (triton.cdiv(M, BLOCK["BLOCK_M"]), triton.cdiv(N, BLOCK["BLOCK_N"]))
    _leaky_kernel[grid](a, b, bias, c, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                        c.stride(0), c.stride(1), SLOPE=0.1, BIAS_FIRST=bias_first, **BLOCK)
    return c


def exercise_1(a, b, bias):
    return _leaky(a, b, bias, True)


def wrong_1(a, b, bias):
    """leaky_relu(a @ b) + bias: the bias added after the activation."""
    return _leaky(a, b, bias, False)


# ---- exercise 2: batched GEMM, the batch on the grid's second axis ----------------------

@triton.jit
def _bmm_kernel(a_ptr, b_ptr, c_ptr, M, N, K,
                stride_az, stride_am, stride_ak, stride_bz, stride_bk, stride_bn,
                stride_cz, stride_cm, stride_cn,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    z = tl.program_id(1).to(tl.int64)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    pid_m = pid // num_pid_n
    pid_n = pid % num_pid_n
    a_ptr += z * stride_az
    b_ptr += z * stride_bz
    c_ptr += z * stride_cz
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = _tile(a_ptr, b_ptr, rm, rn, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                BLOCK_M, BLOCK_N, BLOCK_K)
    tl.store(c_ptr + rm[:, None] * stride_cm + rn[None, :] * stride_cn, acc.to(c_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


def _bmm(a, b, b_batch_stride):
    B, M, K = a.shape
    N = b.shape[2]
    c = torch.empty((B, M, N), device=a.device, dtype=a.dtype)
    grid = (triton.cdiv(M, BLOCK["BLOCK_M"]) * triton.cdiv(N, BLOCK["BLOCK_N"]), B)
    _bmm_kernel[grid](a, b, c, M, N, K, *a.stride(), b_batch_stride, b.stride(1), b.stride(2), *c.stride(), **BLOCK)
    return c


def exercise_2(a, b):
    return _bmm(a, b, b.stride(0))


def wrong_2(a, b):
    """Forgets to move b to the batch: every batch multiplies by b[0]."""
    return _bmm(a, b, 0)


# ---- exercise 3: column-grouped program order ------------------------------------------

def _column_grouped(num_pid_m, num_pid_n, group_n, last_group_shorter=True):
    out = []
    for pid in range(num_pid_m * num_pid_n):
        num_pid_in_group = group_n * num_pid_m
        group_id = pid // num_pid_in_group
        first_pid_n = group_id * group_n
        size = min(num_pid_n - first_pid_n, group_n) if last_group_shorter else group_n
        pid_n = first_pid_n + (pid % num_pid_in_group) % size
        pid_m = (pid % num_pid_in_group) // size
        out.append((pid_m, pid_n))
    return torch.tensor(out, dtype=torch.int64)


def exercise_3(num_pid_m, num_pid_n, group_n):
    return _column_grouped(num_pid_m, num_pid_n, group_n)


def wrong_3(num_pid_m, num_pid_n, group_n):
    """Treats the last group as full: when group_n does not divide num_pid_n, its
    programs land on the wrong (and partly nonexistent) tiles."""
    return _column_grouped(num_pid_m, num_pid_n, group_n, last_group_shorter=False)
