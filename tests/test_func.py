"""torch.func transforms and second derivatives across the tiers: per-sample gradients
(vmap of grad) through every layer on `auto`, the refusal of an explicit first-order
reference tier under a transform, and the backwards that autograd can differentiate
again (the reference activations, softmax and dropout; the naive RNN cells)."""
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, vmap

import tritonlab
from tritonlab.scratch import activations, dropout, softmax


class EveryLayer(nn.Module):
    """One image (1, 4, 4) through every tritonlab layer to a scalar."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu = tritonlab.Conv2d(1, 2, 3, padding=1), tritonlab.ReLU()
        self.flatten = tritonlab.Flatten(1)
        self.lstm = tritonlab.LSTM(4, 3, batch_first=True, num_layers=2, dropout=0.5)
        self.gru = tritonlab.GRU(3, 3, batch_first=True, bidirectional=True)
        self.attention = tritonlab.MultiheadAttention(6, 2, batch_first=True)
        self.linear, self.softmax = tritonlab.Linear(6, 4), tritonlab.SoftmaxDropout(0.5)
        self.tanh, self.sigmoid, self.drop = tritonlab.Tanh(), tritonlab.Sigmoid(), tritonlab.Dropout(0.5)

    def forward(self, x):
        seq = self.flatten(self.relu(self.conv(x))).reshape(1, 8, 4)
        seq = self.gru(self.lstm(seq)[0])[0]
        seq = self.attention(seq, seq, seq, need_weights=False)[0]
        return self.drop(self.sigmoid(self.tanh(self.softmax(self.linear(seq))))).sum()


def test_per_sample_gradients_through_every_layer_on_auto():
    """vmap(grad(...)) over a batch equals one autograd backward per sample: auto takes
    a tier torch.func can go through for every layer (eval mode: dropout off)."""
    torch.manual_seed(0)
    model = EveryLayer().double().eval()
    params = {name: p.detach() for name, p in model.named_parameters()}
    images = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    per_sample = vmap(grad(lambda p, x: functional_call(model, p, (x,))), in_dims=(None, 0))(params, images)
    for i, image in enumerate(images):
        model.zero_grad()
        model(image).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(per_sample[name][i], p.grad, msg=lambda m: f"{name}, sample {i}: {m}")


def test_grad_of_a_training_model_with_dropout_matches_autograd():
    """torch.func.grad with every dropout on, under the same seed as an autograd run."""
    model = EveryLayer().double().train()
    params = {name: p.detach() for name, p in model.named_parameters()}
    image = torch.randn(1, 4, 4, dtype=torch.float64)
    torch.manual_seed(3)
    grads = grad(lambda p: functional_call(model, p, (image,)))(params)
    torch.manual_seed(3)
    model(image).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, msg=lambda m: f"{name}: {m}")


FIRST_ORDER = {  # a layer whose reference tier has a hand-written, first-order backward
    "conv2d": (lambda: tritonlab.Conv2d(1, 2, 3, backend="reference"), (1, 4, 4)),
    "lstm": (lambda: tritonlab.LSTM(4, 3, backend="reference"), (5, 4)),
    "gru": (lambda: tritonlab.GRU(4, 3, backend="reference"), (5, 4)),
    "attention": (lambda: tritonlab.MultiheadAttention(4, 2, backend="reference"), (5, 4)),
}


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_an_explicit_first_order_reference_tier_is_refused_under_torch_func(name):
    make, shape = FIRST_ORDER[name]
    layer = make()

    def run(x):  # MultiheadAttention's need_weights=True path is plain ops: not this tier
        out = layer(x, x, x, need_weights=False) if name == "attention" else layer(x)
        return (out[0] if isinstance(out, tuple) else out).sum()

    x = torch.randn(shape)
    with pytest.raises(RuntimeError, match=f"{name} on the reference tier .* torch.func .* backend='naive'"):
        grad(run)(x)
    assert torch.isfinite(run(x))  # outside a transform the tier runs


TWICE = {  # reference-tier entry points whose backward autograd differentiates again
    "relu": activations.relu_reference, "sigmoid": activations.sigmoid_reference,
    "tanh": activations.tanh_reference, "softmax": lambda x: softmax.softmax_reference(x, 1),
    "dropout": lambda x: dropout.dropout_reference(x, 0.3),
    "softmax_dropout": lambda x: dropout.softmax_dropout_reference(x, 0.3, 1),
    "dropout naive": lambda x: dropout.dropout_naive(x, 0.3),
}


@pytest.mark.parametrize("name", TWICE)
def test_second_derivatives_and_every_torch_func_transform(name):
    """gradgradcheck and forward-mode gradcheck (the jvps) pass, the same dropout mask on
    every call by the seed; torch.func's grad, jacrev, jacfwd and hessian equal torch.autograd's."""
    fn = TWICE[name]

    def seeded(x):
        torch.manual_seed(0)
        return fn(x)

    def loss(x):
        return seeded(x).pow(2).sum()

    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(seeded, (x,))
    assert torch.autograd.gradcheck(seeded, (x,), check_forward_ad=True)
    plain = x.detach()
    torch.testing.assert_close(grad(loss)(plain), torch.autograd.grad(loss(x), x)[0])
    jacobian = torch.autograd.functional.jacobian(seeded, plain)
    torch.testing.assert_close(jacrev(seeded)(plain), jacobian)
    if "dropout" in name:  # as torch's F.dropout: jacfwd (hessian too) vmaps the forward,
        return             # and vmap refuses its random draw by default
    torch.testing.assert_close(jacfwd(seeded)(plain), jacobian)
    torch.testing.assert_close(hessian(loss)(plain), torch.autograd.functional.hessian(loss, plain))


def test_an_explicit_triton_tier_is_refused_under_torch_func(triton_device):
    layer = tritonlab.Linear(4, 3, backend="triton").to(triton_device)
    x = torch.randn(2, 4, device=triton_device)
    with pytest.raises(RuntimeError, match="linear on the triton tier .* torch.func .* backend='naive'"):
        grad(lambda x: layer(x).sum())(x)


def test_jacrev_and_hessian_of_a_model_on_auto():
    """The Jacobian and Hessian of an MLP with every activation and a softmax, against
    torch.autograd.functional (eval mode)."""
    torch.manual_seed(0)
    model = nn.Sequential(tritonlab.Linear(4, 5), tritonlab.ReLU(), tritonlab.Linear(5, 5), tritonlab.Tanh(),
                          tritonlab.Linear(5, 5), tritonlab.Sigmoid(), tritonlab.Softmax(-1)).double().eval()
    x = torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(jacrev(model)(x), torch.autograd.functional.jacobian(model, x))
    torch.testing.assert_close(hessian(lambda t: model(t).pow(2).sum())(x),
                               torch.autograd.functional.hessian(lambda t: model(t).pow(2).sum(), x))


def test_eager_calls_take_the_fast_twin():
    """Outside a transform the reference Functions run as their forward(ctx, ...) twin
    (scratch/_autograd.py's transformable: no per-call argument binding)."""
    y = activations.relu_reference(torch.randn(3, requires_grad=True))
    assert type(y.grad_fn).__name__ == "_PointwiseEagerBackward"


@pytest.mark.parametrize("cell,kwargs", [("GRU", dict(num_layers=2, bidirectional=True)),
                                         ("LSTM", dict(num_layers=2, bidirectional=True)),
                                         ("LSTM", dict(proj_size=2))], ids=str)
def test_naive_rnn_differentiates_twice(cell, kwargs):
    """The naive cells are autograd through every op, σ and tanh included."""
    layer = getattr(tritonlab, cell)(3, 4, backend="naive", dtype=torch.float64, **kwargs)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: layer(x)[0], (x,))
