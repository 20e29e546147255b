"""Softmax, Dropout and SoftmaxDropout on the triton tier (the interpreter on CPU, or
CUDA): forward and gradient against torch and the reference tier on odd shapes and
every dim, single-pass and looped rows, strided inputs, the mask (same in backward as
in forward, statistics, seeds, independent of strides), and that no mask is saved."""
import pytest
import torch
from torch import nn

import tritonlab
import tritonlab.kernels.softmax as kernels
from parity import assert_matches_torch
from sm90 import compile_for_sm90
from tritonlab.scratch.softmax import softmax_backward, softmax_rows

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.float64: 1e-12}
DTYPES = [torch.float32, torch.float16]
# (shape, dim): rows of 1, 17, 1000 and 5000 columns, every dim of a 3-D and a 4-D tensor
CASES = [((1, 1), -1), ((3, 17), 1), ((4, 1000), -1), ((2, 5000), 1), ((5,), 0), ((), 0),
         ((2, 3, 7), 0), ((2, 3, 7), 1), ((2, 3, 7), 2), ((2, 1, 3, 5), 0), ((2, 1, 3, 5), 1),
         ((2, 1, 3, 5), 2), ((2, 1, 3, 5), -1)]


@pytest.fixture
def looped(monkeypatch):
    """Rows longer than 32 columns take the online (looped) kernel, 16 columns a step."""
    monkeypatch.setattr(kernels, "SINGLE_PASS_MAX_COLS", 32)
    monkeypatch.setattr(kernels, "LOOP_BLOCK", 16)


def _run(layer, x, dout=None, view=lambda t: t):
    """out and dx of layer(view(x)) for upstream gradient dout (random if None)."""
    leaf = x.detach().clone().requires_grad_()
    out = layer(view(leaf))
    dout = torch.randn_like(out) if dout is None else dout
    out.backward(dout)
    return out.detach(), leaf.grad, dout


def _expected(x, dim, keep, p, dout):
    """dropout(softmax(x)) and its gradient for the given keep-mask, by the reference
    tier's math (softmax_rows, softmax_backward) in float64, and by torch autograd."""
    x64 = x.detach().double().requires_grad_()
    y = softmax_rows(x64, dim)
    out = y * keep / (1 - p)
    dx = softmax_backward(y.detach(), dout.double() * keep / (1 - p), dim)
    torch_out = torch.softmax(x64, dim) * keep / (1 - p)
    torch_out.backward(dout.double())
    torch.testing.assert_close(dx, x64.grad)
    return out.detach(), dx


# ---- Softmax -----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,dim", CASES, ids=str)
def test_softmax_matches_torch(shape, dim, dtype, triton_device):
    x = (torch.randn(shape) * 3).to(dtype=dtype, device=triton_device)
    assert_matches_torch(tritonlab.Softmax(dim), nn.Softmax(dim), x, tier="triton",
                         atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,dim", [((3, 17), 1), ((2, 3, 7), 1), ((4, 1000), -1)], ids=str)
def test_softmax_matches_reference_tier(shape, dim, dtype, triton_device):
    x = (torch.randn(shape) * 3).to(dtype=dtype, device=triton_device)
    out, dx, dout = _run(tritonlab.Softmax(dim, backend="triton"), x)
    ref_out, ref_dx, _ = _run(tritonlab.Softmax(dim, backend="reference"), x.float(), dout.float())
    torch.testing.assert_close(out.float(), ref_out, atol=TOL[dtype], rtol=TOL[dtype])
    torch.testing.assert_close(dx.float(), ref_dx, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("shape,dim", [((3, 100), -1), ((2, 50, 3), 1), ((2, 33), 1), ((37, 2), 0)], ids=str)
def test_softmax_looped_rows(looped, shape, dim, triton_device):
    x = torch.randn(shape, device=triton_device) * 3
    assert_matches_torch(tritonlab.Softmax(dim), nn.Softmax(dim), x, tier="triton")


@pytest.mark.parametrize("path", ["single", "looped"])
def test_softmax_large_and_infinite_logits(path, request, triton_device):
    if path == "looped":
        request.getfixturevalue("looped")
    x = torch.randn(4, 40, device=triton_device)
    x[0, :3] = torch.tensor([1000.0, 999.0, -1000.0])
    x[1] = -1e4
    x[2, ::2] = float("-inf")           # -inf entries get 0, the rest normalise
    x[3, :20] = float("-inf")           # a whole looped block of -inf first
    assert_matches_torch(tritonlab.Softmax(1), nn.Softmax(1), x, tier="triton")


VIEWS = {
    "transposed": ((7, 5), lambda t: t.t()),
    "sliced": ((6, 40), lambda t: t[1:, ::3]),
    "permuted_3d": ((4, 5, 6), lambda t: t.permute(2, 0, 1)),
    "unmergeable_4d": ((2, 3, 4, 5), lambda t: t.permute(1, 0, 3, 2)[:, :, ::2]),  # copied first
}


@pytest.mark.parametrize("dim", [0, -1])
@pytest.mark.parametrize("view", VIEWS, ids=str)
def test_softmax_strided_inputs(view, dim, triton_device):
    shape, f = VIEWS[view]
    x = torch.randn(shape, device=triton_device) * 3
    out, dx, dout = _run(tritonlab.Softmax(dim, backend="triton"), x, view=f)
    ref_out, ref_dx, _ = _run(nn.Softmax(dim), x, dout, view=f)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(dx, ref_dx)
    # stride-0 upstream gradient, as .sum().backward() sends: dx is 0 up to rounding
    _, dx0, _ = _run(tritonlab.Softmax(dim, backend="triton"), x, torch.ones((), device=triton_device).expand(out.shape), f)
    torch.testing.assert_close(dx0, torch.zeros_like(dx0))


def test_launcher_takes_a_negative_dim_and_refuses_one_out_of_range(triton_device):
    x = torch.randn(3, 5, 7, device=triton_device)
    out, _ = kernels.softmax_dropout_forward(x, -2, 0.0, None)
    torch.testing.assert_close(out, torch.softmax(x, -2))
    with pytest.raises(IndexError, match=r"dim must be in \[-3, 2\]"):
        kernels.softmax_dropout_forward(x, 3, 0.0, None)


def test_softmax_gradcheck_float64(triton_device):
    x = torch.randn(3, 6, dtype=torch.float64, device=triton_device, requires_grad=True)
    assert torch.autograd.gradcheck(tritonlab.Softmax(dim=0, backend="triton"), (x,))


def test_softmax_saves_only_its_output(triton_device):
    x = torch.randn(4, 9, device=triton_device, requires_grad=True)
    y = tritonlab.Softmax(-1, backend="triton")(x)
    (saved,) = y.grad_fn.saved_tensors
    assert torch.equal(saved, y)


# ---- SoftmaxDropout ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,dim", CASES, ids=str)
def test_softmax_dropout_is_softmax_then_the_same_mask(shape, dim, dtype, triton_device):
    """out == softmax(x) * keep / (1 - p) and dx follows the same keep: the backward
    regenerates the forward's mask (softmax is never 0 here, so out == 0 marks drops)."""
    p = 0.3
    x = torch.randn(shape).to(dtype=dtype, device=triton_device)
    out, dx, dout = _run(tritonlab.SoftmaxDropout(p, dim, backend="triton"), x)
    keep = out != 0
    n = keep.numel()
    if n >= 30:  # the mask drops about p: with none dropped, the checks below would pass plain softmax
        assert not keep.all() and abs(keep.double().mean().item() - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5
    exp_out, exp_dx = _expected(x, dim, keep, p, dout)
    torch.testing.assert_close(out.double(), exp_out, atol=TOL[dtype], rtol=TOL[dtype])
    torch.testing.assert_close(dx.double(), exp_dx, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("shape,dim", [((3, 100), -1), ((2, 50, 3), 1), ((37, 2), 0)], ids=str)
def test_softmax_dropout_looped_rows(looped, shape, dim, triton_device):
    p = 0.4
    x = torch.randn(shape, device=triton_device)
    out, dx, dout = _run(tritonlab.SoftmaxDropout(p, dim, backend="triton"), x)
    keep = out != 0
    exp_out, exp_dx = _expected(x, dim, keep, p, dout)
    torch.testing.assert_close(out.double(), exp_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dx.double(), exp_dx, atol=1e-5, rtol=1e-5)
    assert 0.4 < keep.double().mean() < 0.8


def test_mask_is_the_same_in_single_pass_and_looped_kernels(monkeypatch, triton_device):
    x = torch.randn(3, 100, device=triton_device)
    torch.manual_seed(3)
    single = tritonlab.SoftmaxDropout(0.5, backend="triton")(x)
    monkeypatch.setattr(kernels, "SINGLE_PASS_MAX_COLS", 32)
    monkeypatch.setattr(kernels, "LOOP_BLOCK", 16)
    torch.manual_seed(3)
    looped = tritonlab.SoftmaxDropout(0.5, backend="triton")(x)
    assert (single == 0).any()
    torch.testing.assert_close(single, looped)


@pytest.mark.parametrize("view", VIEWS, ids=str)
def test_softmax_dropout_strided_inputs_and_mask_ignores_strides(view, triton_device):
    shape, f = VIEWS[view]
    x = torch.randn(shape, device=triton_device)
    torch.manual_seed(5)
    out, dx, dout = _run(tritonlab.SoftmaxDropout(0.3, 0, backend="triton"), x, view=f)
    torch.manual_seed(5)
    dense_out = tritonlab.SoftmaxDropout(0.3, 0, backend="triton")(f(x).contiguous())
    assert torch.equal(out, dense_out)  # the mask follows logical positions, not memory
    keep = out != 0
    xv = f(x)
    x64 = xv.double().requires_grad_()
    (torch.softmax(x64, 0) * keep / 0.7).backward(dout.double())
    torch.testing.assert_close(out.double(), torch.softmax(xv.double(), 0) * keep / 0.7, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dx.double(), _scatter_grad(x, f, x64.grad), atol=1e-5, rtol=1e-5)


def _scatter_grad(x, f, grad_of_view):
    """The gradient w.r.t. the base tensor x of a loss whose gradient w.r.t. f(x) is given."""
    base = torch.zeros_like(x, dtype=torch.float64)
    f(base).copy_(grad_of_view)
    return base


def test_softmax_dropout_saves_x_and_a_row_statistic_not_a_mask(triton_device):
    x = torch.randn(6, 40, device=triton_device, requires_grad=True)
    out = tritonlab.SoftmaxDropout(0.5, backend="triton")(x)
    saved = out.grad_fn.saved_tensors
    assert len(saved) == 2 and torch.equal(saved[0], x)
    assert saved[1].shape == (6,) and saved[1].dtype == torch.float32  # log-sum-exp per row
    torch.testing.assert_close(saved[1], torch.logsumexp(x.detach(), -1))


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_softmax_dropout_p0_is_softmax_p1_is_zero(p, triton_device):
    x = torch.randn(4, 9, device=triton_device)
    out, dx, _ = _run(tritonlab.SoftmaxDropout(p, backend="triton"), x)
    if p == 0:
        torch.testing.assert_close(out, torch.softmax(x, -1))
    else:
        assert torch.equal(out, torch.zeros_like(x)) and torch.equal(dx, torch.zeros_like(x))


def test_softmax_dropout_eval_is_softmax(triton_device):
    x = torch.randn(4, 7, device=triton_device)
    layer = tritonlab.SoftmaxDropout(0.5, dim=0, backend="triton").eval()
    torch.testing.assert_close(layer(x), torch.softmax(x, 0))


@pytest.mark.parametrize("layer_cls", [tritonlab.SoftmaxDropout, tritonlab.Dropout], ids=lambda c: c.__name__)
def test_dropout_gradcheck_float64(layer_cls, triton_device):
    x = torch.randn(3, 5, dtype=torch.float64, device=triton_device, requires_grad=True)
    layer = layer_cls(0.3, backend="triton")

    def seeded(x):  # the same mask on every call gradcheck makes
        torch.manual_seed(5)
        return layer(x)

    assert torch.autograd.gradcheck(seeded, (x,))


# ---- Dropout -----------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_statistics_and_scaling(p, triton_device):
    x = torch.ones(200, 500, device=triton_device)
    y = tritonlab.Dropout(p, backend="triton")(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    sd = (p * (1 - p) / x.numel()) ** 0.5  # 100k Bernoulli draws: within 5 sd of 1 - p
    assert abs(kept.double().mean().item() - (1 - p)) < 5 * sd
    # neighbours share Philox calls (4 columns per call) but not their draws
    assert abs((kept[:, :-1] & kept[:, 1:]).double().mean().item() - (1 - p) ** 2) < 0.01


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1,), (7, 33), (2, 3, 1000), (2, 5000)], ids=str)
def test_dropout_backward_uses_the_forward_mask(shape, dtype, triton_device):
    x = (torch.rand(shape) + 0.5).to(dtype=dtype, device=triton_device)  # no zeros in x
    out, dx, dout = _run(tritonlab.Dropout(0.3, backend="triton"), x)
    keep = out != 0
    assert not keep.all() or keep.numel() == 1
    torch.testing.assert_close(out, (x.double() * keep / 0.7).to(dtype), atol=TOL[dtype], rtol=TOL[dtype])
    torch.testing.assert_close(dx, (dout.double() * keep / 0.7).to(dtype), atol=TOL[dtype], rtol=TOL[dtype])


def test_dropout_looped_rows_and_strided_input(looped, triton_device):
    base = torch.rand(40, 20, device=triton_device) + 0.5  # viewed as 20 rows of 39
    out, dx, dout = _run(tritonlab.Dropout(0.5, backend="triton"), base, view=lambda t: t.t()[:, 1:])
    keep = out != 0
    torch.testing.assert_close(out, base.t()[:, 1:] * keep / 0.5)
    torch.testing.assert_close(dx.t()[:, 1:], dout * keep / 0.5)
    assert torch.equal(dx[0], torch.zeros(20, device=triton_device))


@pytest.mark.parametrize("cls", ["Dropout", "SoftmaxDropout"])
def test_reproducible_under_manual_seed_and_seeds_differ(cls, triton_device):
    layer = getattr(tritonlab, cls)(0.5, backend="triton")
    x = torch.randn(5, 40, device=triton_device)
    torch.manual_seed(7)
    a, b = layer(x), layer(x)
    torch.manual_seed(7)
    c = layer(x)
    torch.manual_seed(8)
    d = layer(x)
    assert torch.equal(a, c)
    assert not torch.equal(a, b) and not torch.equal(a, d)


def test_dropout_saves_nothing(triton_device):
    x = torch.randn(4, 9, device=triton_device, requires_grad=True)
    assert tritonlab.Dropout(0.5, backend="triton")(x).grad_fn.saved_tensors == ()


def test_dropout_eval_p0_p1_inplace(triton_device):
    x = torch.randn(4, 9, device=triton_device)
    assert tritonlab.Dropout(0.5, backend="triton").eval()(x) is x
    assert tritonlab.Dropout(0.0, backend="triton")(x) is x
    out, dx, _ = _run(tritonlab.Dropout(1.0, backend="triton"), x)
    assert torch.equal(out, nn.Dropout(1.0)(x)) and torch.equal(dx, torch.zeros_like(x))
    ones = torch.ones(4, 10, device=triton_device)
    y = tritonlab.Dropout(0.5, inplace=True, backend="triton")(ones)
    assert y.data_ptr() == ones.data_ptr() and (ones == 0).any() and (ones == 2).any()


@pytest.mark.parametrize("shape", [(), (0, 4), (3, 0)], ids=str)
def test_dropout_and_softmax_odd_sizes(shape, triton_device):
    x = torch.randn(shape, device=triton_device)
    assert tritonlab.Dropout(0.5, backend="triton")(x).shape == shape
    assert tritonlab.SoftmaxDropout(0.5, 0, backend="triton")(x).shape == shape


@pytest.mark.parametrize("cls", ["Softmax", "Dropout", "SoftmaxDropout"])
def test_unsupported_dtype_is_a_type_error(cls, triton_device):
    layer = getattr(tritonlab, cls)(0 if cls == "Softmax" else 0.5, backend="triton")
    bad = [torch.float8_e4m3fn] + ([torch.bfloat16] if triton_device == "cpu" else [])
    for dtype in bad:
        with pytest.raises(TypeError, match=f"triton tier .*{dtype}"):
            layer(torch.randn(5, device=triton_device).to(dtype))


# ---- GPU tier: real sizes, 16-bit types ------------------------------------------------

GPU_TOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-5}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("shape,dim", [((4096, 4096), -1), ((64, 32768), -1), ((8, 100_000), -1),
                                       ((4096, 4096), 0), ((16, 1000, 64), 1)], ids=str)
def test_gpu_softmax_real_sizes(shape, dim, dtype):
    x = torch.randn(shape, device="cuda", dtype=dtype) * 3
    tol = GPU_TOL[dtype]
    assert_matches_torch(tritonlab.Softmax(dim), nn.Softmax(dim), x, tier="triton", atol=tol, rtol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("shape,dim", [((4096, 4096), -1), ((64, 32768), -1), ((16, 1000, 64), 1)], ids=str)
def test_gpu_softmax_dropout_real_sizes(shape, dim, dtype):
    p = 0.1
    x = torch.randn(shape, device="cuda", dtype=dtype)
    out, dx, dout = _run(tritonlab.SoftmaxDropout(p, dim, backend="triton"), x)
    keep = out != 0
    sd = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(keep.double().mean().item() - (1 - p)) < 6 * sd
    exp_out, exp_dx = _expected(x, dim, keep, p, dout)
    tol = GPU_TOL[dtype]
    torch.testing.assert_close(out.double(), exp_out, atol=tol, rtol=tol)
    torch.testing.assert_close(dx.double(), exp_dx, atol=tol, rtol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_gpu_dropout_16m_elements(dtype):
    x = torch.ones(4096, 4096, device="cuda", dtype=dtype)
    out, dx, dout = _run(tritonlab.Dropout(0.2, backend="triton"), x)
    keep = out != 0
    assert abs(keep.double().mean().item() - 0.8) < 6 * (0.16 / x.numel()) ** 0.5
    torch.testing.assert_close(out[keep], torch.full_like(out[keep], 1.25))
    torch.testing.assert_close(dx, dout * keep * 1.25, atol=GPU_TOL[dtype], rtol=GPU_TOL[dtype])
    torch.manual_seed(0)
    a = tritonlab.Dropout(0.2, backend="triton")(x)
    torch.manual_seed(0)
    assert torch.equal(a, tritonlab.Dropout(0.2, backend="triton")(x))


# ---- GPU compile check without a GPU ----------------------------------------------------

_COMPILE_FOR_SM90 = r"""
import triton.language as tl
from tritonlab.kernels import activations, softmax

def build(kernel, dtype, constexprs, num_warps):
    names = kernel.arg_names
    def kind(name):
        if name in constexprs:
            return "constexpr"
        if name == "seed_ptr":
            return "*i64"
        if name == "lse_ptr":
            return "*fp64" if dtype == "fp64" else "*fp32"
        if name.endswith("_ptr"):
            return "*" + dtype
        return "fp32" if name in ("p", "scale") else "i64"
    src = ASTSource(kernel, {n: kind(n) for n in names},
                    {(names.index(k),): v for k, v in constexprs.items()})
    triton.compile(src, target=TARGET, options={"num_warps": num_warps})

for dtype in ("fp32", "bf16", "fp64"):
    acc = tl.float64 if dtype == "fp64" else tl.float32
    for looped, rows, block, warps in ((False, 1, 16384, 32), (True, 1, 4096, 8), (False, 64, 32, 4)):
        flags = dict(SOFTMAX=True, DROPOUT=True, LOOPED=looped, ROWS=rows, BLOCK_N=block, ACC=acc)
        build(softmax._fwd_kernel, dtype, dict(flags, SAVE_LSE=True), warps)
        build(softmax._bwd_kernel, dtype, dict(flags, FROM_LOGITS=True), warps)
    build(activations._flat_kernel, dtype, dict(ACT=3, BACKWARD=True, BLOCK=2048), 8)
    build(activations._strided_kernel, dtype, dict(ACT=2, BACKWARD=False, BLOCK=1024), 4)
"""


def test_kernels_compile_for_sm90():
    """The largest tiles of every kernel here (16K-column single pass, looped, many rows)."""
    compile_for_sm90(_COMPILE_FOR_SM90)
