"""The benchmark runner end to end on CPU with tiny cases; never a timing assertion."""
import dataclasses

import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tritonlab import cli
from tritonlab.bench import report, runner
from tritonlab.bench.ops import OPS, Case
from tritonlab.layers import linear as lab_linear

DESIGN_COLUMNS = ["op", "provider", "mode", "case", "dtype", "device", "ms_p50", "ms_p20", "ms_p80", "gbps",
                  "tflops", "roofline_frac", "speedup_vs_torch", "peak_mem_mb", "max_abs_err", "torch_version",
                  "triton_version", "timestamp"]


@pytest.fixture(scope="module", autouse=True)
def _no_interpreter():
    """The runner refuses to time under the interpreter, which conftest turns on for the
    triton tier's tests; these tests time real CPU code, so they run without it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("TRITON_INTERPRET", raising=False)
        yield


def _tiny(name, params, label="tiny"):
    return dataclasses.replace(OPS[name], cases=[Case(label, 1, params, quick=True)])


@pytest.fixture(scope="module")
def tiny_run():
    ops = [_tiny("linear", {"m": 5, "k": 7, "n": 3}), _tiny("relu", {"shape": (4, 9)}),
           _tiny("lstm", {"b": 2, "t": 3, "i": 4, "h": 5})]
    return runner.run(ops, quick=True, progress=False)


def test_rows_for_every_provider_and_mode(tiny_run):
    df, _ = tiny_run
    assert len(df) == 3 * len(runner.PROVIDERS) * len(runner.MODES)
    ok = df[df["status"] == "ok"]
    assert set(ok["provider"]) == {"naive", "reference", "torch"}
    assert (ok["ms_p20"] <= ok["ms_p50"]).all() and (ok["ms_p50"] <= ok["ms_p80"]).all()
    assert (ok["max_abs_err"] < 1e-4).all()
    torch_rows = ok[ok["provider"] == "torch"]
    assert (torch_rows["speedup_vs_torch"] == 1).all()
    # the reason a row was not run is written in it
    triton = df[df["provider"] == "triton"]
    assert triton["status"].str.contains("CUDA only").all()


def test_derived_columns_follow_the_cost_model(tiny_run):
    df, limits = tiny_run
    r = df[(df["op"] == "linear") & (df["provider"] == "reference") & (df["mode"] == "fwd")].iloc[0]
    assert r["flops"] == 2 * 5 * 7 * 3
    assert r["tflops"] == pytest.approx(r["flops"] / (r["ms_p50"] * 1e-3) / 1e12)
    assert r["roofline_frac"] == pytest.approx(limits.floor_ms(r["bytes"], r["flops"]) / r["ms_p50"])


def test_report_files(tiny_run, tmp_path):
    df, limits = tiny_run
    files = report.write(df, limits, tmp_path)
    csv = pd.read_csv(files["csv"])
    assert list(csv.columns[:len(DESIGN_COLUMNS)]) == DESIGN_COLUMNS
    assert len(csv) == len(df)
    text = files["summary"].read_text()
    for op in ("linear", "relu", "lstm"):
        assert f"## {op}" in text
    assert "Fastest tritonlab tier" in text
    assert {p.name for p in files["plots"]} == {"linear.png", "relu.png", "lstm.png", "roofline.png"}
    assert all(p.stat().st_size > 1000 for p in files["plots"])


def test_wrong_provider_is_marked_not_timed(monkeypatch):
    monkeypatch.setitem(lab_linear._LINEAR, "reference", lambda x, w, b: x @ w.t())  # forgets the bias
    df, _ = runner.run([_tiny("linear", {"m": 3, "k": 4, "n": 2})], quick=True, providers=("reference", "torch"),
                       progress=False)
    ref = df[df["provider"] == "reference"]
    assert (ref["status"] == "wrong").all()
    assert ref["ms_p50"].isna().all() and (ref["max_abs_err"] > 0).all()


def test_naive_skipped_when_it_would_loop_too_long():
    big = _tiny("linear", {"m": runner.NAIVE_MAX_STEPS + 1, "k": 2, "n": 2})
    df, _ = runner.run([big], quick=True, providers=("naive",), modes=("fwd",), progress=False)
    assert df["status"].iloc[0].startswith("skipped: naive tier would loop")


def test_dropout_checked_under_its_own_mask():
    df, _ = runner.run([_tiny("softmax_dropout", {"shape": (6, 10)})], quick=True,
                       providers=("reference", "torch"), progress=False)
    assert (df["status"] == "ok").all()
    assert (df["max_abs_err"] < 1e-6).all()


def test_refuses_under_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="refusing to time under TRITON_INTERPRET=1"):
        runner.run(["relu"], quick=True, progress=False)


def test_unknown_op():
    with pytest.raises(ValueError, match="unknown op"):
        runner.run(["conv3d"], progress=False)


@pytest.mark.parametrize("name", ["linear", "conv2d"])
def test_cost_model_flops_match_torch_flop_counter(name):
    op = OPS[name]
    for case in op.cases:
        mod, inputs = op.torch(case.params), op.inputs(case.params)
        with FlopCounterMode(display=False) as counter:
            mod(*inputs)
        assert op.cost(case.params, "fwd", 4).flops == counter.get_total_flops(), case.label


def test_cli_quick_writes_report(tmp_path, capsys):
    assert cli.main(["bench", "--quick", "--ops", "relu", "flatten", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "results.csv").exists() and (tmp_path / "summary.md").exists()
    assert "median ms" in capsys.readouterr().out


def test_cli_rejects_unknown_op(capsys):
    assert cli.main(["bench", "--ops", "nope"]) == 2
    assert "unknown op" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "tritonlab", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "bench" in r.stdout
