"""Run ops × cases × providers × modes and collect one row each (DESIGN.md's columns).

Providers: the tiers (`naive`, `reference`, `triton`) through tritonlab's layers, and
`torch` (torch.nn: oneDNN on CPU, cuDNN/cuBLAS on GPU) with the same weights. Before a
provider is timed, its forward output is checked against torch's; a wrong provider is
recorded as `wrong`, never timed. The naive tier runs only cases it can finish in
seconds; anything not run is a row with `status` saying why.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import platform

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from ..layers._base import LabLayer
from . import ceilings as ceil
from .ops import OPS, Op
from .timing import refuse_interpreter, time_fn

PROVIDERS = ("naive", "reference", "triton", "torch")
MODES = ("fwd", "fwd+bwd")
NAIVE_MAX_STEPS = 5000  # Python iterations per call; more would take minutes
DROPOUT_P = 0.1         # the p of the benchmarked dropout ops
TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model} ({torch.get_num_threads()} threads)"


def _triton_version() -> str:
    try:
        return importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _provider_module(op: Op, params: dict, provider: str, ref: nn.Module, device, dtype) -> nn.Module:
    """torch.nn for `torch`; else the tritonlab layer pinned to the tier, with ref's weights."""
    if provider == "torch":
        return ref
    lab = op.lab(params).to(device=device, dtype=dtype)
    lab.load_state_dict(ref.state_dict())
    for m in lab.modules():
        if isinstance(m, LabLayer):
            m.backend = provider
    return lab


def _first(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else _first(out[0])


def _error(op: Op, out: torch.Tensor, ref: nn.Module, inputs) -> float:
    """Largest absolute difference from torch. For a dropout op the masks differ, so
    the expectation is torch's eval output (no dropout) under this provider's mask."""
    with torch.no_grad():
        if op.random:
            ref.eval()
            expected = _first(ref(*inputs)) * (out != 0) / (1 - DROPOUT_P)
            ref.train()
        else:
            expected = _first(ref(*inputs))
    return (out.double() - expected.double()).abs().max().item() if out.numel() else 0.0


def _skip_reason(op: Op, params: dict, provider: str, device: torch.device) -> str | None:
    if provider == "naive" and op.naive_steps(params) > NAIVE_MAX_STEPS:
        return f"skipped: naive tier would loop {op.naive_steps(params)} times in Python"
    if provider == "triton" and device.type != "cuda":
        return "skipped: Triton kernels are timed on CUDA only (never under the interpreter)"
    return None


def _callable(mod: nn.Module, inputs, mode: str):
    if mode == "fwd":
        def fwd():
            with torch.no_grad():
                return mod(*inputs)
        return fwd
    leaves = [i.detach().requires_grad_() for i in inputs]
    wrt = leaves + [p for p in mod.parameters() if p.requires_grad]
    grad = torch.randn_like(_first(mod(*leaves)))

    def fwd_bwd():
        return torch.autograd.grad(_first(mod(*leaves)), wrt, grad, allow_unused=True)
    return fwd_bwd


def run(ops=None, dtype=torch.float32, device=None, quick=False, providers=PROVIDERS, modes=MODES,
        progress=True) -> tuple[pd.DataFrame, ceil.Ceilings]:
    """Benchmark `ops` (names or Op objects; all of OPS by default) and return (rows,
    the measured ceilings)."""
    refuse_interpreter()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    chosen = [OPS.get(o, o) if isinstance(o, str) else o for o in (ops or OPS)]
    unknown = [o for o in chosen if not isinstance(o, Op)]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; choose from {sorted(OPS)}")
    limits = ceil.measure(device, dtype, quick)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    common = {"dtype": str(dtype).removeprefix("torch."), "device": device_name(device),
              "torch_version": torch.__version__, "triton_version": _triton_version(), "timestamp": stamp,
              "tf32": torch.backends.cuda.matmul.allow_tf32 if device.type == "cuda" else False}
    work = [(op, case) for op in chosen for case in op.cases if case.quick or not quick]
    rows = []
    budget = 0.2 if quick else 0.5
    for op, case in tqdm(work, desc="bench", disable=not progress, unit="case"):
        torch.manual_seed(0)
        ref = op.torch(case.params).to(device=device, dtype=dtype)
        inputs = [t.to(device=device, dtype=dtype) for t in op.inputs(case.params)]
        es = inputs[0].element_size()
        for provider in providers:
            mod = _provider_module(op, case.params, provider, ref, device, dtype)
            reason = _skip_reason(op, case.params, provider, device)
            checked = None  # the forward check, once per provider, shared by its modes
            for mode in modes:
                cost = op.cost(case.params, mode, es)
                row = {"op": op.name, "provider": provider, "mode": mode, "case": case.label, "size": case.size,
                       "size_unit": op.size_unit,
                       "bytes": cost.bytes, "flops": cost.flops, **common}
                try:
                    if reason is not None:
                        row["status"] = reason
                    else:
                        checked = checked or _check(op, mod, ref, inputs, dtype)
                        row.update(checked)
                        if row["status"] == "ok":
                            row.update(_time(mod, inputs, mode, device, budget))
                except NotImplementedError as e:
                    row["status"] = f"skipped: {e}"
                except torch.cuda.OutOfMemoryError:
                    row["status"] = "skipped: out of memory"
                rows.append(row)
    return _derive(pd.DataFrame(rows), limits), limits


def _check(op, mod, ref, inputs, dtype) -> dict:
    """Forward once and compare with torch: `ok` within the dtype's tolerance (scaled by
    the output's magnitude), else `wrong`."""
    with torch.no_grad():
        out = _first(mod(*inputs))
    err = _error(op, out, ref, inputs)
    scale = max(1.0, out.abs().max().item()) if out.numel() else 1.0
    return {"max_abs_err": err, "status": "ok" if err <= TOLERANCE[dtype] * scale else "wrong"}


def _time(mod, inputs, mode, device, budget) -> dict:
    fn = _callable(mod, inputs, mode)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    p50, p20, p80 = time_fn(fn, device, budget)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {"ms_p50": p50, "ms_p20": p20, "ms_p80": p80, "peak_mem_mb": peak}


def _derive(df: pd.DataFrame, limits: ceil.Ceilings) -> pd.DataFrame:
    """Throughput, roofline fraction and speed-up vs torch from the times and costs."""
    for col in ("ms_p50", "ms_p20", "ms_p80", "max_abs_err", "peak_mem_mb"):
        if col not in df:
            df[col] = float("nan")
    sec = df["ms_p50"] * 1e-3
    df["gbps"] = (df["bytes"] / sec / 1e9).where(df["bytes"] > 0)
    df["tflops"] = (df["flops"] / sec / 1e12).where(df["flops"] > 0)
    floor = [limits.floor_ms(b, f) for b, f in zip(df["bytes"], df["flops"])]
    df["roofline_frac"] = (pd.Series(floor, index=df.index) / df["ms_p50"]).where(df["bytes"] + df["flops"] > 0)
    torch_ms = df[df["provider"] == "torch"].set_index(["op", "case", "mode"])["ms_p50"]
    key = pd.MultiIndex.from_frame(df[["op", "case", "mode"]])
    df["speedup_vs_torch"] = torch_ms.reindex(key).to_numpy() / df["ms_p50"].to_numpy()
    df["copy_gbps_ceiling"] = limits.copy_gbps
    df["matmul_tflops_ceiling"] = limits.matmul_tflops
    df["launch_us"] = limits.launch_us
    return df
