"""torch.compile of swapped models: no graph breaks, compiled results equal eager ones,
and every tritonlab:: custom op passes torch.library.opcheck.

The triton tier's ops are custom ops (layers/functions/), opaque to Dynamo and
AOTAutograd, forward and backward; the reference tier is plain torch plus one custom op,
the seeded dropout mask (scratch/dropout.py). Dynamo refuses any nn.GRU/nn.LSTM instance
unless torch._dynamo.config.allow_rnn is set, and the lab's RNNs subclass them, so the
RNN models compile under that flag.
"""
import subprocess
import sys
import textwrap

import pytest
import torch
import torch._dynamo
import torch._inductor.config
from torch import nn
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.aot_autograd import make_boxed_func

import tritonlab
from tritonlab.models import build_model

BACKENDS = ["reference", "triton"]


def _mlp(backend):
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), torch.randn(3, 8)


def _cnn(backend):
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 6),
                          nn.Softmax(-1), nn.Dropout(0.3))
    return model, torch.randn(2, 2, 5, 5)


def _char_rnn(cell):
    # two layers: the dropout between them runs too
    return lambda backend: (build_model(cell, 4, embed=4, hidden=8, layers=2, backend=backend),
                            torch.randint(0, 4, (2, 5)))


MODELS = {"mlp": _mlp, "cnn": _cnn, "lstm": _char_rnn("lstm"), "gru": _char_rnn("gru")}
# the triton tier's forward ops each model's graph must call (the reference tier calls
# no tritonlab op but the dropout mask)
TRITON_OPS = {"mlp": {"linear", "activation"}, "cnn": {"conv2d", "activation", "linear", "softmax", "dropout"},
              "lstm": {"lstm", "dropout", "linear"}, "gru": {"gru", "dropout", "linear"}}
REFERENCE_OPS = {"mlp": set(), "cnn": {"keep_mask"}, "lstm": {"keep_mask"}, "gru": {"keep_mask"}}


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "triton":
        request.getfixturevalue("triton_device")  # skips without triton
    return request.param


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True):
        yield
    torch._dynamo.reset()


def _swapped(name: str, backend: str):
    model, x = MODELS[name](backend)
    tritonlab.swap(model, backend=backend)
    return model, x


def _tritonlab_ops(graph: torch.fx.GraphModule) -> set[str]:
    """The tritonlab:: ops a graph calls, by name, its subgraphs included (Dynamo keeps
    an autograd.Function's forward and backward as subgraphs)."""
    return {node.target.name().split("::")[1].split(".")[0]
            for gm in graph.modules() if isinstance(gm, torch.fx.GraphModule)
            for node in gm.graph.nodes
            if isinstance(node.target, torch._ops.OpOverload) and node.target.namespace == "tritonlab"}


@pytest.mark.parametrize("name", MODELS)
def test_swapped_model_compiles_without_graph_breaks(name, backend):
    model, x = _swapped(name, backend)
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, [str(b.reason) for b in explained.break_reasons]
    assert explained.graph_count == 1
    expected = TRITON_OPS[name] if backend == "triton" else REFERENCE_OPS[name]
    assert _tritonlab_ops(explained.graphs[0]) == expected


@pytest.mark.parametrize("name", MODELS)
def test_compiled_model_without_autograd_equals_eager(name, backend):
    """An inference call (torch.no_grad, as in validation) compiles without a break too."""
    model, x = _swapped(name, backend)
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(x)
        assert explained.graph_break_count == 0, [str(b.reason) for b in explained.break_reasons]
        torch._dynamo.reset()
        torch.manual_seed(1)
        got = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
        torch.manual_seed(1)
        torch.testing.assert_close(got, model(x))


class _Recorder:
    """aot_eager (AOTAutograd, the graphs run as traced) that keeps the graphs it was given."""

    def __init__(self):
        self.forward, self.backward = [], []
        self.backend = aot_autograd(fw_compiler=self._keep(self.forward), bw_compiler=self._keep(self.backward))

    @staticmethod
    def _keep(graphs):
        def compiler(gm, example_inputs):
            graphs.append(gm)
            return make_boxed_func(gm.forward)
        return compiler


def _run(model, x, seed: int = 1, call=None):
    """Output and every parameter's gradient of one training step of `model` (run as
    `call`, e.g. its compiled form) from `seed`."""
    torch.manual_seed(seed)
    for p in model.parameters():
        p.grad = None
    out = (model if call is None else call)(x)
    out.square().sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", MODELS)
def test_aot_eager_forward_and_backward_equal_eager(name, backend):
    model, x = _swapped(name, backend)
    want_out, want_grads = _run(model, x)
    recorder = _Recorder()
    got_out, got_grads = _run(model, x, call=torch.compile(model, backend=recorder.backend))
    # one forward and one backward graph: no break in either
    assert len(recorder.forward) == 1 and len(recorder.backward) == 1
    torch.testing.assert_close(got_out, want_out, rtol=1e-6, atol=1e-6)
    assert got_grads.keys() == want_grads.keys()
    for n in want_grads:
        torch.testing.assert_close(got_grads[n], want_grads[n], rtol=1e-5, atol=1e-6, msg=n)
    if backend == "triton":
        backward_ops = _tritonlab_ops(recorder.backward[0])
        assert {f"{op}_backward" for op in TRITON_OPS[name] - {"keep_mask"}} <= backward_ops
        assert _tritonlab_ops(recorder.forward[0]) == TRITON_OPS[name]


def test_compiled_dropout_follows_the_seed():
    """A compiled model draws its dropout seed from torch's generator as eager does:
    the same seed gives the same mask, another seed another one."""
    model, x = _swapped("cnn", "reference")
    compiled = torch.compile(model, backend="aot_eager")
    first, again, other = (_run(model, x, seed, compiled)[0] for seed in (1, 1, 2))
    assert torch.equal(first, again) and not torch.equal(first, other)


# ---- torch.library.opcheck: schema, autograd registration, fake vs real, AOT dispatch

def _opcheck_cases(device: str) -> dict[str, list[tuple]]:
    """Arguments for every tritonlab:: op, small shapes; forward ops get inputs that
    require grad (so opcheck checks their autograd too)."""
    from tritonlab.kernels.rnn import PERSISTENT
    from tritonlab.layers.functions.attention import attention_op
    from tritonlab.layers.functions.rnn import gru_op, lstm_op

    def t(*shape, grad=False, **kw):
        return torch.randn(*shape, device=device, **kw).requires_grad_(grad)

    seed = torch.tensor([12345], device=device)
    x = t(3, 5)
    y = torch.softmax(x, 1)
    lse = torch.logsumexp(x, 1)
    cl = t(2, 2, 5, 5).contiguous(memory_format=torch.channels_last)
    conv = [[1, 1], [1, 1, 0, 2], [1, 1], 1]  # stride, padding (top, bottom, left, right), dilation, groups
    rnn = [[2, 2], False, PERSISTENT]  # rows per step, reverse, mode
    lstm_args = (t(4, 3, grad=True), t(2, 4, grad=True), t(2, 4, grad=True), t(16, 3, grad=True),
                 t(16, 4, grad=True), t(16, grad=True), t(16, grad=True), *rnn)
    gru_args = (t(4, 3, grad=True), t(2, 4, grad=True), t(12, 3, grad=True), t(12, 4, grad=True),
                t(12, grad=True), t(12, grad=True), *rnn)
    qkv = (t(2, 2, 5, 16), t(2, 1, 9, 16), t(2, 1, 9, 24))  # grouped-query heads, Ev != E
    key_padding = torch.zeros(2, 1, 1, 9, device=device).index_fill_(3, torch.tensor([6, 8], device=device),
                                                                      float("-inf")).expand(2, 2, 5, 9)
    bias = t(2, 1, 1, 9)  # a learned bias broadcast over heads and queries: its gradient is summed
    with torch.no_grad():
        lstm_saved = lstm_op(*lstm_args)[3:]
        gru_saved = gru_op(*gru_args)[2:]
        attention_saved = attention_op(*qkv, None, 0.0, True, 0.25, None)
        bias_saved = attention_op(*qkv, bias, 0.0, False, 0.25, None)
    return {
        "activation": [(t(3, 5, grad=True), "tanh"), (t(4, 6, grad=True).t(), "relu")],
        "activation_backward": [(y, t(3, 5), "sigmoid")],
        "softmax": [(t(3, 5, grad=True), 1), (t(2, 3, 4, grad=True), 0), (t(2, 3, 4, grad=True), -1)],
        "softmax_backward": [(y, t(3, 5), 1)],
        "softmax_dropout": [(t(3, 5, grad=True), 1, 0.3, seed), (t(2, 3, 4, grad=True), -2, 0.3, seed)],
        "softmax_dropout_backward": [(x, lse, t(3, 5), 1, 0.3, seed)],
        "dropout": [(t(3, 5, grad=True), 0.3, seed)],
        "dropout_backward": [(t(3, 5), 0.3, seed)],
        "linear": [(t(2, 3, 4, grad=True), t(5, 4, grad=True), t(5, grad=True), "relu"),
                   (t(3, 4, grad=True), t(5, 4, grad=True), None, None)],
        "linear_backward": [(t(2, 3, 5), t(2, 3, 4), t(5, 4), t(2, 3, 5), "relu", [True, True, True]),
                            (t(3, 5), None, t(5, 4), None, None, [True, False, False])],
        "conv2d": [(t(2, 2, 5, 5, grad=True), t(3, 2, 3, 3, grad=True), t(3, grad=True), *conv, None, "implicit"),
                   (cl.requires_grad_(), t(3, 2, 3, 3, grad=True), None, *conv, "relu", "im2col")],
        # padding (top, left); dy is the output of a 3x3 conv padded by 1 all round
        "conv2d_backward": [(t(2, 3, 5, 5), t(2, 2, 5, 5), t(3, 2, 3, 3), t(2, 3, 5, 5), [2, 2, 5, 5],
                             [3, 2, 3, 3], [1, 1], [1, 1], [1, 1], 1, "tanh", False, [True, True, True])],
        "lstm": [lstm_args],
        "lstm_backward": [(t(4, 4), t(2, 4), t(2, 4), lstm_args[0].detach(), lstm_args[3].detach(),
                           lstm_args[4].detach(), *lstm_saved, *rnn, [True, True, True, True])],
        "gru": [gru_args],
        "gru_backward": [(t(4, 4), t(2, 4), gru_args[0].detach(), gru_args[2].detach(), gru_args[3].detach(),
                          *gru_saved, *rnn, [True, True, True, True, True])],
        "keep_mask": [(seed, [3, 5], 0.3, torch.device(device))],
        "attention": [(*(x.clone().requires_grad_() for x in qkv), None, 0.0, True, 0.25, None),
                      (*(x.clone().requires_grad_() for x in qkv), key_padding, 0.3, False, 0.25, seed),
                      (*(x.clone().requires_grad_() for x in (*qkv, bias)), 0.0, False, 0.25, None)],
        "attention_backward": [(t(2, 2, 5, 24), *qkv, None, *attention_saved, 0.0, True, 0.25, None, False),
                               (t(2, 2, 5, 24), *qkv, bias, *bias_saved, 0.0, False, 0.25, None, True)],
    }


def _registered_ops() -> set[str]:
    return {name.split("::")[1] for name in torch._C._dispatch_get_all_op_names() if name.startswith("tritonlab::")}


@pytest.fixture(scope="module")
def opcheck_cases():
    if not tritonlab.backend.triton_available():
        pytest.skip("needs the triton package")
    return _opcheck_cases("cuda" if torch.cuda.is_available() else "cpu")


def test_every_tritonlab_op_has_an_opcheck_case(opcheck_cases):
    assert set(OPS) == set(opcheck_cases) == _registered_ops()


OPS = ["activation", "activation_backward", "softmax", "softmax_backward", "softmax_dropout",
       "softmax_dropout_backward", "dropout", "dropout_backward", "linear", "linear_backward", "conv2d",
       "conv2d_backward", "lstm", "lstm_backward", "gru", "gru_backward", "keep_mask", "attention",
       "attention_backward"]


@pytest.mark.parametrize("name", OPS)
def test_opcheck(name, opcheck_cases):
    op = getattr(torch.ops.tritonlab, name).default
    for args in opcheck_cases[name]:
        torch.library.opcheck(op, args)


def test_model_compiled_before_any_eager_triton_call_registers_the_ops_while_tracing(triton_device):
    """`import tritonlab` registers no triton-tier op and imports no triton; a swapped
    model compiled first imports the tier (and registers its ops) inside Dynamo's trace,
    with no graph break. A fresh process: this one has the tier loaded already."""
    code = f"""
        import sys, torch
        import tritonlab
        assert "triton" not in sys.modules
        import torch._dynamo  # imports triton itself
        ops = lambda: {{n for n in torch._C._dispatch_get_all_op_names() if n.startswith("tritonlab::")}}
        assert ops() == {{"tritonlab::keep_mask"}}, ops()
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()).to("{triton_device}")
        tritonlab.swap(model, backend="triton")
        explained = torch._dynamo.explain(model)(torch.randn(2, 4, device="{triton_device}"))
        assert explained.graph_break_count == 0, explained.break_reasons
        assert {{"tritonlab::linear", "tritonlab::activation"}} <= ops()
    """
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.parametrize("name", MODELS)
def test_inductor_on_gpu_matches_eager(name):
    """Inductor (Triton code generation around the lab's opaque ops) on CUDA, triton tier:
    forward and gradients equal eager's. fallback_random: inductor would otherwise draw
    the dropout seeds from its own generator, not eager's."""
    model, x = _swapped(name, "triton")
    model, x = model.cuda(), x.cuda()
    want_out, want_grads = _run(model, x)
    with torch._inductor.config.patch(fallback_random=True):
        got_out, got_grads = _run(model, x, call=torch.compile(model, backend="inductor"))
    torch.testing.assert_close(got_out, want_out, rtol=1e-5, atol=1e-5)
    for n in want_grads:
        torch.testing.assert_close(got_grads[n], want_grads[n], rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize("name", ["activation", "softmax_dropout", "linear"])
def test_eager_call_skips_the_dispatcher_and_equals_the_registered_op(name, opcheck_cases):
    """A LabOp called eagerly runs its body through a plain autograd.Function (no
    dispatcher: ~15 us per call, ~100 us per forward+backward saved); the registered op
    computes the same outputs and the same gradients."""
    from tritonlab.layers import functions
    lab_op = {"activation": functions.activations.activation_op,
              "softmax_dropout": functions.softmax.softmax_dropout_op,
              "linear": functions.linear.linear_op}[name]
    for args in opcheck_cases[name]:
        results = []
        for call in (lab_op, lab_op.op):
            leaves = [a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor) and a.requires_grad
                      else a for a in args]
            out = call(*leaves)
            first = out[0] if isinstance(out, tuple) else out
            (first * torch.linspace(-1, 1, first.numel()).view(first.shape)).sum().backward()
            results.append((first.grad_fn, first.detach(),
                            [a.grad for a in leaves if isinstance(a, torch.Tensor) and a.requires_grad]))
        (eager_fn, eager_out, eager_grads), (op_fn, op_out, op_grads) = results
        assert type(eager_fn).__name__ == f"{name}_functionBackward"
        assert "tritonlab" in type(op_fn).__name__ and type(op_fn) is not type(eager_fn)
        torch.testing.assert_close(eager_out, op_out)
        for g_eager, g_op in zip(eager_grads, op_grads, strict=True):
            torch.testing.assert_close(g_eager, g_op)


def test_eager_call_refuses_a_second_derivative(triton_device):
    from tritonlab.layers.functions.activations import activation_op
    x = torch.randn(3, 4, device=triton_device, requires_grad=True)
    y = activation_op(x, "tanh")
    with pytest.raises(RuntimeError, match="cannot be differentiated again"):
        torch.autograd.grad(y.sum(), x, create_graph=True)


def test_jit_trace_and_vmap_go_through_the_registered_op(triton_device):
    """Their tensors look plain, but a tracer must see the op: torch.jit.trace records
    tritonlab::activation and replays it on new inputs; vmap batches it (its vmap
    rule) instead of handing the kernel a batched tensor."""
    from tritonlab.layers.functions.activations import activation_op
    x = torch.randn(3, 5, device=triton_device)
    traced = torch.jit.trace(lambda t: activation_op(t, "tanh"), x)
    assert "tritonlab::activation" in str(traced.graph)
    fresh = torch.randn(3, 5, device=triton_device)
    torch.testing.assert_close(traced(fresh), torch.tanh(fresh))
    batched = torch.randn(4, 3, 5, device=triton_device)
    torch.testing.assert_close(torch.func.vmap(lambda t: activation_op(t, "tanh"))(batched), torch.tanh(batched))


@pytest.mark.parametrize("tier", ["naive", "reference", "triton"])
def test_an_in_place_op_after_a_layer_compiles_as_torch_nns_does(tier):
    """Compiled, a Function's view output would still be refused an in-place op by
    AOTAutograd ("... is a view and is being modified inplace"): conv then ReLU(inplace),
    dropout then mul_, gradients as torch.nn's under the same (p = 0) or torch-free checks."""
    torch.manual_seed(0)
    ref = nn.Conv2d(2, 3, 3)
    lab = tritonlab.Conv2d(2, 3, 3, backend=tier)
    lab.load_state_dict(ref.state_dict())
    drop = tritonlab.Dropout(0.3, backend=tier)
    x = torch.randn(2, 2, 5, 5)

    def step(conv, x):
        return torch.relu_(conv(x)).square().sum()

    torch._dynamo.reset()
    torch.compile(step, backend="aot_eager")(lab, x).backward()
    step(ref, x).backward()
    torch.testing.assert_close(lab.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)
    xd = torch.randn(40, 40, requires_grad=True)
    torch.compile(lambda t: drop(t).mul_(2).sum(), backend="aot_eager")(xd).backward()
    kept = xd.grad != 0  # kept elements get 2 / (1 - p), dropped ones 0
    assert 0.5 < kept.float().mean() < 0.9
    torch.testing.assert_close(xd.grad[kept], torch.full_like(xd.grad[kept], 2 / 0.7))
