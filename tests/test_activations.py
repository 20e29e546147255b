import pytest
import torch
from torch import nn

import tritonlab
from parity import assert_matches_torch

LAYERS = [(tritonlab.ReLU, nn.ReLU), (tritonlab.Sigmoid, nn.Sigmoid), (tritonlab.Tanh, nn.Tanh)]
SHAPES = [(), (1,), (17,), (3, 1, 5), (2, 3, 7, 11)]


@pytest.mark.parametrize("tier", ["naive", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("lab_cls,torch_cls", LAYERS, ids=lambda c: c.__name__)
def test_matches_torch(lab_cls, torch_cls, shape, dtype, tier):
    x = torch.randn(shape, dtype=dtype) * 4
    assert_matches_torch(lab_cls(), torch_cls(), x, tier=tier)


@pytest.mark.parametrize("tier", ["naive", "reference"])
@pytest.mark.parametrize("lab_cls,torch_cls", LAYERS, ids=lambda c: c.__name__)
def test_extreme_values_stay_finite(lab_cls, torch_cls, tier):
    """exp overflow must not turn into inf/nan in the output or the gradient."""
    x = torch.tensor([-1e4, -100.0, -1.0, 0.0, 1.0, 100.0, 1e4, float("-inf"), float("inf")])
    assert_matches_torch(lab_cls(), torch_cls(), x, tier=tier)


@pytest.mark.parametrize("tier", ["naive", "reference"])
@pytest.mark.parametrize("lab_cls", [c for c, _ in LAYERS], ids=lambda c: c.__name__)
def test_gradcheck(lab_cls, tier):
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    x = x + 0.1 * torch.sign(x)  # keep ReLU away from its kink at 0
    layer = lab_cls(backend=tier)
    assert torch.autograd.gradcheck(layer, (x.detach().requires_grad_(),))


def test_inplace_relu_writes_into_input():
    x = torch.randn(4, 6)
    expected = torch.relu(x)
    y = tritonlab.ReLU(inplace=True, backend="reference")(x)
    assert y.data_ptr() == x.data_ptr()
    torch.testing.assert_close(x, expected)


def test_empty_tensor():
    for cls, _ in LAYERS:
        for tier in ("naive", "reference"):
            assert cls(backend=tier)(torch.empty(0, 3)).shape == (0, 3)


@pytest.mark.parametrize("tier", ["naive", "reference", None])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.uint8, torch.bool])
@pytest.mark.parametrize("lab_cls,torch_cls", LAYERS, ids=lambda c: c.__name__)
def test_integer_input_does_what_torch_does(lab_cls, torch_cls, dtype, tier):
    """A swapped-in layer takes what torch.nn's takes: ReLU keeps integers (and refuses
    bool, as torch does); Sigmoid and Tanh promote to the default float dtype."""
    x = torch.tensor([-3, -1, 0, 2, 5]).to(dtype)
    try:
        want = torch_cls()(x)
    except RuntimeError as e:
        with pytest.raises(RuntimeError, match=str(e)):
            lab_cls(backend=tier)(x)
        return
    got = lab_cls(backend=tier)(x)
    torch.testing.assert_close(got, want)  # dtype included; the tiers round as the float tests allow


@pytest.mark.parametrize("tier", ["naive", "reference", None])
def test_complex_input_does_what_torch_does(tier):
    """torch.nn.Sigmoid and Tanh compute complex input (the lab hands it to torch's op);
    ReLU refuses it, as torch's does."""
    x = torch.tensor([1 + 2j, -0.5j, 0], dtype=torch.complex64, requires_grad=True)
    for lab_cls, torch_cls in ((tritonlab.Sigmoid, nn.Sigmoid), (tritonlab.Tanh, nn.Tanh)):
        torch.testing.assert_close(lab_cls(backend=tier)(x), torch_cls()(x))
    with pytest.raises(TypeError, match="floating-point.*torch.complex64"):
        tritonlab.ReLU(backend=tier)(x)


@pytest.mark.parametrize("tier", ["naive", "reference"])
def test_relu_keeps_nan_like_torch(tier):
    y = tritonlab.ReLU(backend=tier)(torch.tensor([float("nan"), -1.0, 2.0]))
    assert torch.isnan(y[0]) and y[1:].tolist() == [0.0, 2.0]


def test_a_default_device_set_before_import_or_first_call_does_not_move_the_constants():
    """The reference tier's cached 0-d constants stay on the CPU whatever torch's default
    device when they are made (at import, at a first call): a CPU 0-d tensor combines
    with tensors on any device, one on another device would not. In a fresh process, with
    the meta device as the default while tritonlab loads and first runs."""
    import subprocess
    import sys
    code = ("import torch\n"
            "torch.set_default_device('meta')\n"
            "import tritonlab\n"
            "from tritonlab.scratch import activations as a\n"
            "a.sigmoid_reference(torch.randn(3))  # a first call on meta tensors fills the cache\n"
            "torch.set_default_device('cpu')\n"
            "x = torch.tensor([-1.0, 0.0, 2.0])\n"
            "assert torch.allclose(a.sigmoid_reference(x), torch.sigmoid(x))\n"
            "assert torch.allclose(a.tanh_reference(x), torch.tanh(x))\n"
            "assert a._ONE.device.type == a._TWO.device.type == 'cpu'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
