"""ReLU, Sigmoid, Tanh: y = act(x) and dx = dy * act'(x), the derivative taken from the
output y (see _math.activate_grad), so the backward never needs x.

Two launch shapes, neither copies its input:
- flat: all tensors dense (no gaps, no overlap) with one stride order, so element k of
  one storage is element k of the others (contiguous, channels_last, any permutation):
  one 1-D pass over the storage.
- strided: anything else (slices, transposes of slices, expanded gradients with stride
  0); the shape is collapsed, jointly for all tensors, to at most 4 dims and every
  program turns its linear indices into 4 coordinates. Only a tensor that stays above
  4 dims after collapsing (a 5-D+ view whose every dim is cut or permuted) is copied
  first: one extra read and write in a case no layer of this project produces.

Cost at N elements of b bytes: forward reads and writes N*b, backward reads 2*N*b and
writes N*b; a handful of FLOPs per element, so the floor is bandwidth: 16M fp32
elements forward move 134 MB, ~40 us at 3.35 TB/s (H100), ~28 us at 4.8 TB/s (H200).
"""
import torch
import triton
import triton.language as tl

from ._host import cdiv
from ._math import ACTIVATIONS, activate, activate_grad

FLAT_BLOCK, FLAT_WARPS = 2048, 8        # 8 elements per thread: two 16-byte fp32 vectors
STRIDED_BLOCK, STRIDED_WARPS = 1024, 4
MAX_DIMS = 4                            # coordinates the strided kernel decomposes into


@triton.jit
def compute_dtype(v):
    """fp64 stays fp64; fp16/bf16/fp32 compute in fp32."""
    if v.dtype != tl.float64:
        v = v.to(tl.float32)
    return v


@triton.jit
def _flat_kernel(a_ptr, b_ptr, out_ptr, n, ACT: tl.constexpr, BACKWARD: tl.constexpr,
                 BLOCK: tl.constexpr):
    """Forward: out = act(a) with a = x. Backward: out = a * act'(.) with a = dy, b = y.
    Pointers: 1-D storages of n elements (dense, one shared layout).
    Grid: (cdiv(n, BLOCK),); one program computes BLOCK consecutive elements.
    Cost: forward reads and writes n elements, backward reads 2n and writes n; 1-5 FLOPs
    an element (bench/ops.py counts each activation), so bandwidth is the floor."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = compute_dtype(tl.load(a_ptr + offs, mask=mask))
    if BACKWARD:
        res = activate_grad(a, compute_dtype(tl.load(b_ptr + offs, mask=mask)), ACT)
    else:
        res = activate(a, ACT)
    tl.store(out_ptr + offs, res.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _strided_kernel(a_ptr, b_ptr, out_ptr, n, S1, S2, S3,
                    a0, a1, a2, a3, b0, b1, b2, b3, o0, o1, o2, o3,
                    ACT: tl.constexpr, BACKWARD: tl.constexpr, BLOCK: tl.constexpr):
    """As _flat_kernel over a logical (S0, S1, S2, S3) shape, n = S0*S1*S2*S3; each
    pointer has its own four strides (a*, b*, out o*), any of them 0 (expanded).
    Grid: (cdiv(n, BLOCK),); one program computes BLOCK consecutive logical indices.
    Cost: the bytes and FLOPs of _flat_kernel plus ~10 integer ops an element for the
    coordinates; a gapped view's loads may fetch whole 32-byte sectors for a few
    useful bytes, so its floor is the sectors touched, not the elements."""
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    i3 = idx % S3
    rest = idx // S3
    i2 = rest % S2
    rest = rest // S2
    i1 = rest % S1
    i0 = rest // S1
    a = compute_dtype(tl.load(a_ptr + i0 * a0 + i1 * a1 + i2 * a2 + i3 * a3, mask=mask))
    if BACKWARD:
        y = compute_dtype(tl.load(b_ptr + i0 * b0 + i1 * b1 + i2 * b2 + i3 * b3, mask=mask))
        res = activate_grad(a, y, ACT)
    else:
        res = activate(a, ACT)
    tl.store(out_ptr + i0 * o0 + i1 * o1 + i2 * o2 + i3 * o3,
             res.to(out_ptr.dtype.element_ty), mask=mask)


def is_dense(t: torch.Tensor) -> bool:
    """True if `t` covers its memory without gaps or overlap, in any dim order."""
    if t.is_contiguous():  # the common case, answered in C++ (the Python loop below costs more)
        return True
    expected = 1
    for stride, size in sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether a and b (one shape) step through memory alike."""
    if a.is_contiguous() and b.is_contiguous():  # the common case, answered in C++
        return True
    return all(sa == sb for sa, sb, size in zip(a.stride(), b.stride(), a.shape) if size != 1)


def collapse(shape, *strides) -> list[tuple[int, list[int]]]:
    """(size, [stride per tensor]) per dim after dropping size-1 dims and merging each
    dim into the previous one wherever every tensor steps over both as one."""
    merged: list[tuple[int, list[int]]] = []
    for k, size in enumerate(shape):
        if size == 1:
            continue
        st = [s[k] for s in strides]
        if merged and all(p == s * size for p, s in zip(merged[-1][1], st)):
            merged[-1] = (merged[-1][0] * size, st)
        else:
            merged.append((size, st))
    return merged


def _launch(a: torch.Tensor, b: torch.Tensor | None, out: torch.Tensor, act: int, backward: bool):
    n = out.numel()
    if n == 0:
        return out
    tensors = [a, out] if b is None else [a, b, out]
    if all(is_dense(t) and _same_layout(t, out) for t in tensors):
        grid = (cdiv(n, FLAT_BLOCK),)
        _flat_kernel[grid](a, a if b is None else b, out, n, ACT=act, BACKWARD=backward,
                           BLOCK=FLAT_BLOCK, num_warps=FLAT_WARPS)
        return out
    dims = collapse(out.shape, *(t.stride() for t in tensors))
    dims = [(1, [0] * len(tensors))] * (MAX_DIMS - len(dims)) + dims
    sizes = [d[0] for d in dims]
    per_tensor = [[d[1][t] for d in dims] for t in range(len(tensors))]
    a_st, out_st = per_tensor[0], per_tensor[-1]
    b_st = per_tensor[1] if b is not None else a_st
    grid = (cdiv(n, STRIDED_BLOCK),)
    _strided_kernel[grid](a, a if b is None else b, out, n, *sizes[1:], *a_st, *b_st, *out_st,
                          ACT=act, BACKWARD=backward, BLOCK=STRIDED_BLOCK, num_warps=STRIDED_WARPS)
    return out


def _fits(*tensors: torch.Tensor) -> bool:
    if all(t.is_contiguous() for t in tensors):  # one dim after collapsing; no loop needed
        return True
    return len(collapse(tensors[0].shape, *(t.stride() for t in tensors))) <= MAX_DIMS


def activation_forward(x: torch.Tensor, activation: str) -> torch.Tensor:
    """y = activation(x) for activation in "relu", "sigmoid", "tanh". y has x's layout
    when x is dense, else it is contiguous."""
    dense = is_dense(x)
    y = torch.empty_like(x) if dense else torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if not dense and not _fits(x, y):
        x = x.contiguous()  # the >4-D case of the module docstring
    return _launch(x, None, y, ACTIVATIONS[activation], backward=False)


def activation_backward(y: torch.Tensor, dy: torch.Tensor, activation: str) -> torch.Tensor:
    """dx = dy * activation'(x) from the forward's output y (dense); dx takes y's layout."""
    dx = torch.empty_like(y)
    if not _fits(dy, y, dx):
        dy = torch.empty_like(y).copy_(dy)  # into y's layout, so the flat kernel runs
    return _launch(dy, y, dx, ACTIVATIONS[activation], backward=True)
