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
why it does not run here: every version stays on record, as `ok`, `wrong: <what>`,
`failed: <error>` or `skipped: ...`. `expected` is a tensor (checked against the version's
tensor, or the first item of its tuple), a tuple (checked item by item: e.g. out and
every gradient), or a function of the version's output returning either (a random op's
expectation depends on the mask its output shows; it may raise `Mismatch` to say why
no expectation fits). Each tensor must have the expected shape and dtype and match
within that dtype's tolerance relative to its largest expected magnitude (integers
exactly); a wrong one is reported by what differs: the type, the shape, the dtype, or
the first index past the tolerance. Timing needs a CUDA device and no interpreter; on
CPU (under TRITON_INTERPRET=1) the ladder validates only.
"""
from __future__ import annotations

import functools
from typing import Callable, Union

import pandas as pd
import torch

from ..backend import interpreter_enabled
from . import ceilings as ceil
from .ops import Cost
from .runner import TOLERANCE, _first, device_name, implausible_keep
from .timing import time_fn

__all__ = ["device", "pick", "ladder", "exercise", "Cost", "Mismatch", "require_plausible_mask"]

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


class Mismatch(Exception):
    """Raised by an `expected` function that can tell why a result cannot be right (e.g.
    a dropout mask whose kept fraction is implausible for p); the check prints its message."""


def require_plausible_mask(keep: torch.Tensor, p: float) -> None:
    """Raise Mismatch unless the kept fraction of `keep` is plausible for p, as the
    benchmark judges it (runner.implausible_keep: a random mask passes; "keep
    everything" or "drop everything" does not)."""
    bad = implausible_keep(keep, p)
    if bad:
        raise Mismatch(f"kept fraction {bad[0]:.4f}, implausible for p={p} (expected {1 - p:.4f} ± {bad[1]:.4f})")


def error(out, expected: Expected) -> tuple[float, str | None]:
    """(largest error relative to each tensor's largest expected magnitude, None if every
    tensor is within the tolerance of its expected dtype, else what is wrong): the
    benchmark's tolerances, but relative, so that outputs far below 1 (probabilities,
    gradients) are checked as tightly as large ones, the magnitude taken over the finite
    expected values. Integer and bool results must match exactly. Equal entries, equal
    infinities included, have error 0; any other non-finite entry (an infinity against
    another value, a NaN anywhere, even against NaN) is a mismatch, named as such. A result
    that cannot be compared (not a tensor, another shape or dtype) gets an infinite error
    and a message saying why."""
    if not _is_result(out):
        return float("inf"), f"expected a tensor or a tuple of tensors, got {_kind(out)}"
    try:
        want = expected(out) if callable(expected) else expected
    except Mismatch as e:
        return float("inf"), str(e)
    except Exception as e:  # e.g. an expectation built from the mask of a result of another shape
        return float("inf"), f"no expected value for this result ({type(e).__name__}: {_line(e)})"
    if isinstance(want, torch.Tensor):
        pairs = [("", _first(out), want)]
    elif len(out) != len(want):
        return float("inf"), f"expected {len(want)} tensors, got {_kind(out)}"
    else:
        pairs = [(f"item {i}: ", o, w) for i, (o, w) in enumerate(zip(out, want))]
    worst, problem = 0.0, None
    for item, o, w in pairs:
        if not isinstance(o, torch.Tensor):
            return float("inf"), f"{item}expected a tensor, got {_kind(o)}"
        if o.shape != w.shape:
            return float("inf"), f"{item}shape {tuple(o.shape)}, expected {tuple(w.shape)}"
        if o.dtype != w.dtype:
            return float("inf"), f"{item}dtype {o.dtype}, expected {w.dtype}"
        if o.numel() == 0:
            continue
        err, bad = _compare(o, w)
        worst = max(worst, err) if err == err and worst == worst else float("nan")
        if problem is None and bad is not None:
            problem = item + bad
    return worst, problem


def _compare(o: torch.Tensor, w: torch.Tensor) -> tuple[float, str | None]:
    """(largest error relative to w's largest finite magnitude, None or what is wrong) for
    two tensors of one shape and dtype. Compared in float64, so bool and integer tensors
    work too (exactly: their tolerance is 0)."""
    od, wd = o.double(), w.double()
    floating = w.is_floating_point()
    # equal infinities count as equal, NaN never; integers compared and subtracted as
    # integers, exact even past 2**53
    equal = (od == wd) if floating else (o == w)
    gap = (od - wd) if floating else (o.long() - w.long()).double()
    finite_w = wd[wd.isfinite()]
    scale = (finite_w.abs().max().item() if finite_w.numel() else 0.0) or 1.0
    diff = torch.where(equal, 0.0, gap.abs())  # inf against a finite value: inf; NaN: NaN
    err = diff.max().item() / scale  # NaN if any entry is NaN
    # NaN counts as a mismatch; integers and bools must be equal
    bad = ~(diff <= TOLERANCE.get(w.dtype, 1e-3) * scale) if floating else ~equal
    if not bad.any():
        return err, None
    at = _first_index(bad)
    problem = (f"largest relative error {err:.3g}, first mismatch at index {at}: "
               f"got {_value(o[at])}, expected {_value(w[at])}")
    nonfinite = bad & ~(od.isfinite() & wd.isfinite())
    n = int(nonfinite.sum())
    if n:
        first = _first_index(nonfinite)
        problem += (f"; {n} mismatch{'es' * (n != 1)} not finite"
                    + (f", the first at index {first}: got {_value(o[first])}, expected {_value(w[first])}"
                       if first != at else "")
                    + " (an infinity must match exactly, a NaN never matches)")
    return err, problem


def _first_index(mask: torch.Tensor) -> tuple[int, ...]:
    """The first index (in row-major order) where mask is True; mask has a True."""
    return tuple(int(i) for i in mask.nonzero()[0])


def _value(v: torch.Tensor) -> str:
    """One element as printed in a message: floats to 6 significant digits, integers and
    bools exactly."""
    return f"{v.item():.6g}" if v.is_floating_point() else str(v.item())


def _is_result(out) -> bool:
    """A tensor, or a (nested) non-empty tuple or list of tensors."""
    if isinstance(out, torch.Tensor):
        return True
    return isinstance(out, (tuple, list)) and len(out) > 0 and all(_is_result(o) for o in out)


def _kind(obj) -> str:
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)} item{'s' * (len(obj) != 1)}" + \
            (f", the first a {type(obj[0]).__name__}" if obj else "")
    return type(obj).__name__


def _line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:120]


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
                row["rel_err"], problem = error(out, expected)
                row["status"] = "ok" if problem is None else f"wrong: {problem}"
                if problem is None:
                    ok[name] = fn
                    dtype = dtype or _first(out).dtype  # the ceilings' dtype: what the versions compute in
            except Exception as e:  # kept on record: a broken version never hides the others
                row["status"] = f"failed: {type(e).__name__}: {_line(e)}"
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
    err, problem = error(out, expected)
    print(f"exercise {name}: " + (f"PASSED (largest relative error {err:.3g})" if problem is None
                                  else f"FAILED ({problem})"))
    return problem is None
