"""Conv2d's triton tier (implicit GEMM and im2col) against torch.nn.Conv2d and the
reference tier: forward and every gradient. Without a GPU the kernels run under the
Triton interpreter, so the shapes stay small (N <= 3, C <= 20, H, W <= 11)."""

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import test_conv
import tritonlab
from sm90 import compile_for_sm90
from parity import assert_matches_torch, run

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")

ALGOS = ["implicit", "im2col"]
CL = torch.channels_last
# fp16 results are compared with an fp32 torch conv of the same fp16 values: each output
# is one fp32 sum rounded to fp16 (weight gradients sum over N*P*Q terms, hence the atol)
FP16_TOL = dict(atol=2e-2, rtol=1e-2)
# beyond test_conv's cases: enough channels per group for the per-tap channel loop
# (FLAT_K_BELOW), stride 3 with dilation (taps that never map in dgrad), 1x1 strided
EXTRA = [
    ("c17_strided", dict(in_channels=17, out_channels=20, kernel_size=3, stride=2, padding=1), (2, 17, 7, 9)),
    ("stride3_dilated", dict(in_channels=4, out_channels=6, kernel_size=3, stride=3, padding=1, dilation=2),
     (2, 4, 9, 8)),
    ("k1x1_stride2", dict(in_channels=5, out_channels=3, kernel_size=1, stride=2), (2, 5, 7, 6)),
    ("groups_c16", dict(in_channels=32, out_channels=18, kernel_size=3, groups=2, padding=1), (1, 32, 5, 4)),
    # one NCHW image is an (H*W, C) matrix: the 1x1 conv runs on the plain GEMM
    ("k1x1_n1", dict(in_channels=5, out_channels=7, kernel_size=1), (1, 5, 3, 7)),
]
CASES = test_conv.CASES + EXTRA


@pytest.fixture
def tf32_flags():
    """set(cudnn, matmul): torch's two TF32 flags, restored after the test."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32

    def set_flags(cudnn, matmul):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul

    yield set_flags
    set_flags(*before)


def _x(shape, dtype=torch.float32, cl=False):
    x = torch.randn(shape, dtype=dtype)
    return x.contiguous(memory_format=CL) if cl and x.dim() == 4 else x


def _assert_three_agree(kwargs, x, algo, w_cl=False):
    """The triton tier equals torch.nn and the reference tier, forward and every
    gradient (fp32, atol 1e-5); the triton tier runs once."""
    lab = tritonlab.Conv2d(**kwargs, algo=algo)
    ref = nn.Conv2d(**kwargs)
    ref.load_state_dict(lab.state_dict())
    if w_cl:
        lab, ref = lab.to(memory_format=CL), ref.to(memory_format=CL)
    want_torch = run(ref, [x])
    with tritonlab.use_backend("reference"):
        want_reference = run(lab, [x], want_torch[3])
    with tritonlab.use_backend("triton"):
        got = run(lab, [x], want_torch[3])
    for want in (want_torch, want_reference):
        torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)
        assert got[2].keys() == want[2].keys()
        for name in want[2]:
            torch.testing.assert_close(got[2][name], want[2][name], atol=1e-5, rtol=1e-5,
                                       msg=lambda m: f"{name}: {m}")
    return got, want_torch


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("kwargs,shape", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_matches_torch_and_reference(kwargs, shape, algo, on_triton_device):
    _assert_three_agree(kwargs, _x(shape), algo)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("kwargs,shape,x_cl,w_cl", [c[1:] for c in test_conv.CHANNELS_LAST],
                         ids=[c[0] for c in test_conv.CHANNELS_LAST])
def test_channels_last(kwargs, shape, x_cl, w_cl, algo, on_triton_device):
    got, want = _assert_three_agree(kwargs, _x(shape, cl=x_cl), algo, w_cl)
    assert want[0][0].is_contiguous(memory_format=CL)  # the case really exercises channels_last
    assert got[0][0].stride() == want[0][0].stride()


def test_channels_last_input_gradient_keeps_layout(on_triton_device):
    """dx comes back in the input's layout, as torch's does."""
    x = _x((2, 17, 5, 6), cl=True).requires_grad_()
    tritonlab.Conv2d(17, 4, 3, backend="triton")(x).sum().backward()
    assert x.grad.is_contiguous(memory_format=CL)


@pytest.mark.parametrize("shape,cl", [((2, 5, 3, 7), True), ((1, 5, 3, 7), False)], ids=["nhwc", "nchw_n1"])
def test_1x1_takes_the_plain_gemm(shape, cl, monkeypatch, tf32_flags, on_triton_device):
    """A 1x1 stride-1 unpadded conv laid out as a matrix never reaches the conv kernel
    (in fp32 only while the GEMM's TF32 flag agrees with cuDNN's)."""
    from tritonlab.kernels import conv as kernels

    def refuse(*args, **kwargs):
        raise AssertionError("the 1x1 conv should have run on the plain GEMM")

    monkeypatch.setattr(kernels, "conv2d_fwd", refuse)
    tf32_flags(False, False)
    _assert_three_agree(dict(in_channels=5, out_channels=7, kernel_size=1), _x(shape, cl=cl), "implicit")


def test_1x1_float32_follows_cudnn_tf32_flag(monkeypatch, tf32_flags, on_triton_device):
    """cudnn.allow_tf32 != matmul.allow_tf32 (torch's defaults): an fp32 1x1 conv runs on
    the implicit kernel, which follows the cuDNN flag as torch's convs do; fp16 does not
    care and stays on the GEMM."""
    from tritonlab.kernels import conv as kernels
    from tritonlab.layers.functions.conv import conv2d_implicit
    calls = []
    launch = kernels.conv2d_fwd
    monkeypatch.setattr(kernels, "conv2d_fwd", lambda *a, **k: calls.append(a[0].dtype) or launch(*a, **k))
    tf32_flags(True, False)
    geometry = ((1, 1), ((0, 0), (0, 0)), (1, 1), 1)
    for dtype in (torch.float32, torch.float16):
        x = _x((2, 5, 3, 7), dtype, cl=True)
        w = torch.randn(7, 5, 1, 1, dtype=dtype)
        y = conv2d_implicit(x, w, None, *geometry)
        torch.testing.assert_close(y.float(), F.conv2d(x.float(), w.float()), **FP16_TOL)
    assert calls == [torch.float32]


def test_im2col_bytes():
    from tritonlab.layers.functions.conv import im2col_bytes
    conv = nn.Conv2d(64, 64, 3, padding=1)
    assert im2col_bytes(conv, (32, 64, 56, 56)) == 32 * 56 * 56 * 64 * 9 * 4
    assert im2col_bytes(conv, (32, 64, 56, 56), torch.bfloat16) == 32 * 56 * 56 * 64 * 9 * 2
    stem = tritonlab.Conv2d(3, 64, 7, stride=2, padding=3)
    assert im2col_bytes(stem, (1, 3, 224, 224)) == 112 * 112 * 3 * 49 * 4
    same = tritonlab.Conv2d(3, 4, (2, 4), padding="same", padding_mode="reflect")
    assert im2col_bytes(same, (2, 3, 5, 6)) == 2 * 5 * 6 * 3 * 8 * 4


def test_autotune_pruning(triton_device):
    """The GPU autotuner's config pruning (the interpreter never autotunes): no tile
    wider than the channels, none overflowing shared memory for the dtype."""
    from tritonlab.kernels import conv as kernels
    configs = kernels._configs(kernels._GEMM_SHAPES)
    prune = kernels._prune("x_ptr", "OG", "CG", "FLAT_K")

    def smem(c, size):
        return c.num_stages * size * c.kwargs["BLOCK_K"] * (c.kwargs["BLOCK_M"] + c.kwargs["BLOCK_N"])

    fp32, fp16 = torch.empty(1), torch.empty(1, dtype=torch.float16)
    kept = prune(configs, {"x_ptr": fp32, "OG": 64, "CG": 64}, FLAT_K=False)
    assert kept and all(c.kwargs["BLOCK_N"] <= 64 and c.kwargs["BLOCK_K"] <= 64 for c in kept)
    assert all(smem(c, 4) <= kernels._SMEM_BUDGET for c in kept)
    kept = prune(configs, {"x_ptr": fp16, "OG": 256, "CG": 256}, FLAT_K=False)
    assert any(c.kwargs["BLOCK_N"] == 256 for c in kept) and all(smem(c, 2) <= kernels._SMEM_BUDGET for c in kept)
    # the flattened K (an RGB stem: CG = 3) runs tiles of many taps: K is not capped by CG
    assert any(c.kwargs["BLOCK_K"] == 64 for c in prune(configs, {"x_ptr": fp16, "OG": 64, "CG": 3}, FLAT_K=True))


@pytest.mark.parametrize("flat_k_below", [0, 1 << 20], ids=["channel_loop", "flat_k"])
@pytest.mark.parametrize("case", ["k3x3", "everything", "depthwise_x2", "same_even_dilated"])
def test_both_forward_k_loops(case, flat_k_below, monkeypatch, on_triton_device):
    """The forward's two K loops (per tap over channel blocks; flattened (r, s, c)) on
    the same cases, whatever the channel count would pick."""
    from tritonlab.kernels import conv as kernels
    monkeypatch.setattr(kernels, "FLAT_K_BELOW", flat_k_below)
    _, kwargs, shape = next(c for c in CASES if c[0] == case)
    _assert_three_agree(kwargs, _x(shape), "implicit")


@pytest.mark.parametrize("sms", [0, 1000], ids=["no_split", "split"])
@pytest.mark.parametrize("case", ["k1x1", "k3x3", "everything", "c17_strided"])
def test_wgrad_split(case, sms, monkeypatch, triton_device):
    """The weight gradient with and without split-K over N*P*Q (partial sums + reduce)."""
    if triton_device == "cuda":
        pytest.skip("interpreter-sized: on a GPU a slice takes at least 512 rows of N*P*Q, so these "
                    "cases never split; test_gpu_resnet's larger ones do")
    from tritonlab.kernels import conv as kernels
    # 0 SMs: one slice whatever the tiles (a single output tile splits in two on 1 SM)
    monkeypatch.setattr(kernels, "_sm_count", lambda device: sms)
    splits, split = [], kernels._split

    def spy(*args):  # (caller, SPLIT) of each reduction cut
        cut = split(*args)
        splits.append((sys._getframe(1).f_code.co_name, cut[0]))
        return cut

    monkeypatch.setattr(kernels, "_split", spy)
    _, kwargs, shape = next(c for c in CASES if c[0] == case)
    _assert_three_agree(kwargs, _x(shape), "implicit")
    wgrad = [n for caller, n in splits if caller == "conv2d_wgrad"]
    assert wgrad and all((n > 1) == (sms > 0) for n in wgrad), splits


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", ["k3x3", "odd_7x11", "everything", "c17_strided", "k1x1", "no_bias"])
def test_float16(case, cl, algo, on_triton_device):
    _, kwargs, shape = next(c for c in CASES if c[0] == case)
    lab = tritonlab.Conv2d(**kwargs, dtype=torch.float16, backend="triton", algo=algo)
    ref = nn.Conv2d(**kwargs)
    ref.load_state_dict({k: v.float() for k, v in lab.state_dict().items()})
    x = _x(shape, torch.float16, cl)
    out, in_g, p_g, gout = run(lab, [x])
    assert out[0].dtype == torch.float16 and in_g[0].dtype == torch.float16
    ref_out, ref_in, ref_p, _ = run(ref, [x.float()], [g.float() for g in gout])
    torch.testing.assert_close(out[0].float(), ref_out[0], **FP16_TOL)
    torch.testing.assert_close(in_g[0].float(), ref_in[0], **FP16_TOL)
    for name in ref_p:
        torch.testing.assert_close(p_g[name].float(), ref_p[name], **FP16_TOL, msg=lambda m: f"{name}: {m}")


ACTS = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("activation", list(ACTS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fused_activation(activation, dtype, algo, on_triton_device):
    """act(conv(x) + b) in the GEMM epilogue, and its backward from the saved output."""
    from tritonlab.layers.functions import conv as functions
    fn = getattr(functions, f"conv2d_{algo}")
    x = _x((2, 4, 7, 6), dtype, cl=True).requires_grad_()
    w = torch.randn(6, 2, 3, 2, dtype=dtype, requires_grad=True)
    b = torch.randn(6, dtype=dtype, requires_grad=True)
    geometry = ((2, 1), ((1, 1), (0, 1)), (1, 2), 2)
    y = fn(x, w, b, *geometry, activation=activation)
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w, b), gy)

    x32, w32, b32 = (t.detach().float().requires_grad_() for t in (x, w, b))
    xp = F.pad(x32, (0, 1, 1, 1))  # (left, right, top, bottom): right 1, top and bottom 1
    want = ACTS[activation](F.conv2d(xp, w32, b32, stride=(2, 1), dilation=(1, 2), groups=2))
    want_grads = torch.autograd.grad(want, (x32, w32, b32), gy.float())
    tol = FP16_TOL if dtype == torch.float16 else dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y.float(), want, **tol)
    for got, ref in zip(grads, want_grads):
        torch.testing.assert_close(got.float(), ref, **tol)


@pytest.mark.parametrize("algo", ALGOS)
def test_partial_grads(algo, on_triton_device):
    """A first layer (input without grad), a frozen layer, and only the bias trained."""
    kwargs = dict(in_channels=3, out_channels=4, kernel_size=3, padding=1)
    lab, ref = tritonlab.Conv2d(**kwargs, backend="triton", algo=algo), nn.Conv2d(**kwargs)
    ref.load_state_dict(lab.state_dict())
    x = _x((2, 3, 5, 6))
    for m in (lab, ref):
        m(x).square().sum().backward()
    torch.testing.assert_close(lab.weight.grad, ref.weight.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lab.bias.grad, ref.bias.grad, atol=1e-5, rtol=1e-5)

    for m in (lab, ref):
        m.zero_grad(set_to_none=True)
        m.weight.requires_grad_(False)
        m(x).square().sum().backward()
    torch.testing.assert_close(lab.bias.grad, ref.bias.grad, atol=1e-5, rtol=1e-5)

    for m in (lab, ref):
        m.requires_grad_(False)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    lab(xs[0]).square().sum().backward()
    ref(xs[1]).square().sum().backward()
    torch.testing.assert_close(xs[0].grad, xs[1].grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("algo", ALGOS)
def test_empty_batch(algo, on_triton_device):
    layer = tritonlab.Conv2d(3, 4, 3, padding=1, backend="triton", algo=algo)
    x = torch.randn(0, 3, 5, 6, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert y.shape == (0, 4, 5, 6) and x.grad.shape == x.shape
    assert not layer.weight.grad.any() and not layer.bias.grad.any()


@pytest.mark.parametrize("algo", ALGOS)
def test_strided_view_input(algo, monkeypatch, on_triton_device):
    """A non-contiguous view (every other column) runs through its strides, no copy. The
    view is taken inside the module, so the layer gets it as it is."""
    from tritonlab.kernels import conv as kernels, im2col as unfold
    module, name = (kernels, "conv2d_fwd") if algo == "implicit" else (unfold, "im2col")
    seen, launch = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda x, *a, **k: seen.append(x.stride()) or launch(x, *a, **k))
    lab = tritonlab.Conv2d(3, 4, 3, padding=1, algo=algo, backend="triton")
    ref = nn.Conv2d(3, 4, 3, padding=1)
    ref.load_state_dict(lab.state_dict())
    base = torch.randn(2, 3, 6, 14)
    want = run(Strided(ref), [base])
    got = run(Strided(lab), [base], want[3])
    assert seen and seen[0] == base[..., ::2].stride(), seen
    for a, b in zip([*got[0], *got[1], *got[2].values()], [*want[0], *want[1], *want[2].values()]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


class Strided(nn.Module):
    """conv(x[..., ::2]): the view taken inside, so the conv sees its strides."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return self.conv(x[..., ::2])


def test_algo_is_keyword_only_and_checked():
    import inspect
    algo = inspect.signature(tritonlab.Conv2d.__init__).parameters["algo"]
    assert algo.kind is inspect.Parameter.KEYWORD_ONLY and algo.default == "implicit"
    assert "algo='im2col'" in repr(tritonlab.Conv2d(3, 4, 3, algo="im2col"))
    with pytest.raises(ValueError, match=r"algo must be one of \('implicit', 'im2col'\), got 'winograd'"):
        tritonlab.Conv2d(3, 4, 3, algo="winograd")
    # state_dict keys stay torch's
    assert tritonlab.Conv2d(3, 4, 3, algo="im2col").state_dict().keys() == nn.Conv2d(3, 4, 3).state_dict().keys()


@pytest.mark.parametrize("algo", ALGOS)
def test_refuses_what_it_cannot_do(algo, on_triton_device):
    with pytest.raises(TypeError, match=r"supports torch\.float32, torch\.float16, torch\.bfloat16, got torch\.float64"):
        tritonlab.Conv2d(3, 4, 3, dtype=torch.float64, backend="triton", algo=algo)(
            torch.randn(1, 3, 5, 5, dtype=torch.float64))
    if on_triton_device == "cpu":
        with pytest.raises(TypeError, match="interpreter .* has no bfloat16"):
            tritonlab.Conv2d(3, 4, 3, dtype=torch.bfloat16, backend="triton", algo=algo)(
                torch.randn(1, 3, 5, 5, dtype=torch.bfloat16))
    from tritonlab.layers.functions import conv as functions
    with pytest.raises(ValueError, match=r"activation must be one of .*got 'gelu'"):
        getattr(functions, f"conv2d_{algo}")(torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3, 3), None,
                                             (1, 1), ((0, 0), (0, 0)), (1, 1), 1, activation="gelu")


@pytest.mark.parametrize("algo", ALGOS)
def test_refuses_second_derivative(algo, on_triton_device):
    conv = tritonlab.Conv2d(2, 3, 3, backend="triton", algo=algo)
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    with pytest.raises(RuntimeError, match="cannot be differentiated again"):
        torch.autograd.grad(conv(x).sum(), x, create_graph=True)


# Compiled for an H100 (sm_90) through Triton's bundled ptxas, no GPU needed: the
# interpreter never lowers a kernel, so this is where a GPU-only compile error shows.
# It also pins the property the NHWC layout and the packed weights exist for: the
# 16-bit tile loads are vectorised, so the pipeliner keeps num_stages tiles in shared
# memory (2-byte gathers leave it at one) and the dot runs on wgmma.
_COMPILE_FOR_SM90 = r"""
from tritonlab.kernels import conv, im2col


def build(fn, ptrs, consts, ones=(), divisible=(), num_warps=4, num_stages=3):
    consts = {**consts, **{n: 1 for n in ones}}
    sig = {n: "constexpr" if n in consts else ptrs.get(n, "i32") for n in fn.arg_names}
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in [*ptrs, *divisible]}
    src = ASTSource(fn, sig, {(fn.arg_names.index(n),): v for n, v in consts.items()}, attrs)
    return triton.compile(src, target=TARGET,
                          options={"num_warps": num_warps, "num_stages": num_stages})


def fwd(dt, flat, precision="tf32", cfg=dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64)):
    ptrs = {n: "*" + dt for n in ("x_ptr", "w_ptr", "b_ptr", "y_ptr")}
    consts = dict(HAS_BIAS=True, ACT=3, FLAT_K=flat, PRECISION=precision, **cfg)
    return build(conv._conv_fwd_kernel, ptrs, consts, ("sxc", "swo", "syc"),
                 ("CG", "OG", "sxn", "sxh", "sxw", "swc", "swr", "sws", "syn", "syp", "syq"), 8, 3)


k = fwd("bf16", False)
assert "wgmma" in k.asm["ptx"]
assert k.metadata.shared >= 3 * 2 * 64 * (128 + 128), k.metadata.shared  # 3 stages of A and B tiles
fwd("fp16", True)
fwd("fp32", False, "ieee", dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32))
dg = build(conv._conv_dgrad_kernel,
           {"dy_ptr": "*bf16", "w_ptr": "*bf16", "dx_ptr": "*bf16", "tap_h_ptr": "*i32", "tap_w_ptr": "*i32"},
           dict(PRECISION="tf32", BLOCK_M=128, BLOCK_N=128, BLOCK_K=64), ("sdc", "swo", "sxc"),
           ("CG", "OG", "sdn", "sdp", "sdq", "swc", "swr", "sws", "sxn", "sxh", "sxw"), 8, 3)
assert "wgmma" in dg.asm["ptx"]
wg = build(conv._conv_wgrad_kernel, {"dy_ptr": "*bf16", "x_ptr": "*bf16", "dw_ptr": "*fp32"},
           dict(PRECISION="tf32", BLOCK_M=64, BLOCK_N=64, BLOCK_K=64), ("sdc", "sxc"),
           ("CG", "OG", "sdn", "sdp", "sdq", "sxn", "sxh", "sxw", "CHUNK"), 4, 4)
assert "wgmma" in wg.asm["ptx"]
build(conv._bias_grad_kernel, {"dy_ptr": "*bf16", "db_ptr": "*fp32"}, dict(BLOCK_M=64, BLOCK_O=64), ("sdc",))
build(conv._activation_grad_kernel, {"dy_ptr": "*bf16", "y_ptr": "*bf16", "dz_ptr": "*bf16"}, dict(ACT=2, BLOCK=1024))
build(im2col._im2col_kernel, {"x_ptr": "*bf16", "cols_ptr": "*bf16"}, dict(BLOCK_M=64, BLOCK_K=64), ("sxc",))
"""


def test_kernels_compile_for_sm90():
    compile_for_sm90(_COMPILE_FOR_SM90)


# ---- GPU tier: ResNet-50's convolutions at real sizes -----------------------------------

RESNET = [  # (id, Conv2d kwargs, input shape at batch 8)
    ("stem_7x7s2", dict(in_channels=3, out_channels=64, kernel_size=7, stride=2, padding=3), (8, 3, 224, 224)),
    ("1x1_256_64_56", dict(in_channels=256, out_channels=64, kernel_size=1, bias=False), (8, 256, 56, 56)),
    ("3x3_64_56", dict(in_channels=64, out_channels=64, kernel_size=3, padding=1, bias=False), (8, 64, 56, 56)),
    ("3x3s2_128_56", dict(in_channels=128, out_channels=128, kernel_size=3, stride=2, padding=1), (8, 128, 56, 56)),
    ("3x3_256_14", dict(in_channels=256, out_channels=256, kernel_size=3, padding=1), (8, 256, 14, 14)),
    ("1x1s2_1024_2048_14", dict(in_channels=1024, out_channels=2048, kernel_size=1, stride=2), (8, 1024, 14, 14)),
    ("3x3_512_7", dict(in_channels=512, out_channels=512, kernel_size=3, padding=1), (8, 512, 7, 7)),
    ("grouped_3x3", dict(in_channels=128, out_channels=128, kernel_size=3, padding=1, groups=32), (8, 128, 28, 28)),
]


def _relative_max_err(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-6)).item()


def _gpu_check(kwargs, shape, dtype, cl, algo, tol):
    """Forward and every gradient against cuDNN in fp32 with TF32 off on the same
    (rounded) weights, inputs and upstream gradient; errors relative to the largest
    value."""
    lab = tritonlab.Conv2d(**kwargs, device="cuda", dtype=dtype, backend="triton", algo=algo)
    ref = nn.Conv2d(**kwargs, device="cuda", dtype=torch.float32)
    ref.load_state_dict({k: v.float() for k, v in lab.state_dict().items()})
    x = torch.randn(shape, device="cuda", dtype=dtype)
    if cl:
        lab, ref = lab.to(memory_format=CL), ref.to(memory_format=CL)
        x = x.contiguous(memory_format=CL)
    out, in_g, p_g, gout = run(lab, [x])
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        ref_out, ref_in, ref_p, _ = run(ref, [x.float()], [g.float() for g in gout])
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert out[0].dtype == dtype and out[0].stride() == ref_out[0].stride()
    assert in_g[0].stride() == ref_in[0].stride()
    assert _relative_max_err(out[0], ref_out[0]) < tol
    assert _relative_max_err(in_g[0], ref_in[0]) < tol
    for name in ref_p:
        assert _relative_max_err(p_g[name], ref_p[name]) < tol, name


@pytest.mark.gpu
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kwargs,shape", [c[1:] for c in RESNET], ids=[c[0] for c in RESNET])
def test_gpu_resnet(kwargs, shape, dtype, cl, algo):
    # one rounding of the output/gradient to the dtype, fp32 accumulation
    _gpu_check(kwargs, shape, dtype, cl, algo, {torch.float16: 5e-3, torch.bfloat16: 3e-2}[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("matmul_tf32", [False, True], ids=["matmul_ieee", "matmul_tf32"])
@pytest.mark.parametrize("cudnn_tf32", [False, True], ids=["cudnn_ieee", "cudnn_tf32"])
@pytest.mark.parametrize("case", ["3x3_64_56", "1x1_256_64_56"])
def test_gpu_float32_follows_cudnn_tf32(case, cudnn_tf32, matmul_tf32, tf32_flags):
    """fp32 on the implicit path rounds to TF32 exactly when torch's convs do, whatever
    the matmul flag (which the 1x1 plain GEMM would follow)."""
    tf32_flags(cudnn_tf32, matmul_tf32)
    _, kwargs, shape = next(c for c in RESNET if c[0] == case)
    _gpu_check(kwargs, shape, torch.float32, True, "implicit", 5e-3 if cudnn_tf32 else 1e-4)


@pytest.mark.gpu
def test_gpu_auto_sends_float64_to_the_reference_tier():
    kwargs = dict(in_channels=8, out_channels=16, kernel_size=3, padding=1)
    lab = tritonlab.Conv2d(**kwargs, device="cuda", dtype=torch.float64)
    ref = nn.Conv2d(**kwargs, device="cuda", dtype=torch.float64)
    assert_matches_torch(lab, ref, torch.randn(2, 8, 9, 9, device="cuda", dtype=torch.float64), tier="auto")
