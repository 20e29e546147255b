"""Where a recurrent step's GPU time goes: the triton tier's LSTM/GRU recurrence split
into a fixed cost per call and a cost per time step, per variant and precision, beside
cuDNN.

Lesson 08's H200 run found the triton kernels at ~17-21 us of GPU time per step on the
char model (B 64, H 64, float32 without TF32) where cuDNN took 1.8 us, and listed what
would locate the gap; this runs the part of that list the library's knobs reach:
- a call at T = 16 and at T = 128, fitted as `fixed_us` + T x `us_per_step` (the line
  through the two points). What does not grow with T lands in fixed_us (a persistent
  kernel's launch and start, allocations); what a step repeats lands in us_per_step,
  the step variant's launch per step included;
- float32 with TF32 off (tl.dot's "ieee": FMA, no tensor cores), with TF32 on, and
  bfloat16. TF32 keeps the bytes but changes more than the arithmetic: its tensor-core
  dot reads shared memory through a swizzled layout, and the fp32 FFMA path reads W_hhᵀ
  to avoid the bank conflicts lesson 08 (v3) counts (its copy lands in fixed_us).
  bfloat16 also halves every byte;
- each variant (step: a launch per step; persistent; persistent-grid) and cuDNN (`torch`).

What is timed: for the triton variants the recurrence alone (kernels/rnn.py's
lstm_forward / gru_forward on a precomputed input projection xp; the layer adds one GEMM
before it), and it writes what a backward needs (LSTM: h_in, c_in, gates, c_out, 7 B x H
values a step beyond out) as the layer's forward always does; cuDNN's nn.LSTM / nn.GRU
forward under no_grad, its input projection included (input size 16, as the char
model's embedding, so it stays small) and no saved tensors. Each time is do_bench's
median (5 ms warm-up, 20 ms of runs, the L2 flushed before each).

Order: every LSTM configuration, then every GRU one; within a cell SIZES' order (the
char model's size first, then the benchmark's B 8 H 256 case with H200 data in
reports/h200-2026-11-28), precisions and providers together, so a short budget still
covers the most-measured sizes. Compiles happen inside the budget (the first call of
each new kernel specialization), so a 60 s budget may cover only the first sizes.

    python scripts/rnn_probe.py [--out out/rnn-probe.csv] [--time-budget S] [--cells lstm gru]
                                [--sizes BxH ...] [--precisions fp32 tf32 bf16] [--providers ...]
    python scripts/rnn_probe.py --list        # the configurations, without timing them

Rows are written to --out as they are measured, so a run stopped by its time budget or
an interrupt keeps what it timed; a summary prints at the end. Exit code 0: every
configuration ran (some may have failed: see status); 3: the time budget stopped it;
130: interrupted; 2: no CUDA device (a time under the interpreter means nothing).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import sys
import time
from pathlib import Path

import torch
from torch import nn

from tritonlab.backend import same_tf32
from tritonlab.bench.timing import time_gpu
from tritonlab.kernels import rnn as kernels
from tritonlab.layers.functions.rnn import PERSISTENT_MAX_H

CELLS = {"lstm": (kernels.lstm_forward, nn.LSTM, 4), "gru": (kernels.gru_forward, nn.GRU, 3)}
# (B, H): the char model's LSTM, the benchmark case the H200 run measured, then the other
# benchmark RNN cases' batch and hidden sizes (B 256 H 1024, a --full case, left out)
SIZES = [(64, 64), (8, 256), (1, 256), (32, 512), (64, 1024)]
INPUT = 16  # cuDNN's input projection: one GEMM before its recurrence, kept small
PRECISIONS = {"fp32": (torch.float32, False), "tf32": (torch.float32, True), "bf16": (torch.bfloat16, False)}
PROVIDERS = ("step", "persistent", "persistent-grid", "torch")
MODES = {"step": kernels.STEP, "persistent": kernels.PERSISTENT, "persistent-grid": kernels.PERSISTENT_GRID}
SHORT, LONG = 16, 128
COLUMNS = ["cell", "B", "H", "precision", "provider", "T", "ms_p50", "ms_p20", "ms_p80", "status"]


def configs(cells, sizes=None, precisions=None, providers=None) -> list[tuple]:
    """(cell, B, H, precision, provider) in the order they are timed (see the docstring);
    sizes, precisions, providers: subsets (None: all of SIZES, PRECISIONS, PROVIDERS)."""
    return [(cell, b, h, precision, provider)
            for cell, (b, h), precision, provider in itertools.product(
                cells, sizes or SIZES, precisions or PRECISIONS, providers or PROVIDERS)]


def _size(text: str) -> tuple[int, int]:
    """"64x256" -> (64, 256): a batch and hidden size."""
    try:
        batch, hidden = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is BxH, e.g. 64x64, got {text!r}") from None
    if batch < 1 or hidden < 1:
        raise argparse.ArgumentTypeError(f"B and H must be positive, got {text!r}")
    return batch, hidden


def fit(ms_short: float, ms_long: float, short: int = SHORT, long: int = LONG) -> tuple[float, float]:
    """(fixed_us, us_per_step) of the line through (short, ms_short) and (long, ms_long)."""
    per_step = (ms_long - ms_short) / (long - short) * 1e3
    return ms_short * 1e3 - short * per_step, per_step


def _forward(cell: str, batch: int, hidden: int, precision: str, provider: str, steps: int):
    """A no-argument call of one forward (see the docstring for what each provider runs)."""
    forward, torch_cls, gates = CELLS[cell]
    dtype = PRECISIONS[precision][0]
    if provider == "torch":
        module = torch_cls(INPUT, hidden, device="cuda", dtype=dtype)
        x = torch.randn(steps, batch, INPUT, device="cuda", dtype=dtype)

        def run():
            with torch.no_grad():
                module(x)
        return run
    xp = torch.randn(steps * batch, gates * hidden, device="cuda", dtype=dtype)
    w_hh = torch.randn(gates * hidden, hidden, device="cuda", dtype=dtype) / hidden ** 0.5
    states = [torch.zeros(batch, hidden, device="cuda", dtype=dtype)] * (2 if cell == "lstm" else 1)
    extra = [] if cell == "lstm" else [torch.zeros(hidden, device="cuda", dtype=dtype)]  # GRU's b_hn
    sizes, mode = [batch] * steps, MODES[provider]
    return lambda: forward(xp, w_hh, *extra, *states, sizes, False, mode)


def _skip_reason(batch: int, hidden: int, provider: str) -> str | None:
    if provider == "persistent-grid" and not kernels.persistent_grid_fits(batch, hidden, torch.device("cuda")):
        return "skipped: its programs would not all be resident at once"
    if provider == "persistent" and hidden > PERSISTENT_MAX_H:  # past where auto leaves it (layers' rnn)
        return f"skipped: one program walking all of H > {PERSISTENT_MAX_H} takes seconds a call (lesson 08)"
    return None


def summarize(rows: list[dict]) -> list[dict]:
    """Per configuration timed at both lengths: fixed_us, us_per_step and cuDNN's
    us_per_step over this provider's (x_cudnn_per_step)."""
    times = {}
    for r in rows:
        if r["status"] == "ok":
            times.setdefault((r["cell"], r["B"], r["H"], r["precision"], r["provider"]), {})[r["T"]] = r["ms_p50"]
    out = []
    for key, by_t in times.items():
        if {SHORT, LONG} <= set(by_t):
            fixed, step = fit(by_t[SHORT], by_t[LONG])
            out.append(dict(zip(("cell", "B", "H", "precision", "provider"), key), fixed_us=fixed, us_per_step=step))
    cudnn = {(s["cell"], s["B"], s["H"], s["precision"]): s["us_per_step"] for s in out if s["provider"] == "torch"}
    for s in out:
        theirs = cudnn.get((s["cell"], s["B"], s["H"], s["precision"]))
        s["x_cudnn_per_step"] = theirs / s["us_per_step"] if theirs and s["us_per_step"] > 0 else float("nan")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="An RNN forward's fixed and per-step GPU time, per variant, "
                                                 "precision and size, beside cuDNN.")
    parser.add_argument("--out", type=Path, default=Path("out/rnn-probe.csv"), help="CSV of every timed call")
    parser.add_argument("--time-budget", type=float, default=90.0, help="seconds; no configuration starts after")
    parser.add_argument("--cells", nargs="+", choices=sorted(CELLS), default=["lstm", "gru"])
    parser.add_argument("--sizes", nargs="+", type=_size, metavar="BxH", help="batch x hidden (default: SIZES)")
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS))
    parser.add_argument("--providers", nargs="+", choices=PROVIDERS)
    parser.add_argument("--list", action="store_true", help="print the configurations and stop")
    args = parser.parse_args(argv)
    todo = configs(args.cells, args.sizes, args.precisions, args.providers)
    if args.list:
        for c in todo:
            print(*c)
        return 0
    if not torch.cuda.is_available():
        print("rnn_probe times GPU kernels and needs a CUDA device (use --list to see what it would run)",
              file=sys.stderr)
        return 2
    started, rows, code = time.perf_counter(), [], 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        try:
            for cell, batch, hidden, precision, provider in todo:
                if time.perf_counter() - started > args.time_budget:
                    print(f"time budget of {args.time_budget:g} s spent: {len(todo) - len(rows) // 2} "
                          "configurations left untimed", file=sys.stderr)
                    code = 3
                    break
                for steps in (SHORT, LONG):
                    row = dict(cell=cell, B=batch, H=hidden, precision=precision, provider=provider, T=steps)
                    row["status"] = _skip_reason(batch, hidden, provider)
                    if row["status"] is None:
                        try:
                            torch.manual_seed(0)
                            with same_tf32(PRECISIONS[precision][1]):
                                row["ms_p50"], row["ms_p20"], row["ms_p80"] = time_gpu(
                                    _forward(cell, batch, hidden, precision, provider, steps), warmup_ms=5, rep_ms=20)
                            row["status"] = "ok"
                        except Exception as e:  # recorded: one failing variant does not end the probe
                            row["status"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
                    rows.append(row)
                    writer.writerow(row)
                    f.flush()
        except KeyboardInterrupt:
            print("interrupted: the rows timed so far are in the CSV", file=sys.stderr)
            code = 130
    print(f"{'cell':5s} {'B':>4s} {'H':>5s} {'prec':5s} {'provider':16s} {'fixed us':>9s} {'us/step':>8s} "
          f"{'cuDNN/step ratio':>16s}")
    for s in summarize(rows):
        print(f"{s['cell']:5s} {s['B']:4d} {s['H']:5d} {s['precision']:5s} {s['provider']:16s} "
              f"{s['fixed_us']:9.1f} {s['us_per_step']:8.2f} {s['x_cudnn_per_step']:16.2f}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
