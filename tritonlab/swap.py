"""Swap tritonlab's layers into any model in place, and back.

`swap(model)` turns every torch.nn Conv2d, Linear, ReLU, Sigmoid, Tanh, Softmax,
Dropout, Flatten, GRU, LSTM and MultiheadAttention found anywhere in `model` (the
root included) into tritonlab's layer of the same name; `unswap(model)` turns them
back. Both return a `SwapReport`: one entry per module they looked at, with what they
did and why.

How: each tritonlab layer subclasses its torch.nn class and adds only `forward` and a
`backend` (plus `algo` for Conv2d/GRU/LSTM), so a swap re-classes the module object
itself (`module.__class__ = tritonlab.Linear`) and sets those attributes. Nothing is
copied or re-registered, so the module, its Parameter objects (an optimizer built
before the swap keeps working), buffers, device, dtype, training mode, hooks and any
attribute the user set stay exactly as they were, and no parent needs rewiring: the
root module is swapped in place too.

Only exact torch.nn classes are swapped: a subclass may override `forward`, which a
swap would silently drop, so subclasses (and parametrized modules, which torch
re-classes) are left alone with that reason.

nn.TransformerEncoderLayer has an inference fast path (eval mode, no autograd, even
heads, ...): one fused op, torch._transformer_encoder_layer_fwd, fed the layer's
weights, so it would bypass every swapped layer inside. torch skips that path for a
layer with forward hooks (so that hooks run, pytorch#128413), so a swap gives each
encoder layer holding a swapped layer a no-op forward pre-hook, and turns off
nn.TransformerEncoder's nested-tensor conversion (`use_nested_tensor`, its
constructor's enable_nested_tensor) above it, which would hand the layers nested
tensors; both are reported, and unswap undoes them. (nn.TransformerDecoderLayer has
no such path: it calls its attention modules.)
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear
from torch.nn.utils import parametrize

from . import layers as lab
from .backend import check_backend

# torch.nn class -> tritonlab layer (the layers that subclass it one-to-one)
LAB_OF = {nn.Conv2d: lab.Conv2d, nn.Linear: lab.Linear, nn.ReLU: lab.ReLU, nn.Sigmoid: lab.Sigmoid,
          nn.Tanh: lab.Tanh, nn.Softmax: lab.Softmax, nn.Dropout: lab.Dropout, nn.Flatten: lab.Flatten,
          nn.GRU: lab.GRU, nn.LSTM: lab.LSTM, nn.MultiheadAttention: lab.MultiheadAttention}
TORCH_OF = {v: k for k, v in LAB_OF.items()}
# the state a tritonlab layer holds beyond its torch.nn class, at its constructor's defaults
_EXTRA = {lab.Conv2d: {"algo": "implicit"}, lab.GRU: {"_algo": "auto"}, lab.LSTM: {"_algo": "auto"}}
# layers whose triton tier takes no float64 (`auto` runs them on the reference tier)
_NO_TRITON_FLOAT64 = (nn.Linear, nn.Conv2d, nn.GRU, nn.LSTM, nn.MultiheadAttention)
# lab layers with no torch.nn class to go back to
_LAB_ONLY = (lab.LinearActivation, lab.SoftmaxDropout)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
# what a swap sets on torch's transformer modules to keep their fast paths off, undone by unswap
_NO_FASTPATH_HOOK = "_tritonlab_fastpath_hook"
_NESTED_WAS = "_tritonlab_use_nested_tensor"


@dataclass(frozen=True)
class SwapEntry:
    """One module looked at: its qualified name ("" for the root), the torch.nn class it
    is (for a tritonlab layer, the torch.nn class it stands for), what was done
    ("swapped", "unswapped" or "left") and why (for a swapped module, an optional note)."""

    name: str
    torch_class: type
    action: str
    reason: str = ""

    @property
    def changed(self) -> bool:
        return self.action != "left"


class SwapReport(list):
    """The entries of one swap/unswap, in module order; prints as a table."""

    @property
    def changed(self) -> list[str]:
        """Names of the modules swapped (or unswapped)."""
        return [e.name for e in self if e.changed]

    @property
    def left(self) -> list[str]:
        return [e.name for e in self if not e.changed]

    def __getitem__(self, key):
        """By position, or by module name (`report["encoder.0"]`)."""
        if isinstance(key, str):
            for entry in self:
                if entry.name == key:
                    return entry
            raise KeyError(f"no module named {key!r} in this report (modules: {[e.name for e in self]})")
        return super().__getitem__(key)

    def __str__(self) -> str:
        rows = [("module", "class", "action", "reason")]
        rows += [(e.name or "(root)", _class_name(e.torch_class), e.action, e.reason) for e in self]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + ("  " + r[3] if r[3] else "")
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths) + "  ------")
        counts = {a: sum(e.action == a for e in self) for a in ("swapped", "unswapped", "left")}
        lines.append(", ".join(f"{n} {a}" for a, n in counts.items() if n) or "no modules")
        return "\n".join(lines)


def _class_name(cls: type) -> str:
    return f"nn.{cls.__name__}" if cls.__module__.startswith("torch.nn.") else cls.__name__


def swap(model: nn.Module, backend: str | None = "auto", include=None, exclude=None) -> SwapReport:
    """Replace torch.nn's layers in `model` with tritonlab's, in place; return the report.

    backend: the tier the swapped layers run on ("auto", "naive", "reference", "triton"),
        or None to follow the global `tritonlab.use_backend` choice at each call.
    include / exclude: a pattern or a list of them. A pattern matches a module when it
        equals its class name ("LSTM") or, as a shell pattern (fnmatch), its qualified
        name or the name of one of its parents ("encoder" covers "encoder.0",
        "*.proj" every child named proj). With include, only matching modules are
        swapped; exclude wins over include. A pattern that matches no module raises a
        ValueError (a typo would otherwise pass silently).

    Modules already tritonlab's are left as they are (their backend too): swapping twice
    is a no-op. `model` itself is the root and is swapped in place like any other.
    """
    _check_model(model, "swap")
    backend = None if backend is None else check_backend(backend)
    select = _Selector(model, include, exclude)
    report = SwapReport()
    for name, module in model.named_modules():
        if _is_container(module):
            continue
        torch_cls = TORCH_OF.get(type(module), type(module))
        reason = select.why_not(name, module) or _why_unsupported(module, backend)
        if reason:
            report.append(SwapEntry(name, torch_cls, "left", reason))
            continue
        lab_cls = LAB_OF[type(module)]
        module.__class__ = lab_cls
        module.backend = backend
        for attr, value in _EXTRA.get(lab_cls, {}).items():
            setattr(module, attr, value)
        report.append(SwapEntry(name, torch_cls, "swapped", _note(module, backend)))
    _fastpaths_off(model, report)
    return report


def unswap(model: nn.Module) -> SwapReport:
    """Turn every tritonlab layer in `model` (swapped in or built as one) back into its
    torch.nn class, in place, keeping the same module objects and tensors; the
    tritonlab-only state (backend, algo) is dropped. LinearActivation and
    SoftmaxDropout have no torch.nn class and are left."""
    _check_model(model, "unswap")
    report = SwapReport()
    for name, module in model.named_modules():
        if _fastpaths_on(module):
            report.append(SwapEntry(name, type(module), "left", "torch's fast path back on"))
        cls = type(module)
        if cls in TORCH_OF:
            module.__class__ = TORCH_OF[cls]
            for attr in ("backend", *_EXTRA.get(cls, {})):
                module.__dict__.pop(attr, None)
            report.append(SwapEntry(name, TORCH_OF[cls], "unswapped"))
        elif isinstance(module, _LAB_ONLY):
            report.append(SwapEntry(name, cls, "left", f"tritonlab's {cls.__name__} has no torch.nn class"))
        elif isinstance(module, tuple(TORCH_OF)):
            report.append(SwapEntry(name, cls, "left", f"subclass of tritonlab.{_lab_base(cls).__name__}"))
    return report


def _fastpaths_off(model: nn.Module, report: SwapReport) -> None:
    """Keep torch's encoder fast paths from bypassing the swapped layers (module docstring)."""
    for name, module in model.named_modules():
        if not isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerEncoder)):
            continue
        holds_lab = any(type(m) in TORCH_OF for m in module.modules())
        if isinstance(module, nn.TransformerEncoderLayer) and holds_lab and _NO_FASTPATH_HOOK not in vars(module):
            module.__dict__[_NO_FASTPATH_HOOK] = module.register_forward_pre_hook(_no_op)
            report.append(SwapEntry(name, type(module), "left", (
                "fast path off (a no-op forward pre-hook): torch._transformer_encoder_layer_fwd would bypass "
                "the swapped layers in eval mode without autograd")))
        elif isinstance(module, nn.TransformerEncoder) and holds_lab and getattr(module, "use_nested_tensor", False):
            module.__dict__[_NESTED_WAS] = True
            module.use_nested_tensor = False
            report.append(SwapEntry(name, type(module), "left", (
                "use_nested_tensor off: its nested-tensor fast path would hand the swapped layers nested tensors "
                "(so padded positions now hold computed values, not torch's zeros)")))


def _no_op(module, args) -> None:
    """A forward pre-hook that changes nothing: its presence turns the fast path off."""


def _fastpaths_on(module: nn.Module) -> bool:
    """Undo _fastpaths_off on one module; whether there was anything to undo."""
    hook = module.__dict__.pop(_NO_FASTPATH_HOOK, None)
    if hook is not None:
        hook.remove()
    nested = module.__dict__.pop(_NESTED_WAS, False)
    if nested:
        module.use_nested_tensor = True
    return hook is not None or nested


def _check_model(model, what: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what} expected a torch.nn.Module, got {type(model).__name__}")


def _is_container(module: nn.Module) -> bool:
    """A module that only holds others: not reported, its children are."""
    if isinstance(module, _CONTAINERS):
        return True
    return next(module.children(), None) is not None and not isinstance(module, tuple(LAB_OF))


def _lab_base(cls: type) -> type:
    return next(c for c in cls.__mro__ if c in TORCH_OF)


def _why_unsupported(module: nn.Module, backend: str | None) -> str:
    """Why `module` stays torch.nn's, or "" when it can be swapped."""
    cls = type(module)
    if cls in TORCH_OF or isinstance(module, _LAB_ONLY):
        return "already a tritonlab layer (no-op)"
    if cls is NonDynamicallyQuantizableLinear:
        return "MultiheadAttention's out_proj: the attention reads its weights and never calls it"
    if cls not in LAB_OF:
        if parametrize.is_parametrized(module):
            return "parametrized (torch.nn.utils.parametrize re-classes it; its forward is torch's wrapper)"
        base = next((c for c in cls.__mro__ if c in LAB_OF), None)
        if base is not None:
            return (f"subclass {cls.__name__} of torch.nn.{base.__name__} (it may override forward, "
                    f"which a swap would drop)")
        return f"tritonlab has no {cls.__name__} layer"
    for p in module.parameters(recurse=False):
        if not p.is_floating_point():
            return f"parameters are {p.dtype}; tritonlab layers take float16, bfloat16, float32 or float64"
    if cls is nn.Dropout and (isinstance(module.p, bool) or not isinstance(module.p, (int, float))
                                  or not 0 <= module.p <= 1):
        return f"dropout probability p={module.p!r} is not a number in [0, 1]"
    if backend == "triton":
        if cls is nn.Flatten:
            return "backend='triton' has no Flatten kernel (a view moves no data); use backend='auto'"
        if cls is nn.LSTM and module.proj_size:
            return "backend='triton' has no LSTM proj_size kernel; use backend='auto' (reference tier)"
        if cls in _NO_TRITON_FLOAT64 and _dtype(module) == torch.float64:
            return "backend='triton' takes no float64 for this layer; use backend='auto' (reference tier)"
    return ""


def _dtype(module: nn.Module) -> torch.dtype:
    """The dtype of a layer's own parameters (every layer in _NO_TRITON_FLOAT64 has some)."""
    return next(module.parameters(recurse=False)).dtype


def _note(module: nn.Module, backend: str | None) -> str:
    """What a swapped module does differently from the rest: under auto (None: the global
    choice may be auto) what runs on the reference tier; for attention, which path runs
    the tier's kernel."""
    notes = [_auto_note(module)] if backend in ("auto", None) else []
    if isinstance(module, lab.MultiheadAttention):
        notes.append("need_weights=True (torch's default) computes the weights from scratch; "
                     "need_weights=False runs the tier's attention")
    return "; ".join(n for n in notes if n)


def _auto_note(module: nn.Module) -> str:
    if isinstance(module, lab.Flatten):
        return "no Triton kernel (a view): runs on the reference tier"
    if isinstance(module, lab.LSTM) and module.proj_size:
        return "proj_size has no Triton kernel: runs on the reference tier"
    if isinstance(module, _NO_TRITON_FLOAT64) and _dtype(module) == torch.float64:
        return "float64: runs on the reference tier"
    return ""


def _patterns(value, what: str) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    try:
        items = list(items)
    except TypeError:
        items = [items]
    for p in items:
        if not isinstance(p, str):
            raise TypeError(f"swap {what} expected a pattern string or a list of them, got {p!r} "
                            f"({type(p).__name__})")
    return items


class _Selector:
    """include/exclude as described in `swap`; checks every pattern matches something."""

    def __init__(self, model: nn.Module, include, exclude):
        self.include = _patterns(include, "include")
        self.exclude = _patterns(exclude, "exclude")
        self.use_include = include is not None
        modules = list(model.named_modules())
        for what, patterns in (("include", self.include), ("exclude", self.exclude)):
            for p in patterns:
                if not any(self._matches(p, n, m) for n, m in modules):
                    raise ValueError(
                        f"swap {what} pattern {p!r} matches no module; expected a class name "
                        f"(e.g. {sorted({type(m).__name__ for _, m in modules})}) or a module name "
                        f"pattern (e.g. {[n for n, _ in modules if n][:8]})")

    @staticmethod
    def _matches(pattern: str, name: str, module: nn.Module) -> bool:
        cls = type(module)
        if pattern in (cls.__name__, TORCH_OF.get(cls, cls).__name__):
            return True
        parts = name.split(".") if name else []
        return any(fnmatch.fnmatchcase(".".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))

    def why_not(self, name: str, module: nn.Module) -> str:
        for p in self.exclude:
            if self._matches(p, name, module):
                return f"excluded by {p!r}"
        if self.use_include and not any(self._matches(p, name, module) for p in self.include):
            return "not in include"
        return ""
