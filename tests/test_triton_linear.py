"""Triton tier of Linear: the shared GEMM launcher `matmul` (fused bias + activation
epilogue), the Linear Function's forward and every gradient, against torch.nn and the
reference tier. Under the interpreter (no GPU) on small odd shapes in float32/float16;
the `gpu` tests at real sizes in fp16/bf16/fp32."""
import pytest
import torch

pytest.importorskip("triton")
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
], ids=lambda v: v if isinstance(v, str) else "")
def test_matmul_bad_input(args, kwargs, err, match):
    with pytest.raises(err, match=match):
        matmul(*args, **kwargs)


# ---------------------------------------------------------------- Linear, backend="triton"

import tritonlab  # noqa: E402
from torch import nn  # noqa: E402
from tritonlab.layers.functions.linear import linear_triton  # noqa: E402
from tritonlab.scratch.linear import linear_reference  # noqa: E402
from parity import assert_matches_torch  # noqa: E402

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


def _compare(got, want, tol):
    for name, a, b in zip(("out", "dx", "dweight", "dbias"), got, want):
        assert (a is None) == (b is None), name
        if b is not None:
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


def test_empty_batch_and_zero_in_features(triton_device):
    lab = tritonlab.Linear(3, 4, device=triton_device, backend="triton")
    x = torch.empty(0, 3, device=triton_device, requires_grad=True)
    y = lab(x)
    y.sum().backward()
    assert y.shape == (0, 4) and (lab.weight.grad == 0).all() and (lab.bias.grad == 0).all()
    lab0 = tritonlab.Linear(0, 2, device=triton_device)
    assert_matches_torch(lab0, nn.Linear(0, 2, device=triton_device), torch.randn(3, 0, device=triton_device),
                         tier="triton")


def test_only_the_gradients_asked_for(triton_device):
    x = torch.randn(5, 8, device=triton_device)
    w = torch.randn(3, 8, device=triton_device, requires_grad=True)
    linear_triton(x, w, None, "relu").sum().backward()
    assert w.grad is not None and w.grad.shape == (3, 8)


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
