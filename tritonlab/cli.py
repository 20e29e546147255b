"""The `tritonlab` command (also `python -m tritonlab`)."""
from __future__ import annotations

import argparse
import datetime
import re
import sys
from pathlib import Path

DTYPES = ("float32", "float64", "float16", "bfloat16")


def _bench(args) -> int:
    import torch

    from .bench import report, runner
    from .bench.ops import OPS

    if args.ops:
        unknown = sorted(set(args.ops) - set(OPS))
        if unknown:
            print(f"unknown op(s) {unknown}; choose from {sorted(OPS)}", file=sys.stderr)
            return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked for, but torch sees no CUDA device", file=sys.stderr)
        return 2
    dtype = getattr(torch, args.dtype)
    df, limits = runner.run(args.ops, dtype, device, args.quick)
    out = Path(args.out) if args.out else Path("out") / (
        re.sub(r"[^a-z0-9]+", "-", runner.device_name(device).lower()).strip("-")[:40]
        + "-" + datetime.date.today().isoformat())
    files = report.write(df, limits, out)
    table = df.pivot_table(index=["op", "case", "mode"], columns="provider", values="ms_p50", sort=False)
    table = table[[p for p in runner.PROVIDERS if p in table.columns]]
    print(f"\nmedian ms on {df['device'].iloc[0]}, {args.dtype} (– = not run; see summary.md for why)")
    print(table.to_string(float_format=lambda v: f"{v:.3f}", na_rep="–"))
    print(f"\nwrote {files['csv']}, {files['summary']} and {len(files['plots'])} plots in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tritonlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="time every tier against torch.nn and the device's limits")
    bench.add_argument("--ops", nargs="+", metavar="OP", help="ops to run (default: all)")
    bench.add_argument("--dtype", choices=DTYPES, default="float32")
    bench.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when there is one")
    bench.add_argument("--quick", action="store_true", help="one small case per op")
    bench.add_argument("--out", help="output folder (default: out/<device>-<date>)")
    bench.set_defaults(run=_bench)
    args = parser.parse_args(argv)
    return args.run(args)
