"""The GPU's loop time: back-to-back calls, one synchronize, host time included.
Checked on a CPU by counting calls and synchronizes (no GPU here); nothing is timed."""
import math

import pandas as pd
import pytest
import torch

from tritonlab.bench import report, timing
from tritonlab.bench.ceilings import Ceilings


def test_the_loop_time_is_the_wall_clock_per_call_of_back_to_back_calls_then_one_synchronize(monkeypatch):
    events, clock = [], iter([10.0, 10.6])  # perf_counter before the loop and after its synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    ms = timing.time_loop(lambda: events.append("call"), torch.device("cuda"), per_call_ms=20.0)
    # 50 ms at 20 ms a call: 3 calls (the least), after one warm call and its synchronize
    assert events == ["call", "sync", "call", "call", "call", "sync"]
    assert ms == pytest.approx(600 / 3)


@pytest.mark.parametrize("per_call_ms, calls", [(0.01, 1000), (0.1, 500), (1e-9, 1000), (100.0, 3)])
def test_the_loop_runs_about_50_ms_within_3_to_1000_calls(monkeypatch, per_call_ms, calls):
    seen = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    timing.time_loop(lambda: seen.append(1), torch.device("cuda"), per_call_ms)
    assert len(seen) == calls + 1  # and the warm call


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
    cpu = report.summary(_rows("EPYC", "none", float("nan")), limits)
    assert "loop ms" not in cpu and "| case | mode | provider | ms | ×torch |" in cpu
