"""scaled_dot_product_attention and MultiheadAttention on every tier against torch:
forward and every gradient, masks, causal, grouped-query heads, dropout, bad input."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tritonlab
from parity import assert_matches_torch

TIERS = ["naive", "reference"]
TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.float64: dict(atol=1e-10, rtol=1e-10)}


def _leaves(*ts):
    return [t.detach().clone().requires_grad_(t.is_floating_point()) if isinstance(t, torch.Tensor) else t
            for t in ts]


def assert_sdpa_matches(tier, q, k, v, attn_mask=None, tol=None, **kw):
    """The functional on `tier` equals torch's: output and the gradients of q, k, v and a
    float mask."""
    tol = tol or TOL[q.dtype]
    grad_mask = attn_mask is not None and attn_mask.is_floating_point()
    ref = _leaves(q, k, v, attn_mask if grad_mask else None)
    lab = _leaves(q, k, v, attn_mask if grad_mask else None)
    mask_ref = ref[3] if grad_mask else attn_mask
    mask_lab = lab[3] if grad_mask else attn_mask
    expected = F.scaled_dot_product_attention(*ref[:3], mask_ref, **kw)
    out = tritonlab.scaled_dot_product_attention(*lab[:3], mask_lab, backend=tier, **kw)
    torch.testing.assert_close(out, expected, **tol)
    g = torch.randn_like(expected)
    expected.backward(g)
    out.backward(g)
    for name, a, b in zip("qkvm", lab, ref):
        if b is not None:
            assert torch.isfinite(a.grad).all(), name
            torch.testing.assert_close(a.grad, b.grad, **tol, msg=lambda m: f"grad {name}: {m}")


def qkv(B, H, L, S, E, Ev=None, Hkv=None, dtype=torch.float64, lead=None):
    lead = (B, H) if lead is None else lead
    kv_lead = lead if Hkv is None else (*lead[:-1], Hkv)
    return (torch.randn(*lead, L, E, dtype=dtype), torch.randn(*kv_lead, S, E, dtype=dtype),
            torch.randn(*kv_lead, S, Ev or E, dtype=dtype))


# ---- the functional against torch ----------------------------------------------------

# (B, H, L, S, E, Ev): one-element sequences, odd lengths, E != Ev
SHAPES = [(1, 1, 1, 1, 8, 8), (2, 3, 17, 33, 8, 8), (1, 2, 17, 1, 24, 5), (2, 1, 5, 33, 24, 24), (1, 2, 1, 17, 8, 3)]


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_shapes(shape, tier):
    assert_sdpa_matches(tier, *qkv(*shape))


@pytest.mark.parametrize("tier", TIERS)
def test_float32(tier):
    assert_sdpa_matches(tier, *qkv(2, 2, 9, 13, 16, dtype=torch.float32), is_causal=True)


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("L,S", [(6, 4), (4, 6), (5, 5)])
def test_causal(L, S, tier):
    """torch's top-left alignment: query i sees keys 0..i, also when L != S."""
    assert_sdpa_matches(tier, *qkv(2, 2, L, S, 8), is_causal=True)


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("lead", [(), (3,), (2, 1, 3)], ids=["2d", "3d", "5d"])
def test_leading_dims(lead, tier):
    q, k, v = qkv(0, 0, 4, 5, 8, lead=lead)
    assert_sdpa_matches(tier, q, k, v)
    assert tritonlab.scaled_dot_product_attention(q, k, v, backend=tier).shape == (*lead, 4, 8)


@pytest.mark.parametrize("tier", TIERS)
def test_batch_dims_broadcast(tier):
    """key/value shared by every batch element (size 1) broadcast as torch does."""
    q, _, _ = qkv(3, 2, 4, 5, 8)
    _, k, v = qkv(1, 2, 4, 5, 8)
    assert_sdpa_matches(tier, q, k, v)


MASKS = {
    "bool (L, S)": lambda B, H, L, S: torch.rand(L, S) > 0.3,
    "bool key padding (B, 1, 1, S)": lambda B, H, L, S: torch.rand(B, 1, 1, S) > 0.4,
    "float (B, H, L, S)": lambda B, H, L, S: torch.randn(B, H, L, S, dtype=torch.float64),
    "float with -inf (1, L, S)": lambda B, H, L, S: torch.randn(1, L, S, dtype=torch.float64).masked_fill(
        torch.rand(1, L, S) > 0.6, float("-inf")),
}


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("mask", MASKS, ids=str)
def test_masks(mask, tier):
    B, H, L, S = 2, 3, 5, 7
    assert_sdpa_matches(tier, *qkv(B, H, L, S, 8), MASKS[mask](B, H, L, S))


@pytest.mark.parametrize("tier", TIERS)
def test_fully_masked_rows_give_zero(tier):
    """A query with every key masked out outputs 0 and passes finite (zero) gradients,
    as torch's CPU path does; rows beside it are unaffected."""
    q, k, v = qkv(1, 2, 4, 6, 8)
    mask = torch.rand(4, 6) > 0.3
    mask[2] = False
    assert_sdpa_matches(tier, q, k, v, mask)
    out = tritonlab.scaled_dot_product_attention(q, k, v, mask, backend=tier)
    assert (out[:, :, 2] == 0).all()
    assert (out[:, :, 0] != 0).any()


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("hkv", [1, 2])
def test_grouped_query(hkv, tier):
    q, k, v = qkv(2, 4, 5, 7, 8, Hkv=hkv)
    assert_sdpa_matches(tier, q, k, v, enable_gqa=True)
    assert_sdpa_matches(tier, q, k, v, torch.rand(5, 7) > 0.3, enable_gqa=True)


@pytest.mark.parametrize("tier", TIERS)
def test_scale(tier):
    assert_sdpa_matches(tier, *qkv(1, 2, 3, 4, 8), scale=0.7)


@pytest.mark.parametrize("tier", TIERS)
def test_empty_sequences(tier):
    for L, S in ((0, 4), (3, 0)):
        assert_sdpa_matches(tier, *qkv(1, 2, L, S, 8))


@pytest.mark.filterwarnings("ignore:Input #.* is not a double precision")
@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradcheck(tier, dtype):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 3, 4, generator=gen, dtype=dtype, requires_grad=True) for _ in range(3))
    mask = torch.randn(3, 3, generator=gen, dtype=dtype, requires_grad=True)

    def f(q, k, v, mask):
        return tritonlab.scaled_dot_product_attention(q, k, v, mask, backend=tier)

    loose = dict(eps=1e-3, atol=1e-2, rtol=1e-2) if dtype == torch.float32 else {}
    assert torch.autograd.gradcheck(f, (q, k, v, mask), **loose)


def test_second_derivatives():
    """The naive tier is autograd all the way (gradgradcheck passes); the reference
    tier's hand-written backward refuses create_graph=True with an error saying so."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradgradcheck(
        lambda q, k, v: tritonlab.scaled_dot_product_attention(q, k, v, is_causal=True, backend="naive"), (q, k, v))
    out = tritonlab.scaled_dot_product_attention(q, k, v, backend="reference")
    with pytest.raises(RuntimeError, match="cannot be differentiated again.*backend='naive'"):
        torch.autograd.grad(out.sum(), q, create_graph=True)


def test_compiles_without_graph_breaks():
    """The functional and MultiheadAttention's fast path trace whole (fullgraph) and give
    eager's result, dropout mask included."""
    mha = tritonlab.MultiheadAttention(8, 2, dropout=0.3, batch_first=True)
    causal = nn.Transformer.generate_square_subsequent_mask(5)

    def f(x, q):
        out = mha(x, x, x, attn_mask=causal, is_causal=True, need_weights=False)[0]
        return out.sum() + tritonlab.scaled_dot_product_attention(q, q, q, dropout_p=0.2, enable_gqa=True).sum()

    x, q = torch.randn(2, 5, 8), torch.randn(2, 3, 4, 8)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    torch.manual_seed(0)
    expected = f(x, q)
    torch.manual_seed(0)
    torch.testing.assert_close(compiled(x, q), expected)


# ---- dropout -------------------------------------------------------------------------

def _probs_through(tier, p, B=2, H=4, L=16, S=64):
    """Post-dropout probabilities read through the functional: q = 0 makes every
    probability 1/S, and v = the identity copies them to the output."""
    q = torch.zeros(B, H, L, 8)
    k = torch.randn(B, H, S, 8)
    v = torch.eye(S).expand(B, H, S, S)
    return tritonlab.scaled_dot_product_attention(q, k, v, dropout_p=p, backend=tier), S


@pytest.mark.parametrize("tier", TIERS)
def test_dropout_statistics(tier):
    out, S = _probs_through(tier, 0.3)
    zero = (out == 0).float().mean().item()
    assert abs(zero - 0.3) < 0.03, zero
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (S * 0.7)))


@pytest.mark.parametrize("tier", TIERS)
def test_dropout_reproducible(tier):
    torch.manual_seed(7)
    a, _ = _probs_through(tier, 0.5, B=1, H=2, L=4, S=16)
    torch.manual_seed(7)
    b, _ = _probs_through(tier, 0.5, B=1, H=2, L=4, S=16)
    c, _ = _probs_through(tier, 0.5, B=1, H=2, L=4, S=16)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_dropout_zero_is_identity():
    q, k, v = qkv(2, 2, 5, 6, 8)
    torch.testing.assert_close(tritonlab.scaled_dot_product_attention(q, k, v, dropout_p=0.0),
                               F.scaled_dot_product_attention(q, k, v), **TOL[q.dtype])


def test_dropout_naive_equals_reference():
    """Both tiers draw the same keep-mask from one seed: forward and gradients agree."""
    q, k, v = qkv(1, 2, 5, 6, 8)
    results = []
    for tier in TIERS:
        leaves = _leaves(q, k, v)
        torch.manual_seed(3)
        out = tritonlab.scaled_dot_product_attention(*leaves, dropout_p=0.4, is_causal=True, backend=tier)
        out.backward(torch.ones_like(out))
        results.append([out, *(t.grad for t in leaves)])
    assert (results[0][0] == 0).any()
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **TOL[q.dtype])


# ---- bad input ---------------------------------------------------------------------

def _sdpa(q, k, v, *args, **kw):
    return tritonlab.scaled_dot_product_attention(q, k, v, *args, **kw)


Q, K, V = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 6)
BAD = [
    ("1-D query", lambda: _sdpa(Q[0, 0, 0], K, V), ValueError, r"at least 2 dimensions.*got shape \(8,\)"),
    ("E mismatch", lambda: _sdpa(Q, K[..., :7], V), ValueError, r"key with the query's 8 features.*\(2, 3, 5, 7\)"),
    ("S mismatch", lambda: _sdpa(Q, K, V[..., :4, :]), ValueError, r"sequence length 5.*\(2, 3, 4, 6\)"),
    ("batch", lambda: _sdpa(Q, K[:1].expand(3, 3, 5, 8), V[:1].expand(3, 3, 5, 6)), ValueError,
     r"batch dimensions.*broadcast.*query \(2, 3, 4, 8\), key \(3, 3, 5, 8\)"),
    ("heads", lambda: _sdpa(torch.randn(2, 6, 4, 8), torch.randn(2, 4, 5, 8), torch.randn(2, 4, 5, 8),
                            enable_gqa=True), ValueError, r"divisible.*got 6 query and 4 key/value heads"),
    ("heads without gqa", lambda: _sdpa(torch.randn(2, 6, 4, 8), K, V), ValueError,
     r"same number of heads.*got 6 and 3; pass enable_gqa=True"),
    ("mask shape", lambda: _sdpa(Q, K, V, torch.ones(4, 4, dtype=torch.bool)), ValueError,
     r"broadcastable to the attention scores' shape \(2, 3, 4, 5\).*got shape \(4, 4\)"),
    ("mask rank", lambda: _sdpa(Q, K, V, torch.ones(1, 1, 1, 4, 5, dtype=torch.bool)), ValueError,
     r"\(2, 3, 4, 5\).*got shape \(1, 1, 1, 4, 5\)"),
    ("mask dtype", lambda: _sdpa(Q, K, V, torch.ones(4, 5, dtype=torch.int64)), TypeError,
     r"torch.bool or the query's torch.float32, got torch.int64"),
    ("mask float64", lambda: _sdpa(Q, K, V, torch.ones(4, 5, dtype=torch.float64)), TypeError,
     r"torch.bool or the query's torch.float32, got torch.float64"),
    ("mask and causal", lambda: _sdpa(Q, K, V, torch.ones(4, 5, dtype=torch.bool), is_causal=True), ValueError,
     r"either attn_mask or is_causal=True, not both"),
    ("dropout 1", lambda: _sdpa(Q, K, V, dropout_p=1.0), ValueError, r"dropout_p, a number in \[0, 1\), got 1.0"),
    ("dropout negative", lambda: _sdpa(Q, K, V, dropout_p=-0.1), ValueError, r"\[0, 1\), got -0.1"),
    ("integer", lambda: _sdpa(Q.long(), K.long(), V.long()), TypeError, r"floating-point.*got dtype torch.int64"),
    ("mixed dtypes", lambda: _sdpa(Q.double(), K, V), TypeError,
     r"one dtype, got torch.float64, torch.float32 and torch.float32"),
    ("mixed devices", lambda: _sdpa(Q, K, V.to("meta")), ValueError, r"one device, got cpu, cpu and meta"),
    ("scale", lambda: _sdpa(Q, K, V, scale="0.5"), TypeError, r"scale to be a number or None, got str"),
    ("backend", lambda: _sdpa(Q, K, V, backend="cuda"), ValueError, r"backend must be one of"),
]


@pytest.mark.parametrize("case,call,error,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input(case, call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---- MultiheadAttention against nn.MultiheadAttention -------------------------------

class Attend(nn.Module):
    """Calls its MultiheadAttention the way a test needs: self-attention (one tensor as
    query, key and value) or cross-attention, with fixed keyword arguments."""

    def __init__(self, mha, self_attention=False, **kwargs):
        super().__init__()
        self.mha, self.self_attention, self.kwargs = mha, self_attention, kwargs

    def forward(self, *inputs):
        qkv = inputs * 3 if self.self_attention else inputs
        return self.mha(*qkv, **self.kwargs)


def assert_mha_matches(tier, inputs, ctor=None, self_attention=False, train=False, dtype=torch.float64, **kwargs):
    ctor = {"embed_dim": 8, "num_heads": 2, **(ctor or {})}
    torch.manual_seed(0)
    lab = tritonlab.MultiheadAttention(**ctor, dtype=dtype)
    ref = nn.MultiheadAttention(**ctor, dtype=dtype)
    lab.train(train), ref.train(train)
    assert_matches_torch(Attend(lab, self_attention, **kwargs), Attend(ref, self_attention, **kwargs),
                         *inputs, tier=tier, **TOL[dtype])


GEN = torch.Generator().manual_seed(0)  # the cases below are drawn at import


def _seq(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype, generator=GEN)


def _kpm(N, S, as_float=False):
    """A key padding mask (True = ignore) that leaves key 0 to every row (torch's
    need_weights=True path gives NaN for a row with no key)."""
    m = torch.rand(N, S, generator=GEN) > 0.6
    m[:, 0] = False
    return torch.zeros(N, S, dtype=torch.float64).masked_fill(m, float("-inf")) if as_float else m


def _attn_mask(L, S, heads_times_n=None, as_float=False):
    m = torch.rand(*(() if heads_times_n is None else (heads_times_n,)), L, S, generator=GEN) > 0.7
    m[..., 0] = False
    return torch.randn(m.shape, dtype=torch.float64, generator=GEN).masked_fill(m, float("-inf")) if as_float else m


MHA_CASES = {
    "self (L, N, E)": dict(inputs=[_seq(5, 3, 8)], self_attention=True),
    "self batch_first": dict(inputs=[_seq(3, 5, 8)], self_attention=True, ctor=dict(batch_first=True)),
    "cross": dict(inputs=[_seq(5, 3, 8), _seq(7, 3, 8), _seq(7, 3, 8)]),
    "unbatched": dict(inputs=[_seq(5, 8), _seq(7, 8), _seq(7, 8)]),
    "unbatched self, 3-D mask": dict(inputs=[_seq(5, 8)], self_attention=True, attn_mask=_attn_mask(5, 5, 2)),
    "kdim/vdim": dict(inputs=[_seq(5, 3, 8), _seq(7, 3, 6), _seq(7, 3, 5)], ctor=dict(kdim=6, vdim=5)),
    "no bias": dict(inputs=[_seq(5, 3, 8)], self_attention=True, ctor=dict(bias=False)),
    "add_bias_kv": dict(inputs=[_seq(5, 3, 8), _seq(7, 3, 8), _seq(7, 3, 8)], ctor=dict(add_bias_kv=True),
                        key_padding_mask=_kpm(3, 7), attn_mask=_attn_mask(5, 7)),
    "add_zero_attn": dict(inputs=[_seq(5, 3, 8)], self_attention=True, ctor=dict(add_zero_attn=True),
                          attn_mask=_attn_mask(5, 5, 6)),
    "key padding bool": dict(inputs=[_seq(5, 3, 8), _seq(7, 3, 8), _seq(7, 3, 8)], key_padding_mask=_kpm(3, 7)),
    "key padding float": dict(inputs=[_seq(5, 3, 8), _seq(7, 3, 8), _seq(7, 3, 8)],
                              key_padding_mask=_kpm(3, 7, as_float=True)),
    "attn_mask 2-D float + key padding": dict(inputs=[_seq(5, 3, 8), _seq(7, 3, 8), _seq(7, 3, 8)],
                                              attn_mask=_attn_mask(5, 7, as_float=True),
                                              key_padding_mask=_kpm(3, 7, as_float=True)),
    "attn_mask 3-D bool": dict(inputs=[_seq(3, 5, 8), _seq(3, 7, 8), _seq(3, 7, 8)], ctor=dict(batch_first=True),
                               attn_mask=_attn_mask(5, 7, 6)),
    "average_attn_weights=False": dict(inputs=[_seq(5, 3, 8)], self_attention=True, average_attn_weights=False,
                                       attn_mask=_attn_mask(5, 5)),
    "eval with dropout": dict(inputs=[_seq(5, 3, 8)], self_attention=True, ctor=dict(dropout=0.5)),
    "no queries or keys": dict(inputs=[_seq(0, 3, 8)], self_attention=True),
    "empty batch": dict(inputs=[_seq(5, 0, 8)], self_attention=True),
    "float32": dict(inputs=[_seq(5, 3, 8, dtype=torch.float32)], self_attention=True, dtype=torch.float32,
                    key_padding_mask=_kpm(3, 5)),
}


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("case", MHA_CASES, ids=str)
def test_mha_matches_torch(case, need_weights, tier):
    assert_mha_matches(tier, need_weights=need_weights, **MHA_CASES[case])


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_sequence_first_output_is_contiguous_as_torchs(need_weights, tier):
    """torch's (L, N, E) output is contiguous, so code that .view()s it must work here too."""
    lab, ref = tritonlab.MultiheadAttention(8, 2, backend=tier), nn.MultiheadAttention(8, 2)
    x = torch.randn(5, 3, 8, requires_grad=True)
    out, ref_out = lab(x, x, x, need_weights=need_weights)[0], ref(x, x, x, need_weights=need_weights)[0]
    assert ref_out.is_contiguous() and out.is_contiguous()
    assert out.view(15, 8).shape == (15, 8)


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("key_padding", [False, True])
def test_mha_is_causal_hint(key_padding, need_weights):
    """torch's rule: with need_weights=False and no key padding the hint replaces the
    mask (here a deliberately non-causal one, so following the rule shows); otherwise
    the mask is used."""
    L = 5
    kwargs = dict(attn_mask=_attn_mask(L, L), is_causal=True, need_weights=need_weights)
    if key_padding:
        kwargs["key_padding_mask"] = _kpm(3, L)
    assert_mha_matches("reference", [_seq(L, 3, 8)], self_attention=True, **kwargs)


def test_mha_causal_mask_and_hint_agree():
    """The hint (which replaces the mask here) and the mask itself both give torch's result."""
    x = _seq(6, 2, 8)
    mha = tritonlab.MultiheadAttention(8, 2, dtype=torch.float64)
    ref = nn.MultiheadAttention(8, 2, dtype=torch.float64)
    ref.load_state_dict(mha.state_dict())
    causal = nn.Transformer.generate_square_subsequent_mask(6, dtype=torch.float64)
    expected = ref(x, x, x, attn_mask=causal, need_weights=False)[0]
    for hint in (True, False):
        torch.testing.assert_close(mha(x, x, x, attn_mask=causal, is_causal=hint, need_weights=False)[0], expected,
                                   **TOL[x.dtype], msg=lambda m: f"is_causal={hint}: {m}")


def test_mha_fully_masked_query_gives_zero_attention():
    """Unlike torch's need_weights=True path (NaN), a query with every key padded gets
    zero attention, so its output is the out-projection bias; torch's need_weights=False
    path (SDPA) agrees."""
    x = _seq(4, 2, 8)
    kpm = torch.zeros(2, 4, dtype=torch.bool)
    kpm[1] = True
    lab, ref = tritonlab.MultiheadAttention(8, 2, dtype=torch.float64), nn.MultiheadAttention(8, 2, dtype=torch.float64)
    nn.init.normal_(lab.out_proj.bias)
    ref.load_state_dict(lab.state_dict())
    out, weights = lab(x, x, x, key_padding_mask=kpm)
    assert torch.isfinite(out).all() and (weights[1] == 0).all()
    torch.testing.assert_close(out[:, 1], lab.out_proj.bias.expand(4, 8))
    torch.testing.assert_close(out, ref(x, x, x, key_padding_mask=kpm, need_weights=False)[0], **TOL[x.dtype])


@pytest.mark.parametrize("tier", ["triton", None], ids=["triton", "auto"])
@pytest.mark.parametrize("shape", [(5, 7), (2, 1, 1, 7)], ids=str)
def test_a_learned_mask_gets_torchs_gradient(shape, tier, triton_device):
    """A float mask that requires grad (a learned bias), 2-D or broadcast over heads and
    queries: the triton tier (auto takes it too) gives torch's gradient."""
    q, k, v = (t.float().to(triton_device) for t in qkv(2, 2, 5, 7, 8))
    bias = torch.randn(shape, device=triton_device)
    assert_sdpa_matches(tier, q, k, v, bias, tol=dict(atol=1e-4, rtol=1e-4))


def test_mha_query_features_are_checked_first():
    x = torch.randn(3, 2, 7)
    with pytest.raises(ValueError, match="expected query with embed_dim=8 features"):
        tritonlab.MultiheadAttention(8, 2)(x, x, x)


def test_mha_triton_tier_names_itself_for_a_dtype_its_kernels_lack():
    x = torch.randn(3, 2, 8, dtype=torch.float64)
    mha = tritonlab.MultiheadAttention(8, 2, dtype=torch.float64, backend="triton")
    with pytest.raises(TypeError, match=r"^MultiheadAttention on the triton tier supports float32, float16 and "
                                        r"bfloat16, got dtype torch.float64"):
        mha(x, x, x)
    mha.backend = None
    with tritonlab.use_backend("triton"), pytest.raises(TypeError, match="^MultiheadAttention on the triton tier"):
        mha(x, x, x)


def test_mha_dropout_in_training():
    """Dropout hits the probabilities in training only: need_weights=True returns the
    post-dropout weights (a fraction p of zeros), reproducible under manual_seed."""
    mha = tritonlab.MultiheadAttention(8, 2, dropout=0.25)
    x = torch.randn(64, 4, 8)
    torch.manual_seed(1)
    out, w = mha(x, x, x, average_attn_weights=False)
    assert abs((w == 0).float().mean().item() - 0.25) < 0.02
    torch.manual_seed(1)
    out2, _ = mha(x, x, x, need_weights=False)
    torch.testing.assert_close(out2, out, **TOL[x.dtype])  # the same seed: the same mask on both paths
    mha.eval()
    ref = nn.MultiheadAttention(8, 2, dropout=0.25).eval()
    ref.load_state_dict(mha.state_dict())
    evaluated = mha(x, x, x)[0]
    torch.testing.assert_close(evaluated, ref(x, x, x)[0], **TOL[x.dtype])
    assert (evaluated - out).abs().max() > 0.05  # training did drop something


@pytest.mark.parametrize("ctor", [dict(), dict(kdim=6, vdim=5, add_bias_kv=True, bias=False)], ids=str)
def test_mha_state_dict_both_ways(ctor):
    lab, ref = tritonlab.MultiheadAttention(8, 2, **ctor), nn.MultiheadAttention(8, 2, **ctor)
    assert lab.state_dict().keys() == ref.state_dict().keys()
    assert {n: p.shape for n, p in lab.named_parameters()} == {n: p.shape for n, p in ref.named_parameters()}
    lab.load_state_dict(ref.state_dict())
    for n, p in lab.state_dict().items():
        assert torch.equal(p, ref.state_dict()[n]), n
    nn.init.normal_(lab.out_proj.weight)
    ref.load_state_dict(lab.state_dict())
    assert torch.equal(ref.out_proj.weight, lab.out_proj.weight)


def test_mha_init_like_torch():
    torch.manual_seed(3)
    lab = tritonlab.MultiheadAttention(16, 4, add_bias_kv=True)
    torch.manual_seed(3)
    ref = nn.MultiheadAttention(16, 4, add_bias_kv=True)
    for n, p in ref.state_dict().items():
        assert torch.equal(lab.state_dict()[n], p), n


def test_mha_repr():
    text = repr(tritonlab.MultiheadAttention(8, 2, backend="naive"))
    assert text.startswith("MultiheadAttention(\n  backend='naive'\n  (out_proj)"), text
    assert isinstance(tritonlab.MultiheadAttention(8, 2), nn.MultiheadAttention)


MHA = tritonlab.MultiheadAttention(8, 2)
X = torch.randn(5, 3, 8)
MHA_BAD = [
    ("embed dim", lambda: MHA(torch.randn(5, 3, 7), X, X), ValueError, r"embed_dim=8 features.*\(5, 3, 7\)"),
    ("key rank", lambda: MHA(X, X[:, 0], X), ValueError, r"3-D key for a 3-D query, got key of shape \(5, 8\)"),
    ("query rank", lambda: MHA(X[None], X[None], X[None]), ValueError, r"2-D or 3-D input.*got a 4-D"),
    ("key/value length", lambda: MHA(X, X, X[:4]), ValueError, r"one sequence length.*value \(4, 3, 8\)"),
    ("batch", lambda: MHA(X, X[:, :2], X[:, :2]), ValueError, r"one batch size.*key \(5, 2, 8\)"),
    ("key padding shape", lambda: MHA(X, X, X, key_padding_mask=torch.zeros(3, 4, dtype=torch.bool)), ValueError,
     r"key_padding_mask of shape \(N, S\) = \(3, 5\).*got \(3, 4\)"),
    ("attn_mask shape", lambda: MHA(X, X, X, attn_mask=torch.zeros(5, 4, dtype=torch.bool)), ValueError,
     r"attn_mask of shape \(5, 5\) or \(N \* num_heads, L, S\) = \(6, 5, 5\), got \(5, 4\)"),
    ("mask dtype", lambda: MHA(X, X, X, attn_mask=torch.zeros(5, 5, dtype=torch.int32)), TypeError,
     r"attn_mask of dtype torch.bool or the query's torch.float32, got torch.int32"),
    ("is_causal without mask", lambda: MHA(X, X, X, is_causal=True), ValueError, r"pass that mask too"),
    ("input dtype", lambda: MHA(X.double(), X.double(), X.double()), TypeError,
     r"torch.float32 weights but got a torch.float64 query"),
    ("integer", lambda: MHA(X.long(), X.long(), X.long()), TypeError, r"floating-point.*torch.int64"),
]


@pytest.mark.parametrize("case,call,error,message", MHA_BAD, ids=[b[0] for b in MHA_BAD])
def test_mha_bad_input(case, call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---- the triton tier (interpreter on CPU) -------------------------------------------

class TestTritonTier:
    TOL = dict(atol=1e-4, rtol=1e-4)

    @pytest.mark.parametrize("case", [dict(shape=(1, 2, 17, 33, 16)), dict(shape=(2, 1, 5, 3, 8), is_causal=True),
                                      dict(shape=(1, 2, 9, 9, 16), mask=True)], ids=str)
    def test_functional(self, case, triton_device):
        q, k, v = (t.float().to(triton_device) for t in qkv(*case["shape"]))
        mask = (torch.rand(q.shape[-2], k.shape[-2]) > 0.3).to(triton_device) if case.get("mask") else None
        assert_sdpa_matches("triton", q, k, v, mask, tol=self.TOL, is_causal=case.get("is_causal", False))

    def test_grouped_query(self, triton_device):
        q, k, v = (t.float().to(triton_device) for t in qkv(1, 4, 7, 5, 16, Hkv=2))
        assert_sdpa_matches("triton", q, k, v, tol=self.TOL, enable_gqa=True)

    @pytest.mark.parametrize("need_weights", [False, True])
    def test_mha(self, need_weights, triton_device):
        x = torch.randn(6, 2, 16, device=triton_device)
        lab = tritonlab.MultiheadAttention(16, 2, device=triton_device)
        ref = nn.MultiheadAttention(16, 2, device=triton_device)
        kwargs = dict(need_weights=need_weights, key_padding_mask=_kpm(2, 6).to(triton_device))
        assert_matches_torch(Attend(lab, True, **kwargs), Attend(ref, True, **kwargs), x, tier="triton", **self.TOL)


# ---- GPU: real sizes, 16-bit ---------------------------------------------------------

def _close_to_scale(a, b, frac, what):
    """16-bit results against a float32 reference: within `frac` of the reference's largest
    entry (gradients sum over many terms, so elementwise tolerance on near-zero entries
    would test rounding, not correctness)."""
    torch.testing.assert_close(a.float(), b.float(), atol=frac * b.abs().max().item(), rtol=frac,
                               msg=lambda m: f"{what}: {m}")


@pytest.mark.gpu
class TestGPU:
    FRAC = {torch.float16: 1e-2, torch.bfloat16: 3e-2}

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    @pytest.mark.parametrize("is_causal", [False, True])
    @pytest.mark.parametrize("shape", [(2, 8, 1024, 1024, 64), (1, 4, 777, 1500, 128)], ids=str)
    def test_functional(self, shape, is_causal, dtype):
        """The triton tier in 16-bit against torch's SDPA in float32 on the same inputs."""
        inputs = [t.to("cuda", dtype) for t in qkv(*shape, dtype=torch.float32)]
        lab, ref = _leaves(*inputs), _leaves(*(t.float() for t in inputs))
        out = tritonlab.scaled_dot_product_attention(*lab, is_causal=is_causal, backend="triton")
        expected = F.scaled_dot_product_attention(*ref, is_causal=is_causal)
        g = torch.randn_like(expected)
        out.backward(g.to(dtype))
        expected.backward(g)
        _close_to_scale(out, expected, self.FRAC[dtype], "out")
        for name, a, b in zip("qkv", lab, ref):
            _close_to_scale(a.grad, b.grad, self.FRAC[dtype], f"grad {name}")

    def test_reference_tier_on_cuda(self):
        q, k, v = (t.to("cuda") for t in qkv(2, 4, 256, 300, 64))
        assert_sdpa_matches("reference", q, k, v, torch.rand(256, 300, device="cuda") > 0.2)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_mha_fast_path(self, dtype):
        """need_weights=False in 16-bit (the GEMM and flash kernels) against torch.nn in float32."""
        lab = tritonlab.MultiheadAttention(256, 8, batch_first=True, device="cuda", dtype=dtype, backend="triton")
        ref = nn.MultiheadAttention(256, 8, batch_first=True, device="cuda")
        ref.load_state_dict(lab.state_dict())
        x = torch.randn(4, 512, 256, device="cuda")
        x_lab, x_ref = x.to(dtype).requires_grad_(), x.clone().requires_grad_()
        out = lab(x_lab, x_lab, x_lab, need_weights=False)[0]
        expected = ref(x_ref, x_ref, x_ref, need_weights=False)[0]
        g = torch.randn_like(expected)
        out.backward(g.to(dtype))
        expected.backward(g)
        _close_to_scale(out, expected, self.FRAC[dtype], "out")
        _close_to_scale(x_lab.grad, x_ref.grad, self.FRAC[dtype], "grad x")
        for (name, a), b in zip(lab.named_parameters(), ref.parameters()):
            _close_to_scale(a.grad, b.grad, self.FRAC[dtype], name)
