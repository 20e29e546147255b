"""Run ops × cases × providers × modes and collect one row each (DESIGN.md's columns).

Providers are registered in `providers.py`. Before a provider is timed, its forward
output is checked against torch's; a wrong provider is recorded as `wrong`, never
timed, and one that raises is recorded as `failed` with the error, so one broken
kernel never costs the rest of a run. The naive tier runs only cases it can finish in
seconds; anything not run is a row with `status` saying why. The first forward of each
provider (compile, autotune, allocator warm-up) is kept out of the medians and reported
as `first_call_ms`.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import math
import platform
import subprocess
import time

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from . import ceilings as ceil
from . import providers as prov
from ..backend import same_tf32, tf32_enabled
from .ops import DROPOUT_P, OPS, Cost, Op
from .timing import peak_mb, refuse_interpreter, time_fn, time_loop

PROVIDERS = prov.BASE
MODES = ("fwd", "bwd", "fwd+bwd")
QUICK_MODES = ("fwd", "fwd+bwd")  # --quick: the backward alone shows as their difference
NAIVE_MAX_STEPS = 5000  # Python iterations per call; more would take minutes
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


def _first(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else _first(out[0])


def _error(op: Op, out: torch.Tensor, ref: nn.Module, inputs) -> tuple[float, float, float]:
    """Largest absolute difference from torch (inf for an output of another shape); the
    largest magnitude torch's output holds (1 where it holds none), the scale that
    difference is held to; and the difference's 2-norm over torch's output's (its
    relative RMS error). For a dropout op the masks differ, so the expectation is
    torch's eval output (no dropout) under this provider's mask."""
    with torch.no_grad():
        if op.random:
            ref.eval()
            expected = _first(ref(*inputs)) * (out != 0) / (1 - DROPOUT_P)
            ref.train()
        else:
            expected = _first(ref(*inputs))
    if out.shape != expected.shape:  # broadcasting would compare a wrong shape without a word
        return float("inf"), 1.0, float("inf")
    if not out.numel():
        return 0.0, 1.0, 0.0
    diff, expected = out.double() - expected.double(), expected.double()
    scale, norm = expected.abs().max().item(), expected.norm().item()
    rms = diff.norm().item() / norm if norm > 0 else (0.0 if not diff.any() else float("inf"))
    return diff.abs().max().item(), scale if scale > 0 else 1.0, rms


def _cuda_versions() -> dict:
    """CUDA runtime torch was built with and the driver's version (nvidia-smi), or 'none'."""
    if not torch.cuda.is_available():
        return {"cuda_version": "none", "driver_version": "none"}
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30).stdout.split("\n")[0].strip()
    except (OSError, subprocess.SubprocessError):
        driver = ""
    return {"cuda_version": torch.version.cuda or "none", "driver_version": driver or "unknown"}


def common_columns(device: torch.device, dtype: torch.dtype) -> dict:
    """What every row of a run carries: dtype, device, versions, TF32 (every op's, under
    same_tf32), time stamp."""
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"dtype": str(dtype).removeprefix("torch."), "device": device_name(device),
            "torch_version": torch.__version__, "triton_version": _triton_version(), "timestamp": stamp,
            "tf32": tf32_enabled() if device.type == "cuda" else False,
            **_cuda_versions()}


def skip_reason(op: Op, params: dict, provider: str, mode: str, device: torch.device) -> str | None:
    if provider == "naive" and op.naive_steps(params) > NAIVE_MAX_STEPS:
        return f"skipped: naive tier would loop {op.naive_steps(params)} times in Python"
    if provider == "graph" and mode == "bwd":
        return "skipped: a graphed backward replays only after its own forward; see fwd+bwd"
    return prov.skip_reason(op, provider, device)


def cost_of(op: Op, params: dict, mode: str, es: int) -> Cost:
    """The op's floor for `mode`; the backward alone is fwd+bwd less the forward."""
    if mode != "bwd":
        return op.cost(params, mode, es)
    both, fwd = op.cost(params, "fwd+bwd", es), op.cost(params, "fwd", es)
    return Cost(both.bytes - fwd.bytes, both.flops - fwd.flops)


def make_callable(mod: nn.Module, inputs, mode: str):
    if mode == "fwd":
        def fwd():
            with torch.no_grad():
                return mod(*inputs)
        return fwd
    leaves = [i.detach().requires_grad_() for i in inputs]
    wrt = leaves + [p for p in mod.parameters() if p.requires_grad]
    out = _first(mod(*leaves))
    grad = torch.randn_like(out)
    if mode == "bwd":  # the forward once, its graph kept for every timed backward
        return lambda: torch.autograd.grad(out, wrt, grad, retain_graph=True, allow_unused=True)

    def fwd_bwd():
        return torch.autograd.grad(_first(mod(*leaves)), wrt, grad, allow_unused=True)
    return fwd_bwd


def _outcome(e: Exception, provider: str) -> str:
    """The status of a row whose provider raised: `skipped` for what a tier refuses by
    design (an op without a kernel, a dtype the kernels do not take, memory), `failed`
    with the error otherwise."""
    msg = str(e).strip().split("\n")[0][:200]
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return "skipped: out of memory"
    if isinstance(e, NotImplementedError) or (isinstance(e, TypeError) and provider.startswith("triton")):
        return f"skipped: {msg}"
    return f"failed: {type(e).__name__}: {msg}"


_clock = time.perf_counter  # the time budget's clock (tests replace it)


def budget_spent(started: float, time_budget_s: float | None) -> str | None:
    """The status of work not started because the run's time budget, counted from the
    `_clock()` reading `started`, is spent; None while some is left (or there is none)."""
    if time_budget_s is not None and _clock() - started > time_budget_s:
        return f"skipped: the run's time budget ({time_budget_s:g} s) was spent"
    return None


INTERRUPTED = "skipped: the run was interrupted (SIGINT: Ctrl-C, or a time limit's signal)"


def run(ops=None, dtype=torch.float32, device=None, quick=False, providers=None, modes=None,
        progress=True, full=False, time_budget_s: float | None = None,
        tf32: bool | None = None, started: float | None = None) -> tuple[pd.DataFrame, ceil.Ceilings]:
    """Benchmark `ops` (names or Op objects; all of OPS by default) on the cases sized
    for `device`, and return (rows, the measured ceilings). `providers` defaults to
    providers.DEFAULT for the device, `modes` to all three (fwd and fwd+bwd if quick);
    `quick` runs each op's quick case, `full` every case (the default skips those
    marked full). `time_budget_s`: once the run has taken that long, no provider starts
    on a new case; the rows left are recorded as skipped, so a run with a hard time
    limit (a lent GPU) still ends with a report; it counts from the _clock() reading
    `started` (default: this call; `tritonlab bench` passes its own start). An interrupt
    (KeyboardInterrupt, e.g. the SIGINT of `timeout -s INT`) ends the timing: the rows
    timed so far are returned and the rest say INTERRUPTED. TF32 for float32: on or off
    for every op (convolutions and cuDNN's RNNs too, see same_tf32) as `tf32` says; None:
    as torch's setting for float32 matmuls says."""
    refuse_interpreter()
    started = _clock() if started is None else started  # the budget counts the ceilings' measurement too
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    chosen = [OPS.get(o, o) if isinstance(o, str) else o for o in (ops or OPS)]
    unknown = [o for o in chosen if not isinstance(o, Op)]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; choose from {sorted(OPS)}")
    chosen = _once(chosen, key=lambda op: op.name)
    providers = _once(providers or prov.DEFAULT[device.type])
    modes = _once(modes or (QUICK_MODES if quick else MODES))
    bad = sorted(set(providers) - set(PROVIDERS))
    if bad:
        raise ValueError(f"unknown provider(s) {bad}; choose from {list(PROVIDERS)}")
    with same_tf32(tf32_enabled() if tf32 is None else tf32):  # one setting for every op
        limits = ceil.measure(device, dtype, quick)
        common = common_columns(device, dtype)
        kind = "cuda" if device.type == "cuda" else "cpu"
        work = [(op, case) for op in chosen for case in op.cases
                if case.device == kind and (case.quick if quick else full or not case.full)]
        rows = []
        budget = 0.2 if quick else 0.5
        es = torch.empty(0, dtype=dtype).element_size()
        stop = None  # INTERRUPTED once an interrupt came: every row left says so
        for op, case in tqdm(work, desc="bench", disable=not progress, unit="case"):
            try:
                if not stop:
                    torch.manual_seed(0)
                    ref = op.torch(case.params).to(device=device, dtype=dtype)
                    inputs = [t.to(device=device, dtype=dtype) for t in op.inputs(case.params)]
            except KeyboardInterrupt:
                stop = INTERRUPTED
            for provider in prov.for_op(op, providers):
                checked = mod = None  # the module and its forward check, once per provider
                spent = stop or budget_spent(started, time_budget_s)
                if spent:
                    checked = {"status": spent}
                for mode in modes:
                    cost = cost_of(op, case.params, mode, es)
                    row = {"op": op.name, "provider": provider, "mode": mode, "case": case.label, "size": case.size,
                           "size_unit": op.size_unit, "bytes": cost.bytes, "flops": cost.flops,
                           "scratch_bytes": op.scratch_bytes(case.params, provider, es) if mode != "bwd" else 0.0,
                           **common}
                    reason = skip_reason(op, case.params, provider, mode, device)
                    try:
                        if reason is not None:
                            row["status"] = reason
                        else:
                            if checked is None:
                                mod = prov.build(op, case.params, provider, ref, device, dtype)
                                checked = check(op, mod, ref, inputs, dtype, device)
                                if getattr(mod, "fallback", None):  # e.g. torch's SDPA off its flash backend
                                    checked["note"] = mod.fallback
                            row.update(checked)
                            if row["status"] == "ok":
                                row.update(_time(mod, inputs, mode, device, budget))
                    except KeyboardInterrupt:
                        stop = row["status"] = INTERRUPTED
                        checked = {"status": stop}
                    except Exception as e:  # recorded, so one broken provider does not end the run
                        row["status"] = _outcome(e, provider)
                        if checked is None and row["status"].startswith("failed"):
                            checked = {"status": row["status"]}  # the build or check failed: so would other modes
                    rows.append(row)
                del mod
    return derive(pd.DataFrame(rows), limits), limits


def _once(items, key=lambda item: item) -> list:
    """`items` without repeats, in first-seen order: `--ops relu relu` is one op, and
    rows keyed twice would break the speed-up's lookup of torch's time."""
    first = {}
    for item in items:
        first.setdefault(key(item), item)
    return list(first.values())


def check(op, mod, ref, inputs, dtype, device) -> dict:
    """Forward once (timed: compile and autotune happen here) and compare with torch:
    `ok` within the dtype's tolerance (scaled by torch's output's magnitude), else `wrong`
    (for a dropout op also when it keeps too few or too many elements, or drops the same
    ones again on a second call)."""
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        out = _first(mod(*inputs))
    _sync(device)
    first_ms = (time.perf_counter() - start) * 1e3
    err, scale, rms = _error(op, out, ref, inputs)
    # relative to torch's output, not to 1: softmax rows of 32K columns hold values near
    # 3e-5, which an absolute 0.05 (bfloat16) would pass whatever they were. The RMS
    # error too: causal attention's first rows dwarf its last, so zeroed last rows would
    # pass a bound scaled by the largest output
    tol = tolerance(op, dtype, device)
    status = "ok" if err <= tol * scale and rms <= tol else "wrong"
    if status == "ok":
        status = _kept_problem(op, out) or _same_mask_problem(op, mod, inputs, out) or status
    return {"max_abs_err": err, "first_call_ms": first_ms, "status": status}


def tolerance(op, dtype, device) -> float:
    """The relative error `check` allows. TF32 keeps float16's 10-bit mantissa, so a
    float32 op whose math runs through matmuls gets float16's tolerance while TF32 is on
    (on a GPU); an elementwise op keeps float32's, as TF32 does not touch it."""
    tf32 = op.matmul and dtype == torch.float32 and device.type == "cuda" and tf32_enabled()
    return TOLERANCE[torch.float16 if tf32 else dtype]


def implausible_keep(keep: torch.Tensor, p: float) -> tuple[float, float] | None:
    """(kept share, allowed deviation) when the share of True in the mask `keep` lies
    more than six standard deviations of the binomial share from 1 - p, else None: a
    right mask fails about once in 10^9 checks; "keep all" or "drop all" always does."""
    kept, tolerance = keep.double().mean().item(), 6 * math.sqrt(p * (1 - p) / keep.numel())
    return (kept, tolerance) if abs(kept - (1 - p)) > tolerance else None


def _kept_problem(op, out: torch.Tensor) -> str | None:
    """Why a dropout op's share of kept (nonzero) elements is not 1 - p, or None: the
    error against torch is measured under the provider's own mask, so it passes any
    mask, dropping everything too."""
    if not op.random or not out.numel():
        return None
    bad = implausible_keep(out != 0, DROPOUT_P)
    return bad and f"wrong: kept {bad[0]:.3f} of the elements, expected {1 - DROPOUT_P:.3f} ± {bad[1]:.3f}"


def _same_mask_problem(op, mod, inputs, out: torch.Tensor) -> str | None:
    """Why a dropout op is wrong if a second call drops the very same elements (a seed
    that does not advance passes every other check), or None. Two right masks of n
    elements agree everywhere with odds (p² + (1-p)²)^n: below 10^-21 from 256 on."""
    if not op.random or out.numel() < 256:
        return None
    first = out != 0  # before the second call, which may reuse out's memory
    with torch.no_grad():
        again = _first(mod(*inputs))
    if torch.equal(again != 0, first):
        return "wrong: a second call dropped the same elements (the dropout seed does not advance)"
    return None


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(mod, inputs, mode, device, budget) -> dict:
    fn = make_callable(mod, inputs, mode)
    peak = peak_mb(fn, device)
    p50, p20, p80 = time_fn(fn, device, budget)
    return {"ms_p50": p50, "ms_p20": p20, "ms_p80": p80, "loop_ms": time_loop(fn, device, p50), "peak_mem_mb": peak}


def derive(df: pd.DataFrame, limits: ceil.Ceilings) -> pd.DataFrame:
    """Throughput, roofline fraction and speed-up vs torch from the times and costs."""
    for col in ("ms_p50", "ms_p20", "ms_p80", "loop_ms", "max_abs_err", "peak_mem_mb", "first_call_ms"):
        if col not in df:
            df[col] = float("nan")
    df["note"] = df["note"].fillna("") if "note" in df else ""  # what ran differs from the provider's name
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
