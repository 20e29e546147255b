"""Triton tier of Linear: the shared GEMM launcher `matmul` (fused bias + activation
epilogue), the Linear Function's forward and every gradient, against torch.nn and the
reference tier. Under the interpreter (no GPU) on small odd shapes in float32/float16;
the `gpu` tests at real sizes in fp16/bf16/fp32."""

import pytest
import torch

pytest.importorskip("triton")
from tritonlab.kernels import gemm  # noqa: E402
from tritonlab.kernels.gemm import matmul  # noqa: E402

ACTS = [None, "relu", "sigmoid", "tanh"]
TOL = {torch.float32: 1e-5, torch.float16: 2e-3}


def _act(y, activation):
    return {None: y, "relu": torch.relu(y), "sigmoid": torch.sigmoid(y), "tanh": torch.tanh(y)}[activation]


def _expected(a, b, bias, activation):
    """The same product in float64, rounded once to the inputs' dtype."""
    y = a.double() @ b.double()
    if bias is not None:
        y = y + bias.double()
    return _act(y, activation).to(a.dtype)


def _close(got, want, dtype, scale=1.0):
    tol = TOL[dtype] * scale
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)


# ---------------------------------------------------------------- the matmul launcher

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("activation", ACTS)
def test_matmul_epilogue(activation, dtype, triton_device):
    a = torch.randn(33, 129, device=triton_device, dtype=dtype)
    w = torch.randn(67, 129, device=triton_device, dtype=dtype) / 8
    bias = torch.randn(67, device=triton_device, dtype=dtype)
    c = matmul(a, w.t(), bias, activation)  # weight.t(): a strided view, no copy
    assert c.shape == (33, 67) and c.dtype == dtype
    _close(c, _expected(a, w.t(), bias, activation), dtype, scale=4)


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (1, 17, 5), (40, 1, 3), (17, 64, 32), (5, 0, 7)], ids=str)
def test_matmul_odd_shapes(m, k, n, triton_device):
    a = torch.randn(m, k, device=triton_device)
    b = torch.randn(k, n, device=triton_device)
    _close(matmul(a, b), _expected(a, b, None, None), torch.float32)


def test_matmul_out_with_odd_strides(triton_device):
    a = torch.randn(19, 48, device=triton_device)[:, ::2]          # (19, 24), column stride 2
    b = torch.randn(24, 31, device=triton_device).t().contiguous().t()  # column-major
    store = torch.full((31, 40), 7.0, device=triton_device)
    out = store.t()[1:20]                                          # (19, 31), strides (1, 40)
    bias = torch.randn(31, device=triton_device)
    got = matmul(a, b, bias, "tanh", out=out)
    assert got is out
    _close(store.t()[1:20], _expected(a, b, bias, "tanh"), torch.float32)
    assert (store.t()[0] == 7).all() and (store.t()[20:] == 7).all()  # nothing outside out written


def test_matmul_out_in_float32_for_half_inputs(triton_device):
    a = torch.randn(9, 33, device=triton_device, dtype=torch.float16)
    b = torch.randn(33, 18, device=triton_device, dtype=torch.float16)
    out = torch.empty(9, 18, device=triton_device)
    matmul(a, b, out=out)
    torch.testing.assert_close(out, (a.double() @ b.double()).float(), atol=1e-4, rtol=1e-4)


def _spy_splits(monkeypatch):
    """The number of K ranges each matmul call cuts K into (1: the unsplit path ran)."""
    splits, real = [], gemm._split_k
    monkeypatch.setattr(gemm, "_split_k", lambda *a: splits.append(real(*a)[0]) or real(*a))
    return splits


# K long enough to split at the interpreter's BLOCK_K (32) and at the GPU's largest (128)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("m,k,n,split_k", [(5, 400, 7, 3), (33, 129, 67, 2), (1, 1000, 1, 40), (20, 300, 30, 5)],
                         ids=str)
def test_matmul_split_k(m, k, n, split_k, dtype, triton_device, monkeypatch):
    a = torch.randn(m, k, device=triton_device, dtype=dtype)
    b = torch.randn(n, k, device=triton_device, dtype=dtype).t() / k ** 0.5
    bias = torch.randn(n, device=triton_device, dtype=dtype)
    splits = _spy_splits(monkeypatch)
    for activation in (None, "sigmoid"):
        _close(matmul(a, b, bias, activation, split_k=split_k), _expected(a, b, bias, activation), dtype, scale=2)
    assert len(splits) == 2 and all(1 < s <= split_k for s in splits), splits  # the split path, both times


def test_split_k_ranges():
    from tritonlab.kernels.gemm import _split_k
    cpu = torch.device("cpu")
    assert _split_k(64, 64, 100_000, cpu, None) == (1, 100_000)  # automatic only on CUDA
    assert _split_k(5, 5, 0, cpu, 8) == (1, 0)
    for k, n in [(1000, 4), (129, 2), (10**7, 10**6)]:
        s, per = _split_k(5, 5, k, cpu, n)
        assert s <= min(n, 65535) and (s - 1) * per < k <= s * per  # every k in exactly one range


def test_matmul_split_k_into_out_with_odd_strides(triton_device, monkeypatch):
    a = torch.randn(300, 10, device=triton_device).t()             # (10, 300), strides (1, 10)
    b = torch.randn(300, 9, device=triton_device) / 17
    store = torch.zeros(9, 12, device=triton_device)
    out = store.t()[2:]                                             # (10, 9), strides (1, 12)
    splits = _spy_splits(monkeypatch)
    matmul(a, b, None, "relu", out=out, split_k=4)
    assert len(splits) == 1 and splits[0] > 1
    _close(out, _expected(a, b, None, "relu"), torch.float32)
    assert (store.t()[:2] == 0).all()


def test_ffma_gemm_reads_a_k_contiguous_b_from_a_column_contiguous_copy(triton_device, monkeypatch):
    """_b_for_ffma: fp32 without TF32, M from FFMA_COPY_B_MIN_M rows and past the
    launch-bound sizes, a k-contiguous b (weight.t()) is copied column-contiguous (the
    FFMA dot's shared-memory reads without bank conflicts); anything else is passed as
    it is. The kernel gets the copy, and computes the same product."""
    from tritonlab.kernels import _host
    from tritonlab.kernels.gemm import FFMA_COPY_B_MIN_M, _b_for_ffma
    m = FFMA_COPY_B_MIN_M
    w = torch.randn(96, 96, device=triton_device)        # (N, K) weight: m * 96 * 96 > _TUNE_MIN_MACS
    b = w.t()                                            # (K, N), strides (1, K)
    copied = _b_for_ffma(b, m, 96, True)
    assert copied.stride() == (96, 1) and torch.equal(copied, b)
    small = torch.randn(24, 40, device=triton_device).t()  # m * 24 * 40: launch-bound, left alone
    for args in ((b, m - 1, 96, True), (b, m, 96, False), (b.contiguous(), m, 96, True), (small, m, 40, True),
                 (w[:1].t(), m, 96, True)):
        assert _b_for_ffma(*args) is args[0]
    seen = []
    layout = gemm._layout
    monkeypatch.setattr(gemm, "_layout", lambda a, b: seen.append(b.stride()) or layout(a, b))  # b as launched
    monkeypatch.setattr(_host, "tf32_enabled", lambda kind="matmul": False)
    a = torch.randn(m, 96, device=triton_device)
    _close(matmul(a, b, None, "relu", split_k=1), _expected(a, b, None, "relu"), torch.float32)
    assert seen == [(96, 1)]  # the kernel read the copy


def test_matmul_empty(triton_device):
    assert matmul(torch.randn(0, 4, device=triton_device), torch.randn(4, 3, device=triton_device)).shape == (0, 3)
    assert matmul(torch.randn(2, 4, device=triton_device), torch.randn(4, 0, device=triton_device)).shape == (2, 0)


@pytest.mark.parametrize("args,kwargs,err,match", [
    ((torch.randn(3, 4), torch.randn(5, 2)), {}, ValueError, r"b of shape \(4, N\).*got b of shape \(5, 2\)"),
    ((torch.randn(3, 4, 1), torch.randn(4, 2)), {}, ValueError, "a to be 2-D"),
    ((torch.randn(3, 4), torch.randn(4, 2, dtype=torch.float16)), {}, TypeError, "one dtype"),
    ((torch.randn(3, 4, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)), {}, TypeError,
     "float32, float16 and bfloat16, got a of dtype torch.float64"),
    ((torch.ones(3, 4, dtype=torch.int32), torch.ones(4, 2, dtype=torch.int32)), {}, TypeError, "torch.int32"),
    (([[1.0]], torch.randn(1, 2)), {}, TypeError, "torch.Tensor, got list"),
    ((torch.randn(3, 4), torch.randn(4, 2), torch.randn(3)), {}, ValueError, r"bias of shape \(2,\), got \(3,\)"),
    ((torch.randn(3, 4), torch.randn(4, 2), torch.randn(2, dtype=torch.float16)), {}, TypeError, "bias of dtype"),
    ((torch.randn(3, 4), torch.randn(4, 2), None, "gelu"), {}, ValueError, "activation must be one of"),
    ((torch.randn(3, 4), torch.randn(4, 2)), {"out": torch.empty(2, 3)}, ValueError, r"out of shape \(3, 2\)"),
    ((torch.randn(3, 4), torch.randn(4, 2)), {"out": torch.empty(3, 2, dtype=torch.int64)}, TypeError, "out of dtype"),
    ((torch.randn(3, 4), torch.randn(4, 2)), {"split_k": 0}, ValueError, "split_k to be None or an int >= 1, got 0"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_matmul_bad_input(args, kwargs, err, match):
    with pytest.raises(err, match=match):
        matmul(*args, **kwargs)


def test_matmul_on_cpu_without_the_interpreter(monkeypatch):
    """A process whose kernels were decorated without TRITON_INTERPRET (compiled for a GPU)."""
    monkeypatch.setattr(gemm, "INTERPRETED", False)
    with pytest.raises(ValueError, match="CUDA tensors, or on CPU tensors under Triton's interpreter.*TRITON_INTERPRET=1"):
        matmul(torch.randn(3, 4), torch.randn(4, 2))


# ---------------------------------------------------------------- Linear, backend="triton"

import tritonlab  # noqa: E402
from torch import nn  # noqa: E402
from tritonlab.layers.functions.linear import linear_triton  # noqa: E402
from tritonlab.scratch.linear import linear_reference  # noqa: E402
from sm90 import compile_for_sm90
from parity import assert_close_to_scale, assert_matches_torch  # noqa: E402

LAYER_TOL = {torch.float32: 1e-5, torch.float16: 1e-2}
# (leading dims, in_features, out_features)
CASES = [((33,), 129, 67), ((2, 3, 5), 20, 9), ((7,), 1, 5), ((6,), 12, 1), ((1,), 40, 33), ((), 18, 3)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("lead,fin,fout", CASES, ids=str)
def test_layer_matches_torch(lead, fin, fout, bias, dtype, triton_device):
    lab = tritonlab.Linear(fin, fout, bias=bias, device=triton_device, dtype=dtype)
    ref = nn.Linear(fin, fout, bias=bias, device=triton_device, dtype=dtype)
    x = torch.randn(*lead, fin, device=triton_device, dtype=dtype)
    tol = LAYER_TOL[dtype]
    assert_matches_torch(lab, ref, x, tier="triton", atol=tol, rtol=tol)


def _run(fn, x, weight, bias, dy):
    """fn's output and the gradients of (out * dy).sum() for x, weight and bias."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, weight, bias)]
    out = fn(*leaves)
    out.backward(dy)
    return [out.detach()] + [t.grad if t is not None else None for t in leaves]


def _compare(got, want, tol, to_scale=False):
    for name, a, b in zip(("out", "dx", "dweight", "dbias"), got, want):
        assert (a is None) == (b is None), name
        if b is None:
            continue
        if to_scale:
            assert_close_to_scale(a, b, tol, msg=lambda m: f"{name}: {m}")
        else:
            torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("activation", ACTS)
def test_fused_activation_matches_torch_and_reference(activation, dtype, triton_device):
    x = torch.randn(33, 129, device=triton_device, dtype=dtype)
    w = torch.randn(67, 129, device=triton_device, dtype=dtype) / 11
    b = torch.randn(67, device=triton_device, dtype=dtype)
    dy = torch.randn(33, 67, device=triton_device, dtype=dtype)
    got = _run(lambda *a: linear_triton(*a, activation=activation), x, w, b, dy)
    tol = LAYER_TOL[dtype]
    _compare(got, _run(lambda *a: _act(nn.functional.linear(*a), activation), x, w, b, dy), tol)
    # float16: the reference tier rounds x Wᵀ before it adds b, which flips relu's mask
    # for an output within one rounding of 0 (test_layer_matches_reference_tier has no act)
    if dtype == torch.float32:
        _compare(got, _run(lambda *a: _act(linear_reference(*a), activation), x, w, b, dy), tol)


def _layer_run(lab, x, dy, tier):
    """The layer's output and its input, weight and bias gradients on one tier."""
    lab.zero_grad(set_to_none=True)
    leaf = x.detach().clone().requires_grad_()
    with tritonlab.use_backend(tier):
        out = lab(leaf)
    out.backward(dy)
    return [out.detach(), leaf.grad, lab.weight.grad, lab.bias.grad]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("lead,fin,fout", [((33,), 129, 67), ((2, 3, 5), 20, 9)], ids=str)
def test_layer_matches_reference_tier(lead, fin, fout, dtype, triton_device):
    lab = tritonlab.Linear(fin, fout, device=triton_device, dtype=dtype)
    x = torch.randn(*lead, fin, device=triton_device, dtype=dtype)
    dy = torch.randn(*lead, fout, device=triton_device, dtype=dtype)
    got = _layer_run(lab, x, dy, "triton")
    _compare(got, _layer_run(lab, x, dy, "reference"), LAYER_TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_non_contiguous_input_and_transposed_weight(dtype, triton_device):
    x = torch.randn(9, 2, 50, device=triton_device, dtype=dtype).transpose(0, 1)[:, :, ::2]  # (2, 9, 25)
    w = torch.randn(25, 31, device=triton_device, dtype=dtype).t() / 5   # (31, 25), a view
    b = torch.randn(31, device=triton_device, dtype=dtype)
    dy = torch.randn(31, 9, 2, device=triton_device, dtype=dtype).permute(2, 1, 0)
    assert not x.is_contiguous() and not w.is_contiguous() and not dy.is_contiguous()
    for activation in (None, "sigmoid"):
        got = _run(lambda *a: linear_triton(*a, activation=activation), x, w, b, dy)
        want = _run(lambda *a: _act(nn.functional.linear(*a), activation), x, w, b, dy)
        _compare(got, want, LAYER_TOL[dtype])


def test_layer_with_a_transposed_weight_view(triton_device):
    lab = tritonlab.Linear(14, 6, device=triton_device, backend="triton")
    lab.weight = nn.Parameter(torch.randn(14, 6, device=triton_device).t())
    ref = nn.Linear(14, 6, device=triton_device)
    assert_matches_torch(lab, ref, torch.randn(5, 14, device=triton_device), tier="triton")


def test_sum_backward_gets_a_stride_zero_gradient(triton_device):
    x = torch.randn(4, 3, 10, device=triton_device, requires_grad=True)
    lin = tritonlab.Linear(10, 7, device=triton_device, backend="triton")
    lin(x).tanh().sum().backward()  # tanh's backward: fine; then sum feeds expand()ed ones
    xr = x.detach().clone().requires_grad_()
    ref = nn.Linear(10, 7, device=triton_device)
    ref.load_state_dict(lin.state_dict())
    ref(xr).tanh().sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, atol=1e-5, rtol=1e-5)
    x.grad = None
    linear_triton(x, lin.weight, lin.bias, "relu").sum().backward()  # dy has strides (0, 0, 0)
    torch.testing.assert_close(x.grad, torch.relu(ref(xr)).gt(0).float() @ ref.weight.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_empty_batch_and_zero_in_or_out_features(triton_device):
    lab = tritonlab.Linear(3, 4, device=triton_device, backend="triton")
    x = torch.empty(0, 3, device=triton_device, requires_grad=True)
    y = lab(x)
    y.sum().backward()
    assert y.shape == (0, 4) and (lab.weight.grad == 0).all() and (lab.bias.grad == 0).all()
    lab0 = tritonlab.Linear(0, 2, device=triton_device)
    assert_matches_torch(lab0, nn.Linear(0, 2, device=triton_device), torch.randn(3, 0, device=triton_device),
                         tier="triton")
    # no output columns: no epilogue program to launch, zero gradients
    assert_matches_torch(tritonlab.Linear(3, 0, device=triton_device), nn.Linear(3, 0, device=triton_device),
                         torch.randn(2, 3, device=triton_device), tier="triton")


def test_only_the_gradients_asked_for(triton_device, monkeypatch):
    """A frozen input gets no dX GEMM, a frozen weight no dW GEMM; the one asked for is right."""
    from tritonlab.layers.functions import linear as functions
    gemms, real = [], functions.matmul

    def counted(a, b, *rest, **kw):
        gemms.append((tuple(a.shape), tuple(b.shape)))
        return real(a, b, *rest, **kw)
    monkeypatch.setattr(functions, "matmul", counted)
    x = torch.randn(5, 8, device=triton_device)
    w = torch.randn(3, 8, device=triton_device, requires_grad=True)
    linear_triton(x, w, None, "relu").sum().backward()
    assert gemms == [((5, 8), (8, 3)), ((3, 5), (5, 8))]  # forward, then dW = gᵀ x only
    mask = (x @ w.detach().t() > 0).float()                 # d relu(y).sum() / dy
    torch.testing.assert_close(w.grad, mask.t() @ x, atol=1e-5, rtol=1e-5)
    gemms.clear()
    x.requires_grad_()
    linear_triton(x, w.detach(), None, "relu").sum().backward()
    assert gemms == [((5, 8), (8, 3)), ((5, 3), (3, 8))]  # forward, then dX = g W only
    torch.testing.assert_close(x.grad, mask @ w.detach(), atol=1e-5, rtol=1e-5)


def test_second_derivative_refused(triton_device):
    x = torch.randn(5, 8, device=triton_device, requires_grad=True)
    w = torch.randn(3, 8, device=triton_device)
    y = linear_triton(x, w).sum()
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.grad(y, x, create_graph=True)


def test_float64_refused_on_triton_but_auto_falls_back(triton_device):
    lab = tritonlab.Linear(4, 2, device=triton_device, dtype=torch.float64)
    x = torch.randn(3, 4, device=triton_device, dtype=torch.float64)
    with pytest.raises(TypeError, match="float32, float16 and bfloat16, got x of dtype torch.float64.*reference"):
        with tritonlab.use_backend("triton"):
            lab(x)
    torch.testing.assert_close(lab(x), nn.functional.linear(x, lab.weight, lab.bias))  # auto


@pytest.mark.parametrize("args,err,match", [
    ((torch.randn(3, 5), torch.randn(2, 4)), ValueError, r"4 input features.*got x of shape \(3, 5\)"),
    ((torch.tensor(1.0), torch.randn(2, 1)), ValueError, "0-D"),
    ((torch.randn(3, 4), torch.randn(2, 4, 1)), ValueError, "2-D weight"),
    ((torch.randn(3, 4), torch.randn(2, 4), torch.randn(3)), ValueError, r"bias of shape \(2,\), got \(3,\)"),
    ((torch.randn(3, 4), torch.randn(2, 4, dtype=torch.float16)), TypeError, "weight of x's dtype torch.float32"),
    ((torch.randn(3, 4), torch.randn(2, 4), None, "softplus"), ValueError, "activation must be one of"),
    (([1.0], torch.randn(2, 1)), TypeError, "x to be a torch.Tensor, got list"),
])
def test_linear_triton_bad_input(args, err, match):
    with pytest.raises(err, match=match):
        linear_triton(*args)


# ---------------------------------------------------------------- the GPU build, without a GPU

# Compiles the kernels for an H100/H200 (sm_90) in a fresh interpreter-free process, with
# the specializations a real launch gets (unit inner strides, 16-divisible sizes), so a
# config or code path that only the GPU build takes cannot break unnoticed: every
# autotune config that fits in bf16, the masked-K tail, the dW layout (a = gᵀ), fp32 in
# TF32 and in full precision with split-K, and the two helper kernels. Exit code 3: this
# triton has no (or another) ahead-of-time compile API.
_COMPILE_FOR_SM90 = r"""
from tritonlab.kernels import gemm



def build(fn, types, consts, ones=(), divisible=(), num_warps=4, num_stages=3):
    names = fn.arg_names
    sig = {n: types.get(n, "i32") for n in names}
    consts = {**consts, **{n: 1 for n in ones}}
    for n in consts:
        sig[n] = "constexpr"
    src = ASTSource(fn, sig, {(names.index(n),): v for n, v in consts.items()},
                    {(names.index(n),): [["tt.divisibility", 16]] for n in divisible})
    return triton.compile(src, target=TARGET, options={"num_warps": num_warps, "num_stages": num_stages})


def matmul(dt, cfg, precision="tf32", split=False, even_k=True, ones=("stride_ak", "stride_bk")):
    ptrs = {"a_ptr": "*" + dt, "b_ptr": "*" + dt, "c_ptr": "*fp32" if split else "*" + dt, "bias_ptr": "*" + dt}
    consts = dict(HAS_BIAS=True, ACT=3, PRECISION=precision, SPLIT=split, EVEN_K=even_k, **cfg.kwargs)
    ones = ones + ("stride_cn",)
    div = [n for n in gemm._matmul_kernel.arg_names[:17] if n not in ones and n not in ("M_BUCKET", "LAYOUT")]
    return build(gemm._matmul_kernel, ptrs, consts, ones, div, cfg.num_warps, cfg.num_stages)


fits = [c for c in gemm._configs()
        if c.num_stages * 2 * c.kwargs["BLOCK_K"] * (c.kwargs["BLOCK_M"] + c.kwargs["BLOCK_N"]) <= gemm._SMEM_BUDGET]
assert len(fits) == len(gemm._configs())
for cfg in fits:
    kernel = matmul("bf16", cfg)
    if cfg.kwargs["BLOCK_M"] >= 64:
        assert "wgmma" in kernel.asm["ptx"], cfg  # Hopper tensor cores, not the older mma
big = fits[0]
matmul("fp16", big, even_k=False)
matmul("bf16", big, ones=("stride_am", "stride_bn"))
fp32 = [c for c in gemm._fits_smem(gemm._configs(), {"a_ptr": gemm.torch.empty(0)})]
matmul("fp32", fp32[0], precision="tf32")
matmul("fp32", fp32[0], precision="ieee", split=True, even_k=False)
# FFMA: a k-contiguous B is stored k-major in shared memory (bank conflicts, see
# _b_for_ffma); the column-contiguous copy _b_for_ffma makes is not
def k_major_shared(kernel):
    return any("order = [0, 1]" in line for line in kernel.asm["ttgir"].splitlines() if line.startswith("#shared"))
assert k_major_shared(matmul("fp32", fp32[0], precision="ieee"))
assert not k_major_shared(matmul("fp32", fp32[0], precision="ieee", ones=("stride_ak", "stride_bn")))
build(gemm._split_k_sum_kernel, {"ws_ptr": "*fp32", "bias_ptr": "*bf16", "c_ptr": "*bf16", "stride_ws": "i64"},
      dict(HAS_BIAS=True, ACT=2, BLOCK_M=32, BLOCK_N=64))
build(gemm._epilogue_grad_kernel, {"dy_ptr": "*bf16", "y_ptr": "*bf16", "g_ptr": "*bf16", "db_ptr": "*fp32"},
      dict(ACT=1, HAS_DB=True, BLOCK_M=32, BLOCK_N=128), ones=("stride_dyn", "stride_yn", "stride_gn"), num_warps=8)
"""


def test_kernels_compile_for_sm90():
    compile_for_sm90(_COMPILE_FOR_SM90)


# ---------------------------------------------------------------- GPU tier (pytest -m gpu)

GPU_TOL = {torch.float16: 2e-2, torch.bfloat16: 1e-1}


def _gpu_tol(dtype):
    """Half precision rounds every stored value; float32 follows torch's TF32 flag,
    which matmul reads as the switch between TF32 tensor cores and full fp32."""
    if dtype in GPU_TOL:
        return GPU_TOL[dtype]
    return 2e-2 if torch.backends.cuda.matmul.allow_tf32 else 1e-4


class _tf32:
    """Set torch.backends.cuda.matmul.allow_tf32 inside a with block, restore it after."""

    def __init__(self, on):
        self.on = on

    def __enter__(self):
        self.before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = self.on

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self.before


def _fp32_product(a, b, bias, activation):
    """The exact-ish answer on the GPU: inputs upcast, fp32 matmul without TF32."""
    with _tf32(False):
        y = a.float() @ b.float()
    if bias is not None:
        y = y + bias.float()
    return _act(y, activation)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("activation", ACTS)
def test_gpu_matmul_4096_cubed(activation, dtype):
    a = torch.randn(4096, 4096, device="cuda", dtype=dtype)
    w = torch.randn(4096, 4096, device="cuda", dtype=dtype) / 64  # outputs of order 1
    bias = torch.randn(4096, device="cuda", dtype=dtype)
    c = matmul(a, w.t(), bias, activation)
    tol = GPU_TOL[dtype]
    torch.testing.assert_close(c.float(), _fp32_product(a, w.t(), bias, activation), atol=tol, rtol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("tf32", [False, True], ids=["ieee", "tf32"])
def test_gpu_matmul_float32_follows_the_tf32_flag(tf32):
    a = torch.randn(2048, 1536, device="cuda")
    b = torch.randn(1536, 1000, device="cuda") / 40
    bias = torch.randn(1000, device="cuda")
    with _tf32(tf32):
        c = matmul(a, b, bias, "tanh")
    tol = 2e-2 if tf32 else 1e-4  # TF32 keeps 10 bits of mantissa, fp32 23
    torch.testing.assert_close(c, _fp32_product(a, b, bias, "tanh"), atol=tol, rtol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("m,k,n", [(1, 4096, 4096), (4096, 64, 4096), (3000, 1000, 17), (511, 2049, 777)], ids=str)
def test_gpu_matmul_skinny_and_ragged(m, k, n, dtype):
    a = torch.randn(m, k, device="cuda", dtype=dtype)
    b = torch.randn(k, n, device="cuda", dtype=dtype) / k ** 0.5
    tol = _gpu_tol(dtype)
    torch.testing.assert_close(matmul(a, b).float(), _fp32_product(a, b, None, None), atol=tol, rtol=tol)


@pytest.mark.gpu
def test_gpu_matmul_out_with_odd_strides():
    a = torch.randn(1000, 2048, device="cuda", dtype=torch.bfloat16)[:, ::2]
    b = torch.randn(1024, 700, device="cuda", dtype=torch.bfloat16) / 32
    store = torch.zeros(700, 1003, device="cuda")
    out = store.t()[3:]                          # (1000, 700) float32, strides (1, 1003)
    matmul(a, b, None, "relu", out=out)
    torch.testing.assert_close(out, _fp32_product(a, b, None, "relu"), atol=5e-2, rtol=5e-2)
    assert (store.t()[:3] == 0).all()


@pytest.mark.gpu
def test_gpu_matmul_offsets_past_2_to_the_31():
    m = 2 ** 31 // 1024 + 77                     # a has more than 2**31 elements (4.3 GB)
    a = torch.randn(m, 1024, device="cuda", dtype=torch.float16)
    b = torch.randn(1024, 16, device="cuda", dtype=torch.float16) / 32
    c = matmul(a, b)
    tail = slice(m - 300, m)
    torch.testing.assert_close(c[tail].float(), _fp32_product(a[tail], b, None, None), atol=2e-2, rtol=2e-2)
    del a, c
    torch.cuda.empty_cache()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_gpu_split_k_for_a_weight_gradient_over_many_rows(dtype):
    from tritonlab.kernels.gemm import _split_k
    g = torch.randn(200_000, 64, device="cuda", dtype=dtype)     # dW = gᵀ x, summed over 200k rows
    x = torch.randn(200_000, 96, device="cuda", dtype=dtype) / 400
    assert _split_k(64, 96, 200_000, g.device, None)[0] > 1
    tol = _gpu_tol(dtype)
    want = _fp32_product(g.t(), x, None, None)
    torch.testing.assert_close(matmul(g.t(), x).float(), want, atol=tol, rtol=tol)
    torch.testing.assert_close(matmul(g.t(), x, split_k=1).float(), want, atol=tol, rtol=tol)


@pytest.mark.gpu
def test_gpu_autotune_keys_on_a_bucket_of_m_not_m():
    from tritonlab.kernels.gemm import _matmul_tuned
    b = torch.randn(512, 384, device="cuda", dtype=torch.float16)
    before = len(_matmul_tuned.cache)
    for m in (600, 700, 1000):                   # one bucket: next power of two 1024
        matmul(torch.randn(m, 512, device="cuda", dtype=torch.float16), b)
    assert len(_matmul_tuned.cache) == before + 1
    for m in (5000, 9000):                       # both above the cap: one more bucket
        matmul(torch.randn(m, 512, device="cuda", dtype=torch.float16), b)
    assert len(_matmul_tuned.cache) == before + 2


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("lead,fin,fout", [((4096,), 4096, 4096), ((8, 512), 1024, 3072), ((100_000,), 256, 3)],
                         ids=str)
def test_gpu_layer_matches_torch(lead, fin, fout, dtype):
    lab = tritonlab.Linear(fin, fout, device="cuda", dtype=dtype)
    ref = nn.Linear(fin, fout, device="cuda", dtype=dtype)
    x = torch.randn(*lead, fin, device="cuda", dtype=dtype)
    tol = _gpu_tol(dtype)
    assert_matches_torch(lab, ref, x, tier="triton", atol=tol, rtol=tol, to_scale=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_gpu_fused_activation_matches_torch(activation, dtype):
    x = torch.randn(4, 1024, 2048, device="cuda", dtype=dtype)
    w = torch.randn(1536, 2048, device="cuda", dtype=dtype) / 45
    b = torch.randn(1536, device="cuda", dtype=dtype)
    dy = torch.randn(4, 1024, 1536, device="cuda", dtype=dtype)
    got = _run(lambda *a: linear_triton(*a, activation=activation), x, w, b, dy)
    want = _run(lambda *a: _act(nn.functional.linear(*a), activation), x, w, b, dy)
    if activation == "relu":
        # 6M outputs: a few lie within fp32 summation noise of 0, where the two GEMMs'
        # orders of summation may give opposite signs and so opposite relu masks. Such
        # flips must be rare; dx is compared on the rows without one (dW and db are sums
        # over rows, where a flip is far below the tolerance).
        flips = (got[0] > 0) != (want[0] > 0)
        assert flips.sum() <= 1e-5 * flips.numel()
        same = ~flips.any(-1)
        got[1], want[1] = got[1][same], want[1][same]
    _compare(got, want, GPU_TOL[dtype], to_scale=True)  # dW, db: sums over 4096 rows


# ---------------------------------------------------------------- LinearActivation

from tritonlab.layers.linear import LinearActivation  # noqa: E402


class _TorchLinearAct(nn.Linear):
    """torch.nn.Linear then a torch activation, with nn.Linear's state_dict keys."""

    def __init__(self, fin, fout, activation, **kw):
        super().__init__(fin, fout, **kw)
        self.act = {"relu": nn.ReLU(), "sigmoid": nn.Sigmoid(), "tanh": nn.Tanh()}[activation]

    def forward(self, x):
        return self.act(super().forward(x))


@pytest.mark.parametrize("tier", ["naive", "reference", "triton"])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_linear_activation_on_every_tier(activation, tier, triton_device):
    lab = LinearActivation(21, 13, activation, device=triton_device)
    ref = _TorchLinearAct(21, 13, activation, device=triton_device)
    assert_matches_torch(lab, ref, torch.randn(2, 5, 21, device=triton_device), tier=tier)
    assert lab.state_dict().keys() == nn.Linear(21, 13).state_dict().keys()


def test_linear_activation_float64_on_auto_and_bad_activation(triton_device):
    lab = LinearActivation(4, 3, "tanh", dtype=torch.float64, device=triton_device)
    x = torch.randn(2, 4, dtype=torch.float64, device=triton_device)
    torch.testing.assert_close(lab(x), torch.tanh(nn.functional.linear(x, lab.weight, lab.bias)))
    with pytest.raises(ValueError, match="activation must be one of.*got 'gelu'"):
        LinearActivation(4, 3, "gelu")


def test_saves_only_what_the_gradients_need(triton_device):
    x = torch.randn(6, 8, device=triton_device, requires_grad=True)
    w = torch.randn(5, 8, device=triton_device)
    y = linear_triton(x, w)                        # frozen weight: dX needs only the weight
    saved = [t for t in y.grad_fn.saved_tensors if t is not None]
    assert len(saved) == 1 and saved[0].data_ptr() == w.data_ptr()
    y = linear_triton(x.detach(), w.requires_grad_(), None, "tanh")  # dW needs x and y
    assert sum(t is not None for t in y.grad_fn.saved_tensors) == 2


def test_bfloat16_on_cpu_is_refused_not_garbage(triton_device):
    if triton_device == "cuda":
        pytest.skip("the interpreter's limit")
    for layer in (tritonlab.Linear(16, 8, backend="triton"), tritonlab.LinearActivation(16, 8, "tanh", backend="triton")):
        with pytest.raises(TypeError, match="interpreter has no bfloat16"):
            layer.to(torch.bfloat16)(torch.randn(4, 16, dtype=torch.bfloat16))


def test_linears_three_gemms_are_tuned_apart_by_their_layout(triton_device, monkeypatch):
    """Forward x Wᵀ, dX = g W and dW = gᵀ x of a square layer share M, N and K; the
    autotune key's LAYOUT keeps their (differently loaded) tiles tuned apart."""
    from tritonlab.kernels import gemm
    seen, real = [], gemm._layout
    monkeypatch.setattr(gemm, "_layout", lambda a, b: seen.append(real(a, b)) or seen[-1])
    lab = tritonlab.Linear(32, 32, bias=False, device=triton_device, backend="triton")
    x = torch.randn(32, 32, device=triton_device, requires_grad=True)
    lab(x).square().sum().backward()
    assert sorted(seen) == [1, 2, 3]
