import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import tritonlab
from tritonlab.scratch import rnn as scratch_rnn
from parity import assert_matches_torch

# torch's own notice that it runs LSTM with proj_size without oneDNN
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

CELLS = {"GRU": (tritonlab.GRU, nn.GRU), "LSTM": (tritonlab.LSTM, nn.LSTM)}
TIERS = ["naive", "reference"]
DTYPES = [torch.float32, torch.float64]

# name: (module kwargs, T, B (None: unbatched), initial state given)
CONFIGS = {
    "basic": (dict(input_size=3, hidden_size=5), 4, 2, False),
    "h0": (dict(input_size=3, hidden_size=5), 4, 2, True),
    "I1_B1_T1": (dict(input_size=1, hidden_size=7), 1, 1, True),
    "T13": (dict(input_size=4, hidden_size=5), 13, 3, False),
    "layers3": (dict(input_size=3, hidden_size=7, num_layers=3), 5, 2, True),
    "no_bias": (dict(input_size=3, hidden_size=5, bias=False), 4, 2, True),
    "batch_first": (dict(input_size=3, hidden_size=5, batch_first=True), 4, 2, True),
    "bidirectional": (dict(input_size=3, hidden_size=5, bidirectional=True), 4, 2, True),
    "bidir_layers3_no_h0": (dict(input_size=2, hidden_size=5, num_layers=3, bidirectional=True), 3, 2, False),
    "unbatched": (dict(input_size=3, hidden_size=5, num_layers=2), 4, None, True),
    "unbatched_no_h0": (dict(input_size=3, hidden_size=5, bidirectional=True), 4, None, False),
    "unbatched_batch_first": (dict(input_size=3, hidden_size=5, batch_first=True), 4, None, True),
    "dropout_eval": (dict(input_size=3, hidden_size=5, num_layers=3, dropout=0.4), 4, 2, True),
    "everything": (dict(input_size=3, hidden_size=7, num_layers=2, bias=False, batch_first=True,
                        bidirectional=True, dropout=0.3), 5, 3, True),
    "proj": (dict(input_size=3, hidden_size=7, proj_size=3), 4, 2, True),
    "proj_bidir_layers2": (dict(input_size=3, hidden_size=5, proj_size=2, num_layers=2,
                                bidirectional=True, bias=False), 4, 2, True),
}
CASES = [(cell, name) for cell in CELLS for name, cfg in CONFIGS.items()
         if cell == "LSTM" or "proj_size" not in cfg[0]]


def initial_state(cell, kwargs, batch, dtype):
    """h0 (GRU) or (h0, c0) (LSTM), each (layers * directions, [batch,] features)."""
    layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    lead = (layers,) if batch is None else (layers, batch)
    h_size = kwargs.get("proj_size") or kwargs["hidden_size"]
    h0 = torch.randn(*lead, h_size, dtype=dtype)
    if cell == "GRU":
        return h0
    return h0, torch.randn(*lead, kwargs["hidden_size"], dtype=dtype)


def make_input(kwargs, steps, batch, dtype):
    if batch is None:
        return torch.randn(steps, kwargs["input_size"], dtype=dtype)
    shape = (batch, steps) if kwargs.get("batch_first") else (steps, batch)
    return torch.randn(*shape, kwargs["input_size"], dtype=dtype)


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cell,config", CASES)
def test_matches_torch(cell, config, dtype, tier):
    kwargs, steps, batch, with_state = CONFIGS[config]
    lab_cls, torch_cls = CELLS[cell]
    lab, ref = lab_cls(**kwargs, dtype=dtype), torch_cls(**kwargs, dtype=dtype)
    if kwargs.get("dropout"):  # exact parity needs dropout off; train mode is tested below
        lab.eval()
        ref.eval()
    inputs = [make_input(kwargs, steps, batch, dtype)]
    if with_state:
        inputs.append(initial_state(cell, kwargs, batch, dtype))
    assert_matches_torch(lab, ref, *inputs, tier=tier)


class Packed(nn.Module):
    """Pads -> packs (unsorted lengths) -> rnn -> pads again, so parity.run can
    compare a packed forward through plain tensors (including the state's reordering)."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, lengths, hx=None):
        out, h_n = self.rnn(pack_padded_sequence(x, lengths, enforce_sorted=False), hx)
        return pad_packed_sequence(out)[0], h_n


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_state", [False, True], ids=["no_h0", "h0"])
@pytest.mark.parametrize("cell", CELLS)
def test_packed_sequence(cell, with_state, dtype, tier):
    kwargs = dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True)
    lab_cls, torch_cls = CELLS[cell]
    lengths = torch.tensor([3, 6, 1, 6, 2])
    inputs = [torch.randn(6, 5, 3, dtype=dtype), lengths]
    if with_state:
        inputs.append(initial_state(cell, kwargs, 5, dtype))
    assert_matches_torch(Packed(lab_cls(**kwargs, dtype=dtype)), Packed(torch_cls(**kwargs, dtype=dtype)),
                         *inputs, tier=tier)


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck(cell, tier):
    """float64 gradcheck of inputs, initial state and every weight (the reference tier's
    backward is written out by hand)."""
    kwargs = dict(input_size=2, hidden_size=3, num_layers=2, bidirectional=True)
    if cell == "LSTM":
        kwargs["proj_size"] = 2
    lab = CELLS[cell][0](**kwargs, dtype=torch.float64, backend=tier)
    names = [n for n, _ in lab.named_parameters()]
    state = initial_state(cell, kwargs, 2, torch.float64)
    state = (state,) if cell == "GRU" else state

    def f(x, *tensors):
        hx = tensors[:len(state)]
        params = dict(zip(names, tensors[len(state):]))
        out, h_n = functional_call(lab, params, (x, hx[0] if cell == "GRU" else hx))
        return (out, h_n) if cell == "GRU" else (out, *h_n)

    args = [torch.randn(3, 2, 2, dtype=torch.float64), *state, *(p.detach() for p in lab.parameters())]
    assert torch.autograd.gradcheck(f, [a.clone().requires_grad_() for a in args])


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("cell", CELLS)
def test_dropout_in_training(cell, tier):
    """Train-mode dropout between layers: differs from eval, reproducible under a seed,
    a fresh mask on each call, and differentiable."""
    lab = CELLS[cell][0](3, 5, num_layers=3, dropout=0.5, backend=tier)
    x = torch.randn(4, 2, 3)
    torch.manual_seed(7)
    first = lab(x)[0]
    fresh = lab(x)[0]
    torch.manual_seed(7)
    again = lab(x)[0]
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    assert not torch.allclose(first, fresh)
    lab.eval()
    assert not torch.allclose(first, lab(x)[0])
    first.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in lab.parameters())


@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_round_trip(cell):
    kwargs = dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True)
    if cell == "LSTM":
        kwargs["proj_size"] = 2
    lab_cls, torch_cls = CELLS[cell]
    lab, ref = lab_cls(**kwargs), torch_cls(**kwargs)
    assert list(lab.state_dict()) == list(ref.state_dict())
    x = torch.randn(4, 2, 3)
    lab.load_state_dict(ref.state_dict())  # torch -> lab
    torch.testing.assert_close(lab(x)[0], ref(x)[0])
    fresh = lab_cls(**kwargs)
    ref.load_state_dict(fresh.state_dict())  # lab -> torch
    torch.testing.assert_close(ref(x)[0], fresh(x)[0])


@pytest.mark.parametrize("cell", CELLS)
def test_empty_batch(cell):
    lab_cls, torch_cls = CELLS[cell]
    lab, ref = lab_cls(3, 5), torch_cls(3, 5)
    ref.load_state_dict(lab.state_dict())
    x = torch.randn(4, 0, 3)
    assert lab(x)[0].shape == ref(x)[0].shape == (4, 0, 5)


def _bad_inputs(cell):
    """(description, input, hx, module kwargs, error type, message pattern)."""
    h = torch.randn
    state = (lambda h0: h0) if cell == "GRU" else (lambda h0: (h0, torch.randn(1, 2, 5)))
    cases = [
        ("list input", [[1.0, 2.0, 3.0]], None, {}, TypeError, "expected a torch.Tensor, got list"),
        ("integer input", torch.ones(4, 2, 3, dtype=torch.int64), None, {}, TypeError, "floating-point.*torch.int64"),
        ("1-D input", h(3), None, {}, ValueError, r"2-D or 3-D input \(T, N, input_size\).*got a 1-D"),
        ("4-D input", h(4, 2, 3, 1), None, {}, ValueError, "2-D or 3-D input.*got a 4-D"),
        ("batch_first 4-D", h(4, 2, 3, 1), None, {"batch_first": True}, ValueError, r"\(N, T, input_size\)"),
        ("input size", h(4, 2, 6), None, {}, ValueError, "expected 3 input features.*got 6"),
        ("empty sequence", h(0, 2, 3), None, {}, ValueError, "sequence length above 0"),
        ("empty sequence batch_first", h(2, 0, 3), None, {"batch_first": True}, ValueError, "sequence length"),
        ("input dtype", h(4, 2, 3).double(), None, {}, TypeError,
         r"torch\.float32 weights but got a torch\.float64 input"),
        ("input device", torch.empty(4, 2, 3, device="meta"), None, {}, ValueError,
         "weights on cpu but got an input on meta"),
        ("h0 batch", h(4, 2, 3), state(h(1, 3, 5)), {}, ValueError, r"h0 of shape \(1, 2, 5\).*got \(1, 3, 5\)"),
        ("h0 layers", h(4, 2, 3), state(h(1, 2, 5)), {"num_layers": 2}, ValueError,
         r"h0 of shape \(2, 2, 5\).*got \(1, 2, 5\)"),
        ("h0 3-D for unbatched", h(4, 3), state(h(1, 2, 5)), {}, ValueError, r"h0 of shape \(1, 5\)"),
        ("h0 dtype", h(4, 2, 3), state(h(1, 2, 5).double()), {}, TypeError,
         "float32 weights but got a torch.float64 initial state h0"),
        ("h0 device", h(4, 2, 3), state(torch.empty(1, 2, 5, device="meta")), {}, ValueError,
         "got an initial state h0 on meta"),
        ("h0 not a tensor", h(4, 2, 3), state("zeros"), {}, TypeError, "h0 expected a torch.Tensor, got str"),
    ]
    if cell == "LSTM":
        cases += [
            ("hx not a tuple", h(4, 2, 3), h(1, 2, 5), {}, TypeError, r"hx as a tuple \(h0, c0\), got Tensor"),
            ("c0 shape", h(4, 2, 3), (h(1, 2, 5), h(1, 2, 4)), {}, ValueError,
             r"c0 of shape \(1, 2, 5\).*got \(1, 2, 4\)"),
            ("h0 with proj_size", h(4, 2, 3), (h(1, 2, 5), h(1, 2, 5)), {"proj_size": 2}, ValueError,
             r"h0 of shape \(1, 2, 2\)"),
        ]
    return [pytest.param(cell, *c[1:], id=f"{cell}-{c[0]}") for c in cases]


@pytest.mark.parametrize("cell,x,hx,kwargs,error,match", _bad_inputs("GRU") + _bad_inputs("LSTM"))
def test_bad_input(cell, x, hx, kwargs, error, match):
    layer = CELLS[cell][0](3, 5, **kwargs)
    with pytest.raises(error, match=match):
        layer(x, hx)


@pytest.mark.parametrize("cls", [tritonlab.GRU, tritonlab.LSTM])
def test_reference_refuses_second_derivative_instead_of_a_wrong_one(cls):
    layer = cls(3, 4, backend="reference")
    x = torch.randn(5, 2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="cannot be differentiated again"):
        torch.autograd.grad(layer(x)[0].sum(), x, create_graph=True)


LSTM_CONFIGS = [name for cell, name in CASES if cell == "LSTM"]


@pytest.fixture
def inference_calls(monkeypatch):
    """A list that gets an entry each time the reference LSTM's no-grad loop runs."""
    calls = []
    inference = scratch_rnn._lstm_inference
    monkeypatch.setattr(scratch_rnn, "_lstm_inference", lambda *a: calls.append(1) or inference(*a))
    return calls


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", LSTM_CONFIGS + ["packed"])
def test_lstm_without_grad_takes_its_own_loop_and_matches_torch(config, dtype, inference_calls):
    """Under no_grad the reference LSTM runs a loop that keeps nothing for a backward."""
    if config == "packed":
        kwargs = dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True, proj_size=2)
        lab, ref = Packed(tritonlab.LSTM(**kwargs, dtype=dtype)), Packed(nn.LSTM(**kwargs, dtype=dtype))
        inputs = [torch.randn(6, 5, 3, dtype=dtype), torch.tensor([3, 6, 1, 6, 2]),
                  initial_state("LSTM", kwargs, 5, dtype)]
    else:
        kwargs, steps, batch, with_state = CONFIGS[config]
        lab, ref = tritonlab.LSTM(**kwargs, dtype=dtype), nn.LSTM(**kwargs, dtype=dtype)
        inputs = [make_input(kwargs, steps, batch, dtype)]
        if with_state:
            inputs.append(initial_state("LSTM", kwargs, batch, dtype))
    lab.load_state_dict(ref.state_dict())
    lab.eval(), ref.eval()
    with torch.no_grad(), tritonlab.use_backend("reference"):
        got, want = lab(*inputs), ref(*inputs)
    assert inference_calls
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("wants", ["h0", "c0", "nothing", "inference_mode"])
def test_lstm_takes_the_autograd_loop_exactly_when_a_gradient_is_wanted(wants, inference_calls):
    """Frozen weights and a plain input: the autograd loop runs iff h0 or c0 wants a
    gradient (which must then match torch's); otherwise, and under inference_mode, the
    no-grad loop runs."""
    kwargs = dict(input_size=3, hidden_size=5, num_layers=2, dtype=torch.float64)
    lab, ref = tritonlab.LSTM(**kwargs, backend="reference"), nn.LSTM(**kwargs)
    lab.load_state_dict(ref.state_dict())
    lab.requires_grad_(wants == "inference_mode")
    ref.requires_grad_(False)
    x, (h0, c0) = torch.randn(4, 2, 3, dtype=torch.float64), initial_state("LSTM", kwargs, 2, torch.float64)
    if wants in ("h0", "c0"):
        leaf = {"h0": h0, "c0": c0}[wants].requires_grad_()
        got = torch.autograd.grad(lab(x, (h0, c0))[0].sum(), leaf)
        want = torch.autograd.grad(ref(x, (h0, c0))[0].sum(), leaf)
        assert not inference_calls
    else:
        with torch.inference_mode() if wants == "inference_mode" else torch.enable_grad():
            got, want = lab(x, (h0, c0)), ref(x, (h0, c0))
        assert inference_calls
    torch.testing.assert_close(got, want)
