"""Other ways into a report: a pytest-benchmark JSON turned into the runner's rows,
and two results.csv files compared row by row."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pandas as pd

from .ceilings import Ceilings
from .runner import derive

KEY = ["op", "case", "mode", "provider"]


def from_pytest_json(path: str | Path) -> tuple[pd.DataFrame, Ceilings]:
    """Rows and ceilings from `pytest benchmarks/ --benchmark-json FILE`: times in ms,
    p20/p80 from the raw samples, and the ceilings the suite measured."""
    data = json.loads(Path(path).read_text())
    meta = data.get("tritonlab")
    if meta is None:
        raise ValueError(f"{path} has no 'tritonlab' section: write it with "
                         "`pytest benchmarks/ --benchmark-only --benchmark-json FILE`")
    rows = []
    for b in data["benchmarks"]:
        samples = [t * 1e3 for t in b["stats"].get("data") or []]
        q = statistics.quantiles(samples, n=5, method="inclusive") if len(samples) > 1 else [float("nan")] * 4
        rows.append({**meta["common"], **b["extra_info"], "status": "ok", "ms_p50": b["stats"]["median"] * 1e3,
                     "ms_p20": q[0], "ms_p80": q[3], "peak_mem_mb": float("nan")})
    if not rows:
        raise ValueError(f"{path} holds no benchmark results")
    df, limits = pd.DataFrame(rows), Ceilings(**meta["ceilings"])
    _refuse_repeats(path, df, [b["name"] for b in data["benchmarks"]])
    return derive(df, limits), limits


def _refuse_repeats(path, df: pd.DataFrame, names: list[str]) -> None:
    """One benchmark per KEY, as the report's tables and speed-ups need, or a ValueError
    naming the tests that share theirs."""
    repeated = [name for name, twice in zip(names, df.duplicated(KEY, keep=False)) if twice]
    if repeated:
        more = f" and {len(repeated) - 4} more" if len(repeated) > 4 else ""
        raise ValueError(f"{path} holds {len(repeated)} benchmarks that share their {'/'.join(KEY)}: "
                         f"{', '.join(repeated[:4])}{more}; expected one each")


def read_results(path: str | Path) -> pd.DataFrame:
    """A results.csv (or a report folder's), or a ValueError naming the file and what
    was expected of it: readable CSV text, the KEY columns and ms_p50 in numbers, one
    row per KEY."""
    path = Path(path)
    if path.is_dir():  # a report folder
        path = path / "results.csv"
    expected = f"a tritonlab results.csv (columns {', '.join(KEY)}, ms_p50)"
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file; expected {expected}") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty; expected {expected}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not {expected}: it does not read as CSV ({str(e).strip()})") from None
    missing = [c for c in KEY + ["ms_p50"] if c not in df.columns]
    if missing:
        raise ValueError(f"{path} is not {expected}: no column {missing[0]!r}")
    if df.empty:  # a header alone: pandas reads every column as text
        raise ValueError(f"{path} holds no rows, only a header; expected {expected}")
    if not pd.api.types.is_numeric_dtype(df["ms_p50"]):
        raise ValueError(f"{path} is not {expected}: ms_p50 holds text, not times in ms")
    twice = df[df.duplicated(KEY, keep=False)]
    if len(twice):
        first = ", ".join(f"{k}={twice.iloc[0][k]}" for k in KEY)
        raise ValueError(f"{path} is not {expected}: {len(twice)} rows share their {'/'.join(KEY)} "
                         f"(e.g. {first}); expected one row each, as one run writes")
    return df


def compare(a: str | Path, b: str | Path) -> pd.DataFrame:
    """Rows timed in both runs (results.csv files or report folders), with ms in each and
    ratio = A's time / B's (above 1: B is faster), e.g. before/after a change or one GPU
    against another. `attrs["note"]` says what else differs: dtype, device or TF32, and
    each row timed in one run only, with the other's status (a regression that fails or
    skips a row would otherwise just leave the table)."""
    frames = [read_results(path) for path in (a, b)]
    runs = pd.concat([_timings(f) for f in frames], axis=1, keys=["a", "b"], join="outer")
    timed = runs.xs("ms_p50", axis=1, level=1).notna()
    both = runs[timed.all(axis=1)].xs("ms_p50", axis=1, level=1).set_axis(["ms_a", "ms_b"], axis=1).reset_index()
    both["ratio"] = both["ms_a"] / both["ms_b"]
    note = ""
    for col in ("dtype", "device", "tf32"):  # what differs besides the code is worth saying
        values = [sorted(map(str, f[col].dropna().unique())) if col in f else [] for f in frames]
        if values[0] != values[1]:
            note += f"note: the runs differ in {col}: {', '.join(values[0])} vs {', '.join(values[1])}\n"
    one = runs[timed.any(axis=1) & ~timed.all(axis=1)]
    if len(one):
        note += f"timed in one run only (A = {a}, B = {b}):\n" + "".join(
            _one_sided(key, r) + "\n" for key, r in one.iterrows())
    both.attrs["note"] = note
    return both


def _timings(df: pd.DataFrame) -> pd.DataFrame:
    """ms_p50 and status by KEY; a row with no status column to say why is `not timed`."""
    status = df["status"].fillna("not timed") if "status" in df else "not timed"
    return df.assign(status=status).set_index(KEY)[["ms_p50", "status"]]


def _one_sided(key: tuple, r: pd.Series) -> str:
    """'  relu 4x4 fwd naive: A 3.000 ms; B: failed: ...' (B: 'no such row' if it has none)."""
    timed, other = ("a", "b") if pd.notna(r[("a", "ms_p50")]) else ("b", "a")
    status = r[(other, "status")]
    return (f"  {' '.join(map(str, key))}: {timed.upper()} {r[(timed, 'ms_p50')]:.3f} ms; "
            f"{other.upper()}: {'no such row' if pd.isna(status) else status}")
