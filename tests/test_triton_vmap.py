"""torch.vmap over the triton tier (layers/functions/_vmap.py): every op's rule gives what
one call per sample gives, forward and (autograd outside the vmap) backward, without
torch's per-sample fallback; folded cases are one launch; dropout follows vmap's
randomness modes."""
import contextlib

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

import tritonlab
from tritonlab.layers.attention import scaled_dot_product_attention

B = 3


@contextlib.contextmanager
def _no_fallback():
    """torch's per-sample fallback turned into an error (it only logs a warning from C++)."""
    enabled = torch._C._functorch._is_vmap_fallback_enabled()
    torch._C._functorch._set_vmap_fallback_enabled(False)
    try:
        yield
    finally:
        torch._C._functorch._set_vmap_fallback_enabled(enabled)


def _per_sample(fn, args, in_dims):
    return torch.stack([fn(*(a if d is None else a.select(d, i) for a, d in zip(args, in_dims)))
                        for i in range(B)])


def _check(fn, args, in_dims):
    """vmap(fn) equals the per-sample loop, and so do the gradients of every input."""
    args = [a.detach().requires_grad_() for a in args]
    with _no_fallback():
        y = vmap(fn, in_dims=in_dims)(*args)
    expected = _per_sample(fn, args, in_dims)
    torch.testing.assert_close(y, expected)
    weights = torch.randn_like(y)
    got = torch.autograd.grad((y * weights).sum(), args)
    want = torch.autograd.grad((expected * weights).sum(), args)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def _layer(cls, *args, **kwargs):
    torch.manual_seed(0)
    return cls(*args, backend="triton", **kwargs)


CASES = {
    "relu, batch dim 1": (lambda: _layer(tritonlab.ReLU), [(4, B, 5)], (1,)),
    "tanh, transposed": (lambda: _layer(tritonlab.Tanh), [(5, 4, B)], (2,)),
    "softmax over dim 0, batch dim 1": (lambda: _layer(tritonlab.Softmax, dim=0), [(4, B, 5)], (1,)),
    "softmax of 0-d samples": (lambda: _layer(tritonlab.Softmax, dim=0), [(B,)], (0,)),
    "linear, batch dim 1": (lambda: _layer(tritonlab.Linear, 5, 6), [(4, B, 5)], (1,)),
    "linear of vectors": (lambda: _layer(tritonlab.Linear, 5, 6), [(B, 5)], (0,)),
    "conv": (lambda: _layer(tritonlab.Conv2d, 3, 4, 3, padding=1), [(B, 2, 3, 6, 6)], (0,)),
    "conv, batch dim 3": (lambda: _layer(tritonlab.Conv2d, 3, 4, 3, stride=2), [(2, 3, 7, B, 6)], (3,)),
    "conv of channels_last samples": (lambda: _layer(tritonlab.Conv2d, 3, 4, 3),
                                      [lambda device: torch.randn(B, 2, 6, 6, 3, device=device).permute(0, 1, 4, 2, 3)],
                                      (0,)),
    "conv of unbatched images": (lambda: _layer(tritonlab.Conv2d, 3, 4, 3, groups=1), [(B, 3, 6, 6)], (0,)),
    "attention, shared k": (lambda: lambda q, k, v: scaled_dot_product_attention(q, k, v, is_causal=True, backend="triton"),
                            [(B, 2, 2, 5, 8), (2, 2, 7, 8), (B, 2, 2, 7, 8)], (0, None, 0)),
    "attention, shared 2-d mask": (lambda: lambda q, m: scaled_dot_product_attention(q, q, q, attn_mask=m, backend="triton"),
                                   [(2, 2, B, 5, 8), (5, 5)], (2, None)),
    "attention, per-sample mask": (lambda: lambda q, m: scaled_dot_product_attention(q, q, q, attn_mask=m, backend="triton"),
                                   [(B, 2, 2, 5, 8), (B, 2, 1, 5, 5)], (0, 0)),
}


@pytest.mark.parametrize("case", CASES)
def test_vmap_equals_one_call_per_sample(case, triton_device):
    make, shapes, in_dims = CASES[case]
    fn = make()
    if isinstance(fn, torch.nn.Module):
        fn = fn.to(triton_device)
    _check(fn, [s(triton_device) if callable(s) else torch.randn(s, device=triton_device) for s in shapes], in_dims)


def test_a_folded_vmap_is_one_launch(triton_device, monkeypatch):
    """The rules hand the kernels the whole batch at once (the fallback launched B
    times), a mask shared by the samples included."""
    from tritonlab.layers.functions import activations, attention, conv
    calls = []

    def counted(fn):
        return lambda *args: calls.append(fn.__name__) or fn(*args)

    monkeypatch.setattr(activations, "activation_forward", counted(activations.activation_forward))
    monkeypatch.setattr(attention, "attention_forward", counted(attention.attention_forward))
    monkeypatch.setitem(conv._PATHS, "implicit", counted(conv._PATHS["implicit"]))
    model = torch.nn.Sequential(_layer(tritonlab.Conv2d, 3, 4, 3), _layer(tritonlab.ReLU)).to(triton_device)
    vmap(model)(torch.randn(B, 2, 3, 6, 6, device=triton_device))
    mask = torch.rand(5, 5, device=triton_device) > 0.5
    mask[:, 0] = True
    vmap(lambda q: scaled_dot_product_attention(q, q, q, attn_mask=mask, backend="triton"))(
        torch.randn(B, 2, 2, 5, 8, device=triton_device))
    assert calls == ["_implicit", "activation_forward", "attention_forward"]


def test_an_ensemble_of_layers_runs_each_models_weights(triton_device):
    """Per-sample weights (torch.func.stack_module_state) cannot fold: each model's call."""
    torch.manual_seed(0)
    models = [torch.nn.Sequential(tritonlab.Conv2d(3, 4, 3, backend="triton"), tritonlab.Flatten(),
                                  tritonlab.Linear(4 * 4 * 4, 5, backend="triton")).to(triton_device)
              for _ in range(B)]
    params, buffers = stack_module_state(models)
    x = torch.randn(2, 3, 6, 6, device=triton_device)
    with _no_fallback():
        y = vmap(lambda p, b: functional_call(models[0], (p, b), (x,)))(params, buffers)
    torch.testing.assert_close(y, torch.stack([m(x) for m in models]))


@pytest.mark.parametrize("layer", ["dropout", "softmax_dropout"])
def test_vmapped_dropout_follows_the_randomness_mode(layer, triton_device):
    """randomness="different": independent masks; "same": one mask for every sample;
    the default refuses the draw, as for torch's dropout. Each backward regenerates its
    sample's mask: the gradient of sum(y) is y/x wherever the mask kept x."""
    module = (tritonlab.Dropout(0.5, backend="triton") if layer == "dropout"
              else tritonlab.SoftmaxDropout(0.5, dim=-1, backend="triton"))
    x = torch.randn(B, 4, 64, device=triton_device).abs().add(0.5).requires_grad_()
    for randomness in ("different", "same"):
        with _no_fallback():
            y = vmap(module, randomness=randomness)(x)
        kept = y != 0
        assert 0.3 < kept.float().mean() < 0.7
        same = all(torch.equal(kept[0], kept[i]) for i in range(1, B))
        assert same == (randomness == "same")
        (dx,) = torch.autograd.grad(y.sum(), x)
        if layer == "dropout":
            torch.testing.assert_close(dx, kept * 2.0)
        else:  # dropout's backward then softmax's: ds = s * (g - sum(s g)), with g = 2·mask
            s = torch.softmax(x.detach(), -1)
            g = kept * 2.0
            torch.testing.assert_close(dx, s * (g - (s * g).sum(-1, keepdim=True)))
    with pytest.raises(RuntimeError, match="randomness"):
        vmap(module)(x)
