"""The learning path's harness: one op as a ladder of versions, every version checked
against the expected result before any is timed (llm.c's `dev/cuda`), then timed with
the benchmark's own timing and scored against the device's floor with the benchmark's
own ceilings and cost model, so a lesson's numbers and a report's numbers mean the same.

    table = ladder("softmax 4096x4096", {
        "naive": "skipped: one Python iteration per row would take minutes",
        "reference": lambda: softmax_reference(x),
        "triton v1": lambda: softmax_v1(x),
    }, expected=torch.softmax(x, -1), cost=Cost(bytes=2 * x.numel() * 4, flops=0))

A version is a callable returning a tensor or a tuple of tensors, or a string saying
why it does not run here: every version stays on record, as `ok`, `wrong`, `failed: ...`
or `skipped: ...`. `expected` is a tensor (checked against the version's tensor, or the
first item of its tuple), a tuple (checked item by item: e.g. out and every gradient),
or a function of the version's output returning either (a random op's expectation
depends on the mask its output shows). Each tensor must match within the dtype's
tolerance relative to its largest expected magnitude. Timing needs a CUDA device and no
interpreter; on CPU (under TRITON_INTERPRET=1) the ladder validates only.
"""
from __future__ import annotations

import functools
from typing import Callable, Union

import pandas as pd
import torch

from ..backend import interpreter_enabled
from . import ceilings as ceil
from .ops import Cost
from .runner import TOLERANCE, _first, device_name
from .timing import time_fn

__all__ = ["device", "pick", "ladder", "exercise", "Cost"]

Version = Union[Callable[[], object], str]
Expected = Union[torch.Tensor, tuple, Callable[[object], object]]


def device() -> torch.device:
    """Where a lesson runs: the GPU if there is one, else the CPU (under the interpreter)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick(cpu, gpu):
    """`gpu` on a CUDA device (sizes worth timing), `cpu` otherwise (sizes the interpreter
    finishes in seconds)."""
    return gpu if torch.cuda.is_available() else cpu


def timing_enabled() -> bool:
    return torch.cuda.is_available() and not interpreter_enabled()


def error(out, expected: Expected) -> tuple[float, bool]:
    """(largest error relative to each tensor's largest expected magnitude, within the
    dtype's tolerance): the benchmark's tolerances, but relative, so that outputs far
    below 1 (probabilities, gradients) are checked as tightly as large ones."""
    want = expected(out) if callable(expected) else expected
    pairs = [(_first(out), want)] if isinstance(want, torch.Tensor) else list(zip(out, want, strict=True))
    worst, good = 0.0, True
    for o, w in pairs:
        if o.shape != w.shape:
            return float("inf"), False
        if o.numel() == 0:
            continue
        scale = w.abs().max().item() or 1.0
        err = (o.double() - w.double()).abs().max().item() / scale
        worst = max(worst, err) if err == err else float("nan")
        good = good and err <= TOLERANCE.get(o.dtype, 1e-3)
    return worst, good


@functools.lru_cache(maxsize=None)
def _ceilings(dev: str, dtype: torch.dtype) -> ceil.Ceilings:
    return ceil.measure(torch.device(dev), dtype, quick=True)


def ladder(title: str, versions: dict[str, Version], expected: Expected, cost: Cost | None = None,
           baseline: str | None = None, show: bool = True) -> pd.DataFrame:
    """Validate every version, then (on a GPU) time those that passed; print and return the table.

    `cost` is the op's floor (bytes it must move, FLOPs it must do) for GB/s, TFLOP/s and
    the fraction of the device's floor each version reaches; `baseline` names the
    version speed-ups are relative to (default: the first one timed).
    """
    rows, ok, dtype = [], {}, None
    for name, fn in versions.items():
        row = {"version": name}
        if isinstance(fn, str):
            row["status"] = fn if fn.startswith("skipped") else f"skipped: {fn}"
        else:
            try:
                out = fn()
                row["rel_err"], good = error(out, expected)
                row["status"] = "ok" if good else "wrong"
                if good:
                    ok[name] = fn
                    dtype = dtype or _first(out).dtype  # the ceilings' dtype: what the versions compute in
            except Exception as e:  # kept on record: a broken version never hides the others
                row["status"] = f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:120]}"
        rows.append(row)
    df = pd.DataFrame(rows)
    if timing_enabled() and ok:
        _time(df, ok, dtype, cost)
        base = baseline if baseline in ok else next(iter(ok))
        df[f"x_vs_{base}"] = df.loc[df["version"] == base, "ms_p50"].iloc[0] / df["ms_p50"]
    if show:
        _print(title, df)
    return df


def _time(df: pd.DataFrame, ok: dict, dtype: torch.dtype, cost: Cost | None) -> None:
    dev = device()
    for name, fn in ok.items():
        p50, p20, p80 = time_fn(fn, dev)
        i = df.index[df["version"] == name][0]
        df.loc[i, ["ms_p50", "ms_p20", "ms_p80"]] = p50, p20, p80
    if cost is not None:
        limits = _ceilings(str(dev), dtype)
        sec = df["ms_p50"] * 1e-3
        if cost.bytes:
            df["GB/s"] = cost.bytes / sec / 1e9
        if cost.flops:
            df["TFLOP/s"] = cost.flops / sec / 1e12
        df["frac_of_floor"] = limits.floor_ms(cost.bytes, cost.flops) / df["ms_p50"]


def _print(title: str, df: pd.DataFrame) -> None:
    where = device_name(device())
    print(f"\n== {title} — {where}")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if not timing_enabled():
        print("(validated only: timings need a CUDA device, and nothing is timed under TRITON_INTERPRET=1)")


def exercise(name: str, fn: Callable[[], object], expected: Expected) -> bool | None:
    """A learner's check: None if `fn` still raises NotImplementedError, else whether its
    result matches `expected` (printed either way)."""
    try:
        out = fn()
    except NotImplementedError:
        print(f"exercise {name}: not attempted yet (replace the NotImplementedError, then rerun this cell)")
        return None
    err, good = error(out, expected)
    print(f"exercise {name}: {'PASSED' if good else 'FAILED'} (largest relative error {err:.3g})")
    return good
