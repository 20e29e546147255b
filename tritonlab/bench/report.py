"""Write a run's results: results.csv (every row), summary.md (per op: each provider's
time, speed-up vs torch, share of the roofline, the best provider and the worst gap)
and PNG plots (throughput vs size per op, and one roofline chart)."""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .ceilings import Ceilings  # noqa: E402

COLUMNS = ["op", "provider", "mode", "case", "dtype", "device", "ms_p50", "ms_p20", "ms_p80", "gbps", "tflops",
           "roofline_frac", "speedup_vs_torch", "peak_mem_mb", "max_abs_err", "torch_version", "triton_version",
           "timestamp", "status", "first_call_ms", "size", "bytes", "flops", "scratch_bytes", "tf32", "cuda_version",
           "driver_version", "copy_gbps_ceiling", "matmul_tflops_ceiling", "launch_us", "loop_ms"]


def _fmt(v, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _relative(speedup: float) -> str:
    """'2.5× faster than torch' / '40× slower than torch' rather than a ratio near 0."""
    return f"{speedup:.2f}× faster than torch" if speedup >= 1 else f"{1 / speedup:.2f}× slower than torch"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def summary(df: pd.DataFrame, limits: Ceilings, source: str = "") -> str:
    """summary.md's text; `source` says where the rows came from when not from a run."""
    first = df.iloc[0]
    cuda = "" if first.get("cuda_version", "none") == "none" else \
        f", CUDA {first['cuda_version']}, driver {first['driver_version']}"
    matmul = ", ".join(f"{k} {v:.3g}" for k, v in limits.matmul_all.items()) or f"{limits.matmul_tflops:.3g}"
    loop = bool(cuda) and "loop_ms" in df and bool(df["loop_ms"].notna().any())  # a GPU run's column
    # TF32 means something for float32 on a GPU only
    tf32 = f", TF32 {'on' if first['tf32'] else 'off'}" if cuda and first["dtype"] == "float32" else ""
    out = [f"# tritonlab benchmark — {first['device']}, {first['dtype']}",
           "",
           f"torch {first['torch_version']}, triton {first['triton_version']}{cuda}, {first['timestamp']}"
           f"{tf32}. Measured ceilings: copy {limits.copy_gbps:.1f} GB/s, "
           f"matmul TFLOP/s {matmul} (the run's roofline uses {limits.matmul_tflops:.3g}"
           f"{'' if cuda else '; the other dtypes measured at 512³ only'}), "
           f"smallest op {limits.launch_us:.1f} µs. "
           "Times are medians in ms (p20–p80 in results.csv; on a CPU a slow row gets as few as "
           "five runs, so compare spreads before reading much into a small difference), the first "
           "forward (compile, autotune) kept out and reported as first_call_ms; "
           + ("ms is CUDA-event time after an L2 flush, which hides host time shorter than the flush, and loop "
              "ms the wall-clock time per call of back-to-back calls (no flush), host time included, as a "
              "training loop pays it; " if loop else "") +
           "peak_mem_mb is "
           "the most memory allocated during one call, inputs included (a GPU only); ×torch is torch's time over "
           "this provider's (above 1 is faster); roofline is the op's floor time under the "
           "measured ceilings (its bytes at the copy bandwidth or its FLOPs at the matmul rate, and at least "
           "the smallest op's time) over its time. The bandwidth ceiling is a copy far larger than any "
           "cache and the FLOP ceiling torch's own matmul; on a CPU, repeated runs keep a small "
           "case's data in cache, and a tuned kernel (oneDNN's convolution) can beat the matmul "
           "measured, so a roofline share above 100% is possible there. Dropout ops are checked against torch's "
           "output without dropout times this provider's own mask / (1 - p), and the share of elements "
           "they keep against 1 - p." + (f" {source}" if source else ""),
           ""]
    for op, g in df.groupby("op", sort=False):
        out += [f"## {op}", ""]
        rows = []
        for _, r in g.iterrows():
            timed = r["status"] == "ok"
            rows.append([r["case"], r["mode"], r["provider"],
                         _fmt(r["ms_p50"], ".3f") if timed else r["status"],
                         *([_fmt(r["loop_ms"], ".3f") if timed else ""] if loop else []),
                         _fmt(r["speedup_vs_torch"], ".2f") if timed else "",
                         _fmt(100 * r["roofline_frac"], ".1f") if timed else "",
                         _fmt(r["max_abs_err"], ".1e")])
        header = ["case", "mode", "provider", "ms", *(["loop ms"] if loop else []), "×torch", "% roofline",
                  "max abs err"]
        out += [_table(header, rows), ""]
        notes = g[g["note"] != ""].drop_duplicates(["provider", "case"]) if "note" in g else g.iloc[:0]
        out += [f"Note: {r['provider']} on {r['case']}: {r['note']}." for _, r in notes.iterrows()]
        out += [""] if len(notes) else []
        scratch = g[(g["mode"] == "fwd") & (g["status"] == "ok") & (g["scratch_bytes"] > 0)] \
            if "scratch_bytes" in g else g.iloc[:0]
        if len(scratch):
            moved = "; ".join(f"{r['provider']} {r['case']}: {r['scratch_bytes'] / 2**20:.1f} MiB"
                              for _, r in scratch.iterrows())
            out += [f"Bytes through scratch buffers beyond the op's floor (from the buffer's size), per "
                    f"forward: {moved}.", ""]
        ok = g[(g["status"] == "ok") & (g["provider"] != "torch") & g["speedup_vs_torch"].notna()]
        if len(ok):
            best = ok.groupby("provider")["speedup_vs_torch"].median().sort_values()
            worst = ok.loc[ok["speedup_vs_torch"].idxmin()]
            out += [f"Fastest provider other than torch (median over cases): **{best.index[-1]}** at "
                    f"{_relative(best.iloc[-1])}. Widest gap: {worst['provider']} on {worst['case']} "
                    f"{worst['mode']}, {_relative(worst['speedup_vs_torch'])}.", ""]
    return "\n".join(out)


def _throughput_column(g: pd.DataFrame) -> tuple[str, str]:
    return ("tflops", "TFLOP/s") if g["flops"].max() > 10 * g["bytes"].max() else ("gbps", "GB/s")


LINE_STYLES = ("-", "--", ":", "-.")  # one per series of a plot; the color tells the provider


def lines(g: pd.DataFrame):
    """The rows of one plot grouped into its lines, keyed (provider, series): the cases of
    one curve share their Case.series (conv2d's batch and layout, attention's causal and
    GQA), so that, say, causal and non-causal attention are two lines, not one."""
    from .ops import OPS

    series = {(op.name, case.label): case.series for op in OPS.values() for case in op.cases}
    return g.groupby([g["provider"], pd.Series([series.get(k, "") for k in zip(g["op"], g["case"])], g.index)])


def plots(df: pd.DataFrame, out: Path) -> list[Path]:
    written = []
    ok = df[df["status"] == "ok"]
    for op, g in ok.groupby("op", sort=False):
        col, unit = _throughput_column(g)
        if g[col].isna().all():
            continue
        modes, providers = list(g["mode"].unique()), sorted(g["provider"].unique())
        fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 3.6), squeeze=False)
        series = sorted({s for (_, s), _ in lines(g)})
        for ax, mode in zip(axes[0], modes):
            for (provider, s), p in lines(g[g["mode"] == mode]):
                p = p.sort_values("size")
                ax.plot(p["size"], p[col], marker="o", color=f"C{providers.index(provider) % 10}",
                        ls=LINE_STYLES[series.index(s) % len(LINE_STYLES)], label=f"{provider} {s}".strip())
            ax.set(xscale="log", yscale="log", xlabel=f"case size ({g['size_unit'].iloc[0]})", ylabel=unit, title=f"{op} {mode}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"{g['device'].iloc[0]}, {g['dtype'].iloc[0]}", fontsize=9)
        fig.tight_layout()
        path = out / f"{op}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    written.append(_roofline(ok, out))
    return written


def _roofline(ok: pd.DataFrame, out: Path) -> Path:
    """Every timed row as a point: arithmetic intensity vs achieved FLOP/s, under the
    measured bandwidth and matmul ceilings."""
    pts = ok[(ok["bytes"] > 0) & (ok["flops"] > 0)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if len(pts):
        bw, peak = pts["copy_gbps_ceiling"].iloc[0], pts["matmul_tflops_ceiling"].iloc[0]
        ai = pts["flops"] / pts["bytes"]
        xs = [min(ai.min(), 0.1), max(ai.max(), 1e3)]
        ridge = peak * 1e3 / bw
        ax.plot([xs[0], ridge, xs[1]], [bw * xs[0] / 1e3, peak, peak], "k-", lw=1, label="measured ceilings")
        for provider, p in pts.groupby("provider"):
            ax.scatter(p["flops"] / p["bytes"], p["flops"] / (p["ms_p50"] * 1e-3) / 1e12, label=provider, s=18)
        ax.set(xscale="log", yscale="log")
        ax.legend(fontsize=8)
    ax.set(xlabel="arithmetic intensity (FLOP/byte)", ylabel="TFLOP/s", title="roofline")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = out / "roofline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _report_files(out: Path) -> list[Path]:
    """The files a report writes in `out` (those there now): an earlier report's, which a
    new one replaces, and nothing else of the folder's."""
    from .ops import OPS

    names = ["results.csv", "summary.md", "training.csv", "autotune.csv", "roofline.png",
             *(f"{op}.png" for op in OPS)]
    return [out / name for name in names if (out / name).is_file()]


def _is_report(csv: Path) -> bool:
    """Whether `csv` is a results.csv a tritonlab run wrote: its header starts with
    DESIGN.md's columns (op ... timestamp), as every version's has; the columns after
    them grew over time."""
    leading = COLUMNS[:COLUMNS.index("timestamp") + 1]
    try:
        with open(csv, newline="") as f:
            return f.readline().strip().split(",")[:len(leading)] == leading
    except (OSError, UnicodeDecodeError):
        return False


def prepare(out: Path) -> None:
    """Create the folder `out` and write a scratch file in it, so that a bad output
    folder fails before a run rather than after it; else OSError with a one-line reason.
    A folder that holds files is taken only if it holds an earlier report (results.csv),
    which the run then replaces: never a folder of other things."""
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise NotADirectoryError(f"{blocking} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_report(out / "results.csv"):
        raise FileExistsError(f"{out} holds files but no results.csv of tritonlab's, so it is no earlier report "
                              f"to replace; give a new or empty folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as e:
        raise OSError(f"cannot create the folder {out} or write in it: {e.strerror or e}") from e


def write(df: pd.DataFrame, limits: Ceilings, out: Path, training: pd.DataFrame | None = None,
          autotune: pd.DataFrame | None = None, draw: bool = True, source: str = "") -> dict[str, Path]:
    """Write the three outputs into `out` (and `training.csv` plus a "Training step"
    section when `training` rows are given, `autotune.csv` when `autotune` rows are:
    bench.autotune.winners()); an earlier report's files there are removed first, so
    none of them is left from another run (other files are not touched). `draw=False`
    writes the CSV and summary only (a run keeps its rows before a later stage)."""
    from .training import training_markdown

    out.mkdir(parents=True, exist_ok=True)
    for old in _report_files(out):
        old.unlink()
    df = df.reindex(columns=COLUMNS + [c for c in df.columns if c not in COLUMNS])  # a missing column: empty
    df.to_csv(out / "results.csv", index=False)
    text = summary(df, limits, source)
    files = {"csv": out / "results.csv", "summary": out / "summary.md"}
    if training is not None:
        training.to_csv(out / "training.csv", index=False)
        text += "\n\n" + training_markdown(training)
        files["training"] = out / "training.csv"
    if autotune is not None and len(autotune):
        autotune.to_csv(out / "autotune.csv", index=False)
        text += (f"\n\nThe autotuned kernels' picks, {len(autotune)} (kernel, key) pairs, are in "
                 f"autotune.csv.")
        files["autotune"] = out / "autotune.csv"
    (out / "summary.md").write_text(text + "\n")
    return {**files, "plots": plots(df, out) if draw else []}
