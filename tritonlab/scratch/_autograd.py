"""Backward passes written out by hand: the first-order guard, and the helpers that
register an op and its backward as torch.library custom ops."""
from __future__ import annotations

import functools

import torch
from torch.autograd.function import once_differentiable


def first_order_only(backward=None, *, vmappable: bool = False):
    """Wrap a hand-written backward: run it without building a graph, and refuse a
    second derivative (create_graph=True) with a clear error. once_differentiable alone
    refuses only when the incoming gradient requires grad; otherwise it would silently
    treat this backward as constant and return a wrong gradient of the gradient.

    A backward that writes a batched gradient into a fresh plain tensor (out=, in place)
    or hands it to a Triton kernel cannot run under the legacy vmap of
    torch.autograd.grad(is_grads_batched=True) or jacobian(vectorize=True): a batched
    gradient is refused with advice, unless the backward is marked `vmappable`."""
    if backward is None:
        return functools.partial(first_order_only, vmappable=vmappable)
    inner = once_differentiable(backward)

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "this tritonlab op's backward (reference or triton tier) is written by hand "
                "and cannot be differentiated again (create_graph=True, which torch.func.grad "
                "uses too); use backend='naive' for second derivatives, or 'auto' under torch.func"
            )
        if not vmappable and any(g is not None and legacy_batched(g) for g in grads):
            raise RuntimeError(
                "this tritonlab op's backward (reference or triton tier) is written by hand for "
                "plain tensors and cannot be vmapped (torch.autograd.grad(is_grads_batched=True), "
                "jacobian(vectorize=True)); use backend='naive', or one backward per gradient"
            )
        return inner(ctx, *grads)
    return wrapper


def transformed() -> bool:
    """Whether a torch.func transform (grad, vmap, jvp, ...) is running."""
    return torch._C._are_functorch_transforms_active()


def differentiating() -> bool:
    """Whether a transform that differentiates runs: torch.func's grad, vjp, jacrev (a
    Grad layer), jvp, jacfwd (Jvp), or forward-mode AD (a dual_level). vmap alone does not."""
    if forward_ad():
        return True
    if not transformed():
        return False
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
    return any(i.key() in (TransformType.Grad, TransformType.Jvp) for i in retrieve_all_functorch_interpreters())


def batched(t: torch.Tensor) -> bool:
    """Whether `t` may be batched by a vmap: a torch.func transform runs, or `t` is a
    legacy BatchedTensor (torch.autograd.grad(is_grads_batched=True) and
    autograd.functional.jacobian(vectorize=True) vmap the backward that way). An
    in-place op of a plain tensor with a batched one fails there: use out-of-place."""
    return transformed() or legacy_batched(t)


def legacy_batched(t: torch.Tensor) -> bool:
    """Whether `t` is a legacy BatchedTensor (see batched); never while Dynamo traces,
    which cannot trace the check (a graph break) and never meets one."""
    return not torch.compiler.is_compiling() and torch._C._functorch.is_legacy_batchedtensor(t)


def forward_ad() -> bool:
    """Whether forward-mode AD runs: inside a torch.autograd.forward_ad.dual_level."""
    return torch.autograd.forward_ad._current_level >= 0


def dual(t: torch.Tensor) -> bool:
    """Whether `t` carries a forward-mode tangent (inside a dual_level, made by make_dual
    or computed from such a tensor)."""
    return forward_ad() and torch.autograd.forward_ad.unpack_dual(t).tangent is not None


def first_order(entry):
    """Mark a tier's entry point whose backward is written by hand and first order only
    (first_order_only): torch.func transforms, which differentiate with create_graph=True,
    cannot go through it. Dispatch reads the mark (layers/_dispatch.py)."""
    entry.first_order = True
    return entry


def own(out):
    """`out` (a tensor or a tuple) with each tensor that is a view of another made
    inside a Function's forward (a reshape, permute or slice of its result) detached
    from that base, sharing its memory and version counter. autograd refuses an in-place
    op on a view a custom Function returns ("... is a view and is being modified
    inplace"); torch.nn's outputs are plain tensors, so nn.ReLU(inplace=True) after the
    layer has to work. The tensor saved for backward stays the view: an in-place change
    of the output still fails backward where it would change what backward reads.
    Eager calls detach views only, so an output saved for a differentiable backward
    keeps its graph (second derivatives); while Dynamo traces, which cannot trace
    _is_view (a graph break) and compiles no second derivative, every output is detached."""
    if isinstance(out, tuple):
        return tuple(own(o) for o in out)
    if isinstance(out, torch.Tensor) and (torch.compiler.is_compiling() or out._is_view()):
        return out.detach()
    return out


def transformable(fn_class):
    """`fn_class.apply` for an autograd.Function in the form torch.func takes (forward
    without ctx, setup_context, backward, jvp, generate_vmap_rule), fast in plain eager calls.
    torch.func transforms (grad, vmap, jacrev) need that form, but Function.apply binds a
    setup_context Function's arguments through inspect.signature on every call: 18 us a
    call against 5.6 us for forward(ctx, ...) on this project's 2-core CPU, a third of a
    small reference op. So eager calls go through a twin whose forward(ctx, ...) runs
    the forward and setup_context itself, calls under a transform or forward-mode AD
    (a torch.autograd.forward_ad.dual_level) through fn_class, and calls that want no
    gradient straight to the forward."""
    forward, setup = fn_class.forward, fn_class.setup_context

    def eager_forward(ctx, *args):
        out = forward(*args)
        setup(ctx, args, out)
        return own(out)

    # no jvp on the twin: Dynamo breaks the graph at a Function that defines one
    twin = type(f"{fn_class.__name__}Eager", (torch.autograd.Function,),
                {"forward": staticmethod(eager_forward), "backward": staticmethod(fn_class.backward)})

    @functools.wraps(fn_class.forward)
    def apply(*args):
        if forward_ad() or transformed():
            return fn_class.apply(*args)
        if torch.compiler.is_exporting() or not wants_grad(*args):
            # No backward wanted: no Function (whose no-grad call Dynamo fails to
            # inline for some signatures). torch.export keeps a Function's forward ops,
            # never its backward (strict export drops the gradient outright): there the
            # forward runs as graph ops, which autograd differentiates (each tier
            # writes them so while exporting)
            return forward(*args)
        return twin.apply(*args)
    return apply


# ---- torch.library custom ops ------------------------------------------------------
# What Dynamo cannot trace (Triton launches; a dropout mask drawn from a seeded
# torch.Generator) becomes a functional custom op "tritonlab::<name>": an explicit
# schema (the same on torch 2.4+ whatever the annotations), a fake that gives the
# outputs' shapes, dtypes and strides without computing them (for torch.compile's
# tracing and torch.library.opcheck), and a backward that calls a backward op, itself a
# custom op, so forward and backward graphs each see one opaque node and no graph break.
# What a backward needs beyond the inputs is an extra output of the forward op; random
# ops take their seed as a tensor argument, drawn outside the op from torch's generator.
#
# Eager calls skip the dispatcher. Its custom-op path costs ~15 us per call and its
# autograd wrapper ~100 us per forward+backward on a 2-core CPU (commit 38f6280's
# estimate; no report holds it); on a GPU that host time starves small kernels (H200:
# ReLU on 16M elements took 0.080 ms through the layer, reports/h200-2026-11-28/
# results.csv, and 0.038 ms as a bare kernel launch, tutorials.txt lesson 01). So a
# LabOp runs its Python body directly, inside a plain autograd.Function when it has a
# backward, and the registered op only while torch.compile or torch.export traces
# (torch.compiler.is_compiling() is True there, backward tracing included), torch.jit.trace or a torch.func transform runs, or its
# tensors are not plain ones (other tracers). Both paths run the same body, setup and
# backward.


# Tensor types the eager path takes; anything else (FakeTensor, FunctionalTensor: AOT
# tracing outside torch.compile, e.g. torch.library.opcheck) goes through the op.
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _tracing() -> bool:
    """A tracer or transform is watching whose tensors look plain: Dynamo/export,
    torch.jit.trace, or a torch.func transform (vmap, grad). Through the registered op
    it records the op (or vmap batches it); the bare body would launch
    Triton on its proxies, which the tracer never sees."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or transformed()


class LabOp:
    """The custom op `tritonlab::<name>` with Python body `fn`; call it like `fn`."""

    def __init__(self, name: str, schema: str, fn):
        self.name, self.fn = name, fn
        self.op = torch.library.custom_op(f"tritonlab::{name}", mutates_args=(), schema=schema)(fn)
        self._eager = None  # the autograd.Function, once a backward is registered
        functools.update_wrapper(self, fn)

    def register_fake(self, fake):
        """Decorator: the outputs' metadata for tracing (see torch.library.register_fake)."""
        self.op.register_fake(fake)
        return fake

    def register_vmap(self, rule):
        """Decorator: the op's rule under torch.vmap (see torch.library.register_vmap)."""
        self.op.register_vmap(rule)
        return rule

    def register_backward(self, backward, setup_context) -> None:
        """Differentiate by `backward(ctx, *grads)`, which calls backward LabOps; a second
        derivative is refused as first_order_only refuses it."""
        backward = first_order_only(backward)
        self.op.register_autograd(backward, setup_context=setup_context)
        fn = self.fn

        def forward(ctx, *args):
            # ctx in forward, not a setup_context staticmethod: with one, Function.apply
            # binds the arguments through inspect.signature on every call (~10 us)
            out = fn(*args)
            setup_context(ctx, args, out)
            return own(out)

        self._eager = type(f"{self.name}_function", (torch.autograd.Function,),
                           {"forward": staticmethod(forward), "backward": staticmethod(backward)})

    def __call__(self, *args):
        if _tracing() or not all(type(a) in _PLAIN for a in args if isinstance(a, torch.Tensor)):
            return self.op(*args)
        if self._eager is not None and wants_grad(*args):
            return self._eager.apply(*args)
        return self.fn(*args)


def wants_grad(*args) -> bool:
    """Whether a call with `args` must record a backward: grad mode is on and some tensor
    among them requires grad (other arguments are ignored)."""
    return torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)


def custom_op(name: str, schema: str):
    """Decorator: the function as the functional custom op `tritonlab::<name>` (a LabOp)."""
    return lambda fn: LabOp(name, schema, fn)


def register_backward(op: LabOp, backward, setup_context) -> None:
    """Differentiate LabOp `op` by `backward(ctx, *grads)` (which calls a backward LabOp)."""
    op.register_backward(backward, setup_context)


def needs(ctx, *indices: int) -> list[bool]:
    """ctx.needs_input_grad at `indices`, as the bool[] a backward op takes."""
    return [bool(ctx.needs_input_grad[i]) for i in indices]
