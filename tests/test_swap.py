import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import tritonlab
from parity import assert_close_to_scale
from tritonlab.swap import LAB_OF, SwapReport


class Block(nn.Module):
    """A custom forward over a Sequential, a ModuleList and a ModuleDict."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 2, stride=2))
        self.acts = nn.ModuleList([nn.Sigmoid(), nn.Tanh()])
        self.heads = nn.ModuleDict({"proj": nn.Linear(18, 5), "norm": nn.LayerNorm(5)})
        self.flat = nn.Flatten()
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, x):
        y = self.flat(self.acts[1](self.acts[0](self.features(x))))
        return self.heads["norm"](self.heads["proj"](y)) * self.scale


class Net(nn.Module):
    """Every layer swap handles, nested, plus modules it leaves (LayerNorm, BatchNorm1d)."""

    def __init__(self):
        super().__init__()
        self.block = Block()
        self.gru = nn.GRU(5, 6, batch_first=True)
        self.lstm = nn.LSTM(6, 4, num_layers=2, bidirectional=True)
        self.bn = nn.BatchNorm1d(8)
        self.out = nn.Sequential(nn.Linear(8, 3), nn.Dropout(0.25), nn.Softmax(dim=-1))

    def forward(self, x):  # x: (N, 3, 7, 6) -> (N, 3)
        seq = self.block(x).unsqueeze(1).expand(-1, 4, -1)  # (N, T=4, 5)
        h, _ = self.gru(seq)
        h, (_, _) = self.lstm(h.transpose(0, 1))
        return self.out(self.bn(h[-1]))


SWAPPED = ["block.features.0", "block.features.1", "block.features.2", "block.acts.0", "block.acts.1",
           "block.heads.proj", "block.flat", "gru", "lstm", "out.0", "out.1", "out.2"]


def _fwd_bwd(model, x):
    x = x.clone().requires_grad_()
    y = model(x)
    y.backward(torch.linspace(-1, 1, y.numel()).reshape(y.shape))
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return y.detach(), x.grad, grads


@pytest.fixture
def net():
    return Net().eval()


X = torch.randn(2, 3, 7, 6, generator=torch.Generator().manual_seed(3))


def test_swaps_every_layer_type_anywhere_and_outputs_match(net):
    before = _fwd_bwd(net, X)
    report = tritonlab.swap(net, backend="reference")
    assert sorted(report.changed) == sorted(SWAPPED)
    assert set(report.left) == {"block.heads.norm", "bn"}
    assert "no LayerNorm layer" in report["block.heads.norm"].reason
    for name in SWAPPED:
        module = net.get_submodule(name)
        assert type(module) is LAB_OF[report[name].torch_class] and module.backend == "reference"
    after = _fwd_bwd(net, X)
    torch.testing.assert_close(after[0], before[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after[1], before[1], atol=1e-5, rtol=1e-5)
    for n in before[2]:
        torch.testing.assert_close(after[2][n], before[2][n], atol=1e-5, rtol=1e-5, msg=n)


def test_same_parameter_and_buffer_objects_device_dtype_and_state_dict(net):
    net.double()
    params, buffers = dict(net.named_parameters()), dict(net.named_buffers())
    keys = list(net.state_dict())
    tritonlab.swap(net)
    assert all(p is params[n] for n, p in net.named_parameters()) and len(params) == len(list(net.parameters()))
    assert all(b is buffers[n] for n, b in net.named_buffers())
    assert all(p.dtype == torch.float64 for p in net.parameters())
    assert list(net.state_dict()) == keys
    assert net.lstm._flat_weights[0] is params["lstm.weight_ih_l0"]


def test_an_optimizer_built_before_the_swap_trains_the_swapped_model(net):
    twin = copy.deepcopy(net)
    opt, twin_opt = (torch.optim.AdamW(m.parameters(), lr=0.05) for m in (net, twin))
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    for step in range(2):  # Adam's state from the step before the swap carries over
        if step == 1:
            tritonlab.swap(net, backend="reference")
        for model, o in ((net, opt), (twin, twin_opt)):
            o.zero_grad()
            model(X).square().sum().backward()
            o.step()
    assert isinstance(net.lstm, tritonlab.LSTM) and opt.state[net.lstm.weight_ih_l0]["step"] == 2
    assert not torch.equal(net.block.heads.proj.weight, start["block.heads.proj.weight"])
    assert not torch.equal(net.lstm.weight_hh_l1, start["lstm.weight_hh_l1"])
    for (n, p), q in zip(net.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5, msg=n)


def test_hooks_are_kept(net):
    calls = []
    lin = net.block.heads.proj
    lin.register_forward_pre_hook(lambda m, args: calls.append("pre"))
    lin.register_forward_hook(lambda m, args, out: calls.append("post") or out * 2)
    lin.register_full_backward_hook(lambda m, gin, gout: calls.append("backward"))
    expected = net(X)
    tritonlab.swap(net)
    assert isinstance(lin, tritonlab.Linear)
    calls.clear()
    y = net(X)
    y.sum().backward()
    assert calls == ["pre", "post", "backward"]
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)  # the hook's *2 still applies


def test_training_mode_is_kept():
    model = Net().train()
    model.out[1].eval()
    tritonlab.swap(model)
    assert model.training and model.gru.training and not model.out[1].training
    assert isinstance(model.out[1], tritonlab.Dropout)
    x = torch.randn(5, 3)
    assert torch.equal(model.out[1](x), x)  # eval-mode dropout is the identity


class OwnForward(nn.Linear):
    def forward(self, x):
        return super().forward(x) + 100


class Doubled(nn.Module):
    def forward(self, w):
        return 2 * w


def test_unsupported_and_subclassed_modules_are_left_with_a_reason():
    para = nn.Linear(3, 3)
    parametrize.register_parametrization(para, "weight", Doubled())
    model = nn.Sequential(OwnForward(3, 3), para, nn.Linear(3, 3, dtype=torch.complex64), nn.GELU(),
                          nn.LSTM(3, 4, proj_size=2))
    x = torch.randn(2, 3)
    own = model[0](x)
    report = tritonlab.swap(model)
    assert type(model[0]) is OwnForward and "subclass OwnForward of torch.nn.Linear" in report["0"].reason
    torch.testing.assert_close(model[0](x), own)
    assert "parametrized" in report["1"].reason and parametrize.is_parametrized(model[1])
    assert "complex64" in report["2"].reason and type(model[2]) is nn.Linear
    assert report["3"].reason == "tritonlab has no GELU layer"
    # proj_size: swapped (the reference tier has it), noted as not on the triton tier
    assert report["4"].action == "swapped" and "proj_size" in report["4"].reason
    assert report.changed == ["4"]
    assert report["1.parametrizations.weight.0"].reason == "tritonlab has no Doubled layer"


def test_every_padding_mode_is_swapped():
    x = torch.randn(1, 2, 5, 6)
    for mode in ("zeros", "reflect", "replicate", "circular"):
        conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode)
        expected = conv(x)
        assert tritonlab.swap(conv).changed == [""]
        torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)


def test_backend_triton_leaves_what_the_triton_tier_cannot_run():
    model = nn.Sequential(nn.Flatten(), nn.LSTM(3, 4, proj_size=2), nn.Linear(3, 3, dtype=torch.float64),
                          nn.ReLU(), nn.Linear(3, 3))
    report = tritonlab.swap(model, backend="triton")
    assert report.changed == ["3", "4"] and model[4].backend == "triton"
    assert "no Flatten kernel" in report["0"].reason
    assert "proj_size" in report["1"].reason
    assert "float64" in report["2"].reason


def test_auto_notes_what_runs_on_the_reference_tier():
    model = nn.Sequential(nn.Linear(3, 3, dtype=torch.float64), nn.Flatten(), nn.ReLU())
    report = tritonlab.swap(model)
    assert report.changed == ["0", "1", "2"]
    assert "float64" in report["0"].reason and "view" in report["1"].reason and report["2"].reason == ""


def test_include_and_exclude(net):
    report = tritonlab.swap(copy.deepcopy(net), include=["LSTM", "block.features"])
    assert report.changed == ["block.features.0", "block.features.1", "block.features.2", "lstm"]
    assert report["gru"].reason == "not in include"
    report = tritonlab.swap(copy.deepcopy(net), include="block", exclude=["*.heads", "Flatten"])
    assert report.changed == ["block.features.0", "block.features.1", "block.features.2", "block.acts.0", "block.acts.1"]
    assert report["block.heads.proj"].reason == "excluded by '*.heads'"
    assert report["block.flat"].reason == "excluded by 'Flatten'"
    report = tritonlab.swap(net, exclude="out.?")
    assert set(report.changed) == set(SWAPPED) - {"out.0", "out.1", "out.2"}


def test_bad_include_exclude(net):
    with pytest.raises(ValueError, match="include pattern 'LTSM' matches no module; expected a class name"):
        tritonlab.swap(net, include="LTSM")
    with pytest.raises(ValueError, match="exclude pattern 'nope.*' matches no module"):
        tritonlab.swap(net, exclude=["nope.*"])
    with pytest.raises(TypeError, match="include expected a pattern string or a list of them, got <class"):
        tritonlab.swap(net, include=[nn.Linear])
    with pytest.raises(TypeError, match="exclude expected a pattern string"):
        tritonlab.swap(net, exclude=3)
    assert type(net.gru) is nn.GRU  # a refused call swaps nothing


def test_unswap_round_trip(net):
    params = list(net.parameters())
    torch_types = {n: type(m) for n, m in net.named_modules()}
    expected = net(X)
    tritonlab.swap(net, backend="naive")
    torch.testing.assert_close(net(X), expected, atol=1e-5, rtol=1e-5)
    report = tritonlab.unswap(net)
    assert sorted(report.changed) == sorted(SWAPPED) and all(e.action == "unswapped" for e in report)
    assert {n: type(m) for n, m in net.named_modules()} == torch_types
    assert all(p is q for p, q in zip(net.parameters(), params))
    assert not any(hasattr(m, "backend") or "_algo" in vars(m) for m in net.modules())
    assert "algo" not in vars(net.block.features[0])
    torch.testing.assert_close(net(X), expected)


def test_unswap_restores_layers_built_as_tritonlab_and_leaves_lab_only_ones():
    model = nn.Sequential(tritonlab.Conv2d(1, 2, 3, algo="im2col", backend="reference"),
                          tritonlab.LinearActivation(2, 2, "relu"), tritonlab.SoftmaxDropout(0.1))
    report = tritonlab.unswap(model)
    assert type(model[0]) is nn.Conv2d and report.changed == ["0"]
    assert "has no torch.nn class" in report["1"].reason and "has no torch.nn class" in report["2"].reason


def test_reswap_is_a_no_op_reported_as_such(net):
    tritonlab.swap(net, backend="reference")
    report = tritonlab.swap(net, backend="naive")
    assert report.changed == []
    assert all(report[n].reason == "already a tritonlab layer (no-op)" for n in SWAPPED)
    assert net.gru.backend == "reference"  # untouched


def test_the_root_module_is_swapped_in_place():
    lstm, x = nn.LSTM(3, 4), torch.randn(5, 2, 3)
    expected = lstm(x)
    report = tritonlab.swap(lstm)
    assert type(lstm) is tritonlab.LSTM and lstm.algo == "auto" and report.changed == [""]
    assert "(root)" in str(report)
    torch.testing.assert_close(lstm(x), expected, atol=1e-5, rtol=1e-5)  # its weights kept


def test_backend_none_follows_the_global_choice(monkeypatch):
    from tritonlab.layers import activations
    calls = []
    naive = activations._RELU["naive"]
    monkeypatch.setitem(activations._RELU, "naive", lambda x: calls.append(1) or naive(x))
    relu = nn.ReLU()
    tritonlab.swap(relu, backend=None)
    assert relu.backend is None
    with tritonlab.use_backend("naive"):
        torch.testing.assert_close(relu(torch.tensor([-1.0, 2.0])), torch.tensor([0.0, 2.0]))
    assert calls == [1]
    with tritonlab.use_backend("reference"):
        relu(torch.tensor([-1.0, 2.0]))
    assert calls == [1]


def test_shared_modules_are_reported_once():
    shared = nn.Tanh()
    report = tritonlab.swap(nn.Sequential(shared, nn.Sequential(shared)))
    assert report.changed == ["0"] and type(shared) is tritonlab.Tanh


def test_report_table_and_lookup(net):
    report = tritonlab.swap(net)
    assert isinstance(report, SwapReport) and len(report) == len(SWAPPED) + 2
    text = str(report)
    assert text.splitlines()[0].split() == ["module", "class", "action", "reason"]
    assert "block.heads.norm  nn.LayerNorm" in text and text.endswith("12 swapped, 2 left")
    with pytest.raises(KeyError, match="no module named 'nope'"):
        report["nope"]
    assert report[0].name == "block.features.0"


@pytest.mark.parametrize("fn", [tritonlab.swap, tritonlab.unswap])
def test_not_a_module(fn):
    with pytest.raises(TypeError, match="expected a torch.nn.Module, got dict"):
        fn({"linear": nn.Linear(2, 2)})


def test_unknown_backend(net):
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'naive', 'reference', 'triton'\), got 'cuda'"):
        tritonlab.swap(net, backend="cuda")


def test_swapped_model_on_the_triton_tier(triton_device):
    model = nn.Sequential(nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 3), nn.Softmax(dim=-1)).to(triton_device)
    x = torch.randn(4, 7, device=triton_device)
    before = _fwd_bwd(model, x)
    assert tritonlab.swap(model, backend="triton").changed == ["0", "1", "2", "3"]
    after = _fwd_bwd(model, x)
    for a, b in zip(after[:2], before[:2]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for n in before[2]:
        torch.testing.assert_close(after[2][n], before[2][n], atol=1e-4, rtol=1e-4, msg=n)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_swapped_model_matches_torch(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(32 * 16 * 16, 256), nn.Sigmoid(), nn.Linear(256, 10))
    rnn = nn.LSTM(64, 128, num_layers=2, batch_first=True)
    model, rnn = model.to("cuda", dtype), rnn.to("cuda", dtype)
    x, seq = torch.randn(8, 16, 16, 16, device="cuda", dtype=dtype), torch.randn(4, 32, 64, device="cuda", dtype=dtype)
    expected, (expected_seq, _) = model(x), rnn(seq)
    assert len(tritonlab.swap(model, backend="triton").changed) == 6
    assert tritonlab.swap(rnn, backend="triton").changed == [""]
    tol = 2e-2 if dtype == torch.float16 else 5e-2
    # the Linear's 8192-term sums round differently from cuBLAS's: compare to the output's scale
    assert_close_to_scale(model(x), expected, tol)
    assert_close_to_scale(rnn(seq)[0], expected_seq, tol)


MHA_OPTIONS = [{}, {"batch_first": True, "dropout": 0.1, "bias": False}, {"kdim": 5, "vdim": 3},
               {"add_bias_kv": True, "add_zero_attn": True}]


def _mha_state(mha):
    """Everything nn.MultiheadAttention's constructor options set."""
    names = ("embed_dim", "num_heads", "dropout", "batch_first", "kdim", "vdim", "head_dim", "_qkv_same_embed_dim",
             "add_zero_attn")
    return {n: getattr(mha, n) for n in names} | {
        "params": {n: p for n, p in mha.named_parameters()}, "bias_k": mha.bias_k, "in_proj_bias": mha.in_proj_bias}


@pytest.mark.parametrize("options", MHA_OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_multihead_attention_keeps_its_weights_and_options(options):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, **options).eval()
    n, l, s = 3, 4, 6
    shape = (lambda t: (n, t)) if options.get("batch_first") else (lambda t: (t, n))
    q = torch.randn(*shape(l), 8)
    k, v = torch.randn(*shape(s), options.get("kdim", 8)), torch.randn(*shape(s), options.get("vdim", 8))
    pad = torch.zeros(n, s, dtype=torch.bool)
    pad[1, 4:] = True
    causal = torch.ones(l, s, dtype=torch.bool).triu(1)  # True: masked out, torch's convention here
    calls = [dict(), dict(key_padding_mask=pad, attn_mask=causal, need_weights=False)]
    expected = [mha(q, k, v, **kw) for kw in calls]
    state = _mha_state(mha)
    report = tritonlab.swap(mha, backend="reference")
    assert type(mha) is tritonlab.MultiheadAttention and report.changed == [""]
    assert "need_weights=False runs the tier's attention" in report[""].reason
    assert report["out_proj"].action == "left" and "never calls it" in report["out_proj"].reason
    after = _mha_state(mha)
    assert all(after["params"][n] is p for n, p in state.pop("params").items())
    assert after.pop("bias_k") is state.pop("bias_k") and after.pop("in_proj_bias") is state.pop("in_proj_bias")
    assert {k: after[k] for k in state} == state
    for kw, (out, weights) in zip(calls, expected):
        got, got_weights = mha(q, k, v, **kw)
        torch.testing.assert_close(got, out, atol=1e-5, rtol=1e-5)
        if weights is None:
            assert got_weights is None
        else:
            torch.testing.assert_close(got_weights, weights, atol=1e-6, rtol=1e-5)


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 4, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


def test_multihead_attention_gradients_after_swap():
    torch.manual_seed(0)
    model, x = SelfAttention(), torch.randn(2, 5, 8)
    before = _fwd_bwd(model, x)
    assert tritonlab.swap(model, backend="reference").changed == ["attn"]
    after = _fwd_bwd(model, x)
    for a, b in zip(after[:2], before[:2]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert before[2].keys() == after[2].keys() == {"attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
                                                   "attn.out_proj.bias"}
    for n in before[2]:
        torch.testing.assert_close(after[2][n], before[2][n], atol=1e-5, rtol=1e-5, msg=n)


def test_multihead_attention_float64_left_on_triton():
    report = tritonlab.swap(nn.MultiheadAttention(4, 2, dtype=torch.float64), backend="triton")
    assert report.changed == [] and "float64" in report[""].reason


def test_encoder_fast_path_is_off_while_swapped_and_back_after_unswap(monkeypatch):
    """torch's fused encoder layer would run instead of the swapped layers in eval mode
    without autograd; the swap turns it (and the encoder's nested tensors) off."""
    from tritonlab.layers import attention
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2).eval()
    x = torch.randn(3, 5, 8)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, 3:] = True
    fused, lab = [], []
    real_fused, real_lab = torch._transformer_encoder_layer_fwd, attention._ATTENTION["reference"]
    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", lambda *a: fused.append(1) or real_fused(*a))
    monkeypatch.setitem(attention._ATTENTION, "reference", lambda *a: lab.append(1) or real_lab(*a))

    def run():
        fused.clear(), lab.clear()
        with torch.no_grad():
            return enc(x), enc(x, src_key_padding_mask=pad)

    plain, padded = run()
    assert len(fused) == 4 and not lab  # the fast path is real here
    report = tritonlab.swap(enc, backend="reference")
    assert "fast path off" in report["layers.0"].reason and "fast path off" in report["layers.1"].reason
    assert "use_nested_tensor off" in report[""].reason and not enc.use_nested_tensor
    swapped_plain, swapped_padded = run()
    assert not fused and len(lab) == 4
    torch.testing.assert_close(swapped_plain, plain, atol=1e-5, rtol=1e-5)
    # torch's nested path leaves padded positions 0; the rows that are not padding agree
    torch.testing.assert_close(swapped_padded[~pad], padded[~pad], atol=1e-5, rtol=1e-5)
    assert "layers.0" not in tritonlab.swap(enc).left  # a second swap adds no second hook
    assert [len(layer._forward_pre_hooks) for layer in enc.layers] == [1, 1]
    report = tritonlab.unswap(enc)
    assert [report[n].reason for n in ("", "layers.0", "layers.1")] == ["torch's fast path back on"] * 3
    assert enc.use_nested_tensor and not any(m._forward_pre_hooks for m in enc.modules())
    run()
    assert len(fused) == 4 and not lab


def test_decoder_layer_calls_its_swapped_attention():
    torch.manual_seed(0)
    dec = nn.TransformerDecoderLayer(8, 2, 16, batch_first=True).eval()
    tgt, memory = torch.randn(2, 4, 8), torch.randn(2, 6, 8)
    mask = nn.Transformer.generate_square_subsequent_mask(4)
    with torch.no_grad():
        expected = dec(tgt, memory, tgt_mask=mask, tgt_is_causal=True)
    report = tritonlab.swap(dec, backend="reference")
    assert {"self_attn", "multihead_attn"} <= set(report.changed) and "fast path" not in str(report)
    with torch.no_grad():
        torch.testing.assert_close(dec(tgt, memory, tgt_mask=mask, tgt_is_causal=True), expected, atol=1e-5,
                                   rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_swapped_multihead_attention_on_the_triton_tier(dtype):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(256, 4, batch_first=True).to("cuda", dtype)
    x = torch.randn(4, 300, 256, device="cuda", dtype=dtype)
    mask = nn.Transformer.generate_square_subsequent_mask(300, device="cuda", dtype=dtype)
    expected = mha(x, x, x, attn_mask=mask, is_causal=True, need_weights=False)[0]
    assert tritonlab.swap(mha, backend="triton").changed == [""]
    got = mha(x, x, x, attn_mask=mask, is_causal=True, need_weights=False)[0]
    tol = 2e-2 if dtype == torch.float16 else 5e-2
    torch.testing.assert_close(got, expected, atol=tol, rtol=tol)


class _InPlaceAfterEachLayer(nn.Module):
    """Each swappable layer's output changed in place right after it, as VGG-style models
    do with nn.ReLU(inplace=True): a layer whose autograd.Function returns a view of its
    own result would make autograd refuse the in-place op."""

    def __init__(self):
        super().__init__()
        self.conv, self.linear = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(16, 8)
        self.drop, self.mha = nn.Dropout(0.5), nn.MultiheadAttention(8, 2, batch_first=True)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):  # (N, 3, 4, 4) -> (N, 2, 8)
        y = self.relu(self.conv(x))[:, :, :2, :2].flatten(1)
        y = self.relu(self.drop(self.linear(y))).reshape(-1, 2, 4).repeat(1, 1, 2)  # in place after dropout
        out = self.mha(y, y, y, need_weights=False)[0]
        return out.mul_(2)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("tier", ["naive", "reference", "triton"])
def test_an_in_place_op_after_each_layer_trains_as_torch_nn_does(tier, layout, request):
    if tier == "triton":
        request.getfixturevalue("triton_device")
    torch.manual_seed(0)
    ref = _InPlaceAfterEachLayer()
    lab = copy.deepcopy(ref)
    tritonlab.swap(lab, backend=tier)
    x = torch.randn(2, 3, 4, 4).to(memory_format=layout)
    for model in (ref, lab):
        model.drop.p = 0.0  # the masks differ between torch and the lab; the view need not
        model(x).square().sum().backward()
    for (name, a), b in zip(ref.named_parameters(), lab.parameters()):
        assert_close_to_scale(b.grad, a.grad, 1e-4, name)
    lab.drop.p = 0.5  # a real mask too: the in-place op must be allowed after a dropout
    lab(x).sum().backward()
