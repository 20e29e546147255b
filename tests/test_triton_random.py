"""The triton tier against torch on randomly drawn geometries: each case is a seeded draw
(its id names the seed, so a failure reproduces) of shapes, strides, options and dtype
that the hand-picked cases of the other files do not enumerate. Forward and every
gradient against torch in float64; float16 within half-precision tolerances."""
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import tritonlab
from tritonlab.layers.attention import scaled_dot_product_attention

CASES = 24  # per op


def _tolerance(dtype, scale=1):
    atol = rtol = (2e-2 if dtype == torch.float16 else 1e-4) * scale
    return dict(atol=atol, rtol=rtol)


def _close(got, expected, dtype, what, scale=1):
    torch.testing.assert_close(got.double(), expected, **_tolerance(dtype, scale), msg=lambda m: f"{what}: {m}")


def _layout(t):
    """t's strides along its dims longer than 1 (a size-1 dim's stride is arbitrary)."""
    return [stride for stride, size in zip(t.stride(), t.shape) if size > 1]


@pytest.mark.parametrize("seed", range(CASES))
def test_conv2d(seed, triton_device):
    rnd = random.Random(seed)
    while True:  # redraw until torch takes the geometry (the kernel fits the padded input)
        groups = rnd.choice([1, 1, 2, 3])
        cin, cout = groups * rnd.randint(1, 3), groups * rnd.randint(1, 3)
        kernel, dilation = (rnd.randint(1, 4), rnd.randint(1, 4)), (rnd.randint(1, 2), rnd.randint(1, 2))
        padding = rnd.choice([0, 1, 2, (1, 0), "valid", "same"])
        stride = (1, 1) if padding == "same" else (rnd.randint(1, 3), rnd.randint(1, 3))
        mode = rnd.choice(["zeros"] * 4 + ["reflect", "circular", "replicate"])
        bias, channels_last = rnd.random() < 0.7, rnd.random() < 0.4
        n, h, w = rnd.randint(1, 3), rnd.randint(1, 9), rnd.randint(1, 9)
        dtype, algo = rnd.choice([torch.float32, torch.float32, torch.float16]), rnd.choice(["implicit", "im2col"])
        torch.manual_seed(seed)
        ref = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias, mode, dtype=torch.float64)
        x = torch.randn(n, cin, h, w, dtype=torch.float64)
        try:
            ref(x)
            break
        except RuntimeError:
            continue
    ours = tritonlab.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias, mode, backend="triton",
                            algo=algo, device=triton_device, dtype=dtype)
    ours.load_state_dict(ref.state_dict())
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x_ours = torch.empty_like(x, device=triton_device, dtype=dtype).copy_(x).requires_grad_()
    x.requires_grad_()
    y, y_ref = ours(x_ours), ref(x)
    assert _layout(y) == _layout(y_ref), "the output's memory layout differs from torch's"
    dy = torch.randn_like(y_ref)
    y.backward(dy.to(triton_device, dtype))
    y_ref.backward(dy)
    _close(y.cpu(), y_ref, dtype, "output")
    _close(x_ours.grad.cpu(), x.grad, dtype, "input gradient")
    _close(ours.weight.grad.cpu(), ref.weight.grad, dtype, "weight gradient", scale=10)  # sums of N*P*Q
    if bias:
        _close(ours.bias.grad.cpu(), ref.bias.grad, dtype, "bias gradient", scale=10)


@pytest.mark.parametrize("seed", range(CASES))
def test_scaled_dot_product_attention(seed, triton_device):
    rnd = random.Random(seed)
    batch, hkv, group = rnd.randint(1, 3), rnd.choice([1, 2]), rnd.choice([1, 1, 2, 3])
    L, S, E = rnd.randint(1, 70), rnd.randint(1, 70), rnd.choice([4, 8, 13, 16, 32, 64])
    Ev = rnd.choice([E, 5, 8, 16])
    causal = rnd.random() < 0.3
    mask_kind = None if causal else rnd.choice([None, None, "bool", "float", "bool (L, S)", "float (B, 1, 1, S)"])
    dtype, scale = rnd.choice([torch.float32, torch.float32, torch.float16]), rnd.choice([None, 0.3])
    transposed = rnd.random() < 0.3  # q, k, v as (B, L, H, E) memory transposed to (B, H, L, E)
    torch.manual_seed(seed)

    def tensor(heads, length, features):
        if transposed:
            return torch.randn(batch, length, heads, features, dtype=torch.float64).transpose(1, 2)
        return torch.randn(batch, heads, length, features, dtype=torch.float64)

    qkv = [tensor(hkv * group, L, E), tensor(hkv, S, E), tensor(hkv, S, Ev)]
    mask = {None: None, "bool": lambda: torch.rand(batch, hkv * group, L, S) > 0.3,
            "float": lambda: torch.randn(batch, hkv * group, L, S, dtype=torch.float64),
            "bool (L, S)": lambda: torch.rand(L, S) > 0.2,
            "float (B, 1, 1, S)": lambda: torch.randn(batch, 1, 1, S, dtype=torch.float64)}[mask_kind]
    mask = mask() if mask else None
    ours_in = [t.to(triton_device, dtype).requires_grad_() for t in qkv]
    ref_in = [t.requires_grad_() for t in qkv]
    ours_mask = None if mask is None else mask.to(triton_device, dtype if mask.is_floating_point() else torch.bool)
    out = scaled_dot_product_attention(*ours_in, attn_mask=ours_mask, is_causal=causal, scale=scale,
                                       enable_gqa=group > 1, backend="triton")
    ref = F.scaled_dot_product_attention(*ref_in, attn_mask=mask, is_causal=causal, scale=scale,
                                         enable_gqa=group > 1)
    ref = torch.nan_to_num(ref, nan=0.0)  # a row with every key masked out: torch nan, tritonlab 0
    dout = torch.randn_like(ref)
    out.backward(dout.to(triton_device, dtype))
    ref.backward(dout)
    _close(out.cpu(), ref, dtype, "output", scale=2)
    for name, a, b in zip("qkv", ours_in, ref_in):
        _close(a.grad.cpu(), torch.nan_to_num(b.grad), dtype, f"d{name}", scale=2)


@pytest.mark.parametrize("seed", range(CASES))
def test_rnn(seed, triton_device):
    rnd = random.Random(seed)
    kind = rnd.choice(["LSTM", "GRU"])
    I, H, layers, T, B = rnd.randint(1, 9), rnd.randint(1, 12), rnd.randint(1, 3), rnd.randint(1, 12), rnd.randint(1, 5)
    bidirectional, batch_first, bias = rnd.random() < 0.5, rnd.random() < 0.5, rnd.random() < 0.8
    unbatched = seed % 8 == 3 or rnd.random() < 0.15  # every eighth case at least
    packed, given_state = not unbatched and rnd.random() < 0.25, rnd.random() < 0.5
    dtype = rnd.choice([torch.float32, torch.float32, torch.float16])
    torch.manual_seed(seed)
    options = dict(bias=bias, batch_first=batch_first, bidirectional=bidirectional)
    ref = getattr(nn, kind)(I, H, layers, dtype=torch.float64, **options)
    ours = getattr(tritonlab, kind)(I, H, layers, backend="triton", device=triton_device, dtype=dtype, **options)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn((T, I) if unbatched else (B, T, I) if batch_first else (T, B, I), dtype=torch.float64)
    state_shape = (layers * (1 + bidirectional), *(() if unbatched else (B,)), H)
    state = [torch.randn(state_shape, dtype=torch.float64) for _ in range(2 if kind == "LSTM" else 1)]
    lengths = [T] + sorted((rnd.randint(1, T) for _ in range(B - 1)), reverse=True)

    def run(module, x, state):
        inputs = pack_padded_sequence(x, lengths, batch_first=batch_first) if packed else x
        hx = None if not given_state else tuple(state) if kind == "LSTM" else state[0]
        out, final = module(inputs, hx)
        if packed:
            out = pad_packed_sequence(out, batch_first=batch_first)[0]
        return [out, *(final if kind == "LSTM" else (final,))]

    ref_in = [t.requires_grad_() for t in (x, *state)]
    ours_in = [t.detach().to(triton_device, dtype).requires_grad_() for t in ref_in]
    got, expected = run(ours, ours_in[0], ours_in[1:]), run(ref, ref_in[0], ref_in[1:])
    grads = [torch.randn_like(e) for e in expected]
    torch.autograd.backward(got, [g.to(triton_device, dtype) for g in grads])
    torch.autograd.backward(expected, grads)
    for name, a, b in zip(["output", "h_n", "c_n"], got, expected):
        _close(a.cpu(), b, dtype, name, scale=1.5)
    for name, a, b in zip(["dx", "dh0", "dc0"], ours_in, ref_in):
        if given_state or name == "dx":
            _close(a.grad.cpu(), b.grad, dtype, name, scale=1.5)
    for (name, p), p_ref in zip(ours.named_parameters(), ref.parameters()):
        _close(p.grad.cpu(), p_ref.grad, dtype, name, scale=15)


def _strided(rnd, shape):
    """A float64 tensor of `shape`: contiguous, transposed memory or every other element."""
    kind = rnd.choice(["contiguous", "transposed", "every other"])
    if kind == "transposed" and len(shape) >= 2:
        return torch.randn(shape[::-1], dtype=torch.float64).permute(*reversed(range(len(shape))))
    if kind == "every other":
        return torch.randn([2 * s for s in shape], dtype=torch.float64)[tuple(slice(None, None, 2) for _ in shape)]
    return torch.randn(shape, dtype=torch.float64)


@pytest.mark.parametrize("seed", range(CASES))
def test_pointwise_softmax_and_linear_on_any_strides(seed, triton_device):
    """The layers take the input's strides as they are (float32 and float16 keep them:
    the copy below is empty_strided)."""
    rnd = random.Random(seed)
    op = rnd.choice(["relu", "sigmoid", "tanh", "softmax", "linear", "linear+activation"])
    shape = [rnd.randint(1, 9) for _ in range(rnd.randint(1, 4))]
    if seed % 6 == 5:  # every sixth case: long rows, one block per row and the looped (online) kernel
        op, shape = "softmax", [rnd.randint(1, 3), [1000, 5000, 33000][seed // 6 % 3]]
    dtype = rnd.choice([torch.float32, torch.float32, torch.float16])
    x = _strided(rnd, shape)
    ours_x = torch.empty_strided(x.shape, x.stride(), dtype=dtype, device=triton_device).copy_(x).requires_grad_()
    x.requires_grad_()
    torch.manual_seed(seed)
    params = []
    if op in ("relu", "sigmoid", "tanh"):
        y = {"relu": tritonlab.ReLU, "sigmoid": tritonlab.Sigmoid, "tanh": tritonlab.Tanh}[op](backend="triton")(ours_x)
        y_ref = getattr(torch, op)(x)
    elif op == "softmax":
        dim = -1 if shape[-1] >= 1000 else rnd.randrange(-len(shape), len(shape))
        y, y_ref = tritonlab.Softmax(dim, backend="triton")(ours_x), torch.softmax(x, dim)
    else:
        activation = rnd.choice(["relu", "sigmoid", "tanh"]) if op == "linear+activation" else None
        out_features = rnd.randint(1, 20)
        layer = (tritonlab.Linear(shape[-1], out_features, bias=rnd.random() < 0.7, backend="triton")
                 if activation is None else
                 tritonlab.LinearActivation(shape[-1], out_features, activation, backend="triton"))
        layer = layer.to(triton_device, dtype)
        params = [(layer.weight, layer.weight.detach().cpu().double().requires_grad_())]
        if layer.bias is not None:
            params.append((layer.bias, layer.bias.detach().cpu().double().requires_grad_()))
        y = layer(ours_x)
        y_ref = F.linear(x, *(p for _, p in params))
        y_ref = getattr(torch, activation)(y_ref) if activation else y_ref
    assert y.shape == y_ref.shape and y.dtype == dtype
    dy = torch.randn_like(y_ref)
    y.backward(dy.to(triton_device, dtype))
    y_ref.backward(dy)
    _close(y.cpu(), y_ref, dtype, "output")
    _close(ours_x.grad.cpu(), x.grad, dtype, "input gradient")
    for (p, p_ref), name in zip(params, ["weight gradient", "bias gradient"]):
        _close(p.grad.cpu(), p_ref.grad, dtype, name, scale=10)
