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


def test_per_sample_gradients_of_channels_last_images():
    """A channels_last input answers in channels_last outside a transform; under vmap,
    which cannot re-lay out a batched tensor, the layer leaves the layout be."""
    conv = tritonlab.Conv2d(3, 4, 3).double()
    images = torch.randn(2, 2, 6, 6, 3, dtype=torch.float64).permute(0, 1, 4, 2, 3)  # channels innermost
    params = {name: p.detach() for name, p in conv.named_parameters()}
    per_sample = vmap(grad(lambda p, x: functional_call(conv, p, (x,)).square().sum()), in_dims=(None, 0))(
        params, images)
    for i, batch in enumerate(images):
        assert conv(batch).is_contiguous(memory_format=torch.channels_last)
        expected = torch.autograd.grad(conv(batch).square().sum(), conv.weight)[0]
        torch.testing.assert_close(per_sample["weight"][i], expected)


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
    # outside a transform the tier runs, and its backward gives the naive tier's gradient
    leaf = x.clone().requires_grad_()
    got = torch.autograd.grad(run(leaf), leaf)[0]
    layer.backend = "naive"
    torch.testing.assert_close(got, torch.autograd.grad(run(leaf), leaf)[0])
    assert got.abs().sum() > 0
    layer.backend = "reference"
    with pytest.raises(RuntimeError, match=f"{name} on the reference tier .* torch.vmap cannot batch; "
                                           "use backend='triton'"):
        vmap(run)(x.expand(2, *shape))  # vmap alone: refused as unbatchable, not as a derivative


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
    assert torch.autograd.gradgradcheck(seeded, (x,), check_fwd_over_rev=True)
    assert torch.autograd.gradcheck(seeded, (x,), check_forward_ad=True)
    plain = x.detach()
    torch.testing.assert_close(grad(loss)(plain), torch.autograd.grad(loss(x), x)[0])
    jacobian = torch.autograd.functional.jacobian(seeded, plain)
    torch.testing.assert_close(jacrev(seeded)(plain), jacobian)
    if "dropout" in name:  # as torch's F.dropout: jacfwd (hessian too) vmaps the forward,
        return             # and vmap refuses its random draw by default
    torch.testing.assert_close(jacfwd(seeded)(plain), jacobian)
    torch.testing.assert_close(hessian(loss)(plain), torch.autograd.functional.hessian(loss, plain))


def test_an_explicit_triton_tier_is_refused_under_torch_func_but_runs_under_vmap(triton_device):
    """grad differentiates with create_graph=True, which the triton backwards refuse;
    vmap alone batches the triton ops (their vmap rules, test_triton_vmap.py), and the
    ordinary backward through its output is the per-sample one."""
    torch.manual_seed(0)
    layer = tritonlab.Linear(4, 3, backend="triton").to(triton_device)
    x = torch.randn(2, 5, 4, device=triton_device, requires_grad=True)
    with pytest.raises(RuntimeError, match="linear on the triton tier .* torch.func .* backend='naive'"):
        grad(lambda x: layer(x).sum())(x[0])
    relu = tritonlab.ReLU(backend="triton")
    y = vmap(lambda t: relu(layer(t)))(x)
    expected = torch.stack([relu(layer(t)) for t in x])
    torch.testing.assert_close(y, expected)
    (dx,) = torch.autograd.grad(y.square().sum(), x)
    torch.testing.assert_close(dx, torch.autograd.grad(expected.square().sum(), x)[0])


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


BATCHED_BACKWARD = {  # name: (layer for a backend, input shape); the RNNs' first output is taken
    "relu": (lambda b: tritonlab.ReLU(backend=b), (3, 4)),
    "sigmoid": (lambda b: tritonlab.Sigmoid(backend=b), (3, 4)),
    "tanh": (lambda b: tritonlab.Tanh(backend=b), (3, 4)),
    "dropout": (lambda b: tritonlab.Dropout(0.5, backend=b), (3, 4)),
    "softmax": (lambda b: tritonlab.Softmax(-1, backend=b), (3, 4)),
    "softmax_dropout": (lambda b: tritonlab.SoftmaxDropout(0.3, backend=b), (3, 4)),
    "linear": (lambda b: tritonlab.Linear(4, 3, backend=b), (3, 4)),
    "attention": (lambda b: tritonlab.MultiheadAttention(4, 2, dropout=0.5, batch_first=True, backend=b), (1, 3, 4)),
    "conv2d": (lambda b: tritonlab.Conv2d(2, 3, 3, padding=1, backend=b), (1, 2, 4, 4)),
    "gru": (lambda b: tritonlab.GRU(4, 3, backend=b), (2, 1, 4)),
    "lstm": (lambda b: tritonlab.LSTM(4, 3, backend=b), (2, 1, 4)),
}
HAND_WRITTEN_FOR_PLAIN_TENSORS = {"conv2d", "gru", "lstm"}  # reference backwards with out= writes


def _first_output(layer, name):
    if name == "attention":
        return lambda x: layer(x, x, x, need_weights=False)[0]
    return (lambda x: layer(x)[0]) if name in ("gru", "lstm") else layer


@pytest.mark.parametrize("backend", ["naive", "reference"])
@pytest.mark.parametrize("name", BATCHED_BACKWARD)
def test_batched_backward_of_autograd_grad_and_vectorized_jacobian(name, backend):
    """torch.autograd.grad(is_grads_batched=True) and jacobian(vectorize=True) run the
    backward under torch's legacy vmap: the same result as one backward per gradient
    (dropout's mask regenerated inside it), or, for a reference backward written for
    plain tensors, a clear refusal."""
    make, shape = BATCHED_BACKWARD[name]
    torch.manual_seed(0)
    f = _first_output(make(backend).double().train(), name)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)

    def seeded(t):
        torch.manual_seed(1)
        return f(t)

    y = seeded(x)
    basis = torch.eye(y.numel(), dtype=y.dtype).reshape(-1, *y.shape)
    if backend == "reference" and name in HAND_WRITTEN_FOR_PLAIN_TENSORS:
        with pytest.raises(RuntimeError, match="cannot be vmapped .*is_grads_batched.* backend='naive'"):
            torch.autograd.grad(y, x, basis, is_grads_batched=True)
        return
    (batched,) = torch.autograd.grad(y, x, basis, is_grads_batched=True, retain_graph=True)
    one_by_one = torch.stack([torch.autograd.grad(y, x, e, retain_graph=True)[0] for e in basis])
    torch.testing.assert_close(batched, one_by_one)
    assert one_by_one.abs().sum() > 0
    jacobian = torch.autograd.functional.jacobian
    torch.testing.assert_close(jacobian(seeded, x.detach(), vectorize=True), jacobian(seeded, x.detach()))


def test_batched_backward_is_refused_on_the_triton_tier(triton_device):
    layer = tritonlab.Softmax(-1, backend="triton")
    x = torch.randn(2, 3, device=triton_device, requires_grad=True)
    y = layer(x)
    basis = torch.eye(6, device=triton_device).reshape(6, 2, 3)
    with pytest.raises(RuntimeError, match="cannot be vmapped"):
        torch.autograd.grad(y, x, basis, is_grads_batched=True)


@pytest.mark.parametrize("name", ["conv2d", "gru", "lstm", "attention"])
def test_forward_mode_ad_through_a_first_order_layer_on_auto(name):
    """Inside a forward_ad.dual_level, auto takes the naive tier for a layer whose
    reference backward is hand-written (it has no jvp); the tangent equals torch.func.jvp's
    and a central difference."""
    import torch.autograd.forward_ad as fwAD
    make, shape = BATCHED_BACKWARD[name]
    torch.manual_seed(0)
    f = _first_output(make("auto").double().eval(), name)
    x, t = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    with fwAD.dual_level():
        primal, tangent = fwAD.unpack_dual(f(fwAD.make_dual(x, t)))
    torch.testing.assert_close(primal, f(x))
    torch.testing.assert_close(tangent, torch.func.jvp(f, (x,), (t,))[1])
    eps = 1e-6
    torch.testing.assert_close(tangent, (f(x + eps * t) - f(x - eps * t)) / (2 * eps), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "softmax"])
def test_forward_over_reverse_without_create_graph(name):
    """A backward run inside a forward_ad.dual_level carries the tangents of its inputs
    (the saved output, the incoming gradient) even without create_graph, as torch's own
    backward formulas do."""
    import torch.autograd.forward_ad as fwAD
    ours = TWICE[name]
    theirs = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
              "softmax": lambda x: torch.softmax(x, 1)}[name]
    torch.manual_seed(0)
    x, tx, dy, tdy = (torch.randn(3, 5, dtype=torch.float64) for _ in range(4))

    def gradient_and_tangent(fn):
        with fwAD.dual_level():
            xd = fwAD.make_dual(x.clone().requires_grad_(), tx)
            (g,) = torch.autograd.grad(fn(xd), xd, fwAD.make_dual(dy, tdy))
            return fwAD.unpack_dual(g)

    for got, expected in zip(gradient_and_tangent(ours), gradient_and_tangent(theirs)):
        torch.testing.assert_close(got, expected)


def test_an_open_dual_level_without_a_tangent_keeps_the_requested_tier(triton_device):
    """Only an input that carries a tangent routes like a transform: a plain input inside
    a dual_level runs the tier asked for."""
    import torch.autograd.forward_ad as fwAD
    torch.manual_seed(0)
    conv = tritonlab.Conv2d(1, 2, 3, backend="reference")
    linear = tritonlab.Linear(4, 3, backend="triton").to(triton_device)
    image, rows = torch.randn(1, 1, 4, 4), torch.randn(2, 4, device=triton_device)
    with fwAD.dual_level():
        inside = conv(image), linear(rows)
        with pytest.raises(RuntimeError, match="conv2d on the reference tier .* forward-mode AD"):
            conv(fwAD.make_dual(image, torch.ones_like(image)))
    for got, expected in zip(inside, (conv(image), linear(rows))):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("name", ["conv2d", "lstm"])
def test_forward_mode_ad_through_the_weights_on_auto(name):
    """Tangents on the parameters only (functional_call with dual weights): auto still
    takes a tier with jvps; the tangent equals torch.func.jvp's over the parameters."""
    import torch.autograd.forward_ad as fwAD
    make, shape = BATCHED_BACKWARD[name]
    torch.manual_seed(0)
    layer = make("auto").double().eval()
    x = torch.randn(shape, dtype=torch.float64)
    params = {n: p.detach() for n, p in layer.named_parameters()}
    tangents = {n: torch.randn_like(p) for n, p in params.items()}

    def run(p):
        out = functional_call(layer, p, (x,))
        return out[0] if isinstance(out, tuple) else out

    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(run({n: fwAD.make_dual(p, tangents[n]) for n, p in params.items()})).tangent
    torch.testing.assert_close(tangent, torch.func.jvp(run, (params,), (tangents,))[1])
