"""The flash-attention triton tier (the interpreter on CPU, or CUDA): forward, log-sum-exp
and dq/dk/dv against float64 math, torch's scaled_dot_product_attention and the
reference tier, on ragged lengths (1, 17, 40), head dims that are not powers of two,
Ev != E, causal with L != S, additive masks read through broadcast strides, fully
masked rows, grouped-query heads, strided inputs; dropout (reproducible, the keep
fraction, the backward regenerating the forward's mask); bad input; an sm_90 compile of
the GPU configs; and a GPU class at real sizes in 16-bit."""
import math

import pytest
import torch
import torch.nn.functional as F

import tritonlab
import tritonlab.kernels.attention as kernels
from sm90 import compile_for_sm90
from tritonlab.layers.functions import attention

TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.float16: dict(atol=4e-3, rtol=4e-3),
       torch.float64: dict(atol=1e-10, rtol=1e-10)}


def _qkv(B, Hq, Hkv, L, S, E, Ev, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(B * 1000 + Hq * 100 + L * 10 + S + E)
    return [torch.randn(*shape, generator=g).to(device, dtype)
            for shape in ((B, Hq, L, E), (B, Hkv, S, E), (B, Hkv, S, Ev))]


def _math(q, k, v, mask=None, is_causal=False, scale=None, keep=None, p=0.0):
    """out and lse in float64 by the textbook formula (a row with no visible key: 0 out,
    lse -inf); keep: the dropout mask applied to the probabilities."""
    q, k, v = (t.double() for t in (q, k, v))
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = q @ k.transpose(-1, -2) * (scale if scale is not None else 1 / math.sqrt(q.shape[-1]))
    if mask is not None:
        s = s + mask.double()
    if is_causal:
        s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril(), float("-inf"))
    lse = torch.logsumexp(s, -1)
    m = s.amax(-1, keepdim=True).detach()
    e = torch.exp(s - torch.where(torch.isfinite(m), m, 0))
    total = e.sum(-1, keepdim=True)
    probs = e / torch.where(total > 0, total, 1)
    if keep is not None:
        probs = probs * keep / (1 - p)
    return probs @ v, lse


def _grads(fn, inputs, dout):
    """fn(*leaves) and the gradients of (out * dout).sum() w.r.t. each input."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    out.backward(dout.to(out.dtype))
    return out.detach(), [leaf.grad for leaf in leaves]


def _check(q, k, v, mask=None, is_causal=False, scale=None, keep=None, p=0.0, tol=None):
    """The triton tier's out, lse, dq, dk, dv equal float64 math's (with `keep` as the
    dropout mask the tier drew, when p > 0)."""
    tol = tol or TOL[q.dtype]
    sc = scale if scale is not None else 1 / math.sqrt(q.shape[-1])
    # its own generator: the tier's dropout seed is the next draw from torch's
    dout = torch.randn(*q.shape[:3], v.shape[-1], generator=torch.Generator().manual_seed(5)).to(q.device, q.dtype)
    out, grads = _grads(lambda *t: attention.attention_triton(*t, mask, p, is_causal, sc), (q, k, v), dout)
    exp, exp_grads = _grads(lambda *t: _math(*t, mask, is_causal, sc, keep, p)[0],
                            [t.double() for t in (q, k, v)], dout.double())
    torch.testing.assert_close(out.double(), exp, **tol)
    for name, a, b in zip("qkv", grads, exp_grads):
        assert a.dtype == q.dtype and a.shape == b.shape
        torch.testing.assert_close(a.double(), b, **tol, msg=lambda m: f"d{name}: {m}")
    return out, grads


def _assert_lse(lse, expected):
    """The tier's lse is the math's, but +inf where the math's is log 0 = -inf (a row
    with no visible key: +inf makes the backward's exp(s - lse) exactly 0)."""
    empty = expected == float("-inf")
    assert torch.equal(lse == float("inf"), empty)
    torch.testing.assert_close(lse.double()[~empty], expected[~empty], atol=1e-5, rtol=1e-5)


def _lse(q, k, v, mask=None, is_causal=False, scale=0.25):
    return attention.attention_op(q, k, v, mask, 0.0, is_causal, scale, None)[1]


def test_lse_is_marked_non_differentiable(triton_device):
    """lse is an output for the backward only: through the op it requires no grad, eagerly
    or traced, so differentiating it is an error rather than a silent zero."""
    q, k, v = (t.requires_grad_() for t in _qkv(1, 2, 2, 5, 7, 16, 16, device=triton_device))
    out, lse = attention.attention_op(q, k, v, None, 0.0, False, 0.25, None)
    assert out.requires_grad and not lse.requires_grad
    traced = torch.compile(lambda *a: attention.attention_op(*a, None, 0.0, False, 0.25, None), backend="eager")
    out, lse = traced(q, k, v)
    assert out.requires_grad and not lse.requires_grad


# ---- without dropout ---------------------------------------------------------------------

CASES = {  # (B, Hq, Hkv, L, S, E, Ev), causal
    "ragged L<S, Ev>E": ((1, 2, 2, 17, 40, 16, 24), False),
    "L=S=1": ((2, 1, 1, 1, 1, 16, 16), False),
    "causal L>S, GQA": ((1, 2, 1, 40, 17, 24, 16), True),
    "causal L<S, S a whole number of key tiles": ((1, 2, 2, 17, 32, 24, 24), True),
    "causal L=S, 4 heads on 2": ((1, 4, 2, 40, 40, 16, 16), True),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_lse_and_gradients_match_float64_math(case, dtype, triton_device):
    shape, causal = CASES[case]
    q, k, v = _qkv(*shape, dtype=dtype, device=triton_device)
    _check(q, k, v, is_causal=causal)
    _, exp_lse = _math(q, k, v, is_causal=causal, scale=0.25)
    lse = _lse(q, k, v, is_causal=causal)
    assert lse.shape == q.shape[:3] and lse.dtype == torch.float32
    _assert_lse(lse, exp_lse)


def test_float64_and_a_head_dim_of_5(triton_device):
    q, k, v = _qkv(1, 2, 1, 9, 11, 5, 3, dtype=torch.float64, device=triton_device)
    _check(q, k, v, is_causal=True, scale=0.7)
    assert _lse(q, k, v).dtype == torch.float64


def test_gradcheck_float64(triton_device):
    q, k, v = (t.requires_grad_() for t in _qkv(1, 2, 1, 3, 5, 4, 3, dtype=torch.float64, device=triton_device))
    assert torch.autograd.gradcheck(lambda *t: attention.attention_triton(*t, None, 0.0, True, 0.5), (q, k, v))


def _masks(B, H, L, S):
    """Additive masks of q's dtype, each a broadcast view as the layer passes it."""
    padding = torch.zeros(B, 1, 1, S)
    padding[0, ..., S // 2:] = float("-inf")
    full = torch.randn(B, H, L, S)
    full[torch.rand(B, H, L, S, generator=torch.Generator().manual_seed(1)) < 0.4] = float("-inf")
    full[1, 0, 3] = float("-inf")  # one row sees no key at all
    rows = torch.randn(1, 1, L, S)
    return {"key padding (B,1,1,S)": padding.expand(B, H, L, S), "full": full,
            "one (L,S) for all": rows.expand(B, H, L, S)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("which", ["key padding (B,1,1,S)", "full", "one (L,S) for all"])
def test_additive_masks_through_broadcast_strides(which, dtype, triton_device):
    q, k, v = _qkv(2, 2, 1, 17, 40, 16, 24, dtype=dtype, device=triton_device)
    mask = _masks(2, 2, 17, 40)[which].to(triton_device, dtype)
    _check(q, k, v, mask)
    _assert_lse(_lse(q, k, v, mask), _math(q, k, v, mask, scale=0.25)[1])


def test_fully_masked_rows_give_zero_output_zero_gradients_and_no_nan(triton_device):
    q, k, v = _qkv(2, 2, 2, 17, 40, 16, 16, device=triton_device)
    mask = torch.zeros(2, 2, 17, 40, device=triton_device)
    mask[1] = float("-inf")   # a whole (batch, head) pair
    mask[0, 1, 5] = float("-inf")  # and one row of another
    out, (dq, dk, dv) = _check(q, k, v, mask)
    assert torch.equal(out[1], torch.zeros_like(out[1])) and torch.equal(out[0, 1, 5], torch.zeros(16, device=triton_device))
    assert torch.equal(dq[1], torch.zeros_like(dq[1])) and torch.equal(dq[0, 1, 5], torch.zeros(16, device=triton_device))
    assert torch.equal(dk[1], torch.zeros_like(dk[1])) and torch.equal(dv[1], torch.zeros_like(dv[1]))
    lse = _lse(q, k, v, mask)
    assert torch.isinf(lse[1]).all() and (lse[1] > 0).all() and torch.isfinite(lse[0, 0]).all()


def test_keys_past_every_causal_query_get_zero_gradient(triton_device):
    """Causal with S > L: keys j >= L are seen by no query (top-left alignment)."""
    q, k, v = _qkv(1, 2, 2, 17, 40, 16, 16, device=triton_device)
    _, (_, dk, dv) = _check(q, k, v, is_causal=True)
    assert torch.equal(dk[:, :, 17:], torch.zeros_like(dk[:, :, 17:]))
    assert torch.equal(dv[:, :, 17:], torch.zeros_like(dv[:, :, 17:]))


def test_strided_inputs_and_a_stride_0_upstream_gradient(triton_device):
    """q in (B, L, H, E) memory order, k with a last-dim stride of 2, v permuted from
    (E, S) storage: read in place (no copy), same results as the contiguous tensors."""
    B, H, L, S, E = 2, 2, 17, 40, 16
    g = torch.Generator().manual_seed(3)
    q = torch.randn(B, L, H, E, generator=g).to(triton_device).transpose(1, 2)
    k = torch.randn(B, H, S, 2 * E, generator=g).to(triton_device)[..., ::2]
    v = torch.randn(B, H, E, S, generator=g).to(triton_device).transpose(2, 3)
    assert not any(t.is_contiguous() for t in (q, k, v))
    _check(q, k, v, is_causal=True)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    attention.attention_triton(*leaves, None, 0.0, False, 0.25).sum().backward()  # dout: stride 0
    _, grads = _grads(lambda *t: _math(*t, scale=0.25)[0], [t.double() for t in (q, k, v)],
                      torch.ones(B, H, L, E, dtype=torch.float64, device=triton_device))
    for a, b in zip(leaves, grads):
        torch.testing.assert_close(a.grad.double(), b, atol=2e-5, rtol=2e-5)


def test_matches_torch_sdpa_and_the_reference_tier_through_the_functional(triton_device):
    """tritonlab.scaled_dot_product_attention on the triton tier: 3-D inputs, a bool mask,
    grouped-query heads; equal to torch and to the reference tier, forward and gradients."""
    g = torch.Generator().manual_seed(4)
    q = torch.randn(2, 4, 17, 24, generator=g).to(triton_device)
    k = torch.randn(2, 2, 40, 24, generator=g).to(triton_device)
    v = torch.randn(2, 2, 40, 16, generator=g).to(triton_device)
    mask = (torch.rand(17, 40, generator=g) > 0.3).to(triton_device)
    dout = torch.randn(2, 4, 17, 16, generator=g).to(triton_device)
    results = {}
    for name, fn in {
        "torch": lambda *t: F.scaled_dot_product_attention(*t, mask, enable_gqa=True),
        "triton": lambda *t: tritonlab.scaled_dot_product_attention(*t, mask, enable_gqa=True, backend="triton"),
        "reference": lambda *t: tritonlab.scaled_dot_product_attention(*t, mask, enable_gqa=True,
                                                                       backend="reference"),
    }.items():
        results[name] = _grads(fn, (q, k, v), dout)
    for other in ("torch", "reference"):
        torch.testing.assert_close(results["triton"][0], results[other][0], atol=2e-5, rtol=2e-5)
        for a, b in zip(results["triton"][1], results[other][1]):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("L,S", [(0, 5), (5, 0)])
def test_empty_lengths(L, S, triton_device):
    """No queries: empty out. No keys: every row is fully masked, so out and dq are 0."""
    q, k, v = (t.requires_grad_() for t in _qkv(1, 2, 1, L, S, 16, 8, device=triton_device))
    out = attention.attention_triton(q, k, v, None, 0.0, False, 0.25)
    assert out.shape == (1, 2, L, 8) and torch.equal(out, torch.zeros_like(out))
    out.backward(torch.ones_like(out))
    for t in (q, k, v):
        assert t.grad.shape == t.shape and torch.equal(t.grad, torch.zeros_like(t))


def test_saves_no_score_matrix(triton_device):
    """Saved for backward: q, k, v, out and a float per query row, nothing of size L x S."""
    q, k, v = (t.requires_grad_() for t in _qkv(1, 2, 2, 17, 40, 16, 16, device=triton_device))
    out = attention.attention_triton(q, k, v, None, 0.0, False, 0.25)
    saved = [t for t in out.grad_fn.saved_tensors if t is not None]
    assert max(t.numel() for t in saved) == max(q.numel(), k.numel(), v.numel(), out.numel())
    assert any(t.shape == (1, 2, 17) and t.dtype == torch.float32 for t in saved)  # the lse


def test_compiles_as_one_graph_with_the_eager_results(triton_device):
    """torch.compile (aot_eager, fullgraph: no break) over the custom ops, with dropout:
    the same output, mask and gradients as eager under the same seed."""
    q, k, v = (t.requires_grad_() for t in _qkv(1, 2, 1, 17, 40, 16, 24, device=triton_device))

    def fn(q, k, v):
        return attention.attention_triton(q, k, v, None, 0.3, True, 0.25)

    results = []
    for f in (fn, torch.compile(fn, backend="aot_eager", fullgraph=True)):
        torch.manual_seed(3)
        out = f(q, k, v)
        results.append((out, *torch.autograd.grad(out.square().sum(), (q, k, v))))
    for a, b in zip(*results):
        assert torch.equal(a, b)


# ---- dropout ---------------------------------------------------------------------------

def _dropped(q, k, p, is_causal=False, seed=0):
    """The probabilities after dropout, read off the output with v = identity (S == Ev)."""
    S = k.shape[2]
    eye = torch.eye(S, device=q.device, dtype=q.dtype).expand(k.shape[0], k.shape[1], S, S)
    torch.manual_seed(seed)
    return attention.attention_triton(q, k, eye, None, p, is_causal, 0.25)


def test_dropout_is_softmax_then_the_mask_scaled(triton_device):
    p = 0.3
    q, k, _ = _qkv(2, 2, 2, 40, 40, 16, 40, device=triton_device)
    dropped = _dropped(q, k, p)
    probs = _math(q, k, torch.eye(40).expand(2, 2, 40, 40).to(triton_device), scale=0.25)[0]
    keep = dropped != 0
    torch.testing.assert_close(dropped.double(), probs * keep / (1 - p), atol=1e-6, rtol=1e-5)
    n = keep.numel()
    assert abs(keep.double().mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    assert not torch.equal(keep[0, 0], keep[0, 1]) and not torch.equal(keep[0, 0], keep[1, 0])


def test_dropout_is_reproducible_under_manual_seed(triton_device):
    q, k, _ = _qkv(1, 2, 2, 17, 40, 16, 40, device=triton_device)
    assert torch.equal(_dropped(q, k, 0.5, seed=7), _dropped(q, k, 0.5, seed=7))
    assert not torch.equal(_dropped(q, k, 0.5, seed=7), _dropped(q, k, 0.5, seed=8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("shape,causal", [((1, 2, 1, 40, 40, 16, 24), True), ((2, 1, 1, 17, 33, 24, 16), False)],
                         ids=["causal GQA", "ragged"])
def test_dropout_backward_regenerates_the_forward_mask(shape, causal, dtype, triton_device):
    """The mask read off a v = identity run (same seed, and the mask does not depend on
    v) is the one both the forward and the backward of a run with real v use: its
    gradients equal autograd of the math with exactly that mask."""
    p = 0.4
    q, k, v = _qkv(*shape, dtype=dtype, device=triton_device)
    keep = _dropped(q, k, p, causal, seed=11) != 0
    visible = _math(q, k, torch.eye(k.shape[2]).expand(*k.shape[:3], -1).to(triton_device), is_causal=causal)[0] != 0
    assert 0.45 < (keep.sum() / visible.sum()).item() < 0.75
    torch.manual_seed(11)
    _check(q, k, v, is_causal=causal, scale=0.25, keep=keep.double(), p=p)


# ---- the mask's gradient ----------------------------------------------------------------

LEARNED = {  # (B, Hq, Hkv, L, S) -> a learned additive mask, as a leaf of the shape it is passed in
    "full (B,H,L,S)": lambda B, H, L, S: torch.randn(B, H, L, S),
    "key bias (B,1,1,S)": lambda B, H, L, S: torch.randn(B, 1, 1, S),
    "(L,S) for all, 2-D": lambda B, H, L, S: torch.randn(L, S),
    "per head (H,1,S), -inf in places": lambda B, H, L, S: torch.randn(H, 1, S).masked_fill(
        torch.rand(H, 1, S, generator=torch.Generator().manual_seed(2)) < 0.3, float("-inf")),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("p", [0.0, 0.4], ids=["no dropout", "dropout"])
@pytest.mark.parametrize("which", LEARNED)
def test_mask_gradient_matches_float64_math(which, p, dtype, triton_device):
    """A mask that requires grad gets dS summed to its own shape, with grouped-query heads
    and ragged lengths, dropout's regenerated keep-mask included; -inf entries get 0."""
    B, Hq, Hkv, L, S = 2, 2, 1, 17, 40
    q, k, v = _qkv(B, Hq, Hkv, L, S, 16, 24, dtype=dtype, device=triton_device)
    mask = LEARNED[which](B, Hq, L, S).to(triton_device, dtype)
    keep = (_dropped(q, k, p, seed=3) != 0).double() if p else None
    dout = torch.randn(B, Hq, L, 24, generator=torch.Generator().manual_seed(5)).to(triton_device, dtype)
    lab = mask.clone().requires_grad_()
    torch.manual_seed(3)
    attention.attention_triton(q, k, v, lab, p, False, 0.25).backward(dout)
    ref = mask.double().requires_grad_()
    _math(q, k, v, ref, scale=0.25, keep=keep, p=p)[0].backward(dout.double())
    assert lab.grad.shape == mask.shape and lab.grad.dtype == dtype
    assert torch.equal(lab.grad[mask == float("-inf")], torch.zeros_like(lab.grad[mask == float("-inf")]))
    torch.testing.assert_close(lab.grad.double(), ref.grad, **TOL[dtype])


def test_mask_gradient_of_an_expanded_view_and_gradcheck(triton_device):
    """The layer passes a stride-0 expanded view of the user's mask: autograd sums the
    kernel's full-shape dS back onto the leaf. And gradcheck in float64 with dropout off."""
    q, k, v = _qkv(1, 2, 2, 9, 12, 8, 8, dtype=torch.float64, device=triton_device)
    bias = torch.randn(9, 12, dtype=torch.float64, device=triton_device, requires_grad=True)
    attention.attention_triton(q, k, v, bias.expand(1, 2, 9, 12), 0.0, False, 0.5).sum().backward()
    expected = torch.autograd.grad(_math(q, k, v, bias.expand(1, 2, 9, 12), scale=0.5)[0].sum(), bias)[0]
    torch.testing.assert_close(bias.grad, expected, **TOL[torch.float64])
    small = [t[:, :, :n].clone().requires_grad_() for t, n in ((q, 3), (k, 5), (v, 5))]
    mask = torch.randn(1, 1, 3, 5, dtype=torch.float64, device=triton_device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k, v, m: attention.attention_triton(q, k, v, m, 0.0, False, 0.5),
                                    (*small, mask))


# ---- bad input ---------------------------------------------------------------------------

def test_bad_input_is_refused_with_what_was_expected(triton_device):
    q, k, v = _qkv(1, 2, 1, 5, 7, 16, 16, device=triton_device)
    call = attention.attention_triton
    with pytest.raises(TypeError, match="expects one of"):
        call(q.int(), k.int(), v.int(), None, 0.0, False, 0.25)
    with pytest.raises(TypeError, match="of one dtype"):
        call(q, k.half(), v, None, 0.0, False, 0.25)
    with pytest.raises(ValueError, match=r"4-D q .* got shape \(2, 5, 16\)"):
        call(q[0], k, v, None, 0.0, False, 0.25)
    with pytest.raises(ValueError, match=r"query heads \(3\) to be a multiple of the kv heads \(2\)"):
        call(torch.cat([q, q[:, :1]], 1), k.expand(1, 2, 7, 16), v.expand(1, 2, 7, 16), None, 0.0, False, 0.25)
    with pytest.raises(ValueError, match=r"k \(B, Hkv, S, E\)"):
        call(q, k[..., :8], v, None, 0.0, False, 0.25)
    with pytest.raises(ValueError, match="head dims up to 256"):
        call(torch.zeros(1, 1, 2, 300), torch.zeros(1, 1, 2, 300), torch.zeros(1, 1, 2, 4), None, 0.0, False, 1.0)
    with pytest.raises(ValueError, match=r"dropout_p in \[0, 1\)"):
        call(q, k, v, None, 1.0, False, 0.25)
    mask = torch.zeros(1, 2, 5, 7, device=triton_device)
    with pytest.raises(TypeError, match="mask of q's dtype"):
        call(q, k, v, mask.half(), 0.0, False, 0.25)
    with pytest.raises(ValueError, match=r"broadcastable to \(1, 2, 5, 7\)"):
        call(q, k, v, mask[..., :3], 0.0, False, 0.25)
    with pytest.raises(ValueError, match="not both"):
        call(q, k, v, mask, 0.0, True, 0.25)


def test_bfloat16_on_the_interpreter_is_refused():
    if torch.cuda.is_available():
        pytest.skip("the interpreter runs only without CUDA here")
    q = torch.zeros(1, 1, 2, 16, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="no bfloat16"):
        attention.attention_triton(q, q, q, None, 0.0, False, 1.0)


# ---- block sizes and the GPU compile, without a GPU ---------------------------------------

class _Tensor:
    def __init__(self, size):
        self.size = size

    def element_size(self):
        return self.size


@pytest.mark.parametrize("kind", ["fwd", "dkdv", "dq"])
def test_pruned_configs_fit_shared_memory_and_keep_the_causal_tiling(kind):
    configs = {"fwd": kernels._FWD_CONFIGS, "dkdv": kernels._DKDV_CONFIGS, "dq": kernels._DQ_CONFIGS}[kind]
    for e, size in ((64, 2), (128, 2), (256, 2), (128, 4), (256, 8)):
        kept = kernels._pruner(kind)(configs, {"E": e, "Ev": e, "q_ptr": _Tensor(size)})
        assert kept
        if (e, size) != (256, 8):  # fp64 at 256: nothing fits, the smallest is kept anyway
            assert all(kernels._cost(kind, c, e, e, size)[0] <= kernels._SMEM_BUDGET for c in kept)
    big = kernels._pruner(kind)(configs, {"E": 256, "Ev": 256, "q_ptr": _Tensor(2)})
    assert len(big) < len(configs)  # head dim 256 drops the largest tiles
    for c in configs:  # the causal split needs the wide side a multiple of the narrow one
        m, n = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        assert (n % m if kind == "dkdv" else m % n) == 0


_COMPILE_FOR_SM90 = r"""
import triton.language as tl
from tritonlab.kernels import attention as A

def build(kernel, dtype, consts, cfg):
    names = kernel.arg_names
    def kind(n):
        if n in consts:
            return "constexpr"
        if n == "seed_ptr":
            return "*i64"
        if n in ("lse_ptr", "delta_ptr"):
            return "*fp32"
        if n.endswith("_ptr"):
            return "*" + dtype
        return "fp32" if n in ("qk_scale", "scale", "p_drop", "drop_scale") else "i32"
    consts = dict(consts, **cfg.kwargs)
    src = ASTSource(kernel, {n: kind(n) for n in names}, {(names.index(k),): v for k, v in consts.items()})
    return triton.compile(src, target=TARGET, options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})

class T:
    def __init__(self, size): self.size = size
    def element_size(self): return self.size

KERNELS = {"fwd": (A._fwd_kernel, A._FWD_CONFIGS), "dkdv": (A._dkdv_kernel, A._DKDV_CONFIGS),
           "dq": (A._dq_kernel, A._DQ_CONFIGS)}
for dtype, size, e, flags, kinds in (
        ("bf16", 2, 128, dict(IS_CAUSAL=True, HAS_MASK=False, DROPOUT=False), ("fwd", "dkdv", "dq")),
        ("fp16", 2, 256, dict(IS_CAUSAL=False, HAS_MASK=True, DROPOUT=True), ("dkdv",))):
    consts = dict(flags, PRECISION="tf32", ACC=tl.float32, BLOCK_E=e, BLOCK_EV=e)
    for kind in kinds:
        kernel, configs = KERNELS[kind]
        extra = {"fwd": dict(EVEN_N=True), "dkdv": dict(MASK_GRAD=flags["HAS_MASK"])}.get(kind, {})
        cfg = A._pruner(kind)(configs, {"E": e, "Ev": e, "q_ptr": T(size)})[0]  # the largest tile that fits
        k = build(kernel, dtype, dict(consts, **extra), cfg)
        assert k.metadata.shared <= 227 * 1024, (kind, e, k.metadata.shared)
        if e == 128:
            assert "wgmma" in k.asm["ptx"], kind
"""


def test_kernels_compile_for_sm90():
    """The largest surviving tile of each kernel, bf16 at head dim 128 (on the tensor
    cores' wgmma), and dK/dV (the most resident state) in fp16 at head dim 256 with mask,
    its gradient and dropout, fit an H100/H200's shared memory."""
    compile_for_sm90(_COMPILE_FOR_SM90)


# ---- GPU: real sizes, 16-bit ------------------------------------------------------------

GPU_TOL = {torch.float16: dict(atol=1e-2, rtol=1e-2), torch.bfloat16: dict(atol=3e-2, rtol=3e-2)}


@pytest.mark.gpu
class TestGPU:
    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
    @pytest.mark.parametrize("causal", [False, True])
    @pytest.mark.parametrize("shape", [(2, 8, 8, 1024, 1024, 64), (4, 8, 2, 4096, 4096, 128),
                                       (2, 8, 8, 1000, 1500, 128)], ids=str)
    def test_matches_torch_sdpa(self, shape, causal, dtype):
        B, Hq, Hkv, L, S, E = shape
        q, k, v = _qkv(B, Hq, Hkv, L, S, E, E, dtype=dtype, device="cuda")
        dout = torch.randn(B, Hq, L, E, device="cuda", dtype=dtype)
        out, grads = _grads(lambda *t: attention.attention_triton(*t, None, 0.0, causal, E ** -0.5), (q, k, v), dout)
        exp, exp_grads = _grads(lambda *t: F.scaled_dot_product_attention(*t, is_causal=causal, enable_gqa=Hq != Hkv),
                                (q, k, v), dout)
        torch.testing.assert_close(out, exp, **GPU_TOL[dtype])
        for a, b in zip(grads, exp_grads):  # gradients summed over 4K rows: compare to their scale
            scale = b.abs().max().float().clamp_min(1)
            torch.testing.assert_close(a.float() / scale, b.float() / scale, **GPU_TOL[dtype])

    def test_float32_with_a_key_padding_mask(self):
        q, k, v = _qkv(2, 4, 4, 300, 700, 64, 64, device="cuda")
        mask = torch.zeros(2, 1, 1, 700, device="cuda")
        mask[0, ..., 500:] = float("-inf")
        tol = dict(atol=1e-2, rtol=1e-2) if torch.backends.cuda.matmul.allow_tf32 else dict(atol=1e-4, rtol=1e-4)
        _check(q, k, v, mask.expand(2, 4, 300, 700), tol=tol)

    def test_more_batch_heads_than_a_grid_axis_takes(self):
        """B·H = 70400, past the 65535 of a grid's second axis: every head is computed."""
        q, k, v = _qkv(4400, 16, 16, 8, 8, 16, 16, torch.float16, "cuda")
        dout = torch.randn_like(q)
        out, grads = _grads(lambda *t: attention.attention_triton(*t, None, 0.0, True, 0.25), (q, k, v), dout)
        exp, exp_grads = _grads(lambda *t: F.scaled_dot_product_attention(*t, is_causal=True, scale=0.25),
                                (q, k, v), dout)
        for a, b in zip((out, *grads), (exp, *exp_grads)):
            torch.testing.assert_close(a, b, **GPU_TOL[torch.float16])

    def test_learned_bias_gradient_in_float16(self):
        q, k, v = _qkv(2, 4, 4, 300, 700, 64, 64, torch.float16, "cuda")
        bias = torch.randn(1, 4, 300, 700, device="cuda").half().requires_grad_()
        dout = torch.randn(2, 4, 300, 64, device="cuda", dtype=torch.float16)
        attention.attention_triton(q, k, v, bias, 0.0, False, 0.125).backward(dout)
        ref = bias.detach().double().requires_grad_()
        _math(q, k, v, ref, scale=0.125)[0].backward(dout.double())
        scale = ref.grad.abs().max().clamp_min(1e-3)
        torch.testing.assert_close(bias.grad.double() / scale, ref.grad / scale, **GPU_TOL[torch.float16])

    def test_backward_is_deterministic_and_dropout_keeps_1_minus_p(self):
        q, k, v = (t.requires_grad_() for t in _qkv(2, 8, 2, 2048, 2048, 128, 128, torch.bfloat16, "cuda"))
        runs = []
        for _ in range(2):
            torch.manual_seed(0)
            out = attention.attention_triton(q, k, v, None, 0.1, True, 128 ** -0.5)
            runs.append((out, *torch.autograd.grad(out.sum(), (q, k, v))))
        for a, b in zip(*runs):
            assert torch.equal(a, b)
        keep = _dropped(q.detach()[:, :, :256], k.detach()[:, :, :256], 0.1) != 0
        assert abs(keep.double().mean().item() - 0.9) < 0.01
