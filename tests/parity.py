"""The one comparison every layer test uses: a tritonlab layer against its torch.nn
twin, same weights, forward output and every gradient (inputs and parameters)."""
from __future__ import annotations

import torch

import tritonlab

# absolute (and relative) tolerance per dtype for the scratch tiers on CPU
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _tensors(out):
    """Flatten a module's output (tensor, tuple, nested tuple) into a list of tensors."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out if o is not None for t in _tensors(o)]


def _leaf(i):
    """A fresh leaf copy of a tensor input, or of each tensor in a tuple input (an
    LSTM's (h0, c0)); plain tuples only, so a PackedSequence passes through as is."""
    if type(i) is tuple:
        return tuple(_leaf(t) for t in i)
    if isinstance(i, torch.Tensor):
        return _same_strides(i.detach()).requires_grad_(i.is_floating_point())
    return i


def _same_strides(t: torch.Tensor) -> torch.Tensor:
    """A copy of `t` with t's strides, gaps included: clone() makes a sliced view
    (x[..., ::2]) contiguous, so the layer would never see the strided input the test
    built. An expanded tensor (stride 0) cannot be written elementwise: cloned."""
    if any(st == 0 and n > 1 for st, n in zip(t.stride(), t.shape)):
        return t.clone()
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device).copy_(t)


def _flat(items):
    for i in items:
        yield from _flat(i) if type(i) is tuple else (i,)


def run(module, inputs, grads_out=None):
    """Forward `inputs` (fresh leaf copies), backward a fixed upstream gradient.

    Returns (outputs, input grads (tuple inputs flattened), {param name: grad},
    upstream grads used).
    """
    leaves = [_leaf(i) for i in inputs]
    outs = _tensors(module(*leaves))
    if grads_out is None:
        # drawn on the CPU, where the generator is, even under a default-device context
        gen = torch.Generator().manual_seed(1234)
        grads_out = [torch.randn(o.shape, generator=gen, dtype=o.dtype, device="cpu").to(o.device) for o in outs]
    loss = sum((o * g).sum() for o, g in zip(outs, grads_out) if o.requires_grad)
    module.zero_grad(set_to_none=True)
    if isinstance(loss, torch.Tensor):
        loss.backward()
    in_grads = [leaf.grad if isinstance(leaf, torch.Tensor) else None for leaf in _flat(leaves)]
    p_grads = {n: p.grad for n, p in module.named_parameters()}
    return [o.detach() for o in outs], in_grads, p_grads, grads_out


def assert_close_to_scale(actual, expected, tol, msg=None):
    """|actual - expected| <= tol * (|expected| + max(max|expected|, 1)), elementwise. For sums
    of many terms (a weight gradient sums over every row; a GEMM over K): their
    rounding error scales with the terms, not with the result, so an entry that
    cancels to near 0 carries the same absolute error as its neighbours."""
    scale = expected.detach().abs().max().float().clamp_min(1.0)
    torch.testing.assert_close(actual.float() / scale, expected.float() / scale, atol=tol, rtol=tol, msg=msg)


def assert_matches_torch(lab_module, torch_module, *inputs, tier, atol=None, rtol=None, to_scale=False):
    """`lab_module` on `tier` equals `torch_module` (given the same weights) in forward,
    input gradients and every parameter gradient. `to_scale`: compare each tensor
    relative to its largest entry (assert_close_to_scale with tol = atol), as GPU tests
    at real sizes in reduced precision must."""
    dtype = next((i.dtype for i in inputs if isinstance(i, torch.Tensor) and i.is_floating_point()),
                 torch.float32)
    atol = TOL[dtype] if atol is None else atol
    rtol = TOL[dtype] if rtol is None else rtol

    def close(a, b, msg=None):
        if to_scale:
            assert_close_to_scale(a, b, atol, msg=msg)
        else:
            torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=msg)

    torch_module.load_state_dict(lab_module.state_dict())
    ref_out, ref_in, ref_p, gout = run(torch_module, inputs)
    with tritonlab.use_backend(tier):
        out, in_g, p_g, _ = run(lab_module, inputs, gout)
    assert len(out) == len(ref_out)
    for a, b in zip(out, ref_out):
        close(a, b)
    for a, b in zip(in_g, ref_in):
        if b is None:
            assert a is None
        else:
            close(a, b)
    assert p_g.keys() == ref_p.keys()
    for name in ref_p:
        if ref_p[name] is None:
            assert p_g[name] is None, name
        else:
            close(p_g[name], ref_p[name], msg=lambda m: f"{name}: {m}")

