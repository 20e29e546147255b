"""ReLU, Sigmoid, Tanh on the triton tier (the interpreter on CPU, or CUDA): forward and
gradient against torch.nn and against the reference tier, every layout the kernels
take (flat, strided, copied), edge values, in-place ReLU, and what is saved."""
import pytest
import torch
from torch import nn

import tritonlab
from parity import assert_matches_torch

LAYERS = [(tritonlab.ReLU, nn.ReLU), (tritonlab.Sigmoid, nn.Sigmoid), (tritonlab.Tanh, nn.Tanh)]
IDS = lambda c: c.__name__  # noqa: E731
SHAPES = [(), (1,), (17,), (3, 1, 5), (2, 3, 7, 11), (3, 1000)]  # (3, 1000): several programs
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.float64: 1e-12}


def _grads(layer, base, view, dy):
    """out and d(base) of layer(view(base)) for upstream gradient dy."""
    leaf = base.detach().clone().requires_grad_()
    out = layer(view(leaf))
    out.backward(dy)
    return out.detach(), leaf.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("lab_cls,torch_cls", LAYERS, ids=IDS)
def test_matches_torch(lab_cls, torch_cls, shape, dtype, triton_device):
    x = (torch.randn(shape) * 4).to(dtype=dtype, device=triton_device)
    assert_matches_torch(lab_cls(), torch_cls(), x, tier="triton", atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("lab_cls", [c for c, _ in LAYERS], ids=IDS)
def test_matches_reference_tier(lab_cls, dtype, triton_device):
    x = (torch.randn(4, 33) * 4).to(dtype=dtype, device=triton_device)
    dy = torch.randn_like(x)
    out, dx = _grads(lab_cls(backend="triton"), x, lambda t: t, dy)
    ref_out, ref_dx = _grads(lab_cls(backend="reference"), x.float(), lambda t: t, dy.float())
    torch.testing.assert_close(out.float(), ref_out, atol=TOL[dtype], rtol=TOL[dtype])
    torch.testing.assert_close(dx.float(), ref_dx, atol=TOL[dtype], rtol=TOL[dtype])


# (base shape, view): dense permutations run flat; slices run strided; the 5-D view
# with every dim cut or permuted does not collapse to 4 dims and is copied first
VIEWS = {
    "permuted": ((4, 5, 6), lambda t: t.permute(2, 0, 1)),
    "channels_last": ((2, 3, 5, 7), lambda t: t.contiguous(memory_format=torch.channels_last)),
    "sliced": ((6, 8), lambda t: t[:, ::3]),
    "transposed_slice": ((3, 4, 5), lambda t: t.transpose(0, 2)[1:]),
    "storage_offset": ((5, 9), lambda t: t[2:, 1:]),
    "5d_cut": ((2, 3, 4, 5, 6), lambda t: t.permute(4, 1, 3, 0, 2)[:, :, 1:, :, ::2]),
}


@pytest.mark.parametrize("view", VIEWS, ids=str)
@pytest.mark.parametrize("lab_cls,torch_cls", LAYERS, ids=IDS)
def test_any_strides(lab_cls, torch_cls, view, triton_device):
    shape, f = VIEWS[view]
    base = torch.randn(shape, device=triton_device) * 4
    y_shape = f(base).shape
    # upstream gradient with strides of its own (a transposed contiguous tensor)
    dy = torch.randn(tuple(reversed(y_shape)), device=triton_device).permute(*reversed(range(len(y_shape))))
    out, dx = _grads(lab_cls(backend="triton"), base, f, dy)
    ref_out, ref_dx = _grads(torch_cls(), base, f, dy)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dx, ref_dx, atol=1e-5, rtol=1e-5)
    # and a gradient with stride 0 everywhere, as .sum().backward() sends
    grads = []
    for layer in (lab_cls(backend="triton"), torch_cls()):
        leaf = base.clone().requires_grad_()
        layer(f(leaf)).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(*grads, atol=1e-5, rtol=1e-5)


def test_dense_input_keeps_its_layout_and_others_come_out_contiguous(triton_device):
    x = torch.randn(2, 3, 5, 7, device=triton_device).contiguous(memory_format=torch.channels_last)
    assert tritonlab.Tanh(backend="triton")(x).stride() == x.stride()
    sliced = torch.randn(6, 8, device=triton_device)[:, ::3]
    assert tritonlab.Tanh(backend="triton")(sliced).is_contiguous()


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # numpy, by design
@pytest.mark.parametrize("lab_cls,torch_cls", LAYERS, ids=IDS)
def test_extreme_values_like_torch(lab_cls, torch_cls, triton_device):
    """exp overflow must not become nan; inf and -inf map like torch."""
    x = torch.tensor([-1e4, -100.0, -1.0, 0.0, 1.0, 100.0, 1e4, float("-inf"), float("inf")],
                     device=triton_device)
    assert_matches_torch(lab_cls(), torch_cls(), x, tier="triton")


@pytest.mark.parametrize("lab_cls,torch_cls", LAYERS, ids=IDS)
def test_nan_like_torch(lab_cls, torch_cls, triton_device):
    x = torch.tensor([float("nan"), -1.0, 2.0], device=triton_device)
    y = lab_cls(backend="triton")(x)
    assert torch.isnan(y[0])
    torch.testing.assert_close(y[1:], torch_cls()(x)[1:])


@pytest.mark.parametrize("lab_cls", [c for c, _ in LAYERS], ids=IDS)
def test_gradcheck_float64(lab_cls, triton_device):
    x = torch.randn(3, 5, dtype=torch.float64, device=triton_device)
    x = (x + 0.1 * torch.sign(x)).requires_grad_()  # keep ReLU off its kink
    assert torch.autograd.gradcheck(lab_cls(backend="triton"), (x,))


@pytest.mark.parametrize("lab_cls", [c for c, _ in LAYERS], ids=IDS)
def test_saves_only_the_output(lab_cls, triton_device):
    x = torch.randn(4, 6, device=triton_device, requires_grad=True)
    y = lab_cls(backend="triton")(x)
    (saved,) = y.grad_fn.saved_tensors
    assert torch.equal(saved, y)


def test_inplace_relu_like_torch(triton_device):
    x = torch.randn(4, 6, device=triton_device)
    expected = torch.relu(x)
    y = tritonlab.ReLU(inplace=True, backend="triton")(x)
    assert y.data_ptr() == x.data_ptr()
    torch.testing.assert_close(x, expected)
    # and its gradient flows through the in-place write, as with nn.ReLU(inplace=True)
    leaf = torch.randn(4, 6, device=triton_device, requires_grad=True)
    tritonlab.ReLU(inplace=True, backend="triton")(leaf * 1).sum().backward()
    torch.testing.assert_close(leaf.grad, (leaf > 0).float())


def test_empty_tensor(triton_device):
    for cls, _ in LAYERS:
        x = torch.empty(0, 3, device=triton_device, requires_grad=True)
        y = cls(backend="triton")(x)
        y.sum().backward()
        assert y.shape == (0, 3) and x.grad.shape == (0, 3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float8_e4m3fn], ids=str)
def test_unsupported_dtype_is_a_type_error(dtype, triton_device):
    if dtype == torch.bfloat16 and triton_device == "cuda":
        pytest.skip("bfloat16 runs on CUDA")
    x = torch.randn(5, device=triton_device).to(dtype)
    with pytest.raises(TypeError, match=f"triton tier .*{dtype}"):
        tritonlab.Sigmoid(backend="triton")(x)


# ---- GPU tier: real sizes, 16-bit types ------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("lab_cls,torch_cls", LAYERS, ids=IDS)
def test_gpu_real_size(lab_cls, torch_cls, dtype):
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-5}[dtype]
    x = torch.randn(4096, 4096, device="cuda", dtype=dtype) * 4
    assert_matches_torch(lab_cls(), torch_cls(), x, tier="triton", atol=tol, rtol=tol)
    strided = x.t()[::2]  # strided kernel at size
    torch.testing.assert_close(lab_cls(backend="triton")(strided), torch_cls()(strided), atol=tol, rtol=tol)


@pytest.mark.gpu
def test_gpu_float64_and_channels_last():
    x = torch.randn(8, 16, 32, 32, device="cuda", dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    for lab_cls, torch_cls in LAYERS:
        y = lab_cls(backend="triton")(x)
        assert y.stride() == x.stride()
        torch.testing.assert_close(y, torch_cls()(x), atol=1e-12, rtol=1e-12)
