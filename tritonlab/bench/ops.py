"""The benchmarked ops: each declares its cases, its cost model (bytes it must move,
FLOPs it must do) and how to build its tritonlab and torch.nn modules, once.

A cost is the floor of the op, not what an implementation happens to do: an
elementwise op must read its input and write its output once; a GEMM must do 2·M·N·K
FLOPs. fwd+bwd adds the backward's own floor (elementwise: read y and dy, write dx;
GEMM-shaped ops: two more GEMMs of the same size).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

import tritonlab


@dataclass(frozen=True)
class Case:
    label: str          # shown in tables, e.g. "256x1024"
    size: int           # the x-axis of plots: elements or FLOPs that grow with the case
    params: dict        # what the op's builders read
    quick: bool = False  # part of `--quick`


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


def _numel(shape) -> int:
    return math.prod(shape)


def _elementwise_cost(p, mode, es):
    n = _numel(p["shape"])
    fwd = Cost(2 * n * es, 4 * n)
    return fwd if mode == "fwd" else Cost(fwd.bytes + 3 * n * es, fwd.flops + 4 * n)


def _rows(shape) -> int:
    return _numel(shape[:-1])


def _elementwise(name, lab_cls, torch_cls, shapes, **kw):
    cases = [Case("x".join(map(str, s)), _numel(s), {"shape": s}, quick=i == 0) for i, s in enumerate(shapes)]
    return Op(name, cases, lambda p: lab_cls(**kw), lambda p: torch_cls(**kw),
              lambda p: (torch.randn(p["shape"]),), _elementwise_cost, lambda p: _rows(p["shape"]))


ROW_SHAPES = [(256, 1024), (1024, 4096)]


def _linear_cost(p, mode, es):
    m, k, n = p["m"], p["k"], p["n"]
    flops = 2 * m * n * k
    data = (m * k + k * n + m * n) * es
    return Cost(data, flops) if mode == "fwd" else Cost(3 * data, 3 * flops)


def _conv_out(p):
    pad, k = p["padding"], p["k"]
    h = (p["h"] + 2 * pad - k) // p["stride"] + 1
    return h, h


def _conv_cost(p, mode, es):
    oh, ow = _conv_out(p)
    flops = 2 * p["n"] * p["o"] * oh * ow * p["c"] * p["k"] * p["k"]
    data = (p["n"] * p["c"] * p["h"] ** 2 + p["o"] * p["c"] * p["k"] ** 2 + p["n"] * p["o"] * oh * ow) * es
    return Cost(data, flops) if mode == "fwd" else Cost(3 * data, 3 * flops)


def _rnn_cost(gates):
    def cost(p, mode, es):
        b, t, i, h = p["b"], p["t"], p["i"], p["h"]
        flops = 2 * t * b * (i + h) * gates * h
        # x in, every h out, the weights once (they stay on chip across steps at best)
        data = (t * b * i + t * b * h + gates * h * (i + h)) * es
        return Cost(data, flops) if mode == "fwd" else Cost(3 * data, 3 * flops)
    return cost


def _conv_case(n, c, o, h, k, stride=1, quick=False):
    p = {"n": n, "c": c, "o": o, "h": h, "k": k, "stride": stride, "padding": k // 2}
    oh, ow = _conv_out(p)
    return Case(f"N{n} {c}->{o} {h}x{h} k{k}/{stride}", 2 * n * o * oh * ow * c * k * k, p, quick)


def _rnn_case(b, t, i, h, quick=False):
    return Case(f"B{b} T{t} I{i} H{h}", 2 * b * t * (i + h) * h, {"b": b, "t": t, "i": i, "h": h}, quick)


def _rnn(name, lab_cls, torch_cls, gates, cases):
    return Op(
        name, cases,
        lambda p: lab_cls(p["i"], p["h"]), lambda p: torch_cls(p["i"], p["h"]),
        lambda p: (torch.randn(p["t"], p["b"], p["i"]),),
        _rnn_cost(gates), lambda p: p["t"] * (gates + 1), size_unit="FLOPs per gate",
    )


RNN_CASES = [_rnn_case(8, 64, 64, 128, quick=True), _rnn_case(32, 64, 128, 256)]

OPS: dict[str, Op] = {op.name: op for op in [
    _elementwise("relu", tritonlab.ReLU, nn.ReLU, ROW_SHAPES),
    _elementwise("sigmoid", tritonlab.Sigmoid, nn.Sigmoid, ROW_SHAPES),
    _elementwise("tanh", tritonlab.Tanh, nn.Tanh, ROW_SHAPES),
    _elementwise("softmax", tritonlab.Softmax, nn.Softmax, ROW_SHAPES, dim=-1),
    Op("dropout", [Case("x".join(map(str, s)), _numel(s), {"shape": s}, quick=i == 0) for i, s in enumerate(ROW_SHAPES)],
       lambda p: tritonlab.Dropout(0.1), lambda p: nn.Dropout(0.1),
       lambda p: (torch.randn(p["shape"]),), _elementwise_cost, lambda p: _rows(p["shape"]), random=True),
    Op("softmax_dropout", [Case("x".join(map(str, s)), _numel(s), {"shape": s}, quick=i == 0)
                           for i, s in enumerate(ROW_SHAPES)],
       lambda p: tritonlab.SoftmaxDropout(0.1, -1), lambda p: nn.Sequential(nn.Softmax(-1), nn.Dropout(0.1)),
       lambda p: (torch.randn(p["shape"]),), _elementwise_cost, lambda p: 2 * _rows(p["shape"]), random=True),
    Op("flatten", [Case("32x64x8x8", 32 * 64 * 64, {"shape": (32, 64, 8, 8)}, quick=True)],
       lambda p: tritonlab.Flatten(), lambda p: nn.Flatten(),
       lambda p: (torch.randn(p["shape"]),), lambda p, mode, es: Cost(0, 0), lambda p: 1),
    Op("linear", [Case(f"{m}x{k}->{n}", 2 * m * n * k, {"m": m, "k": k, "n": n}, quick=i == 0)
                  for i, (m, k, n) in enumerate([(256, 512, 512), (1024, 1024, 1024)])],
       lambda p: tritonlab.Linear(p["k"], p["n"]), lambda p: nn.Linear(p["k"], p["n"]),
       lambda p: (torch.randn(p["m"], p["k"]),), _linear_cost, lambda p: p["m"], size_unit="FLOPs"),
    Op("conv2d", [_conv_case(8, 16, 32, 32, 3, quick=True), _conv_case(8, 64, 64, 28, 3), _conv_case(8, 64, 128, 28, 1)],
       lambda p: tritonlab.Conv2d(p["c"], p["o"], p["k"], p["stride"], p["padding"]),
       lambda p: nn.Conv2d(p["c"], p["o"], p["k"], p["stride"], p["padding"]),
       lambda p: (torch.randn(p["n"], p["c"], p["h"], p["h"]),), _conv_cost,
       lambda p: _conv_out(p)[0] * _conv_out(p)[1], size_unit="FLOPs"),
    _rnn("gru", tritonlab.GRU, nn.GRU, 3, RNN_CASES),
    _rnn("lstm", tritonlab.LSTM, nn.LSTM, 4, RNN_CASES),
]}
