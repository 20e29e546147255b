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
