import inspect

import pytest
import torch
from torch import nn

import tritonlab
from parity import assert_matches_torch

# torch.nn.Conv2d's own note that it copies the input for asymmetric 'same' padding
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")

TIERS = ["naive", "reference"]
CL = torch.channels_last

# (id, Conv2d keyword arguments, input shape); shapes stay small because the naive tier
# runs one Python iteration per output position and group
CASES = [
    ("k1x1", dict(in_channels=3, out_channels=4, kernel_size=1), (2, 3, 5, 6)),
    ("k3x3", dict(in_channels=3, out_channels=4, kernel_size=3), (2, 3, 6, 7)),
    ("k2x5", dict(in_channels=3, out_channels=4, kernel_size=(2, 5)), (2, 3, 5, 8)),
    ("stride1x2", dict(in_channels=3, out_channels=4, kernel_size=3, stride=(1, 2)), (2, 3, 6, 9)),
    ("stride3x1", dict(in_channels=3, out_channels=4, kernel_size=(2, 3), stride=(3, 1)), (2, 3, 10, 6)),
    ("pad_int", dict(in_channels=3, out_channels=4, kernel_size=3, padding=2), (2, 3, 5, 5)),
    ("pad_tuple", dict(in_channels=3, out_channels=4, kernel_size=3, padding=(0, 2)), (2, 3, 5, 5)),
    ("same_odd", dict(in_channels=3, out_channels=4, kernel_size=3, padding="same"), (2, 3, 5, 6)),
    # even kernels: the odd padding pixel goes to the bottom/right
    ("same_even", dict(in_channels=3, out_channels=4, kernel_size=(2, 4), padding="same"), (2, 3, 5, 6)),
    ("same_dilated", dict(in_channels=3, out_channels=4, kernel_size=3, padding="same", dilation=2), (2, 3, 6, 5)),
    ("same_even_dilated", dict(in_channels=3, out_channels=4, kernel_size=(4, 2), padding="same",
                               dilation=(2, 3)), (2, 3, 7, 6)),
    ("valid", dict(in_channels=3, out_channels=4, kernel_size=3, padding="valid"), (2, 3, 6, 5)),
    ("dilation2", dict(in_channels=3, out_channels=4, kernel_size=3, dilation=2, padding=1), (2, 3, 7, 8)),
    ("groups2", dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, padding=1), (2, 4, 5, 5)),
    ("depthwise", dict(in_channels=4, out_channels=4, kernel_size=3, groups=4), (2, 4, 6, 6)),
    ("depthwise_x2", dict(in_channels=3, out_channels=6, kernel_size=(3, 2), groups=3), (2, 3, 5, 6)),
    ("no_bias", dict(in_channels=3, out_channels=4, kernel_size=3, bias=False), (2, 3, 5, 6)),
    ("n1", dict(in_channels=3, out_channels=4, kernel_size=3, padding=1), (1, 3, 5, 6)),
    ("c1", dict(in_channels=1, out_channels=3, kernel_size=3), (2, 1, 6, 5)),
    ("odd_7x11", dict(in_channels=3, out_channels=5, kernel_size=3, stride=2, padding=1), (2, 3, 7, 11)),
    ("out_1x1", dict(in_channels=3, out_channels=4, kernel_size=3), (2, 3, 3, 3)),
    ("out_1x1_strided", dict(in_channels=3, out_channels=4, kernel_size=(3, 2), stride=4), (2, 3, 4, 5)),
    ("everything", dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0),
                        dilation=(1, 2), groups=2, bias=False), (3, 4, 7, 11)),
    ("reflect", dict(in_channels=3, out_channels=4, kernel_size=3, padding=(2, 1),
                     padding_mode="reflect"), (2, 3, 5, 6)),
    ("replicate", dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1,
                       padding_mode="replicate"), (2, 3, 7, 6)),
    ("circular_same_even", dict(in_channels=3, out_channels=4, kernel_size=(2, 4), padding="same",
                                padding_mode="circular"), (2, 3, 5, 6)),
    ("unbatched", dict(in_channels=3, out_channels=4, kernel_size=3, padding=1), (3, 6, 7)),
    ("unbatched_reflect", dict(in_channels=3, out_channels=4, kernel_size=3, padding=1,
                               padding_mode="reflect"), (3, 5, 4)),
]


def _pair(kwargs, dtype):
    return tritonlab.Conv2d(**kwargs, dtype=dtype), nn.Conv2d(**kwargs, dtype=dtype)


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kwargs,shape", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_matches_torch(kwargs, shape, dtype, tier):
    lab, ref = _pair(kwargs, dtype)
    assert_matches_torch(lab, ref, torch.randn(shape, dtype=dtype), tier=tier)


def test_unbatched_output_shape():
    y = tritonlab.Conv2d(3, 4, (3, 2), stride=(1, 2))(torch.randn(3, 6, 7))
    assert y.shape == (4, 4, 3)


@pytest.mark.parametrize("tier", TIERS)
def test_empty_batch(tier):
    layer = tritonlab.Conv2d(3, 4, 3, padding=1, backend=tier)
    x = torch.randn(0, 3, 5, 6, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert y.shape == (0, 4, 5, 6) and x.grad.shape == x.shape
    assert not layer.weight.grad.any() and not layer.bias.grad.any()


# channels_last: (id, kwargs, input shape, input in channels_last, weights in channels_last)
CHANNELS_LAST = [
    ("input", dict(in_channels=3, out_channels=4, kernel_size=3, padding=1), (2, 3, 5, 6), True, False),
    ("weight", dict(in_channels=3, out_channels=4, kernel_size=3, padding=1), (2, 3, 5, 6), False, True),
    ("both_groups_strided", dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, groups=2),
     (2, 4, 7, 6), True, True),
    # C == 1: the input's strides are ambiguous (contiguous in both formats), the weight's
    # after .to(memory_format=channels_last) are not
    ("c1_weight", dict(in_channels=1, out_channels=3, kernel_size=3), (2, 1, 5, 6), False, True),
    ("reflect", dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
     (2, 3, 5, 6), True, False),
    ("dilated_same", dict(in_channels=3, out_channels=4, kernel_size=2, padding="same", dilation=3),
     (1, 3, 6, 5), True, False),
]


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kwargs,shape,x_cl,w_cl", [c[1:] for c in CHANNELS_LAST],
                         ids=[c[0] for c in CHANNELS_LAST])
def test_channels_last(kwargs, shape, x_cl, w_cl, dtype, tier):
    lab, ref = _pair(kwargs, dtype)
    if w_cl:
        lab, ref = lab.to(memory_format=CL), ref.to(memory_format=CL)
    x = torch.randn(shape, dtype=dtype)
    if x_cl:
        x = x.contiguous(memory_format=CL)
    assert_matches_torch(lab, ref, x, tier=tier)
    with torch.no_grad():
        y, y_ref = lab(x), ref(x)
    assert y_ref.is_contiguous(memory_format=CL)  # the case really exercises channels_last
    assert y.stride() == y_ref.stride()


@pytest.mark.parametrize("tier", TIERS)
def test_circular_padding_of_a_channels_last_input_answers_in_torchs_layout(tier):
    """torch pads circularly into an NCHW tensor, so its conv of a channels_last input
    answers in NCHW here (reflect keeps channels_last: the case above)."""
    lab, ref = _pair(dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="circular"),
                     torch.float32)
    x = torch.randn(2, 3, 5, 6).contiguous(memory_format=CL)
    assert_matches_torch(lab, ref, x, tier=tier)
    with torch.no_grad():
        y, y_ref = lab(x), ref(x)
    assert not y_ref.is_contiguous(memory_format=CL)
    assert y.stride() == y_ref.stride()


@pytest.mark.parametrize("tier", TIERS)
def test_gradcheck(tier):
    """float64 finite differences for the input, weight and bias at once."""
    layer = tritonlab.Conv2d(4, 4, (2, 3), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2,
                             dtype=torch.float64, backend=tier)
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    w = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()

    def conv(x, w, b):
        return torch.func.functional_call(layer, {"weight": w, "bias": b}, (x,))

    assert torch.autograd.gradcheck(conv, (x, w, b))


@pytest.mark.parametrize("tier", TIERS)
def test_partial_grads(tier):
    """A first layer (input without grad) and a frozen layer (weights without grad)."""
    lab, ref = _pair(dict(in_channels=3, out_channels=4, kernel_size=3, padding=1), torch.float64)
    ref.load_state_dict(lab.state_dict())
    lab.backend = tier
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    lab(x).square().sum().backward()
    ref(x).square().sum().backward()
    torch.testing.assert_close(lab.weight.grad, ref.weight.grad)
    torch.testing.assert_close(lab.bias.grad, ref.bias.grad)

    for m in (lab, ref):
        m.requires_grad_(False)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    lab(xs[0]).square().sum().backward()
    ref(xs[1]).square().sum().backward()
    torch.testing.assert_close(xs[0].grad, xs[1].grad)


@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_round_trip(bias):
    kwargs = dict(in_channels=4, out_channels=6, kernel_size=(3, 2), groups=2, bias=bias)
    x = torch.randn(2, 4, 6, 5)
    lab, ref = tritonlab.Conv2d(**kwargs), nn.Conv2d(**kwargs)
    assert lab.state_dict().keys() == ref.state_dict().keys()

    lab.load_state_dict(ref.state_dict())  # torch -> lab
    torch.testing.assert_close(lab(x), ref(x))

    lab2, ref2 = tritonlab.Conv2d(**kwargs), nn.Conv2d(**kwargs)
    ref2.load_state_dict(lab2.state_dict())  # lab -> torch
    torch.testing.assert_close(ref2(x), lab2(x))


def test_constructor_signature_is_torchs():
    def params(cls):
        return [(p.name, p.kind, p.default) for p in inspect.signature(cls.__init__).parameters.values()
                if p.name not in ("backend", "algo")]

    assert params(tritonlab.Conv2d) == params(nn.Conv2d)
    backend = inspect.signature(tritonlab.Conv2d.__init__).parameters["backend"]
    assert backend.kind is inspect.Parameter.KEYWORD_ONLY and backend.default is None


# ---- bad input: a clear error before any tier runs --------------------------------------

BAD_INPUTS = [
    ("not_a_tensor", dict(), lambda: [[1.0]], TypeError, "expected a torch.Tensor, got list"),
    ("integer", dict(), lambda: torch.ones(1, 3, 5, 5, dtype=torch.int64), TypeError,
     r"floating-point.*torch\.int64"),
    ("2d", dict(), lambda: torch.randn(3, 5), ValueError,
     r"3-D or 4-D input \(N, C, H, W\) or \(C, H, W\), got a 2-D tensor of shape \(3, 5\)"),
    ("5d", dict(), lambda: torch.randn(1, 1, 3, 5, 5), ValueError, r"\(N, C, H, W\).*got a 5-D"),
    ("channels", dict(), lambda: torch.randn(2, 5, 6, 6), ValueError,
     r"expected 3 input channels in dimension 1 of the input, got 5"),
    ("channels_unbatched", dict(), lambda: torch.randn(2, 6, 6), ValueError,
     r"expected 3 input channels in dimension 0 of the input, got 2"),
    ("dtype", dict(), lambda: torch.randn(1, 3, 5, 5, dtype=torch.float64), TypeError,
     r"torch\.float32 weights but got a torch\.float64 input"),
    ("device", dict(), lambda: torch.randn(1, 3, 5, 5, device="meta"), ValueError,
     r"weights on cpu but got an input on meta"),
    ("too_small", dict(kernel_size=5, padding=(0, 1)), lambda: torch.randn(1, 3, 4, 9), ValueError,
     r"padded input size 4 x 11 is smaller than the dilated kernel size 5 x 5"),
    ("too_small_dilated", dict(dilation=3, padding=1), lambda: torch.randn(3, 9, 4), ValueError,
     r"padded input size 11 x 6 is smaller than the dilated kernel size 7 x 7"),
    ("too_small_reflect", dict(padding=1, padding_mode="reflect", dilation=(1, 3)),
     lambda: torch.randn(1, 3, 4, 4), ValueError,
     r"padded input size 6 x 6 is smaller than the dilated kernel size 3 x 7"),
]


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("kwargs,make_x,error,message", [c[1:] for c in BAD_INPUTS],
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_input(kwargs, make_x, error, message, tier):
    layer = tritonlab.Conv2d(3, 4, **{"kernel_size": 3, **kwargs}, backend=tier)
    with pytest.raises(error, match=message):
        layer(make_x())


def test_reference_refuses_second_derivative_instead_of_a_wrong_one():
    conv = tritonlab.Conv2d(2, 3, 3, backend="reference")
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    with pytest.raises(RuntimeError, match="cannot be differentiated again.*backend='naive'"):
        torch.autograd.grad(conv(x).sum(), x, create_graph=True)


def test_reference_1x1_backward_leaves_input_untouched():
    """A 1x1 stride-1 column matrix has x's own layout; it must still be a copy, since the
    backward writes dcols over it."""
    conv = tritonlab.Conv2d(4, 4, 1, backend="reference")
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    before = x.detach().clone()
    conv(x).sum().backward()
    assert torch.equal(x.detach(), before)
