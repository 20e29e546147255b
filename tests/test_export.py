"""torch.export of every layer on every tier: the exported program's module gives the
eager outputs and, run with autograd, the eager gradients (dropout's mask drawn in the
graph from torch's generator, so a seed reproduces it there too)."""
import pytest
import torch
from torch.utils._pytree import tree_leaves

import tritonlab


class SelfAttention(torch.nn.Module):
    def __init__(self, backend):
        super().__init__()
        self.attention = tritonlab.MultiheadAttention(4, 2, dropout=0.5, batch_first=True, backend=backend)

    def forward(self, x):
        return self.attention(x, x, x, need_weights=False)[0]


CASES = {  # name: (layer for a backend, input shape)
    "conv2d": (lambda b: tritonlab.Conv2d(2, 3, 3, padding=1, backend=b), (2, 2, 5, 5)),
    "relu": (lambda b: tritonlab.ReLU(backend=b), (3, 7)),
    "sigmoid": (lambda b: tritonlab.Sigmoid(backend=b), (3, 7)),
    "tanh": (lambda b: tritonlab.Tanh(backend=b), (3, 7)),
    "softmax": (lambda b: tritonlab.Softmax(-1, backend=b), (3, 7)),
    "dropout": (lambda b: tritonlab.Dropout(0.3, backend=b), (3, 7)),
    "softmax_dropout": (lambda b: tritonlab.SoftmaxDropout(0.3, backend=b), (3, 7)),
    "linear": (lambda b: tritonlab.Linear(7, 4, backend=b), (3, 7)),
    "flatten": (lambda b: tritonlab.Flatten(backend=b), (2, 3, 4)),
    "lstm": (lambda b: tritonlab.LSTM(5, 4, num_layers=2, dropout=0.5, backend=b), (6, 2, 5)),
    "lstm_proj": (lambda b: tritonlab.LSTM(5, 4, proj_size=3, bidirectional=True, backend=b), (6, 2, 5)),
    "gru": (lambda b: tritonlab.GRU(5, 4, bidirectional=True, backend=b), (6, 2, 5)),
    "gru_no_bias": (lambda b: tritonlab.GRU(5, 4, num_layers=2, bias=False, backend=b), (6, 2, 5)),
    "attention": (SelfAttention, (2, 5, 4)),
}
TRITON_CASES = [name for name in CASES if name not in ("flatten", "lstm_proj")]  # no kernels
# the tritonlab:: ops each triton-tier graph must call (a graph of plain aten ops would
# mean the export had traced another tier)
TRITON_OPS = {"conv2d": {"conv2d"}, "relu": {"activation"}, "sigmoid": {"activation"}, "tanh": {"activation"},
              "softmax": {"softmax"}, "dropout": {"dropout"}, "softmax_dropout": {"softmax_dropout"},
              "linear": {"linear"}, "lstm": {"lstm", "dropout"}, "gru": {"gru"}, "gru_no_bias": {"gru"},
              "attention": {"attention", "linear"}}


def _check_export(name, backend, device, training, strict=False):
    """Returns the tritonlab:: ops the exported graph calls, by name."""
    make, shape = CASES[name]
    torch.manual_seed(0)
    layer = make(backend).to(device).train(training)
    x = torch.randn(shape, device=device, requires_grad=True)
    traced = torch.export.export(layer, (x,), strict=strict)
    program = traced.module()

    def run(module):
        torch.manual_seed(1)  # the same dropout mask in both
        outputs = tree_leaves(module(x))
        names, params = zip(*[("input", x), *module.named_parameters()])
        grads = torch.autograd.grad(sum(o.float().square().sum() for o in outputs), params)
        return outputs, dict(zip(names, grads))

    (eager, eager_grads), (exported, exported_grads) = run(layer), run(program)
    for got, expected in zip(exported, eager, strict=True):
        torch.testing.assert_close(got, expected)
    assert eager_grads["input"].abs().sum() > 0
    assert exported_grads.keys() == eager_grads.keys()
    for key, expected in eager_grads.items():
        torch.testing.assert_close(exported_grads[key], expected, msg=lambda m: f"{key}: {m}")
    return {node.target.name().split("::")[1].split(".")[0] for node in traced.graph.nodes
            if isinstance(node.target, torch._ops.OpOverload) and node.target.namespace == "tritonlab"}


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("backend", ["naive", "reference"])
@pytest.mark.parametrize("name", CASES)
def test_exported_program_matches_eager(name, backend, training, strict):
    _check_export(name, backend, "cpu", training, strict)


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
@pytest.mark.parametrize("name", TRITON_CASES)
def test_exported_program_matches_eager_on_the_triton_tier(name, triton_device, strict):
    """The triton ops are opaque nodes of the graph (tritonlab:: custom ops) that carry
    their Triton backward."""
    assert _check_export(name, "triton", triton_device, training=True, strict=strict) == TRITON_OPS[name]


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_exported_reference_activation_has_eager_gradients_at_the_edges(name):
    """Far out, σ and tanh are flat: their gradient is 0 in the exported program too
    (autograd through 1 / (1 + exp(-x)) would give 0 * inf = nan where exp overflows);
    ReLU's gradient at exactly 0 is 0, as torch's."""
    layer = CASES[name][0]("reference")
    x = torch.tensor([-100.0, -50.0, -45.0, 0.0, 0.0, 50.0, 100.0], requires_grad=True)
    program = torch.export.export(layer, (x,)).module()
    (exported,) = torch.autograd.grad(program(x).sum(), x)
    (eager,) = torch.autograd.grad(layer(x).sum(), x)
    (theirs,) = torch.autograd.grad(getattr(torch, name)(x).sum(), x)
    torch.testing.assert_close(exported, eager)
    torch.testing.assert_close(exported, theirs)  # the eager tier could be wrong at the edges too
    assert torch.isfinite(exported).all() and exported[0] == 0
