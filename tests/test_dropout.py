import pytest
import torch
from torch import nn

import tritonlab

TIERS = ["naive", "reference"]


def _dropout_and_grad(layer, x):
    x = x.clone().requires_grad_()
    y = layer(x)
    dy = torch.randn_like(y)
    y.backward(dy)
    return y.detach(), x.grad, dy


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_statistics_and_scaling(tier, p):
    x = torch.ones(200, 500)
    y = tritonlab.Dropout(p, backend=tier)(x)
    kept = y != 0
    # kept elements are scaled by exactly 1 / (1 - p)
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    # 100k Bernoulli draws: the kept fraction is within 5 standard deviations of 1 - p
    n = x.numel()
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * sd
    # and the mean is preserved
    assert abs(y.mean().item() - 1) < 5 * sd / (1 - p)


@pytest.mark.parametrize("tier", TIERS)
def test_backward_uses_the_forward_mask(tier):
    x = torch.rand(7, 33) + 0.5  # no zeros, so y == 0 marks exactly the dropped elements
    y, dx, dy = _dropout_and_grad(tritonlab.Dropout(0.3, backend=tier), x)
    keep = y != 0
    assert not keep.all()
    torch.testing.assert_close(dx, dy * keep / 0.7)


@pytest.mark.parametrize("tier", TIERS)
def test_reproducible_under_manual_seed(tier):
    x = torch.randn(5, 40)
    torch.manual_seed(7)
    a = tritonlab.Dropout(0.5, backend=tier)(x)
    b = tritonlab.Dropout(0.5, backend=tier)(x)
    torch.manual_seed(7)
    c = tritonlab.Dropout(0.5, backend=tier)(x)
    assert torch.equal(a, c)
    assert not torch.equal(a, b)  # consecutive calls draw fresh masks


def test_tiers_draw_the_same_mask():
    x = torch.randn(6, 21)
    torch.manual_seed(11)
    a = tritonlab.Dropout(0.4, backend="naive")(x)
    torch.manual_seed(11)
    b = tritonlab.Dropout(0.4, backend="reference")(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("tier", TIERS)
def test_eval_is_identity_and_p0_is_identity(tier):
    x = torch.randn(4, 9)
    layer = tritonlab.Dropout(0.5, backend=tier).eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(tritonlab.Dropout(0.0, backend=tier)(x), x)
    ints = torch.arange(5)  # torch.nn.Dropout returns any input unchanged when it drops nothing
    assert layer(ints) is ints and tritonlab.Dropout(0.0, backend=tier)(ints) is ints


@pytest.mark.parametrize("tier", TIERS)
def test_p1_zeroes_everything_like_torch(tier):
    x = torch.randn(3, 8)
    y, dx, _ = _dropout_and_grad(tritonlab.Dropout(1.0, backend=tier), x)
    assert torch.equal(y, nn.Dropout(1.0)(x))
    assert torch.equal(dx, torch.zeros_like(x))


@pytest.mark.parametrize("tier", TIERS)
def test_shapes_and_dtypes(tier):
    for shape in [(), (1,), (2, 3, 5), (0, 4)]:
        for dtype in (torch.float32, torch.float64):
            y = tritonlab.Dropout(0.5, backend=tier)(torch.ones(shape, dtype=dtype))
            assert y.shape == shape and y.dtype == dtype


def test_inplace():
    x = torch.ones(4, 10)
    y = tritonlab.Dropout(0.5, inplace=True, backend="reference")(x)
    assert y.data_ptr() == x.data_ptr() and (x == 0).any()


@pytest.mark.parametrize("p", [-0.1, 1.5, "0.5", True])
@pytest.mark.parametrize("cls", [tritonlab.Dropout, tritonlab.SoftmaxDropout])
def test_bad_probability(cls, p):
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\]"):
        cls(p)


def test_probability_as_numpy_or_0d_tensor():
    import numpy as np
    assert tritonlab.Dropout(np.float32(0.25)).p == 0.25
    assert tritonlab.SoftmaxDropout(torch.tensor(0.5)).p == 0.5


def test_state_dict_matches_torch():
    assert tritonlab.Dropout(0.2).state_dict().keys() == nn.Dropout(0.2).state_dict().keys()


# ---- SoftmaxDropout ------------------------------------------------------------------

@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("shape,dim", [((3, 17), -1), ((2, 5, 4), 1), ((1, 1), 0)], ids=str)
def test_softmax_dropout_is_softmax_then_dropout(tier, shape, dim):
    p = 0.25
    x = torch.randn(shape, dtype=torch.float64)
    out, dx, dout = _dropout_and_grad(tritonlab.SoftmaxDropout(p, dim, backend=tier), x)
    keep = out != 0  # softmax is never exactly 0 here
    # the same math in torch, with the mask the layer drew
    xt = x.clone().requires_grad_()
    expected = torch.softmax(xt, dim) * keep / (1 - p)
    expected.backward(dout)
    torch.testing.assert_close(out, expected.detach(), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(dx, xt.grad, atol=1e-12, rtol=1e-12)
    assert 0 < keep.sum() < keep.numel() or keep.numel() == 1


@pytest.mark.parametrize("tier", TIERS)
def test_softmax_dropout_eval_is_softmax(tier):
    x = torch.randn(4, 7)
    layer = tritonlab.SoftmaxDropout(0.5, dim=0, backend=tier).eval()
    torch.testing.assert_close(layer(x), torch.softmax(x, 0))


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("layer_cls", [tritonlab.SoftmaxDropout, tritonlab.Dropout], ids=lambda c: c.__name__)
def test_dropout_gradcheck(layer_cls, tier):
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    layer = layer_cls(0.3, backend=tier)

    def seeded(x):  # the same mask on every call gradcheck makes
        torch.manual_seed(5)
        return layer(x)

    assert (seeded(x) == 0).any() and torch.autograd.gradcheck(seeded, (x,))


def test_softmax_dropout_constructor():
    layer = tritonlab.SoftmaxDropout()
    assert (layer.p, layer.dim) == (0.5, -1)
    assert isinstance(layer, nn.Module)
    with pytest.raises(ValueError, match="dim=2 is out of range"):
        layer.dim = 2
        layer(torch.randn(3, 4))
