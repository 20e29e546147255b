"""Conv2d as implicit GEMM: forward, dgrad (input gradient), wgrad (weight gradient), db.

Letters, as in scratch/conv.py: x (N, C, H, W), weight (O, C/G, R, S), y (N, O, P, Q),
G groups with CG = C/G input and OG = O/G output channels each. Every tensor comes with
its own four strides, so NCHW and channels_last (NHWC) inputs run without a copy, and
the output is written in whichever layout the caller allocated (on a GPU the caller,
layers/functions/conv.py, passes channels_last: unit channel stride is what lets the
16-bit tile loads vectorise and pipeline). Padding here is the top
and left padding only (bottom/right padding only decides P and Q, which the caller
computed); reflect/replicate/circular padding has been applied by the layer already.

Implicit GEMM: per group, the convolution is the GEMM
    y[m, o] = sum_k A[m, k] * B[k, o],  m = (n, p, q), k = (r, s, c), o in the group,
    A[m, (r, s, c)] = x[n, c, p*sh - pad_h + r*dh, q*sw - pad_w + s*dw]  (0 outside x),
    B[(r, s, c), o] = weight[o, c, r, s],
and A (the im2col matrix, kh*kw times the input) is never stored: each K tile of A is
gathered from x by the tile load itself, with masks for the padding.

Precision: fp32 accumulation always. fp32 inputs use TF32 tensor cores when
torch.backends.cudnn.allow_tf32 is True (torch's default for convolutions, so torch
and this tier round the same way; or cudnn.conv.fp32_precision, see
backend.tf32_enabled), full IEEE fp32 otherwise; fp16/bf16 inputs use
fp16/bf16 tensor cores. Under TRITON_INTERPRET the dot is exact numpy fp32.

Napkin cost, forward (dgrad and wgrad move the same bytes and do the same FLOPs):
    FLOPs = 2 * N*P*Q * O * CG*R*S,  bytes >= x + weight + y (each read/written once).
ResNet-50 3x3 64->64 at 56x56, batch 32, bf16: 2*32*3136*64*576 = 7.4 GFLOP over
12.8 MB in + 12.8 MB out -> balanced (7.5 us at 990 TFLOP/s vs 7.7 us of HBM at
3.35 TB/s on an H100): both the tensor cores and the loads must run near their peaks.
The 1x1 256->64 at 56x56 is 3.3 GFLOP over 51 MB in + 13 MB out: memory-bound (19 us of
bytes vs 3.3 us of FLOPs), so its floor is reading x once.

Integer sizes: a GEMM row index m < 2**31 (checked by the launchers); every pointer
offset is computed in int64, so tensors may pass 2**31 elements.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ..backend import interpreter_enabled
from ._host import cdiv, dot_precision, next_power_of_2, sm_count
from ._math import ACTIVATIONS, activate, activate_grad

INTERPRETED = interpreter_enabled()  # as triton.jit read it for this module's kernels (see _host)

_INT32_MAX = 2**31 - 1
# below this many input channels per group the forward flattens K = (r, s, c) into one
# index (a K tile spans several taps) instead of padding each tap's CG up to BLOCK_K
FLAT_K_BELOW = 16


def _configs(shapes):
    """triton.Config per (BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps)."""
    return [triton.Config(dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k), num_stages=st, num_warps=wp)
            for m, n, k, st, wp in shapes]


# tile shapes for the GPU (those overflowing shared memory for fp32 are pruned per call)
_GEMM_SHAPES = [
    (128, 128, 64, 3, 8), (128, 256, 64, 3, 8), (256, 128, 64, 3, 8), (128, 64, 64, 4, 4),
    (64, 128, 64, 4, 4), (128, 128, 32, 4, 4), (64, 64, 64, 4, 4), (64, 64, 32, 4, 4),
    (128, 32, 32, 4, 4), (32, 64, 32, 4, 4),
]
# the fixed small tile used under the interpreter (it cannot autotune: it would time)
_INTERPRET = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)
# autotune keys: the layer's shape, TF32 or not, and M_BUCKET, a power-of-two bucket of
# the GEMM rows N*P*Q (wgrad: of its reduction slice CHUNK), never the raw batch: batch 1
# and batch 32 want other tiles, but a new batch size in a tuned bucket reuses its pick.
# The autotuner adds the tensors' dtypes itself.
_KEY = ["CG", "OG", "R", "S", "P", "Q", "PRECISION", "M_BUCKET"]
_M_BUCKET_CAP = 1 << 16
_SMEM_BUDGET = 200 * 1024  # bytes of shared memory per block, under the H100/H200's 227 KB


def _prune(operand, n_name, k_name, flat_name=None):
    """Drop tiles whose pipelined A and B stages overflow shared memory for the
    operand's dtype, and tiles wider than the GEMM's N (or, per tap, K) dimension
    rounded up to a power of two: their extra columns would be masked-out work."""
    def prune(configs, nargs, **kwargs):
        size = nargs[operand].element_size()
        n_cap = max(16, next_power_of_2(nargs[n_name]))
        k_cap = max(16, next_power_of_2(nargs[k_name]))
        if flat_name is not None and kwargs.get(flat_name, nargs.get(flat_name)):
            k_cap = 1 << 30
        kept = [c for c in configs
                if c.kwargs["BLOCK_N"] <= n_cap and c.kwargs["BLOCK_K"] <= k_cap
                and c.num_stages * size * c.kwargs["BLOCK_K"] * (c.kwargs["BLOCK_M"] + c.kwargs["BLOCK_N"])
                <= _SMEM_BUDGET]
        return kept or configs[-1:]
    return prune


# ---- forward ----------------------------------------------------------------------------

@triton.jit(do_not_specialize=["M_BUCKET"])
def _conv_fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    H, W, P, Q, M, M_BUCKET, CG, OG, R, S,
    sxn, sxc, sxh, sxw, swo, swc, swr, sws, syn, syc, syp, syq,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, FLAT_K: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """y = act(conv(x, weight) + bias) for one (BLOCK_M output positions) x (BLOCK_N
    output channels) tile of one group.

    Grid: (cdiv(N*P*Q, BLOCK_M) * cdiv(OG, BLOCK_N), G); program (i*J + j, g), with
    J = cdiv(OG, BLOCK_N), computes y[m, g*OG + o] for m in tile i (m = (n*P + p)*Q + q),
    o in tile j: the N tiles of one M tile run back to back and share its x in L2.
    Pointers: x (N, C, H, W), w (O, CG, R, S), b (O,) (unused without HAS_BIAS),
    y (N, O, P, Q), each with its strides (sx*, sw*, sy*). M = N*P*Q; M_BUCKET only
    feeds the autotune key.

    K loop: one flat loop over (tap, channel block) so the compiler can pipeline the
    loads across taps (a loop per tap would leave one iteration to pipeline when
    CG <= BLOCK_K); with FLAT_K (few channels, e.g. an RGB stem) a K tile spans taps.
    Cost: 2*M*OG*CG*R*S FLOPs per group; x is re-read once per N tile (cdiv(OG, BLOCK_N)
    times), the weights once per M tile, both mostly from L2.
    """
    n_tiles = tl.cdiv(OG, BLOCK_N)
    pid_m = tl.program_id(0) // n_tiles
    pid_n = tl.program_id(0) % n_tiles
    g = tl.program_id(1)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    q = offs_m % Q
    p = (offs_m // Q) % P
    n = offs_m // (P * Q)
    h0 = p * stride_h - pad_h
    w0 = q * stride_w - pad_w
    x_rows = x_ptr + n.to(tl.int64) * sxn + (g * CG).to(tl.int64) * sxc  # (BLOCK_M,)

    offs_o = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    o_ok = offs_o < OG
    w_cols = w_ptr + (g * OG + offs_o).to(tl.int64) * swo  # (BLOCK_N,)
    offs_k = tl.arange(0, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if FLAT_K:
        k_total = CG * R * S
        for k0 in range(0, k_total, BLOCK_K):
            k = k0 + offs_k
            k_ok = k < k_total
            c = k % CG
            r = k // (CG * S)
            s = (k // CG) % S
            h = h0[:, None] + (r * dil_h)[None, :]
            w = w0[:, None] + (s * dil_w)[None, :]
            a_ok = m_ok[:, None] & k_ok[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            a_off = c[None, :].to(tl.int64) * sxc + h.to(tl.int64) * sxh + w.to(tl.int64) * sxw
            a = tl.load(x_rows[:, None] + a_off, mask=a_ok, other=0.0)
            b_off = (c.to(tl.int64) * swc + r * swr + s * sws)[:, None]
            b = tl.load(w_cols[None, :] + b_off, mask=k_ok[:, None] & o_ok[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    else:
        c_blocks = tl.cdiv(CG, BLOCK_K)
        for kt in range(0, R * S * c_blocks):
            c = (kt % c_blocks) * BLOCK_K + offs_k
            r = kt // (c_blocks * S)
            s = (kt // c_blocks) % S
            h = h0 + r * dil_h
            w = w0 + s * dil_w
            row_ok = m_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            c_ok = c < CG
            a_rows = x_rows + h.to(tl.int64) * sxh + w.to(tl.int64) * sxw
            a = tl.load(a_rows[:, None] + c[None, :].to(tl.int64) * sxc,
                        mask=row_ok[:, None] & c_ok[None, :], other=0.0)
            b = tl.load(w_cols[None, :] + (c.to(tl.int64) * swc + r * swr + s * sws)[:, None],
                        mask=c_ok[:, None] & o_ok[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)

    if HAS_BIAS:
        acc += tl.load(b_ptr + g * OG + offs_o, mask=o_ok, other=0.0).to(tl.float32)[None, :]
    acc = activate(acc, ACT)
    y_rows = n.to(tl.int64) * syn + p.to(tl.int64) * syp + q.to(tl.int64) * syq
    y_cols = (g * OG + offs_o).to(tl.int64) * syc
    tl.store(y_ptr + y_rows[:, None] + y_cols[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=m_ok[:, None] & o_ok[None, :])


_conv_fwd_tuned = triton.autotune(
    _configs(_GEMM_SHAPES), key=_KEY,
    prune_configs_by={"early_config_prune": _prune("x_ptr", "OG", "CG", "FLAT_K")},
)(_conv_fwd_kernel)


def _launch(kernel, tuned, grid, *args, **constexprs):
    """The autotuned kernel on a GPU; the bare kernel with one small tile under the
    interpreter (autotuning times configs, which the interpreter must not)."""
    if INTERPRETED:
        kernel[grid(_INTERPRET)](*args, **constexprs, **_INTERPRET)
    else:
        tuned[grid](*args, **constexprs)


def packed(weight: torch.Tensor) -> torch.Tensor:
    """weight (O, CG, R, S) as a view of an (R, S, CG, O)-contiguous copy (none if it
    is stored so already): the B tiles of the forward and dgrad then load along unit
    stride, which lets the compiler vectorise them and pipeline them through shared
    memory (16-bit gathers of 2 bytes cannot be). A copy of the weights per call."""
    return weight.permute(2, 3, 1, 0).contiguous().permute(3, 2, 0, 1)


def _m_bucket(m: int) -> int:
    """The autotune key's bucket of m rows (M_BUCKET only feeds the key)."""
    return min(next_power_of_2(m), _M_BUCKET_CAP)


def _check_rows(m: int, what: str) -> None:
    if m > _INT32_MAX:
        raise ValueError(f"Conv2d's triton tier indexes GEMM rows in int32: {what} has {m} rows, "
                         f"more than 2**31 - 1; split the batch")


def conv2d_fwd(x, weight, bias, y, stride, pad, dilation, groups, activation=None):
    """Write y = act(conv2d(x, weight) + bias) into the preallocated y (N, O, P, Q), any
    strides. `pad` is (top, left); `activation` a key of ACTIVATIONS. Any layout runs;
    on a GPU, x and y in channels_last (unit channel stride) are the fast case."""
    n, c, h, w = x.shape
    o, cg, r, s = weight.shape
    _, _, p, q = y.shape
    m = n * p * q
    if y.numel() == 0:
        return y
    _check_rows(m, "N*P*Q")
    og = o // groups
    weight = packed(weight)
    grid = lambda meta: (cdiv(m, meta["BLOCK_M"]) * cdiv(og, meta["BLOCK_N"]), groups)  # noqa: E731
    _launch(_conv_fwd_kernel, _conv_fwd_tuned, grid,
            x, weight, bias if bias is not None else y, y,
            h, w, p, q, m, _m_bucket(m), cg, og, r, s,
            *x.stride(), *weight.stride(), *y.stride(),
            *stride, *pad, *dilation,
            HAS_BIAS=bias is not None, ACT=ACTIVATIONS[activation],
            FLAT_K=cg < FLAT_K_BELOW, PRECISION=dot_precision(x.dtype, "conv"))
    return y


# ---- dgrad: dx = transposed convolution of dy -------------------------------------------

@triton.jit(do_not_specialize=["M_BUCKET"])
def _conv_dgrad_kernel(
    dy_ptr, w_ptr, dx_ptr, tap_h_ptr, tap_w_ptr,
    H, W, P, Q, HI, WI, M, M_BUCKET, CG, OG, R, S,
    sdn, sdc, sdp, sdq, swo, swc, swr, sws, sxn, sxc, sxh, sxw,
    stride_h, stride_w,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """dx[n, c, h, w] = sum over o, r, s of dy[n, o, p, q] * weight[o, c, r, s] where
    p*sh = h + pad_h - r*dh and q*sw = w + pad_w - s*dw (exact division, p, q in range).

    With stride > 1 most taps do not map a given pixel to an output position. Pixels
    are therefore split into stride phases (h % sh, w % sw): within one phase the set
    of taps that map, and the shift p - h // sh they map with, are the same for every
    pixel, so a program loops over exactly those taps (no masked-out multiplies).
    The host precomputes them per phase: tap_h (sh, 1 + 2R) int32 rows
    [count, r_0, dp_0, r_1, dp_1, ...] with p = h // sh + dp, likewise tap_w.

    Grid: (cdiv(N*HI*WI, BLOCK_M) * J, G*sh*sw), J = cdiv(CG, BLOCK_N); HI = cdiv(H, sh),
    WI = cdiv(W, sw); program (i*J + j, z) computes the dx pixels h = ah + sh*hi,
    w = aw + sw*wi of phase (ah, aw) = divmod(z % (sh*sw), sw) for input channels in
    tile j of group z // (sh*sw). GEMM: M = N*HI*WI, N = CG, K = OG * (taps that map).
    Pointers: dy (N, O, P, Q), w (O, CG, R, S), dx (N, C, H, W), each with strides.
    Every dx element is written exactly once (zeros where no tap maps).
    Cost: 2*N*P*Q*O*CG*R*S FLOPs in total, like the forward.
    """
    n_tiles = tl.cdiv(CG, BLOCK_N)
    pid_m = tl.program_id(0) // n_tiles
    pid_n = tl.program_id(0) % n_tiles
    z = tl.program_id(1)
    n_phases = stride_h * stride_w
    g = z // n_phases
    ah = (z % n_phases) // stride_w
    aw = (z % n_phases) % stride_w

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    wi = offs_m % WI
    hi = (offs_m // WI) % HI
    n = offs_m // (HI * WI)
    h = ah + hi * stride_h
    w = aw + wi * stride_w
    m_ok = (offs_m < M) & (h < H) & (w < W)
    dy_rows = dy_ptr + n.to(tl.int64) * sdn + (g * OG).to(tl.int64) * sdc  # (BLOCK_M,)

    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ok = offs_c < CG
    w_cols = w_ptr + (g * OG).to(tl.int64) * swo + offs_c.to(tl.int64) * swc  # (BLOCK_N,)
    offs_k = tl.arange(0, BLOCK_K)

    taps_h = tap_h_ptr + ah * (1 + 2 * R)
    taps_w = tap_w_ptr + aw * (1 + 2 * S)
    n_s = tl.load(taps_w)
    o_blocks = tl.cdiv(OG, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kt in range(0, tl.load(taps_h) * n_s * o_blocks):
        o = (kt % o_blocks) * BLOCK_K + offs_k
        i = kt // (o_blocks * n_s)
        j = (kt // o_blocks) % n_s
        r = tl.load(taps_h + 1 + 2 * i)
        s = tl.load(taps_w + 1 + 2 * j)
        p = hi + tl.load(taps_h + 2 + 2 * i)
        q = wi + tl.load(taps_w + 2 + 2 * j)
        row_ok = m_ok & (p >= 0) & (p < P) & (q >= 0) & (q < Q)
        o_ok = o < OG
        a_rows = dy_rows + p.to(tl.int64) * sdp + q.to(tl.int64) * sdq
        a = tl.load(a_rows[:, None] + o[None, :].to(tl.int64) * sdc,
                    mask=row_ok[:, None] & o_ok[None, :], other=0.0)
        b = tl.load(w_cols[None, :] + (o.to(tl.int64) * swo + r * swr + s * sws)[:, None],
                    mask=o_ok[:, None] & c_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    dx_rows = n.to(tl.int64) * sxn + h.to(tl.int64) * sxh + w.to(tl.int64) * sxw
    dx_cols = (g * CG + offs_c).to(tl.int64) * sxc
    tl.store(dx_ptr + dx_rows[:, None] + dx_cols[None, :], acc.to(dx_ptr.dtype.element_ty),
             mask=m_ok[:, None] & c_ok[None, :])


_conv_dgrad_tuned = triton.autotune(
    _configs(_GEMM_SHAPES), key=_KEY,
    prune_configs_by={"early_config_prune": _prune("dy_ptr", "CG", "OG")},
)(_conv_dgrad_kernel)


@functools.lru_cache(maxsize=256)
def _tap_table(stride: int, pad: int, dilation: int, k: int, device: torch.device) -> torch.Tensor:
    """(stride, 1 + 2k) int32: for each phase a of pixels h = a + stride*i, the taps r
    whose (a + pad - r*dilation) is a multiple of stride, and p - i for each."""
    rows = []
    for a in range(stride):
        taps = [(r, (a + pad - r * dilation) // stride) for r in range(k)
                if (a + pad - r * dilation) % stride == 0]
        row = [len(taps)] + [v for tap in taps for v in tap]
        rows.append(row + [0] * (1 + 2 * k - len(row)))
    return torch.tensor(rows, dtype=torch.int32, device=device)


def conv2d_dgrad(dy, weight, dx, stride, pad, dilation, groups):
    """Write the input gradient into the preallocated dx (N, C, H, W), any strides (fast
    case on a GPU: dy and dx channels_last)."""
    n, c, h, w = dx.shape
    o, cg, r, s = weight.shape
    _, _, p, q = dy.shape
    if dx.numel() == 0:
        return dx
    hi, wi = cdiv(h, stride[0]), cdiv(w, stride[1])
    m = n * hi * wi
    _check_rows(m, "N*cdiv(H, stride)*cdiv(W, stride)")
    tap_h = _tap_table(stride[0], pad[0], dilation[0], r, dx.device)
    tap_w = _tap_table(stride[1], pad[1], dilation[1], s, dx.device)
    og = o // groups
    weight = packed(weight)
    phases = stride[0] * stride[1]
    grid = lambda meta: (cdiv(m, meta["BLOCK_M"]) * cdiv(cg, meta["BLOCK_N"]), groups * phases)  # noqa: E731
    _launch(_conv_dgrad_kernel, _conv_dgrad_tuned, grid,
            dy, weight, dx, tap_h, tap_w,
            h, w, p, q, hi, wi, m, _m_bucket(m), cg, og, r, s,
            *dy.stride(), *weight.stride(), *dx.stride(), *stride,
            PRECISION=dot_precision(dy.dtype, "conv"))
    return dx


# ---- wgrad: dW = dy^T @ im2col(x), split over N*P*Q ------------------------------------

@triton.jit(do_not_specialize=["M_BUCKET"])
def _conv_wgrad_kernel(
    dy_ptr, x_ptr, dw_ptr,
    H, W, P, Q, M, CG, OG, R, S, CHUNK, M_BUCKET,
    sdn, sdc, sdp, sdq, sxn, sxc, sxh, sxw, sgk, sgo, sgc, sgr, sgs,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """dW[o, c, r, s] = sum over n, p, q of dy[n, o, p, q] * x[n, c, p*sh - pad_h + r*dh,
    q*sw - pad_w + s*dw], over the slice [split*CHUNK, (split+1)*CHUNK) of m = (n, p, q).

    Per group and tap (r, s) a GEMM (OG, M) @ (M, CG) with the long reduction M = N*P*Q.
    Grid: (cdiv(OG, BLOCK_M) * cdiv(CG, BLOCK_N), G*R*S, SPLIT); program (t, z, k)
    computes the (o, c) tile t of tap z % (R*S) of group z // (R*S) over slice k and
    writes it to dw[k, o, c, r, s] (strides sgk, sgo, sgc, sgr, sgs). With SPLIT == 1,
    dw is the weight gradient itself; otherwise an fp32 workspace (SPLIT, O, CG, R, S)
    the launcher sums. Split-K: a layer with few (o, c) tiles and a long M (early, wide
    ResNet layers: 64x64 channels over 100k positions) would otherwise run on a few
    SMs; a workspace + one reduce keeps the result deterministic (atomics would not)
    and lets the autotuner rerun the kernel without zeroing anything.
    Pointers: dy (N, O, P, Q), x (N, C, H, W) with strides; dw as above. M_BUCKET only
    feeds the autotune key.
    Cost: 2*M*O*CG*R*S FLOPs; dy and x each read once per (c, o) tile and tap (from L2).
    """
    pid = tl.program_id(0)
    z = tl.program_id(1)
    split = tl.program_id(2)
    c_tiles = tl.cdiv(CG, BLOCK_N)
    g = z // (R * S)
    r = (z % (R * S)) // S
    s = z % S

    offs_o = (pid // c_tiles) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = (pid % c_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    o_ok = offs_o < OG
    c_ok = offs_c < CG
    dy_cols = dy_ptr + (g * OG + offs_o).to(tl.int64) * sdc  # (BLOCK_M,)
    x_cols = x_ptr + (g * CG + offs_c).to(tl.int64) * sxc  # (BLOCK_N,)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    start = split * CHUNK
    end = tl.minimum(start + CHUNK, M)
    for k0 in range(start, end, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < end
        q = k % Q
        p = (k // Q) % P
        n = (k // (P * Q)).to(tl.int64)
        h = p * stride_h - pad_h + r * dil_h
        w = q * stride_w - pad_w + s * dil_w
        x_ok = k_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        dy_off = n * sdn + p.to(tl.int64) * sdp + q.to(tl.int64) * sdq
        a = tl.load(dy_cols[:, None] + dy_off[None, :], mask=o_ok[:, None] & k_ok[None, :], other=0.0)
        x_off = n * sxn + h.to(tl.int64) * sxh + w.to(tl.int64) * sxw
        b = tl.load(x_cols[None, :] + x_off[:, None], mask=x_ok[:, None] & c_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    dw_rows = (g * OG + offs_o).to(tl.int64) * sgo
    dw_cols = offs_c.to(tl.int64) * sgc
    dw = dw_ptr + split.to(tl.int64) * sgk + r * sgr + s * sgs
    tl.store(dw + dw_rows[:, None] + dw_cols[None, :], acc.to(dw_ptr.dtype.element_ty),
             mask=o_ok[:, None] & c_ok[None, :])


_WGRAD_SHAPES = [
    (64, 64, 64, 4, 4), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (128, 128, 64, 3, 8),
    (64, 64, 32, 4, 4), (32, 32, 64, 4, 4), (128, 128, 32, 4, 8), (32, 64, 32, 4, 4),
]
_conv_wgrad_tuned = triton.autotune(
    _configs(_WGRAD_SHAPES), key=_KEY,
    prune_configs_by={"early_config_prune": _prune("dy_ptr", "CG", "M")},
)(_conv_wgrad_kernel)


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return sm_count(device)
    return 2  # interpreter: pretend two SMs so small tests exercise the split


def _split(m: int, tiles: int, device: torch.device, granule: int) -> tuple[int, int]:
    """(SPLIT, CHUNK): cut a reduction of length m into slices of CHUNK (a multiple of
    `granule`) so that `tiles` output tiles times SPLIT fill about two waves of SMs,
    never slices shorter than 8 granules."""
    want = max(1, 2 * _sm_count(device) // max(tiles, 1))
    split = max(1, min(want, m // (8 * granule) if device.type == "cuda" else m // granule))
    chunk = cdiv(cdiv(m, split), granule) * granule
    return cdiv(m, chunk), chunk


def conv2d_wgrad(dy, x, weight_shape, stride, pad, dilation, groups, out=None):
    """The weight gradient (O, CG, R, S) in dy's dtype (into `out` if given, any strides)."""
    n, c, h, w = x.shape
    o, cg, r, s = weight_shape
    _, _, p, q = dy.shape
    m = n * p * q
    dw = out if out is not None else dy.new_empty(weight_shape)
    if m == 0:
        return dw.zero_()
    _check_rows(m, "N*P*Q")
    og = o // groups
    # nominal 64x64 tiles decide the split; the tile the autotuner picks may differ
    tiles = cdiv(og, 64) * cdiv(cg, 64) * groups * r * s
    split, chunk = _split(m, tiles, dy.device, 16 if INTERPRETED else 64)
    target = dw if split == 1 else torch.empty((split, *weight_shape), device=dy.device, dtype=torch.float32)
    strides = target.stride() if split > 1 else (0, *dw.stride())
    grid = lambda meta: (cdiv(og, meta["BLOCK_M"]) * cdiv(cg, meta["BLOCK_N"]), groups * r * s, split)  # noqa: E731
    _launch(_conv_wgrad_kernel, _conv_wgrad_tuned, grid,
            dy, x, target,
            h, w, p, q, m, cg, og, r, s, chunk, _m_bucket(chunk),
            *dy.stride(), *x.stride(), *strides,
            *stride, *pad, *dilation,
            PRECISION=dot_precision(dy.dtype, "conv"))
    if split > 1:
        # the second, tiny reduce: SPLIT partial sums of the weight's size
        dw.copy_(target.sum(0))
    return dw


# ---- db and the activation's backward ---------------------------------------------------

@triton.jit
def _bias_grad_kernel(
    dy_ptr, db_ptr, P, Q, M, O, CHUNK,
    sdn, sdc, sdp, sdq,
    BLOCK_M: tl.constexpr, BLOCK_O: tl.constexpr,
):
    """db[split, o] = sum of dy[n, o, p, q] over the slice [split*CHUNK, (split+1)*CHUNK)
    of m = (n, p, q).

    Grid: (cdiv(O, BLOCK_O), SPLIT). Pointers: dy (N, O, P, Q) with strides, db
    (SPLIT, O) fp32 contiguous. Cost: reads dy once (N*P*Q*O elements), O*SPLIT writes,
    one add per element read: bandwidth-bound.
    """
    offs_o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    split = tl.program_id(1)
    o_ok = offs_o < O
    dy_cols = dy_ptr + offs_o.to(tl.int64) * sdc
    acc = tl.zeros((BLOCK_O,), dtype=tl.float32)
    start = split * CHUNK
    end = tl.minimum(start + CHUNK, M)
    for m0 in range(start, end, BLOCK_M):
        m = m0 + tl.arange(0, BLOCK_M)
        q = m % Q
        p = (m // Q) % P
        n = m // (P * Q)
        rows = n.to(tl.int64) * sdn + p.to(tl.int64) * sdp + q.to(tl.int64) * sdq
        tile = tl.load(dy_cols[None, :] + rows[:, None], mask=(m < end)[:, None] & o_ok[None, :], other=0.0)
        acc += tl.sum(tile.to(tl.float32), axis=0)
    tl.store(db_ptr + split * O + offs_o, acc, mask=o_ok)


def conv2d_bias_grad(dy):
    """db (O,) = dy summed over N, P, Q, in dy's dtype (fp32 accumulation)."""
    n, o, p, q = dy.shape
    m = n * p * q
    if m == 0:
        return dy.new_zeros(o)
    _check_rows(m, "N*P*Q")
    block_o = 16 if INTERPRETED else 64
    split, chunk = _split(m, cdiv(o, block_o), dy.device, 16 if INTERPRETED else 256)
    partial = torch.empty((split, o), device=dy.device, dtype=torch.float32)
    _bias_grad_kernel[(cdiv(o, block_o), split)](
        dy, partial, p, q, m, o, chunk, *dy.stride(),
        BLOCK_M=16 if INTERPRETED else 64, BLOCK_O=block_o)
    return partial.sum(0).to(dy.dtype)


@triton.jit
def _activation_grad_kernel(dy_ptr, y_ptr, dz_ptr, numel, ACT: tl.constexpr, BLOCK: tl.constexpr):
    """dz = dy * act'(pre-activation), from the output y (see _math.activate_grad).

    Grid: (cdiv(numel, BLOCK),), one BLOCK of elements per program over the flat
    storage of dy, y, dz (same strides, dense). Cost: 3 * numel * itemsize bytes.
    """
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < numel
    dy = tl.load(dy_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(dz_ptr + offs, activate_grad(dy, y, ACT).to(dz_ptr.dtype.element_ty), mask=ok)


def activation_grad(dy, y, activation):
    """dz (y's layout) = dy * act'(.) written with the output y, for a fused epilogue."""
    if dy.stride() != y.stride():
        dy = torch.empty_like(y).copy_(dy)  # one flat index then serves both
    dz = torch.empty_like(y)
    if y.numel() == 0:
        return dz
    block = 1024
    _activation_grad_kernel[(cdiv(y.numel(), block),)](
        dy, y, dz, y.numel(), ACT=ACTIVATIONS[activation], BLOCK=block)
    return dz
