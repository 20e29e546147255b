"""GRU and LSTM on the triton tier (kernels/rnn.py through layers/functions/rnn.py):
forward and every gradient against torch.nn and the reference tier, both recurrence
variants ("step": a launch per step; "persistent": one launch per sequence), on odd
sizes under the interpreter; real sizes in fp16/bf16/fp32 on a GPU (pytest -m gpu)."""
import contextlib

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import tritonlab
from sm90 import compile_for_sm90
from parity import assert_matches_torch, run

CELLS = {"GRU": (tritonlab.GRU, nn.GRU), "LSTM": (tritonlab.LSTM, nn.LSTM)}
VARIANTS = ["step", "persistent"]

# name: (module kwargs, T, B (None: unbatched), initial state given). Under the
# interpreter the kernels use 16-wide blocks: H = 37 spans three hidden blocks and three
# K chunks, B = 17 two batch blocks.
CONFIGS = {
    "H5": (dict(input_size=3, hidden_size=5), 4, 2, False),
    "H13_h0": (dict(input_size=3, hidden_size=13), 6, 3, True),
    "I1_B1_T1": (dict(input_size=1, hidden_size=7), 1, 1, True),
    "T37_H2": (dict(input_size=3, hidden_size=2), 37, 2, True),
    "H37_B17": (dict(input_size=3, hidden_size=37), 3, 17, True),
    "layers3": (dict(input_size=3, hidden_size=7, num_layers=3), 5, 2, True),
    "no_bias": (dict(input_size=3, hidden_size=5, bias=False), 4, 2, True),
    "batch_first": (dict(input_size=3, hidden_size=5, batch_first=True), 4, 2, True),
    "bidir_layers2_no_h0": (dict(input_size=2, hidden_size=5, num_layers=2, bidirectional=True), 3, 2, False),
    "unbatched": (dict(input_size=3, hidden_size=5, num_layers=2), 4, None, True),
    "unbatched_bidir_no_h0": (dict(input_size=3, hidden_size=5, bidirectional=True), 4, None, False),
    "everything_eval": (dict(input_size=3, hidden_size=7, num_layers=2, bias=False, batch_first=True,
                             bidirectional=True, dropout=0.3), 5, 3, True),
}


@pytest.fixture(params=VARIANTS)
def variant(request, monkeypatch, on_triton_device):
    """Run the test with the module-wide recurrence variant set (restored after), and
    check that the kernels ran in that variant's mode: both variants computing alike
    proves nothing if one of them never ran."""
    from tritonlab.layers.functions import rnn
    monkeypatch.setattr(rnn, "variant", request.param)
    modes, real = [], rnn._mode
    monkeypatch.setattr(rnn, "_mode", lambda *a: modes.append(real(*a)) or modes[-1])
    yield request.param
    assert modes and set(modes) == {rnn._MODES[request.param]}, modes


def initial_state(cell, kwargs, batch, dtype, device=None):
    """h0 (GRU) or (h0, c0) (LSTM), each (layers * directions, [batch,] hidden), on
    `device` (None: torch's default device)."""
    layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    lead = (layers,) if batch is None else (layers, batch)
    h0 = torch.randn(*lead, kwargs["hidden_size"], dtype=dtype, device=device)
    if cell == "GRU":
        return h0
    return h0, torch.randn(*lead, kwargs["hidden_size"], dtype=dtype, device=device)


def make_inputs(cell, kwargs, steps, batch, with_state, dtype=torch.float32, device=None):
    if batch is None:
        x = torch.randn(steps, kwargs["input_size"], dtype=dtype, device=device)
    else:
        shape = (batch, steps) if kwargs.get("batch_first") else (steps, batch)
        x = torch.randn(*shape, kwargs["input_size"], dtype=dtype, device=device)
    return [x, initial_state(cell, kwargs, batch, dtype, device)] if with_state else [x]


def assert_tiers_match(module, inputs, tier, other, atol, rtol):
    """`module` on `tier` equals itself on `other`: forward, input and weight gradients."""
    with tritonlab.use_backend(other):
        ref_out, ref_in, ref_p, gout = run(module, inputs)
    with tritonlab.use_backend(tier):
        out, in_g, p_g, _ = run(module, inputs, gout)
    for a, b in zip(out + in_g, ref_out + ref_in):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
    for name in ref_p:
        torch.testing.assert_close(p_g[name], ref_p[name], atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch_float32(cell, config, variant):
    kwargs, steps, batch, with_state = CONFIGS[config]
    lab_cls, torch_cls = CELLS[cell]
    lab, ref = lab_cls(**kwargs).eval(), torch_cls(**kwargs).eval()  # eval: dropout off for parity
    assert_matches_torch(lab, ref, *make_inputs(cell, kwargs, steps, batch, with_state), tier="triton")


@pytest.mark.parametrize("config", ["H13_h0", "bidir_layers2_no_h0", "unbatched"])
@pytest.mark.parametrize("cell", CELLS)
def test_matches_reference_tier(cell, config, variant):
    kwargs, steps, batch, with_state = CONFIGS[config]
    lab = CELLS[cell][0](**kwargs)
    inputs = make_inputs(cell, kwargs, steps, batch, with_state)
    assert_tiers_match(lab, inputs, "triton", "reference", atol=1e-5, rtol=1e-5)


def _upcast(i):
    if isinstance(i, tuple):
        return tuple(_upcast(t) for t in i)
    return i.float()


@pytest.mark.parametrize("config", ["H13_h0", "H37_B17", "bidir_layers2_no_h0"])
@pytest.mark.parametrize("cell", CELLS)
def test_float16_matches_torch_float32(cell, config, variant):
    """fp16 weights and inputs against torch.nn in fp32 on the same (fp16-exact) values:
    the error is the kernels' fp16 storage of activations and gradients."""
    kwargs, steps, batch, with_state = CONFIGS[config]
    lab_cls, torch_cls = CELLS[cell]
    lab, ref = lab_cls(**kwargs, dtype=torch.float16), torch_cls(**kwargs)
    ref.load_state_dict({k: v.float() for k, v in lab.state_dict().items()})
    inputs = make_inputs(cell, kwargs, steps, batch, with_state, torch.float16)
    ref_out, ref_in, ref_p, gout = run(ref, [_upcast(i) for i in inputs])
    with tritonlab.use_backend("triton"):
        out, in_g, p_g, _ = run(lab, inputs, [g.half() for g in gout])
    for a, b in zip(out + in_g, ref_out + ref_in):
        assert a.dtype == torch.float16
        torch.testing.assert_close(a.float(), b, atol=2e-2, rtol=2e-2)
    for name in ref_p:
        torch.testing.assert_close(p_g[name].float(), ref_p[name], atol=3e-2, rtol=2e-2,
                                   msg=lambda m: f"{name}: {m}")


class Packed(nn.Module):
    """Pads -> packs (unsorted lengths) -> rnn -> pads again."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, lengths, hx=None):
        out, h_n = self.rnn(pack_padded_sequence(x, lengths, enforce_sorted=False), hx)
        return pad_packed_sequence(out)[0], h_n


@pytest.mark.parametrize("with_state", [False, True], ids=["no_h0", "h0"])
@pytest.mark.parametrize("cell", CELLS)
def test_packed_sequence(cell, with_state, variant):
    """Packed input: each step runs only the sequences still going; finished ones keep
    their state (forward) and pass their gradient through (backward)."""
    kwargs = dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True)
    lab_cls, torch_cls = CELLS[cell]
    inputs = [torch.randn(6, 5, 3), torch.tensor([3, 6, 1, 6, 2], device="cpu")]  # lengths: CPU, as torch asks
    if with_state:
        inputs.append(initial_state(cell, kwargs, 5, torch.float32))
    assert_matches_torch(Packed(lab_cls(**kwargs)), Packed(torch_cls(**kwargs)), *inputs, tier="triton")


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_in_training(cell, variant, monkeypatch):
    """Dropout between layers in train mode goes through the Triton dropout (issue 5:
    "dropout between layers (the Triton dropout)"), once per layer boundary: reproducible
    under a seed, different from eval, differentiable. Its Philox masks are not the
    reference tier's, so the gradients are checked against the reference tier run
    under the very masks the Triton dropout drew."""
    from tritonlab.layers.functions import softmax as functions
    drawn = []

    def spy(x, p, training=True):
        y = real(x, p, training)
        drawn.append((x.detach().clone(), y.detach().clone()))
        return y
    real = functions.dropout_triton
    monkeypatch.setattr(functions, "dropout_triton", spy)
    lab = CELLS[cell][0](3, 5, num_layers=3, dropout=0.5, backend="triton")
    x = torch.randn(4, 2, 3)
    torch.manual_seed(7)
    first = lab(x)[0]
    assert len(drawn) == 2 and all(x_.numel() == 4 * 2 * 5 for x_, _ in drawn)
    for inp, out in drawn:  # a real dropout: dropped or scaled by 1 / (1 - p)
        kept = out != 0
        torch.testing.assert_close(out[kept], inp[kept] * 2)
    torch.manual_seed(7)
    torch.testing.assert_close(lab(x)[0], first, atol=0, rtol=0)

    dout = torch.randn_like(first)
    first.backward(dout)
    triton_grads = [p.grad.clone() for p in lab.parameters()]
    lab.zero_grad()
    masks = iter([(out != 0) for _, out in drawn[:2]])
    lab.backend = "reference"
    with monkeypatch.context() as m:
        m.setattr("tritonlab.layers.rnn.dropout_reference", lambda x, p, training: x * next(masks) / (1 - p))
        out = lab(x)[0]
    torch.testing.assert_close(out, first, atol=1e-5, rtol=1e-5)
    out.backward(dout)
    for (name, p), g in zip(lab.named_parameters(), triton_grads):
        torch.testing.assert_close(g, p.grad, atol=1e-5, rtol=1e-4, msg=name)
    lab.backend = "triton"
    lab.eval()
    assert not torch.allclose(first, lab(x)[0])


def test_variant_chosen_per_call_and_automatically(on_triton_device):
    from tritonlab.kernels import rnn as kernels
    from tritonlab.layers.functions import rnn
    cpu = torch.device("cpu")
    assert rnn._mode("auto", 8, rnn.PERSISTENT_MAX_H, cpu) == kernels.PERSISTENT
    assert rnn._mode("auto", 8, rnn.PERSISTENT_MAX_H + 1, cpu) == kernels.STEP
    assert rnn._mode("persistent", 8, 4096, cpu) == kernels.PERSISTENT and rnn._mode("step", 8, 4, cpu) == kernels.STEP
    lab = tritonlab.LSTM(3, 5)
    x = torch.randn(4, 2, 3)
    outs = [rnn.lstm_triton(x, None, lab._weights(), variant=v)[0] for v in ("step", "persistent")]
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match=r"variant must be one of \('auto', 'step', 'persistent', "
                                         r"'persistent-grid'\), got 'fast'"):
        rnn.lstm_triton(x, None, lab._weights(), variant="fast")


def test_auto_on_a_gpu_takes_persistent_grid_where_its_programs_fit(monkeypatch):
    """On CUDA, auto is persistent-grid when every program fits on the SMs at once (up to
    PERSISTENT_MAX_H) and step otherwise; never the one-program persistent mode (7x
    slower than both at B8 H256 on an H200)."""
    from tritonlab.kernels import rnn as kernels
    from tritonlab.layers.functions import rnn
    cuda = torch.device("cuda")
    sms = 132
    monkeypatch.setattr(kernels, "INTERPRETED", False)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: type("P", (), {"multi_processor_count": sms}))
    assert rnn._mode("auto", 8, 256, cuda) == kernels.PERSISTENT_GRID    # 1 batch block x 16 hidden blocks
    assert rnn._mode("auto", 64, 64, cuda) == kernels.PERSISTENT_GRID
    assert rnn._mode("auto", 4096, 256, cuda) == kernels.STEP    # 128 batch blocks x 2 hidden blocks > 132 SMs
    assert rnn._mode("auto", 8, rnn.PERSISTENT_MAX_H + 1, cuda) == kernels.STEP  # past the measured sizes
    assert rnn._mode("step", 8, 256, cuda) == kernels.STEP


@pytest.mark.parametrize("cell", CELLS)
def test_layer_algo_picks_the_variant(cell, monkeypatch, on_triton_device):
    from tritonlab.layers.functions import rnn
    from tritonlab.layers.rnn import ALGOS
    assert ALGOS == rnn.VARIANTS  # the layer validates against the tier's own list
    seen = []
    original = getattr(rnn, f"{cell.lower()}_triton")
    monkeypatch.setattr(rnn, f"{cell.lower()}_triton", lambda *a, variant, **kw: seen.append(variant) or
                        original(*a, variant=variant, **kw))
    lab = getattr(tritonlab, cell)(3, 5, backend="triton", algo="step")
    ref = getattr(nn, cell)(3, 5)
    ref.load_state_dict(lab.state_dict())
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(lab(x)[0], ref(x)[0], atol=1e-5, rtol=1e-5)
    lab.algo = "persistent"
    lab(x)
    lab.algo = "auto"
    lab(x)
    assert seen == ["step", "persistent", None]  # auto: the module-wide default decides
    with pytest.raises(ValueError, match=r"algo must be one of .*got 'fast'"):
        getattr(tritonlab, cell)(3, 5, algo="fast")
    assert "algo" not in lab.state_dict() and getattr(tritonlab, cell)(3, 5, algo="step").algo == "step"


@pytest.mark.parametrize("hidden", [3, 13])
@pytest.mark.parametrize("cell", CELLS)
def test_persistent_grid_under_the_interpreter(cell, hidden, monkeypatch, triton_device):
    """The grid-barrier variant's code path with one hidden block (H <= 16: its barrier
    never waits, so the interpreter can run it), packed input included; with more hidden
    blocks the interpreter would wait forever, so it refuses."""
    if triton_device == "cuda":
        pytest.skip("interpreter-only check; the GPU test runs this variant at real sizes")
    from tritonlab.layers.functions import rnn
    monkeypatch.setattr(rnn, "variant", "persistent-grid")
    lab_cls, torch_cls = CELLS[cell]
    kwargs = dict(input_size=3, hidden_size=hidden, num_layers=2, bidirectional=True)
    x = torch.randn(5, 17, 3)
    assert_matches_torch(lab_cls(**kwargs), torch_cls(**kwargs), x, initial_state(cell, kwargs, 17, torch.float32),
                         tier="triton")
    inputs = [torch.randn(6, 5, 3), torch.tensor([3, 6, 1, 6, 2])]
    assert_matches_torch(Packed(lab_cls(**kwargs)), Packed(torch_cls(**kwargs)), *inputs, tier="triton")
    with pytest.raises(ValueError, match="needs all its programs resident at once; B=2, H=17"):
        lab_cls(3, 17, backend="triton")(torch.randn(4, 2, 3))


@pytest.mark.parametrize("cell", CELLS)
def test_refuses_what_it_cannot_do(cell, on_triton_device):
    lab = CELLS[cell][0](3, 5, dtype=torch.float64, backend="triton")
    with pytest.raises(TypeError, match="float32, float16 or bfloat16, got torch.float64"):
        lab(torch.randn(4, 2, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="cannot be differentiated again"):
        x = torch.randn(4, 2, 3, requires_grad=True)
        torch.autograd.grad(CELLS[cell][0](3, 5, backend="triton")(x)[0].sum(), x, create_graph=True)


def test_lstm_proj_size_is_not_implemented(on_triton_device):
    with pytest.raises(NotImplementedError, match="proj_size has no Triton kernel; use backend='reference'"):
        tritonlab.LSTM(3, 5, proj_size=2, backend="triton")(torch.randn(4, 2, 3))


# Compiled for an H100/H200 (sm_90) in a fresh interpreter-free process, no GPU needed:
# the interpreter never lowers a kernel, so a GPU-only compile error (the grid barrier's
# atomics and spin loop, cache modifiers, resident tiles, bf16 dots) shows here. Exit
# code 3: this triton has no (or another) ahead-of-time compile API.
_COMPILE_FOR_SM90 = r"""
from tritonlab.kernels import rnn

FP32_STATE = {"c_ptr", "dh_ptr", "dc_ptr"}


def build(fn, flags, dt, mode, packed, resident, block_k, block_b=16):
    consts = dict(flags, REVERSE=True, PACKED=packed, MODE=mode, PRECISION="ieee" if dt == "fp32" else "tf32",
                  W_RESIDENT=resident, BLOCK_B=block_b, BLOCK_H=16 if mode == rnn.PERSISTENT_GRID else 32,
                  BLOCK_K=block_k)
    if "W_T" in fn.arg_names:  # the forward kernels read W_hhᵀ exactly where the dot is ieee
        consts["W_T"] = dt == "fp32"
    ptrs = {n: "*fp32" if n in FP32_STATE else "*" + dt for n in fn.arg_names if n.endswith("_ptr")}
    ptrs.update(offs_ptr="*i32", sizes_ptr="*i32", sync_ptr="*i32")
    if not packed:
        consts.update(offs_ptr=None, sizes_ptr=None)
    if mode != rnn.PERSISTENT_GRID:
        consts.update(sync_ptr=None)
    sig = {n: "constexpr" if n in consts else ptrs.get(n, "i32") for n in fn.arg_names}
    src = ASTSource(fn, sig, {(fn.arg_names.index(n),): v for n, v in consts.items()},
                    {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in ptrs if n not in consts})
    return triton.compile(src, target=TARGET, options={"num_warps": 8, "num_stages": 2})


for fn, flags, gates in ((rnn._lstm_fwd_kernel, {}, 4), (rnn._gru_fwd_kernel, {"HAS_BHN": True}, 3),
                         (rnn._lstm_bwd_kernel, {}, 4), (rnn._gru_bwd_kernel, {}, 3)):
    resident_k = 4 * 256 if "bwd" in fn.fn.__name__ else 256  # H = 256: the whole contraction
    build(fn, flags, "bf16", rnn.PERSISTENT_GRID, True, True, resident_k)
    build(fn, flags, "fp16", rnn.PERSISTENT, True, False, 64)
    build(fn, flags, "fp16", rnn.STEP, False, False, 32, block_b=32)
    for mode, resident, block_k in ((rnn.PERSISTENT_GRID, True, resident_k), (rnn.PERSISTENT_GRID, False, 32),
                                    (rnn.STEP, False, 32)):
        # fp32 FFMA dots: no k-major W tile in shared memory (bank conflicts, see _transposed_w)
        ttgir = build(fn, flags, "fp32", mode, False, resident, block_k).asm["ttgir"]
        shared = [line for line in ttgir.splitlines() if line.startswith("#shared")]
        assert shared and not any("order = [0, 1]" in line for line in shared), (fn.fn.__name__, mode, shared)
"""


def test_kernels_compile_for_sm90(triton_device):
    compile_for_sm90(_COMPILE_FOR_SM90)

# ---- GPU: real sizes, fp32 (TF32 off), fp16, bf16 against cuDNN -----------------------

GPU_CASES = [(8, 64, 128, 256), (32, 128, 256, 512), (64, 64, 512, 1024), (17, 37, 100, 300)]  # B, T, I, H
GPU_TOL = {torch.float32: (2e-4, 1e-3), torch.float16: (3e-2, 3e-2), torch.bfloat16: (1.5e-1, 1e-1)}


@contextlib.contextmanager
def no_tf32():
    """fp32 in full precision on both sides: cuDNN's RNN and the Triton kernels/GEMMs
    (which follow torch.backends.cuda.matmul.allow_tf32)."""
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev


@pytest.mark.gpu
@pytest.mark.parametrize("gpu_variant", ["step", "persistent", "persistent-grid", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: "B{}_T{}_I{}_H{}".format(*c))
@pytest.mark.parametrize("cell", CELLS)
def test_gpu_matches_cudnn(cell, case, dtype, gpu_variant, monkeypatch):
    """Forward and every gradient against torch.nn on CUDA (cuDNN, TF32 off for fp32) in
    fp32, with the fp16/bf16 result compared to fp32 torch on the same values. Gradients
    compare relative to their own scale: weight gradients sum B*T products."""
    from tritonlab.layers.functions import rnn
    B, T, I, H = case
    if gpu_variant == "persistent" and H > 512:
        pytest.skip("one program per batch block walking H > 512 is needlessly slow")
    monkeypatch.setattr(rnn, "variant", gpu_variant)
    lab_cls, torch_cls = CELLS[cell]
    kwargs = dict(input_size=I, hidden_size=H, num_layers=2, bidirectional=True)
    lab = lab_cls(**kwargs, device="cuda", dtype=dtype)
    ref = torch_cls(**kwargs, device="cuda")
    ref.load_state_dict({k: v.float() for k, v in lab.state_dict().items()})
    inputs = make_inputs(cell, kwargs, T, B, True, dtype, "cuda")
    atol, rtol = GPU_TOL[dtype]
    with no_tf32():
        ref_out, ref_in, ref_p, gout = run(ref, [_upcast(i) for i in inputs])
        with tritonlab.use_backend("triton"):
            out, in_g, p_g, _ = run(lab, inputs, [g.to(dtype) for g in gout])
    got = out + in_g + [p_g[n] for n in ref_p]
    want = ref_out + ref_in + [ref_p[n] for n in ref_p]
    for a, b in zip(got, want):
        scale = b.abs().max().clamp_min(1.0)
        torch.testing.assert_close(a.float() / scale, b / scale, atol=atol, rtol=rtol)


@pytest.mark.gpu
@pytest.mark.parametrize("gpu_variant", ["step", "persistent", "persistent-grid"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("cell", CELLS)
def test_gpu_packed_matches_cudnn(cell, dtype, gpu_variant, monkeypatch):
    """Packed input at a real size: 32 sequences of lengths 1..96, H = 256."""
    from tritonlab.layers.functions import rnn
    monkeypatch.setattr(rnn, "variant", gpu_variant)
    kwargs = dict(input_size=64, hidden_size=256, num_layers=2, bidirectional=True)
    lab = Packed(CELLS[cell][0](**kwargs, device="cuda", dtype=dtype))
    ref = Packed(CELLS[cell][1](**kwargs, device="cuda"))
    ref.load_state_dict({k: v.float() for k, v in lab.state_dict().items()})
    lengths = torch.randint(1, 97, (32,))
    lengths[0] = 96
    inputs = [torch.randn(96, 32, 64, device="cuda", dtype=dtype), lengths]
    atol, rtol = GPU_TOL[dtype]
    with no_tf32():
        ref_out, ref_in, ref_p, gout = run(ref, [inputs[0].float(), lengths])
        with tritonlab.use_backend("triton"):
            out, in_g, p_g, _ = run(lab, inputs, [g.to(dtype) for g in gout])
    for a, b in zip(out + in_g[:1] + [p_g[n] for n in ref_p], ref_out + ref_in[:1] + [ref_p[n] for n in ref_p]):
        scale = b.abs().max().clamp_min(1.0)
        torch.testing.assert_close(a.float() / scale, b / scale, atol=atol, rtol=rtol)


@pytest.mark.gpu
@pytest.mark.parametrize("gpu_variant", ["step", "persistent-grid"])
@pytest.mark.parametrize("cell", CELLS)
def test_gpu_forward_replays_as_a_cuda_graph(cell, gpu_variant, monkeypatch):
    """The triton tier's forward captures as a CUDA graph (persistent-grid skips its
    barrier-flag readback there: a host sync, which capture forbids), and a replay on new
    input values equals an eager call. Warmed up first, as capture requires (Triton
    compiles on a first call)."""
    from tritonlab.layers.functions import rnn
    monkeypatch.setattr(rnn, "variant", gpu_variant)
    layer = CELLS[cell][0](64, 128, num_layers=2, bidirectional=True, device="cuda", backend="triton")
    x = torch.randn(16, 8, 64, device="cuda")
    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            layer(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = layer(x)[0]
        x.copy_(torch.randn_like(x))
        graph.replay()
        torch.testing.assert_close(captured, layer(x)[0])


@pytest.mark.gpu
@pytest.mark.parametrize("kwargs,dtype", [(dict(proj_size=16), torch.float32), ({}, torch.float64)],
                         ids=["proj_size", "float64"])
def test_gpu_auto_takes_reference_where_triton_has_no_kernel(kwargs, dtype):
    """On CUDA `auto` means triton; for proj_size and float64, which the kernels do not
    cover, it takes the reference tier instead of raising."""
    lab = tritonlab.LSTM(8, 32, **kwargs, device="cuda", dtype=dtype)
    ref = nn.LSTM(8, 32, **kwargs, device="cuda", dtype=dtype)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        assert_matches_torch(lab, ref, torch.randn(5, 3, 8, device="cuda", dtype=dtype), tier="auto",
                             atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
def test_bfloat16_on_cpu_is_refused_not_garbage(cell, triton_device):
    if triton_device == "cuda":
        pytest.skip("the interpreter's limit")
    layer = getattr(tritonlab, cell)(16, 8, backend="triton").to(torch.bfloat16)
    with pytest.raises(TypeError, match="interpreter has no bfloat16"):
        layer(torch.randn(3, 2, 16, dtype=torch.bfloat16))


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_forward_kernels_read_w_hh_transposed_exactly_where_the_dot_is_fp32_ffma(cell, monkeypatch,
                                                                                 on_triton_device):
    """W_hhᵀ (column-contiguous tiles, no shared-memory bank conflicts on the FFMA dot's
    reads) reaches the forward kernel for fp32 with TF32 off; W_hh itself for fp16 and
    for fp32 with TF32 on (tensor-core dots). The backward always gets W_hh."""
    from tritonlab.kernels import _host, rnn as kernels
    gates, launched = {"LSTM": 4, "GRU": 3}[cell], []
    real = kernels._launch

    def spy(kernel, tensors, flags, *rest):
        name = kernel.fn.__name__
        w = tensors[1] if "fwd" in name else tensors[0]  # the forwards take xp first, the backwards W_hh
        launched.append((name, tuple(w.shape), flags.get("W_T")))
        return real(kernel, tensors, flags, *rest)
    monkeypatch.setattr(kernels, "_launch", spy)
    for dtype, tf32, transposed in ((torch.float32, False, True), (torch.float32, True, False),
                                    (torch.float16, False, False)):
        monkeypatch.setattr(_host, "tf32_enabled", lambda kind="matmul", on=tf32: on)
        launched.clear()
        layer = CELLS[cell][0](3, 5, backend="triton", dtype=dtype)
        x = torch.randn(4, 2, 3, dtype=dtype).requires_grad_()
        layer(x)[0].sum().backward()
        fwd = [l for l in launched if "fwd" in l[0]]
        bwd = [l for l in launched if "bwd" in l[0]]
        assert fwd and bwd, launched
        w_shape = (5, gates * 5) if transposed else (gates * 5, 5)
        assert all(l[1] == w_shape and l[2] is transposed for l in fwd), (dtype, tf32, fwd)
        assert all(l[1] == (gates * 5, 5) and l[2] is None for l in bwd), (dtype, tf32, bwd)
