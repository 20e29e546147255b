"""The GPU's loop time: back-to-back calls, one synchronize, host time included.
Checked on a CPU by counting calls and synchronizes (no GPU here); nothing is timed."""
import math

import pandas as pd
import pytest
import torch

from tritonlab.bench import report, timing
from tritonlab.bench.ceilings import Ceilings


class _Clock:
    """timing's `time` module as far as time_loop reads it: two readings, then none."""

    def __init__(self, *readings):
        self.readings = iter(readings)

    def perf_counter(self):
        return next(self.readings)


def test_the_loop_time_is_the_wall_clock_per_call_of_back_to_back_calls_then_one_synchronize(monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    monkeypatch.setattr(timing, "time", _Clock(10.0, 10.6))  # before the loop, after its synchronize
    ms = timing.time_loop(lambda: events.append("call"), torch.device("cuda"), per_call_ms=20.0)
    # 50 ms at 20 ms a call: 3 calls, between a synchronize (the queue empty) and the last
    assert events == ["sync", "call", "call", "call", "sync"]
    assert ms == pytest.approx(600 / 3)


@pytest.mark.parametrize("per_call_ms, calls", [(0.01, 1000), (0.1, 500), (1e-9, 1000), (20.0, 3), (400.0, 1)])
def test_the_loop_runs_about_50_ms_within_1_to_1000_calls(monkeypatch, per_call_ms, calls):
    seen = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    timing.time_loop(lambda: seen.append(1), torch.device("cuda"), per_call_ms)
    assert len(seen) == calls


def test_no_loop_time_off_a_gpu():
    assert math.isnan(timing.time_loop(lambda: None, torch.device("cpu"), 1.0))


def _rows(device: str, cuda_version: str, loop_ms: float) -> pd.DataFrame:
    return pd.DataFrame([{"op": "relu", "case": "4x4", "mode": "fwd", "provider": p, "status": "ok", "ms_p50": 0.01,
                          "loop_ms": loop_ms, "speedup_vs_torch": 1.0, "roofline_frac": 0.5, "max_abs_err": 0.0,
                          "device": device, "dtype": "float32", "torch_version": "2", "triton_version": "3",
                          "cuda_version": cuda_version, "driver_version": "1", "timestamp": "t", "tf32": False,
                          "note": "", "scratch_bytes": 0.0} for p in ("triton", "torch")])


def test_a_gpu_summary_shows_the_loop_time_a_cpu_one_does_not():
    limits = Ceilings(copy_gbps=1000, matmul_tflops=10, launch_us=5)
    gpu = report.summary(_rows("H200", "13.0", 0.042), limits)
    assert "| case | mode | provider | ms | loop ms | ×torch |" in gpu and "| 0.010 | 0.042 | 1.00 |" in gpu
    for cpu in (report.summary(_rows("EPYC", "none", float("nan")), limits),
                report.summary(_rows("H200", "13.0", float("nan")), limits)):  # e.g. from pytest-benchmark
        assert "loop ms" not in cpu and "| case | mode | provider | ms | ×torch |" in cpu


def test_a_report_from_before_the_loop_column_is_still_a_report(tmp_path):
    """`tritonlab bench --out` replaces an earlier report, which it recognises by its
    header: the committed ones, written before loop_ms existed, must still count."""
    from pathlib import Path
    reports = Path(__file__).resolve().parents[1] / "reports"
    for old in ("cpu-2026-11-29", "h200-2026-11-28"):
        assert report._is_report(reports / old / "results.csv"), old
    (tmp_path / "results.csv").write_text("model,provider,ms_p50\n")  # training.csv-like: not one
    assert not report._is_report(tmp_path / "results.csv")
