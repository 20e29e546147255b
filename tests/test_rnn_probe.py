"""scripts/rnn_probe.py: its configurations, the fixed/per-step split and the summary
(pure functions), and its refusal without a GPU. Its timings need a GPU and are never
asserted."""
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("rnn_probe", ROOT / "scripts" / "rnn_probe.py")
probe = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(probe)


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "scripts/rnn_probe.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)


def test_list_prints_every_configuration_char_model_first():
    done = _run("--list", "--cells", "gru")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(probe.SIZES) * len(probe.PRECISIONS) * len(probe.PROVIDERS)
    assert lines[0] == "gru 64 64 fp32 step" and lines[3] == "gru 64 64 fp32 torch"
    assert {line.split()[3] for line in lines} == {"fp32", "tf32", "bf16"}


def test_the_filters_pick_sizes_precisions_and_providers():
    done = _run("--list", "--cells", "lstm", "--sizes", "64x64", "8X256", "--precisions", "fp32",
                "--providers", "persistent-grid", "torch")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["lstm 64 64 fp32 persistent-grid", "lstm 64 64 fp32 torch",
                                        "lstm 8 256 fp32 persistent-grid", "lstm 8 256 fp32 torch"]
    bad = _run("--list", "--sizes", "64")
    assert bad.returncode == 2 and "a size is BxH, e.g. 64x64, got '64'" in bad.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_refuses_without_a_gpu(tmp_path):
    done = _run("--out", str(tmp_path / "probe.csv"))
    assert done.returncode == 2 and "needs a CUDA device" in done.stderr
    assert not (tmp_path / "probe.csv").exists()


def test_fit_splits_a_call_into_fixed_and_per_step_time():
    fixed, step = probe.fit(0.1, 0.8)  # ms at T = 16 and 128
    assert step == pytest.approx(700 / 112) and fixed == pytest.approx(100 - 16 * 700 / 112)
    assert probe.fit(0.05, 0.05) == pytest.approx((50.0, 0.0))


def test_summary_pairs_both_lengths_and_compares_with_cudnn():
    def row(provider, steps, ms, status="ok", precision="fp32"):
        return dict(cell="lstm", B=64, H=64, precision=precision, provider=provider, T=steps, ms_p50=ms, status=status)
    rows = [row("torch", 16, 0.05), row("torch", 128, 0.274),           # 2 us a step
            row("step", 16, 0.4), row("step", 128, 2.64),              # 20 us a step
            row("persistent", 16, 0.3), row("persistent", 128, None, "failed: RuntimeError: x"),
            row("step", 16, 0.2, precision="bf16"), row("step", 128, 1.32, precision="bf16")]
    summary = {(s["provider"], s["precision"]): s for s in probe.summarize(rows)}
    assert set(summary) == {("torch", "fp32"), ("step", "fp32"), ("step", "bf16")}  # persistent: one length only
    step = summary[("step", "fp32")]
    assert step["us_per_step"] == pytest.approx(20) and step["fixed_us"] == pytest.approx(80)
    assert step["x_cudnn_per_step"] == pytest.approx(0.1) and summary[("torch", "fp32")]["x_cudnn_per_step"] == 1
    assert math.isnan(summary[("step", "bf16")]["x_cudnn_per_step"])  # no cuDNN row of that precision


def test_main_writes_every_row_as_it_goes_and_prints_the_summary(monkeypatch, tmp_path, capsys):
    """The loop with the GPU parts stood in for: a fake clock-free time per call (10 us
    fixed + 2 us a step; the persistent variant raising), so what is checked is the CSV,
    the skips, the failure rows and the summary, not a timing."""
    monkeypatch.setattr(probe.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(probe.kernels, "persistent_grid_fits", lambda b, h, device: h <= 256)

    def forward(cell, batch, hidden, precision, provider, steps):
        if provider == "persistent":
            raise RuntimeError("no kernel\nmore")
        return steps
    monkeypatch.setattr(probe, "_forward", forward)
    monkeypatch.setattr(probe, "time_gpu", lambda steps, **budget: ((10 + 2 * steps) / 1e3,) * 3)
    monkeypatch.setattr(probe, "SIZES", [(64, 64), (32, 512)])
    out = tmp_path / "probe.csv"
    assert probe.main(["--out", str(out), "--cells", "lstm"]) == 0
    import pandas as pd
    df = pd.read_csv(out)
    assert list(df.columns) == probe.COLUMNS and len(df) == 2 * 3 * 4 * 2
    by = df.set_index(["H", "precision", "provider", "T"])["status"]
    assert by[(64, "fp32", "step", 16)] == "ok" and by[(64, "bf16", "persistent", 128)] == "failed: RuntimeError: no kernel"
    assert by[(512, "tf32", "persistent-grid", 16)].startswith("skipped: its programs would not all be resident")
    assert by[(512, "fp32", "persistent", 16)].startswith("skipped: one program walking all of H > 256")
    lines = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    # a row per configuration timed at both lengths: 64 x 3 precisions x (step, grid, torch), 512 x 3 x (step, torch)
    assert len(lines) == 3 * 3 + 3 * 2
    assert all(line[5:] == ["10.0", "2.00", "1.00"] for line in lines), lines


def test_a_spent_budget_starts_nothing_more(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(probe.torch.cuda, "is_available", lambda: True)
    assert probe.main(["--out", str(tmp_path / "p.csv"), "--time-budget", "-1"]) == 3
    assert "time budget of -1 s spent: 120 configurations left untimed" in capsys.readouterr().err


def test_an_interrupt_keeps_the_rows_timed_and_exits_130(monkeypatch, tmp_path, capsys):
    """gpu_check.sh's time limit sends SIGINT: the rows so far stay in the CSV, the summary
    still prints, and the exit code says the run was cut."""
    monkeypatch.setattr(probe.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(probe, "_forward", lambda *args: args[-1])
    calls = []

    def time_gpu(steps, **budget):
        calls.append(steps)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return ((10 + 2 * steps) / 1e3,) * 3
    monkeypatch.setattr(probe, "time_gpu", time_gpu)
    out = tmp_path / "deep" / "p.csv"  # its folder is made
    assert probe.main(["--out", str(out), "--cells", "gru"]) == 130
    assert len(out.read_text().splitlines()) == 1 + 2  # header, the step variant at T 16 and 128
    printed = capsys.readouterr()
    assert "interrupted" in printed.err and printed.out.splitlines()[1].split()[:5] == ["gru", "64", "64", "fp32", "step"]
