"""The benchmarked ops: each declares its cases, its cost model (bytes it must move,
FLOPs it must do) and how to build its tritonlab and torch.nn modules, once.

A cost is the floor of the op, not what an implementation happens to do: an
elementwise op must read its input and write its output once; a GEMM must do 2·M·N·K
FLOPs. fwd+bwd adds the backward's own floor (elementwise: read y and dy, write dx;
GEMM-shaped ops: two more GEMMs of the same size).
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

import tritonlab
from ..layers._base import LabLayer


@dataclass(frozen=True)
class Case:
    label: str          # shown in tables, e.g. "256x1024"
    size: int           # the x-axis of plots: elements or FLOPs that grow with the case
    params: dict        # what the op's builders read
    quick: bool = False  # part of `--quick`
    device: str = "cpu"  # sized for "cpu" (seconds on two cores) or "cuda" (real model sizes)
    full: bool = False   # run only with --full (the default run stays within minutes)
    series: str = ""     # the cases of one curve in the plots share it, e.g. conv's batch and layout


@dataclass(frozen=True)
class Cost:
    bytes: float
    flops: float


@dataclass(frozen=True)
class Op:
    name: str
    cases: list[Case]
    lab: Callable[[dict], nn.Module]      # tritonlab layer for a case (backend set by the provider)
    torch: Callable[[dict], nn.Module]    # its torch.nn twin
    inputs: Callable[[dict], tuple]       # float32 CPU inputs; the runner casts and moves them
    cost: Callable[[dict, str, int], Cost]  # (params, mode, bytes per element)
    naive_steps: Callable[[dict], int]    # Python iterations the naive tier makes
    random: bool = False                  # output depends on a random mask (dropout)
    size_unit: str = "elements"           # what Case.size counts
    # more triton providers: name -> attributes set on the op's tritonlab layers
    variants: dict = field(default_factory=dict)
    compiled: bool = True                 # benchmark torch.compile of the reference tier
    graphed: bool = False                 # benchmark a CUDA-graph replay of the reference tier
    matmul: bool = False                  # float32 math through matmuls, which TF32 rounds to 10 bits
    # bytes a provider moves through scratch buffers beyond the op's floor: (params, provider, bytes per element)
    scratch_bytes: Callable[[dict, str, int], float] = lambda p, provider, es: 0.0


def _numel(shape) -> int:
    return math.prod(shape)


def _elementwise_cost(fwd_flops: int, bwd_flops: int, bwd_tensors: int = 3):
    """Read x, write y; the backward reads y (or x) and dy and writes dx: `bwd_tensors`
    tensors of x's size (dropout's 2: it regenerates its mask instead of reading one).
    FLOPs per element, forward and backward, as the lessons count them (an exp counts one)."""
    def cost(p, mode, es):
        n = _numel(p["shape"])
        fwd = Cost(2 * n * es, fwd_flops * n)
        return fwd if mode == "fwd" else Cost(fwd.bytes + bwd_tensors * n * es, (fwd_flops + bwd_flops) * n)
    return cost


# FLOPs per element (forward, backward):
RELU = (1, 1)        # a compare-select each way
SIGMOID = (4, 3)     # 1 / (1 + exp(-x)): negate, exp, add, divide; dy * y * (1 - y)
TANH = (5, 3)        # (1 - e) / (1 + e), e = exp(-2|x|): scale, exp, subtract, add, divide (|x| and the
                     # sign are bit operations); dy * (1 - y * y)
SOFTMAX = (5, 4)     # max, subtract, exp, sum, divide; y * (dy - sum(y * dy)): multiply, add, subtract, multiply
DROPOUT = (2, 2)     # compare with the random draw, scale (the draw itself is integer work); the same backward
SOFTMAX_DROPOUT = tuple(a + b for a, b in zip(SOFTMAX, DROPOUT))
DROPOUT_P = 0.1      # the p of both dropout ops; the runner's check expects 1 - p of the elements kept


def _rows(shape) -> int:
    return _numel(shape[:-1])


def _shape_cases(shapes: dict[str, list[tuple]], quick: tuple) -> list[Case]:
    """One case per shape, per device; the `quick` shapes mark --quick, FULL ones --full."""
    return [Case("x".join(map(str, s)), _numel(s), {"shape": s}, quick=s in quick, device=dev, full=s in FULL)
            for dev, group in shapes.items() for s in group]


# CPU: seconds on two cores. GPU: 16M+ elements, so a kernel runs long enough to
# reach bandwidth; rows of 1K-8K columns, and 32K (past what one program holds on chip);
# and one small case (512x512: 1 MB of float32 read, 1 MB written), where a call costs
# about one launch, as a small model's layers do
ELEMENTWISE = {"cpu": [(256, 1024), (1024, 4096)], "cuda": [(512, 512), (4096, 4096), (8192, 8192)]}
ROWS = {"cpu": [(256, 1024), (1024, 4096)],
        "cuda": [(512, 512), (8192, 1024), (8192, 4096), (8192, 8192), (2048, 32768)]}
QUICK = ((256, 1024), (4096, 4096), (8192, 4096))
FULL = ((8192, 8192), (8192, 1024))


def _elementwise(name, lab, ref, shapes, flops, naive_steps=_rows, bwd_tensors=3, **kw):
    """An op on one tensor of `shape`: lab and ref build the modules, with no parameters;
    `flops`: per element, (forward, backward); `bwd_tensors` as in _elementwise_cost."""
    return Op(name, _shape_cases(shapes, QUICK), lambda p: lab(), lambda p: ref(),
              lambda p: (torch.randn(p["shape"]),), _elementwise_cost(*flops, bwd_tensors),
              lambda p: naive_steps(p["shape"]), **kw)


def _gemm_bytes(x: int, w: int, y: int, mode: str, activation: bool) -> int:
    """Elements a GEMM-shaped op moves: the forward reads x and w and writes y; the
    backward reads dy, w and x and writes dx and dw (and reads y back for a fused
    activation's derivative): fwd+bwd 3x + 3w + 2y, or 3y with the activation."""
    fwd = x + w + y
    return fwd if mode == "fwd" else fwd + 2 * x + 2 * w + (2 if activation else 1) * y


def _linear_cost(p, mode, es, activation=False):
    """FLOPs: 2mnk forward, twice that backward (dX and dW)."""
    m, k, n = p["m"], p["k"], p["n"]
    flops = 2 * m * n * k
    return Cost(_gemm_bytes(m * k, k * n, m * n, mode, activation) * es, flops if mode == "fwd" else 3 * flops)


def _conv_out(p):
    pad, k = p["padding"], p["k"]
    h = (p["h"] + 2 * pad - k) // p["stride"] + 1
    return h, h


def _conv_cost(p, mode, es):
    """Each output sums over its group's C/groups input channels (and the weight holds that many)."""
    oh, ow = _conv_out(p)
    cg = p["c"] // p.get("groups", 1)
    flops = 2 * p["n"] * p["o"] * oh * ow * cg * p["k"] * p["k"]
    data = _gemm_bytes(p["n"] * p["c"] * p["h"] ** 2, p["o"] * cg * p["k"] ** 2, p["n"] * p["o"] * oh * ow, mode,
                       activation=False) * es
    return Cost(data, flops if mode == "fwd" else 3 * flops)


def _rnn_cost(gates):
    def cost(p, mode, es):
        b, t, i, h = p["b"], p["t"], p["i"], p["h"]
        flops = 2 * t * b * (i + h) * gates * h
        # x in, every h out, the weights once (they stay on chip across steps at best); the
        # backward reads each of them again (h for dR, with dy) and writes dx, dW and dR: 3x
        data = (t * b * i + t * b * h + gates * h * (i + h)) * es
        return Cost(data, flops) if mode == "fwd" else Cost(3 * data, 3 * flops)
    return cost


def _conv_case(n, c, o, h, k, stride=1, layout="nchw", quick=False, device="cpu", full=False, groups=1):
    p = {"n": n, "c": c, "o": o, "h": h, "k": k, "stride": stride, "padding": k // 2, "layout": layout,
         "groups": groups}
    grouped = f" g{groups}" if groups > 1 else ""
    return Case(f"N{n} {c}->{o} {h}x{h} k{k}/{stride}{grouped} {layout}", _conv_cost(p, "fwd", 1).flops, p, quick,
                device, full, series=f"N{n}{grouped} {layout}")


def _im2col_bytes(p, provider, es):
    """The im2col path writes the unfolded (N·P·Q, C·R·S) matrix and its GEMM reads it back."""
    if provider != "triton-im2col":
        return 0.0
    oh, ow = _conv_out(p)
    return 2.0 * p["n"] * oh * ow * p["c"] * p["k"] ** 2 * es


def _conv_input(p):
    x = torch.randn(p["n"], p["c"], p["h"], p["h"])
    return (x.to(memory_format=torch.channels_last) if p["layout"] == "nhwc" else x,)


# ResNet-50's convolutions at batch 32 (the 7x7/2 stem; 1x1 and 3x3 at 56, 28, 14, 7),
# each in both layouts, and two at batch 1. The default run takes five of them in NHWC and
# one in NCHW; --full takes all
RESNET50 = [(3, 64, 224, 7, 2), (64, 64, 56, 3, 1), (256, 64, 56, 1, 1), (128, 128, 28, 3, 1), (512, 128, 28, 1, 1),
            (256, 256, 14, 3, 1), (1024, 256, 14, 1, 1), (512, 512, 7, 3, 1), (2048, 512, 7, 1, 1)]
RESNET50_DEFAULT = {RESNET50[i] for i in (0, 1, 2, 5, 7)}
CONV_CASES = [_conv_case(8, 16, 32, 32, 3, quick=True), _conv_case(8, 64, 64, 28, 3), _conv_case(8, 64, 128, 28, 1),
              _conv_case(8, 64, 64, 28, 3, layout="nhwc")] + [
    _conv_case(32, *layer, layout, quick=layer == RESNET50[1] and layout == "nhwc", device="cuda",
               full=layer not in RESNET50_DEFAULT or (layout == "nchw" and layer != RESNET50[1]))
    for layout in ("nhwc", "nchw") for layer in RESNET50] + [
    _conv_case(1, *layer, "nhwc", device="cuda", full=True) for layer in (RESNET50[1], RESNET50[5])]


def _rnn_case(b, t, i, h, quick=False, device="cpu", full=False):
    return Case(f"B{b} T{t} I{i} H{h}", 2 * b * t * (i + h) * h, {"b": b, "t": t, "i": i, "h": h}, quick, device,
                full)


def _rnn(name, lab_cls, torch_cls, gates, cases):
    return Op(
        name, cases,
        lambda p: lab_cls(p["i"], p["h"]), lambda p: torch_cls(p["i"], p["h"]),
        lambda p: (torch.randn(p["t"], p["b"], p["i"]),),
        _rnn_cost(gates), lambda p: p["t"] * (gates + 1), size_unit="FLOPs per gate",
        variants={f"triton-{a}": {"algo": a} for a in ("step", "persistent", "persistent-grid")},
        compiled=False, graphed=True,  # compile would unroll every time step into one graph
        matmul=True,
    )


# (B, T, I, H): small batches are launch-bound (one recurrent step after another), the
# large ones compute-bound
RNN_CASES = [_rnn_case(8, 64, 64, 128, quick=True), _rnn_case(32, 64, 128, 256)] + [
    _rnn_case(*c, quick=i == 1, device="cuda", full=i in (2, 4)) for i, c in enumerate(
        [(1, 512, 128, 256), (8, 512, 256, 256), (32, 256, 256, 512), (64, 512, 512, 1024), (256, 128, 1024, 1024)])]

# the GPU's first: 4096³, where cuBLAS is the bar; second: a small layer (a char model's), launch-bound
LINEAR = {"cpu": [(256, 512, 512), (1024, 1024, 1024)],
          "cuda": [(4096, 4096, 4096), (64, 256, 256), (128, 4096, 4096), (16384, 1024, 4096)]}


def _linear_cases() -> list[Case]:
    return [Case(f"{m}x{k}->{n}", 2 * m * n * k, {"m": m, "k": k, "n": n}, quick=i == 0, device=dev,
                 full=dev == "cuda" and i > 1) for dev, group in LINEAR.items() for i, (m, k, n) in enumerate(group)]


def _flatten_cases() -> list[Case]:
    return [Case("x".join(map(str, s)), _numel(s), {"shape": s}, quick=True, device=dev)
            for dev, s in (("cpu", (32, 64, 8, 8)), ("cuda", (256, 64, 32, 32)))]


class _LinearReLU(nn.Linear):
    """torch's Linear then ReLU, two kernels, with nn.Linear's state_dict keys."""

    def forward(self, x):
        return torch.relu(super().forward(x))


def _softmax_dropout():
    return nn.Sequential(nn.Softmax(-1), nn.Dropout(DROPOUT_P))


def _attention_cost(p, mode, es):
    """FLOPs as FlashAttention-2 counts them (Dao 2023, section 4.1): the forward's two
    matmuls, QK^T and PV, 4·B·H·L·S·E, halved for causal (about half the scores are
    computed); the backward has five matmuls (it recomputes QK^T), 2.5× the forward.
    Bytes: the forward reads q, k, v and writes o once; the backward reads q, k, v, o and
    dO and writes dq, dk, dv (the softmax statistics, B·H·L floats, left out)."""
    q = p["b"] * p["h"] * p["l"] * p["e"]          # q and o, each (and dO, dq)
    kv = p["b"] * p["hkv"] * p["l"] * p["e"]       # k and v, each (and dk, dv)
    flops = 4 * p["b"] * p["h"] * p["l"] ** 2 * p["e"] // (2 if p["causal"] else 1)
    fwd = Cost((2 * q + 2 * kv) * es, flops)
    return fwd if mode == "fwd" else Cost(fwd.bytes + (4 * q + 4 * kv) * es, 3.5 * flops)


class _LabSDPA(LabLayer, nn.Module):
    """tritonlab's scaled_dot_product_attention as a module, so providers.build pins its tier."""

    def __init__(self, causal: bool, gqa: bool):
        super().__init__()
        self.causal, self.gqa = causal, gqa
        self._set_backend(None)

    def forward(self, q, k, v):
        return tritonlab.scaled_dot_product_attention(q, k, v, is_causal=self.causal, enable_gqa=self.gqa,
                                            backend=self.backend)


class _TorchSDPA(nn.Module):
    """torch's F.scaled_dot_product_attention. On CUDA held to the flash backend (the
    FlashAttention-2 kernel the triton tier is measured against); where that backend
    refuses the case (it takes fp16/bf16 only), torch's own choice runs instead and
    `fallback` (also warned, once) says why. The first CUDA call decides, so the timed
    calls pay no more than the sdpa_kernel context."""

    def __init__(self, causal: bool, gqa: bool):
        super().__init__()
        self.causal, self.gqa = causal, gqa
        self.fallback: str | None = None
        self._flash: bool | None = None  # None: not tried yet

    def _sdpa(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, enable_gqa=self.gqa)

    def forward(self, q, k, v):
        if q.device.type != "cuda" or self._flash is False:
            return self._sdpa(q, k, v)
        from torch.nn.attention import SDPBackend, sdpa_kernel
        if self._flash:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return self._sdpa(q, k, v)
        with warnings.catch_warnings(record=True) as why:  # torch warns its reasons, then raises
            warnings.simplefilter("always")
            try:
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    out = self._sdpa(q, k, v)
                self._flash = True
                return out
            except RuntimeError as e:
                reasons = "; ".join(str(w.message).strip() for w in why) or str(e).strip()
        self._flash = False
        self.fallback = f"flash backend refused {q.dtype} {tuple(q.shape)}: {reasons}; torch's default backend ran"
        warnings.warn(self.fallback, stacklevel=2)
        return self._sdpa(q, k, v)


def _attention_case(b, h, l, e, causal, hkv=None, quick=False, device="cpu", full=False):
    p = {"b": b, "h": h, "hkv": hkv or h, "l": l, "e": e, "causal": causal}
    label = f"B{b} H{h}{f'/{hkv}kv' if hkv else ''} L{l} E{e}{' causal' if causal else ''}"
    return Case(label, _attention_cost(p, "fwd", 1).flops, p, quick, device, full,
                series=f"{'GQA ' if hkv else ''}{'causal' if causal else 'non-causal'}")


# CPU: seconds on two cores; the naive tier's loop over queries (Python and autograd per
# row) runs the first two, the 512-long ones are past its limit. GPU (the range: batch 4-16, heads 8-32, head dim 64/128, sequence
# 512-16K): the default run takes head dim 128 at 4K, causal and not, and one head dim 64
# case; --full the rest, 16K included (the reference tier's L×L scores run out of memory
# there: recorded as skipped)
ATTENTION_CASES = [_attention_case(1, 2, 64, 16, False, quick=True), _attention_case(1, 4, 128, 32, True),
                   _attention_case(4, 4, 512, 64, True), _attention_case(4, 4, 512, 64, False)] + [
    _attention_case(*c, device="cuda", quick=i == 1, full=i > 2, **kw) for i, (c, kw) in enumerate([
        ((8, 16, 1024, 64, False), {}), ((4, 16, 4096, 128, True), {}), ((4, 16, 4096, 128, False), {}),
        ((16, 32, 512, 64, False), {}), ((16, 8, 2048, 64, True), {}), ((8, 32, 2048, 128, False), {}),
        ((4, 16, 8192, 128, True), {}), ((4, 16, 8192, 128, False), {}),
        ((4, 16, 16384, 128, True), {}), ((4, 16, 16384, 128, False), {}),
        ((4, 32, 4096, 128, True), {"hkv": 8})])]


def _attention_inputs(p):
    q = torch.randn(p["b"], p["h"], p["l"], p["e"])
    return q, torch.randn(p["b"], p["hkv"], p["l"], p["e"]), torch.randn(p["b"], p["hkv"], p["l"], p["e"])


OPS: dict[str, Op] = {op.name: op for op in [
    _elementwise("relu", tritonlab.ReLU, nn.ReLU, ELEMENTWISE, RELU),
    _elementwise("sigmoid", tritonlab.Sigmoid, nn.Sigmoid, ELEMENTWISE, SIGMOID),
    _elementwise("tanh", tritonlab.Tanh, nn.Tanh, ELEMENTWISE, TANH),
    _elementwise("softmax", lambda: tritonlab.Softmax(-1), lambda: nn.Softmax(-1), ROWS, SOFTMAX),
    _elementwise("dropout", lambda: tritonlab.Dropout(DROPOUT_P), lambda: nn.Dropout(DROPOUT_P), ROWS, DROPOUT,
                 bwd_tensors=2, random=True),
    _elementwise("softmax_dropout", lambda: tritonlab.SoftmaxDropout(DROPOUT_P, -1), _softmax_dropout, ROWS,
                 SOFTMAX_DROPOUT, naive_steps=lambda s: 2 * _rows(s), random=True),
    Op("flatten", _flatten_cases(), lambda p: tritonlab.Flatten(), lambda p: nn.Flatten(),
       lambda p: (torch.randn(p["shape"]),), lambda p, mode, es: Cost(0, 0), lambda p: 1, compiled=False),
    Op("linear", _linear_cases(),
       lambda p: tritonlab.Linear(p["k"], p["n"]), lambda p: nn.Linear(p["k"], p["n"]),
       lambda p: (torch.randn(p["m"], p["k"]),), _linear_cost, lambda p: p["m"], size_unit="FLOPs", matmul=True),
    # with the activation in the GEMM's epilogue on the triton tier
    Op("linear_relu", _linear_cases(),
       lambda p: tritonlab.LinearActivation(p["k"], p["n"], "relu"), lambda p: _LinearReLU(p["k"], p["n"]),
       lambda p: (torch.randn(p["m"], p["k"]),), functools.partial(_linear_cost, activation=True), lambda p: p["m"],
       size_unit="FLOPs", matmul=True),
    Op("conv2d", CONV_CASES,
       lambda p: tritonlab.Conv2d(p["c"], p["o"], p["k"], p["stride"], p["padding"], groups=p.get("groups", 1)),
       lambda p: nn.Conv2d(p["c"], p["o"], p["k"], p["stride"], p["padding"], groups=p.get("groups", 1)),
       _conv_input, _conv_cost, lambda p: _conv_out(p)[0] * _conv_out(p)[1], size_unit="FLOPs",
       variants={"triton-im2col": {"algo": "im2col"}, "triton-implicit": {"algo": "implicit"}},
       scratch_bytes=_im2col_bytes, matmul=True),
    _rnn("gru", tritonlab.GRU, nn.GRU, 3, RNN_CASES),
    _rnn("lstm", tritonlab.LSTM, nn.LSTM, 4, RNN_CASES),
    Op("attention", ATTENTION_CASES,
       lambda p: _LabSDPA(p["causal"], p["hkv"] != p["h"]), lambda p: _TorchSDPA(p["causal"], p["hkv"] != p["h"]),
       _attention_inputs, _attention_cost, lambda p: p["b"] * p["h"] * p["l"], size_unit="FLOPs",
       matmul=True),
]}
