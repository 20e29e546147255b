"""torch.autocast: each layer computes in the dtype torch's autocast gives the op it
replaces, returns what torch.nn returns (dtype and, within the autocast dtype's
rounding, value), takes the mixed dtypes autocast takes, and sends float32 gradients to
float32 parameters. The reference tier under CPU autocast (bfloat16), the triton tier
under the interpreter (float16: the interpreter has no bfloat16), CUDA in the GPU tier."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tritonlab
from parity import assert_close_to_scale, run


def _pairs():
    """name -> (tritonlab layer, torch.nn twin with the same weights, inputs)."""
    g = torch.Generator().manual_seed(0)
    seq = torch.randn(5, 3, 8, generator=g)
    cases = {
        "Linear": (lambda cls: cls(8, 6), (seq,)),
        "Conv2d": (lambda cls: cls(3, 4, 3, padding=1), (torch.randn(2, 3, 6, 6, generator=g),)),
        "LSTM": (lambda cls: cls(8, 6, num_layers=2), (seq,)),
        "GRU": (lambda cls: cls(8, 6), (seq,)),
        "MultiheadAttention": (lambda cls: cls(8, 2), (seq, seq, seq)),
        "Softmax": (lambda cls: cls(-1), (seq,)),
    }
    pairs = {}
    for name, (make, inputs) in cases.items():
        lab, ref = make(getattr(tritonlab, name)), make(getattr(nn, name))
        ref.load_state_dict(lab.state_dict())
        pairs[name] = (lab, ref, inputs)
    return pairs


PAIRS = _pairs()
# the autocast dtype's rounding, compared with torch's own autocast run (the orders of
# the sums differ, so the results differ by a few of bfloat16's 8-bit roundings)
BF16 = dict(atol=5e-2, rtol=5e-2)


def _assert_like_torch_under_autocast(lab, ref, inputs, device_type: str, tier: str) -> None:
    """Under bfloat16 autocast on `device_type`, `lab` on `tier` returns torch.nn's
    output dtypes, its outputs and input gradients within bfloat16 rounding, and
    float32 gradients for its float32 weights."""
    with torch.autocast(device_type, dtype=torch.bfloat16):
        expected, exp_in, exp_params, gout = run(ref, inputs)
        with tritonlab.use_backend(tier):
            got, got_in, got_params, _ = run(lab, inputs, gout)
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.float(), b.float(), **BF16)
    for a, b in zip(got_in, exp_in):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, **BF16)
    for p in exp_params:
        assert got_params[p].dtype == torch.float32, p
        torch.testing.assert_close(got_params[p], exp_params[p], **BF16, msg=lambda m: f"{p}: {m}")


# not GRU: on a CPU torch leaves nn.GRU in float32 (README), tritonlab's casts as on CUDA
@pytest.mark.parametrize("name", [n for n in PAIRS if n != "GRU"])
def test_reference_tier_under_cpu_autocast_returns_what_torch_returns(name):
    _assert_like_torch_under_autocast(*PAIRS[name], "cpu", "reference")


def test_a_bfloat16_input_meets_float32_weights_under_autocast_only():
    """Autocast casts both sides, as for nn.Linear; without it the mismatch is refused."""
    layer = tritonlab.Linear(8, 6, backend="reference")
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16
    with pytest.raises(TypeError, match="float32 weights but got a torch.bfloat16 input"):
        layer(x)


def test_the_functional_casts_query_key_value_and_mask():
    q, k, v = torch.randn(2, 2, 5, 8), torch.randn(2, 2, 7, 8).bfloat16(), torch.randn(2, 2, 7, 8)
    mask = torch.randn(5, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = tritonlab.scaled_dot_product_attention(q, k, v, mask, backend="reference")
        expected = F.scaled_dot_product_attention(q.bfloat16(), k, v.bfloat16(), mask.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), **BF16)


def test_a_broadcast_mask_stays_a_view_under_autocast(monkeypatch):
    """An (L, S) bias reaches the tier cast but still broadcast (stride 0 over batch and
    heads), not as a (B, H, L, S) copy, and its gradient is torch's."""
    from tritonlab.layers import attention

    strides, real = [], attention._ATTENTION["reference"]
    monkeypatch.setitem(attention._ATTENTION, "reference",
                        lambda q, k, v, mask, *rest: strides.append(mask.stride()) or real(q, k, v, mask, *rest))
    q = torch.randn(4, 8, 5, 16)
    bias = torch.randn(5, 5)
    lab, ref = bias.clone().requires_grad_(), bias.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tritonlab.scaled_dot_product_attention(q, q, q, lab, backend="reference").float().sum().backward()
        F.scaled_dot_product_attention(q, q, q, ref).float().sum().backward()
    assert strides[0][:2] == (0, 0)
    assert_close_to_scale(lab.grad, ref.grad, 5e-2)  # sums of 32 bfloat16 terms that cancel


def test_float64_passes_autocast_untouched():
    layer = tritonlab.Linear(8, 6, dtype=torch.float64, backend="reference")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(torch.randn(3, 8, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("name", ["Linear", "Conv2d", "LSTM", "GRU", "MultiheadAttention", "SoftmaxDropout"])
def test_triton_tier_under_autocast_runs_its_half_kernels(name, triton_device, monkeypatch):
    """Under float16 autocast the triton tier gets float16 tensors (its half kernels: a
    spy on every Triton launch sees them), with results within float16 rounding of the
    same layer on float32 inputs."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import KernelInterface
    launched = set()

    def spy(real):
        def getitem(kernel, grid):
            launch = real(kernel, grid)
            return lambda *args, **kw: launched.update(a.dtype for a in args if torch.is_tensor(a)) or launch(*args, **kw)
        return getitem
    for cls in (KernelInterface, InterpretedFunction):  # jit, autotuned, interpreted (its own in some versions)
        if "__getitem__" in vars(cls):
            monkeypatch.setattr(cls, "__getitem__", spy(vars(cls)["__getitem__"]))
    torch.manual_seed(0)
    layer = {"Linear": lambda: tritonlab.Linear(8, 6), "Conv2d": lambda: tritonlab.Conv2d(3, 4, 3),
             "LSTM": lambda: tritonlab.LSTM(8, 6), "GRU": lambda: tritonlab.GRU(8, 6),
             "MultiheadAttention": lambda: tritonlab.MultiheadAttention(8, 2),
             "SoftmaxDropout": lambda: tritonlab.SoftmaxDropout(0.0)}[name]().to(triton_device)
    x = torch.randn((2, 3, 6, 6) if name == "Conv2d" else (5, 3, 8), device=triton_device)
    inputs = (x, x, x) if name == "MultiheadAttention" else (x,)
    device_type = torch.device(triton_device).type
    want = torch.float16
    if name == "SoftmaxDropout":  # float16 in: float32 out under CUDA autocast, as it came on a CPU
        inputs, want = (x.half(),), torch.float32 if device_type == "cuda" else torch.float16
    with tritonlab.use_backend("triton"):
        with torch.autocast(device_type, dtype=torch.float16):
            out, _, grads, gout = run(layer, inputs)
        # the kernels run in the output's dtype: float16, not float32 kernels on upcast
        # inputs (CUDA autocast's softmax runs in float32, as torch's does)
        assert want in launched, launched
        expected, _, exp_grads, _ = run(layer, [i.float() for i in inputs], [g.float() for g in gout])
    assert out[0].dtype == want
    torch.testing.assert_close(out[0].float(), expected[0], atol=1e-2, rtol=1e-2)
    for p, g in grads.items():
        assert g.dtype == torch.float32, p
        torch.testing.assert_close(g, exp_grads[p], atol=2e-2, rtol=2e-2, msg=lambda m: f"{p}: {m}")


@pytest.mark.gpu
@pytest.mark.parametrize("name", PAIRS)
def test_gpu_triton_tier_under_cuda_autocast_returns_what_torch_returns(name):
    """bfloat16 autocast on CUDA: the dtypes torch.nn gives (softmax float32, the RNNs
    through cuDNN's autocast in bfloat16) and its values within bfloat16 rounding."""
    lab, ref, inputs = _pairs()[name]
    _assert_like_torch_under_autocast(lab.cuda(), ref.cuda(), tuple(i.cuda() for i in inputs), "cuda", "triton")
