"""Host time per call of each triton-tier layer, its kernel launches stubbed out.

A GPU runs a small kernel in microseconds; if the Python around its launch (tier
selection, checks, output allocation, the autograd Function, the launcher's grid and
layout logic) takes longer, the GPU waits on the host and the layer is host-bound. The
H200 run of 2026-11-28 showed it (ReLU on 16M elements: 0.080 ms through the layer,
0.038 ms as a bare launch). This measures that Python on any machine: Triton's
interpreter is switched on so the triton tier accepts CPU tensors, and every kernel
launch (`kernel[grid](...)`) is replaced by a no-op, so what is timed is tritonlab's
own host code plus torch's autograd, without Triton's launcher (which a GPU adds on
top) and without any kernel. The launchers take their interpreter branches: GEMM,
conv and attention a fixed tile instead of the autotuner's lookup (which a GPU adds
too); the RNNs are set to persistent-grid, the variant `auto` takes on a GPU at these
sizes. torch.nn's time on the same CPU tensors is printed beside it for scale (its CPU
kernels included, so it is not a like-for-like host time). The outputs are garbage
(nothing computes them); only the time means anything.

    .venv/bin/python scripts/host_overhead.py [layer ...] [--calls N]

Each number is the best of 5 rounds of the mean over N calls (2000 by default) after a
warm-up, in microseconds; on a shared 2-core machine expect ±10%.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ["TRITON_INTERPRET"] = "1"  # before tritonlab's kernel modules load: triton.jit reads it per kernel

import torch  # noqa: E402
from torch import nn  # noqa: E402
from triton.runtime import interpreter, jit  # noqa: E402

import tritonlab  # noqa: E402
from tritonlab.bench.runner import _first  # noqa: E402


def _no_launch(self, grid):
    return lambda *args, **kwargs: None


# every launch path: plain kernels (interpreted), autotuned and heuristics-wrapped ones
interpreter.InterpretedFunction.__getitem__ = _no_launch
jit.KernelInterface.__getitem__ = _no_launch


def _cases() -> dict:
    return {
        "relu": (lambda: tritonlab.ReLU(), nn.ReLU, (64, 64)),
        "softmax": (lambda: tritonlab.Softmax(-1), lambda: nn.Softmax(-1), (64, 64)),
        "dropout": (lambda: tritonlab.Dropout(0.1), lambda: nn.Dropout(0.1), (64, 64)),
        "softmax_dropout": (lambda: tritonlab.SoftmaxDropout(0.1, -1), None, (64, 64)),
        "linear": (lambda: tritonlab.Linear(64, 64), lambda: nn.Linear(64, 64), (64, 64)),
        "conv2d": (lambda: tritonlab.Conv2d(16, 16, 3, padding=1), lambda: nn.Conv2d(16, 16, 3, padding=1),
                   (2, 16, 8, 8)),
        "lstm": (lambda: tritonlab.LSTM(16, 16), lambda: nn.LSTM(16, 16), (8, 2, 16)),
        "gru": (lambda: tritonlab.GRU(16, 16), lambda: nn.GRU(16, 16), (8, 2, 16)),
        "attention": (lambda: tritonlab.MultiheadAttention(32, 4, batch_first=True),
                      lambda: nn.MultiheadAttention(32, 4, batch_first=True), (2, 16, 32)),
    }


def _per_call_us(fn, calls: int) -> float:
    for _ in range(max(50, calls // 10)):  # warm-up: first calls import, build caches
        fn()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def _step(mod, x, backward: bool):
    attention = isinstance(mod, nn.MultiheadAttention)
    # attention: self-attention without the weights, the path a transformer takes (the
    # triton tier's kernel; with weights both libraries take their reference path)
    kwargs = {"need_weights": False} if attention else {}
    leaf = x.detach().requires_grad_(backward)
    inputs = (leaf, leaf, leaf) if attention else (leaf,)
    if not backward:
        def fwd():
            with torch.no_grad():
                mod(*inputs, **kwargs)
        return fwd
    wrt = [leaf, *mod.parameters()]

    def fwd_bwd():
        out = _first(mod(*inputs, **kwargs))
        torch.autograd.grad(out, wrt, torch.ones_like(out), allow_unused=True)
    return fwd_bwd


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Host time per call of each triton-tier layer, launches stubbed.")
    parser.add_argument("layers", nargs="*", help="layers to time (all by default)")
    parser.add_argument("--calls", type=int, default=2000, help="calls per round (5 rounds, the best kept)")
    args = parser.parse_args(argv)
    cases = _cases()
    unknown = sorted(set(args.layers) - set(cases))
    if unknown:
        print(f"unknown layer(s) {unknown}; choose from {sorted(cases)}", file=sys.stderr)
        return 2
    if args.calls < 1:
        print(f"--calls must be at least 1, got {args.calls}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    print(f"{'layer':16s} {'fwd us':>8s} {'torch.nn':>9s} {'fwd+bwd us':>11s} {'torch.nn':>9s}")
    for name in args.layers or cases:
        lab_cls, torch_cls, shape = cases[name]
        lab = lab_cls()
        lab.backend = "triton"
        if isinstance(lab, nn.RNNBase):
            lab.algo = "persistent-grid"
        x = torch.randn(shape)
        row = [_per_call_us(_step(lab, x, b), args.calls) for b in (False, True)]
        ref = [_per_call_us(_step(torch_cls(), x, b), args.calls) for b in (False, True)] if torch_cls else [None] * 2
        cells = [f"{v:8.1f}" if v is not None else f"{'–':>8s}" for v in (row[0], ref[0], row[1], ref[1])]
        print(f"{name:16s} {cells[0]} {cells[1]:>9s} {cells[2]:>11s} {cells[3]:>9s}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
