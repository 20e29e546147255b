"""How one callable is timed: CUDA events on a GPU, repeated wall-clock runs on CPU.

Both return (p50, p20, p80) in milliseconds, the first call (compilation, autotuning,
allocator warm-up) kept out. On a GPU, time_loop adds the wall-clock time per call of a
loop of calls, host time included. Under TRITON_INTERPRET=1 nothing is timed: the
interpreter runs kernels in Python, thousands of times slower than the device.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch

from ..backend import interpreter_enabled


def refuse_interpreter() -> None:
    if interpreter_enabled():
        raise RuntimeError(
            "refusing to time under TRITON_INTERPRET=1: the interpreter runs Triton kernels "
            "in Python on the CPU, so its timings say nothing about the kernels; unset it"
        )


def _quantile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[round(q * 100) - 1] if len(samples) > 1 \
        else samples[0]


def time_cpu(fn: Callable[[], object], budget_s: float = 0.5, min_runs: int = 5,
             max_runs: int = 100) -> tuple[float, float, float]:
    """Median, p20 and p80 of repeated runs after one warm-up run, within `budget_s`
    (but at least `min_runs` runs)."""
    refuse_interpreter()
    fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_runs or (len(samples) < max_runs and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples), _quantile(samples, 0.2), _quantile(samples, 0.8)


def time_gpu(fn: Callable[[], object], warmup_ms: float = 25, rep_ms: float = 100) -> tuple[float, float, float]:
    """triton.testing.do_bench: CUDA events, `warmup_ms` of warm-up, then runs for about
    `rep_ms`, an L2 flush before every run."""
    refuse_interpreter()
    from triton.testing import do_bench
    fn()  # compile and autotune outside the timed runs
    torch.cuda.synchronize()
    p50, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    return p50, p20, p80


def time_loop(fn: Callable[[], object], device: torch.device, per_call_ms: float, target_ms: float = 50.0) -> float:
    """Mean wall-clock ms per call over back-to-back calls (about `target_ms` in all, 1 to
    1000 calls; `fn` already warm) ending in one synchronize, no cache flush between
    them: what a loop of calls, such as a training step's layers, pays, host time
    included. do_bench clears the L2 before each timed call, which gives the host that
    long to queue the call's kernels, so there a call whose Python outlasts its kernels
    reads as fast as them. NaN off a GPU, where time_cpu's runs are wall-clock already."""
    if device.type != "cuda":
        return float("nan")
    calls = max(1, min(1000, math.ceil(target_ms / max(per_call_ms, 1e-3))))
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3 / calls


def time_fn(fn: Callable[[], object], device: torch.device, budget_s: float = 0.5) -> tuple[float, float, float]:
    return time_gpu(fn) if device.type == "cuda" else time_cpu(fn, budget_s)


def peak_mb(fn: Callable[[], object], device: torch.device) -> float:
    """The most memory allocated during one call of `fn`, in MiB (inputs included); NaN
    off a GPU. Measured on a call of its own after a warm one: neither do_bench's L2
    flush buffer nor the autotuner's (a first backward may tune) is the op's."""
    if device.type != "cuda":
        return float("nan")
    fn()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20
