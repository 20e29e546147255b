"""The benchmark runner end to end on CPU with tiny cases; never a timing assertion."""
import dataclasses
import math

import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tritonlab import cli
from tritonlab.backend import tf32_enabled
from tritonlab.bench import convert, report, runner
from tritonlab.bench import providers as prov
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


TINY = {"linear": {"m": 5, "k": 7, "n": 3}, "relu": {"shape": (4, 9)}, "lstm": {"b": 2, "t": 3, "i": 4, "h": 5}}


@pytest.fixture(scope="module")
def tiny_run():
    return runner.run([_tiny(name, params) for name, params in TINY.items()], quick=True, progress=False)


def test_rows_for_every_provider_and_mode(tiny_run):
    df, _ = tiny_run
    expected = sum(len(prov.for_op(OPS[name], prov.DEFAULT["cpu"])) for name in ("linear", "relu", "lstm"))
    assert len(df) == expected * len(runner.QUICK_MODES)
    ok = df[df["status"] == "ok"]
    assert set(ok["provider"]) == {"naive", "reference", "torch"}
    assert (ok["ms_p20"] <= ok["ms_p50"]).all() and (ok["ms_p50"] <= ok["ms_p80"]).all()
    assert (ok["max_abs_err"] < 1e-4).all() and (ok["first_call_ms"] > 0).all()
    torch_rows = ok[ok["provider"] == "torch"]
    assert (torch_rows["speedup_vs_torch"] == 1).all()
    # the reason a row was not run is written in it
    triton = df[df["provider"].str.startswith("triton")]
    assert len(triton) and triton["status"].str.contains("CUDA only").all()


def test_bwd_mode_costs_the_backward_alone():
    df, _ = runner.run([_tiny("linear", {"m": 5, "k": 7, "n": 3})], providers=("reference",), progress=False)
    by_mode = df.set_index("mode")
    assert list(df["mode"]) == list(runner.MODES) and (df["status"] == "ok").all()
    assert by_mode.loc["bwd", "flops"] == by_mode.loc["fwd+bwd", "flops"] - by_mode.loc["fwd", "flops"] == 2 * 2 * 5 * 7 * 3


def test_a_provider_that_raises_is_recorded_and_the_run_goes_on(monkeypatch):
    def broken(x, w, b):
        raise RuntimeError("kernel exploded\nsecond line")
    monkeypatch.setitem(lab_linear._LINEAR, "reference", broken)
    df, _ = runner.run([_tiny("linear", {"m": 3, "k": 4, "n": 2})], quick=True, providers=("reference", "torch"),
                       progress=False)
    ref = df[df["provider"] == "reference"]
    assert (ref["status"] == "failed: RuntimeError: kernel exploded").all()
    assert (df[df["provider"] == "torch"]["status"] == "ok").all()


def test_a_spent_time_budget_skips_the_remaining_cases_and_says_so(monkeypatch):
    clock = iter(range(0, 1000, 10))  # each reading of the budget's clock 10 s later than the last
    monkeypatch.setattr(runner, "_clock", lambda: next(clock))
    ops = [_tiny("relu", {"shape": (3, 5)}), _tiny("tanh", {"shape": (3, 5)})]
    df, _ = runner.run(ops, quick=True, providers=("reference",), progress=False, time_budget_s=15)
    assert len(df) == 2 * len(runner.QUICK_MODES)
    first, second = df[df["op"] == "relu"], df[df["op"] == "tanh"]
    assert (first["status"] == "ok").all()  # started within the budget
    assert (second["status"] == "skipped: the run's time budget (15 s) was spent").all()
    assert second["ms_p50"].isna().all()


def test_a_baseline_that_ran_something_else_says_so_in_its_rows_and_the_summary():
    class Noted(torch.nn.ReLU):
        fallback = "flash backend refused float32; torch's default backend ran"
    op = dataclasses.replace(_tiny("relu", {"shape": (3, 5)}), torch=lambda p: Noted())
    df, limits = runner.run([op], quick=True, providers=("reference", "torch"), progress=False)
    assert (df[df["provider"] == "torch"]["note"] == Noted.fallback).all()
    assert (df[df["provider"] == "reference"]["note"] == "").all()
    text = report.summary(df, limits)
    assert text.count(f"Note: torch on tiny: {Noted.fallback}.") == 1  # once per provider and case
    assert "the other dtypes measured at 512³ only" in text  # a CPU run's header says how it measured them


def _interrupt_on_call(monkeypatch, n):
    """runner._time raises KeyboardInterrupt (what SIGINT raises) at its n-th call."""
    calls, real = [], runner._time

    def timed(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(runner, "_time", timed)


def test_an_interrupt_keeps_the_rows_timed_and_marks_the_rest(monkeypatch):
    _interrupt_on_call(monkeypatch, 2)
    ops = [_tiny("relu", {"shape": (3, 5)}), _tiny("tanh", {"shape": (3, 5)})]
    df, _ = runner.run(ops, quick=True, providers=("reference", "torch"), progress=False)
    assert len(df) == 2 * 2 * len(runner.QUICK_MODES)  # every row listed
    assert df["status"].iloc[0] == "ok" and df["ms_p50"].iloc[0] > 0
    assert (df["status"].iloc[1:] == runner.INTERRUPTED).all() and df["ms_p50"].iloc[1:].isna().all()


def test_cli_writes_the_report_of_an_interrupted_run_and_exits_130(tmp_path, monkeypatch, capsys):
    _interrupt_on_call(monkeypatch, 3)
    assert cli.main(["bench", "--quick", "--ops", "relu", "--providers", "reference", "torch",
                     "--out", str(tmp_path)]) == 130
    df = pd.read_csv(tmp_path / "results.csv")
    assert (df["status"] == "ok").sum() == 2 and (df["status"] == runner.INTERRUPTED).sum() == len(df) - 2
    assert "interrupted; the report holds the rows timed before it" in capsys.readouterr().err


def test_cli_time_budget_refuses_a_negative_and_says_when_nothing_ran(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--time-budget", "-1"])
    assert "expected a number of seconds >= 0, got '-1'" in capsys.readouterr().err
    assert cli.main(["bench", "--quick", "--ops", "relu", "--time-budget", "0", "--out", str(tmp_path)]) == 0
    assert "nothing was timed: skipped: the run's time budget (0 s) was spent" in capsys.readouterr().out


def _tf32_flags():
    return tuple(tf32_enabled(kind) for kind in ("matmul", "conv", "rnn"))


def _set_legacy(matmul, cudnn):
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _set_precision(matmul, cudnn):  # torch >= 2.9's API: reading the legacy flags then raises
    torch.backends.cuda.matmul.fp32_precision = "tf32" if matmul else "ieee"
    torch.backends.cudnn.conv.fp32_precision = torch.backends.cudnn.rnn.fp32_precision = "tf32" if cudnn else "ieee"


@pytest.mark.parametrize("api", [_set_legacy, _set_precision], ids=["allow_tf32", "fp32_precision"])
@pytest.mark.parametrize("matmul, cudnn", [(False, True), (True, False)])
def test_both_tf32_flags_follow_the_matmul_flag_while_timing_then_the_callers_return(monkeypatch, matmul, cudnn, api):
    """Convolutions follow cudnn's TF32 switch (on by default), not the matmul one the
    tf32 column reports: the runner sets both alike, for every provider, through
    whichever of torch's two APIs the caller used, or as `tf32=` says."""
    if api is _set_precision and not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip("torch < 2.9 has no fp32_precision")
    seen, timed = [], runner._time
    monkeypatch.setattr(runner, "_time", lambda *a: (seen.append(_tf32_flags()), timed(*a))[1])
    tiny = [_tiny("relu", {"shape": (3, 5)})]
    with runner.same_tf32(False):  # this session's settings back after the test
        api(matmul, cudnn)
        runner.run(tiny, quick=True, providers=("reference", "torch"), progress=False)
        assert seen and set(seen) == {(matmul,) * 3}
        assert _tf32_flags() == (matmul, cudnn, cudnn)
        seen.clear()
        runner.run(tiny, quick=True, providers=("torch",), progress=False, tf32=not matmul)
        assert set(seen) == {(not matmul,) * 3} and _tf32_flags() == (matmul, cudnn, cudnn)


def test_cli_records_the_training_step_skipped_by_a_spent_budget(tmp_path, capsys):
    assert cli.main(["bench", "--quick", "--time-budget", "0", "--out", str(tmp_path)]) == 0
    training = pd.read_csv(tmp_path / "training.csv")
    assert len(training) and (training["status"] == "skipped: the run's time budget (0 s) was spent").all()
    section = (tmp_path / "summary.md").read_text().split("## Training step")[1]
    assert section.count("| skipped: the run's time budget (0 s) was spent |") == len(training)
    assert "skipped: the run's time budget" in capsys.readouterr().out.split("\n\n")[-2]


def test_compile_and_graph_rows_say_why_they_did_not_run():
    df, _ = runner.run([_tiny("flatten", {"shape": (2, 3, 4)}), _tiny("lstm", {"b": 2, "t": 3, "i": 4, "h": 5})],
                       quick=True, providers=("compile", "graph"), progress=False)
    status = df.set_index(["op", "provider"])["status"]
    assert status.loc[("flatten", "compile")].str.contains("torch.compile would").all()
    assert status.loc[("lstm", "compile")].str.contains("torch.compile would").all()
    assert status.loc[("lstm", "graph")].str.contains("CUDA graphs need a CUDA device").all()


def test_compile_provider_checked_and_timed():
    df, _ = runner.run([_tiny("relu", {"shape": (3, 5)})], quick=True, providers=("compile",), modes=("fwd",),
                       progress=False)
    row = df.iloc[0]
    assert row["status"] == "ok" and row["max_abs_err"] == 0
    assert row["first_call_ms"] > row["ms_p50"]  # inductor's compile is kept out of the median


def test_unknown_provider():
    with pytest.raises(ValueError, match="unknown provider"):
        runner.run(["relu"], providers=("cudnn",), progress=False)


def test_cases_sized_for_the_device():
    for op in OPS.values():
        for kind in ("cpu", "cuda"):
            cases = [c for c in op.cases if c.device == kind]
            assert cases and any(c.quick for c in cases), (op.name, kind)


def test_derived_columns_follow_the_cost_model(tiny_run):
    """Every timed row: bytes and FLOPs from its op's cost model, throughput and roofline
    from them and its own median, speed-up against torch's row of the same op, case and
    mode (the bwd mode's cost: test_bwd_mode_costs_the_backward_alone)."""
    df, limits = tiny_run
    r = df[(df["op"] == "linear") & (df["provider"] == "reference") & (df["mode"] == "fwd")].iloc[0]
    assert r["flops"] == 2 * 5 * 7 * 3
    ok = df[df["status"] == "ok"]
    assert set(ok["mode"]) == set(runner.QUICK_MODES) and set(ok["op"]) == set(TINY)
    torch_ms = ok[ok["provider"] == "torch"].set_index(["op", "mode"])["ms_p50"]
    for _, r in ok.iterrows():
        cost, where = OPS[r["op"]].cost(TINY[r["op"]], r["mode"], 4), (r["op"], r["provider"], r["mode"])
        assert (r["bytes"], r["flops"]) == (cost.bytes, cost.flops), where
        sec = r["ms_p50"] * 1e-3
        assert r["gbps"] == pytest.approx(r["bytes"] / sec / 1e9), where
        assert r["tflops"] == pytest.approx(r["flops"] / sec / 1e12), where
        assert r["roofline_frac"] == pytest.approx(limits.floor_ms(r["bytes"], r["flops"]) / r["ms_p50"]), where
        assert r["speedup_vs_torch"] == pytest.approx(torch_ms[(r["op"], r["mode"])] / r["ms_p50"]), where


def test_report_files(tiny_run, tmp_path):
    df, limits = tiny_run
    files = report.write(df, limits, tmp_path)
    csv = pd.read_csv(files["csv"])
    assert list(csv.columns[:len(DESIGN_COLUMNS)]) == DESIGN_COLUMNS
    assert len(csv) == len(df)
    text = files["summary"].read_text()
    for op in ("linear", "relu", "lstm"):
        assert f"## {op}" in text
    assert "Fastest provider other than torch" in text
    assert {p.name for p in files["plots"]} == {"linear.png", "relu.png", "lstm.png", "roofline.png"}
    assert all(p.stat().st_size > 1000 for p in files["plots"])


def test_plot_lines_are_one_per_provider_and_series(tiny_run):
    """conv2d cases of another batch or layout, causal attention and GQA attention are
    other curves, not further points of one."""
    cases = {"N8 16->32 32x32 k3/1 nchw": "torch", "N8 64->64 28x28 k3/1 nchw": "torch",
             "N8 64->64 28x28 k3/1 nhwc": "torch reference", "N32 64->64 56x56 k3/1 nhwc": "torch",
             "N1 64->64 56x56 k3/1 nhwc": "torch", "B8 H16 L1024 E64": "torch", "B4 H16 L4096 E128": "torch",
             "B4 H16 L4096 E128 causal": "torch", "B4 H32/8kv L4096 E128 causal": "torch"}
    rows = pd.DataFrame([("attention" if case.startswith("B") else "conv2d", provider, case)
                         for case, providers in cases.items() for provider in providers.split()],
                        columns=["op", "provider", "case"])
    assert {k: len(v) for k, v in report.lines(rows)} == {
        ("torch", "N8 nchw"): 2, ("torch", "N8 nhwc"): 1, ("reference", "N8 nhwc"): 1, ("torch", "N32 nhwc"): 1,
        ("torch", "N1 nhwc"): 1, ("torch", "non-causal"): 2, ("torch", "causal"): 1, ("torch", "GQA causal"): 1}
    df, _ = tiny_run
    assert {k for k, _ in report.lines(df)} == {(p, "") for p in df["provider"]}  # no series: a line per provider


def test_report_carries_the_training_step_and_drops_a_stale_one(tiny_run, tmp_path):
    from tritonlab.bench.training import run_training
    df, limits = tiny_run
    training = run_training("cpu", torch.float32, models=("gru",), quick=True)
    files = report.write(df, limits, tmp_path, training)
    assert len(pd.read_csv(files["training"])) == len(training) == 2
    text = files["summary"].read_text()
    assert "## Training step" in text and "swapped-reference" in text
    report.write(df, limits, tmp_path)  # a later run without it leaves no stale training.csv
    assert not (tmp_path / "training.csv").exists()
    assert "## Training step" not in (tmp_path / "summary.md").read_text()


def test_report_names_the_autotuned_picks_and_drops_a_stale_list(tiny_run, tmp_path):
    from tritonlab.bench.autotune import COLUMNS
    df, limits = tiny_run
    picks = pd.DataFrame([["gemm._matmul_tuned", "M_BUCKET=7 N=64", "torch.float16", "BLOCK_M=64", 4, 3]],
                         columns=COLUMNS)
    files = report.write(df, limits, tmp_path, autotune=picks)
    assert pd.read_csv(files["autotune"]).equals(picks)
    assert "1 (kernel, key) pairs, are in autotune.csv" in files["summary"].read_text()
    report.write(df, limits, tmp_path, autotune=picks.iloc[:0])  # nothing tuned (a CPU run): no file
    assert not (tmp_path / "autotune.csv").exists()


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


class _DropsAll(torch.nn.Dropout):
    def forward(self, x):
        return torch.zeros_like(x)


class _KeepsAll(torch.nn.Dropout):
    def forward(self, x):
        return x / (1 - self.p)


@pytest.mark.parametrize("broken, kept", [(_DropsAll, "0.000"), (_KeepsAll, "1.000")])
def test_dropout_keeping_too_few_or_too_many_is_wrong_not_timed(broken, kept):
    """Under its own mask (all dropped, or none) such an output matches torch exactly: the
    kept share has to be near 1 - p too (0.9 ± 6 standard deviations of 4096 draws)."""
    op = dataclasses.replace(_tiny("dropout", {"shape": (64, 64)}), lab=lambda p: broken(0.1))
    df, _ = runner.run([op], quick=True, providers=("reference", "torch"), progress=False)
    bad, good = df[df["provider"] == "reference"], df[df["provider"] == "torch"]
    assert (bad["status"] == f"wrong: kept {kept} of the elements, expected 0.900 ± 0.028").all()
    assert bad["ms_p50"].isna().all() and (good["status"] == "ok").all()


class _Uniform(torch.nn.Softmax):
    def forward(self, x):
        return torch.full_like(x, 1 / x.shape[-1])


def test_the_tolerance_scales_with_torchs_output_not_with_1():
    """Softmax rows of 4096 columns hold values near 1e-3: an absolute bfloat16 tolerance
    (0.05) would pass uniform probabilities; scaled by torch's largest output it does not."""
    op = dataclasses.replace(_tiny("softmax", {"shape": (4, 4096)}), lab=lambda p: _Uniform(-1))
    df, _ = runner.run([op], dtype=torch.bfloat16, quick=True, providers=("reference", "torch"), progress=False)
    assert (df.loc[df["provider"] == "reference", "status"] == "wrong").all()
    assert (df.loc[df["provider"] == "torch", "status"] == "ok").all()
    right = _tiny("softmax", {"shape": (4, 4096)})
    df, _ = runner.run([right], dtype=torch.bfloat16, quick=True, providers=("reference",), progress=False)
    assert (df["status"] == "ok").all()  # the reference tier's own bfloat16 rounding passes


@pytest.mark.parametrize("tf32", [False, True])
def test_tf32_loosens_the_tolerance_of_matmul_ops_only(monkeypatch, tf32):
    """TF32 rounds a GPU's float32 matmuls to float16's mantissa, so linear gets float16's
    tolerance while it is on; relu, which no matmul touches, keeps float32's."""
    monkeypatch.setattr(runner, "tf32_enabled", lambda *kind: tf32)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    linear, relu = runner.OPS["linear"], runner.OPS["relu"]
    fp32, fp16 = runner.TOLERANCE[torch.float32], runner.TOLERANCE[torch.float16]
    assert runner.tolerance(linear, torch.float32, cuda) == (fp16 if tf32 else fp32)
    assert runner.tolerance(relu, torch.float32, cuda) == fp32
    assert runner.tolerance(linear, torch.float32, cpu) == fp32  # no TF32 on a CPU
    assert runner.tolerance(linear, torch.bfloat16, cuda) == runner.TOLERANCE[torch.bfloat16]


class _ZerosTheLastRows(torch.nn.ReLU):
    def forward(self, x):
        return torch.cat([torch.relu(x[:1229]), torch.zeros_like(x[1229:])])


def test_small_rows_gone_wrong_fail_on_the_rms_error():
    """Rows whose magnitude falls as 1/sqrt(row), as causal attention's outputs do: the
    last 70% zeroed stay within 0.05 of the largest output (bfloat16), yet carry ~38% of
    the RMS error; a right bfloat16 provider passes."""
    rows = torch.randn(4096, 64).abs() / torch.arange(1, 4097).sqrt()[:, None]
    op = dataclasses.replace(_tiny("relu", {"shape": (4096, 64)}), inputs=lambda p: (rows.clone(),))
    def status(op):
        df, _ = runner.run([op], dtype=torch.bfloat16, quick=True, providers=("reference",), modes=("fwd",),
                           progress=False)
        return df["status"].item(), df["max_abs_err"].item()
    wrong, err = status(dataclasses.replace(op, lab=lambda p: _ZerosTheLastRows()))
    assert wrong == "wrong" and err < 0.05 * rows.max().item()  # the max bound alone would have passed it
    assert status(op)[0] == "ok"


class _SameMaskEveryCall(torch.nn.Dropout):
    def forward(self, x):
        keep = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) >= self.p
        return x * keep / (1 - self.p)


def test_dropout_that_drops_the_same_elements_every_call_is_wrong_not_timed():
    op = dataclasses.replace(_tiny("dropout", {"shape": (64, 64)}), lab=lambda p: _SameMaskEveryCall(0.1))
    df, _ = runner.run([op], quick=True, providers=("reference", "torch"), progress=False)
    bad, good = df[df["provider"] == "reference"], df[df["provider"] == "torch"]
    assert (bad["status"] == "wrong: a second call dropped the same elements (the dropout seed does not advance)").all()
    assert bad["ms_p50"].isna().all() and (good["status"] == "ok").all()


def test_dropout_p_is_written_once_for_the_modules_and_the_check():
    from tritonlab.bench import ops
    dropout, both = OPS["dropout"], OPS["softmax_dropout"]
    ps = {dropout.lab({}).p, dropout.torch({}).p, both.lab({}).p, both.torch({})[1].p}
    assert ps == {ops.DROPOUT_P} and runner.DROPOUT_P is ops.DROPOUT_P


def test_refuses_under_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="refusing to time under TRITON_INTERPRET=1"):
        runner.run(["relu"], quick=True, progress=False)


def test_unknown_op():
    with pytest.raises(ValueError, match="unknown op"):
        runner.run(["conv3d"], progress=False)


@pytest.mark.parametrize("name", ["linear", "linear_relu", "conv2d"])
def test_cost_model_flops_match_torch_flop_counter(name):
    op = OPS[name]
    for case in op.cases:
        with torch.device("meta"):  # shapes only: the GPU-sized cases cost nothing to count
            mod, inputs = op.torch(case.params), op.inputs(case.params)
        with FlopCounterMode(display=False) as counter:
            mod(*inputs)
        assert op.cost(case.params, "fwd", 4).flops == counter.get_total_flops(), case.label


@pytest.mark.parametrize("groups", [1, 4, 8])
def test_conv_cost_counts_the_input_channels_of_a_group(groups):
    """Against torch's FLOP counter: the forward; forward+backward (dgrad and wgrad, each
    the forward's FLOPs) ungrouped only, as the counter takes a grouped wgrad for an
    ungrouped one (groups times too many)."""
    op, p = OPS["conv2d"], {"n": 2, "c": 8, "o": 16, "h": 9, "k": 3, "stride": 2, "padding": 1, "layout": "nchw",
                            "groups": groups}
    with torch.device("meta"):
        mod, (x,) = op.torch(p), op.inputs(p)
    with FlopCounterMode(display=False) as fwd:
        y = mod(x.requires_grad_())
    with FlopCounterMode(display=False) as bwd:
        y.backward(torch.ones_like(y))
    assert op.cost(p, "fwd", 4).flops == fwd.get_total_flops() == 2 * 2 * 16 * 5 * 5 * (8 // groups) * 9
    assert op.cost(p, "fwd+bwd", 4).flops == 3 * fwd.get_total_flops()
    assert groups > 1 or bwd.get_total_flops() == 2 * fwd.get_total_flops()
    assert op.cost(p, "fwd", 4).bytes == (2 * 8 * 81 + 16 * (8 // groups) * 9 + 2 * 16 * 25) * 4


def test_a_conv_case_names_its_groups_and_sizes_by_their_flops():
    from tritonlab.bench.ops import _conv_case
    dense, grouped = _conv_case(8, 64, 64, 28, 3), _conv_case(8, 64, 64, 28, 3, layout="nhwc", groups=32)
    assert (dense.label, grouped.label) == ("N8 64->64 28x28 k3/1 nchw", "N8 64->64 28x28 k3/1 g32 nhwc")
    assert grouped.size == dense.size // 32 == OPS["conv2d"].cost(grouped.params, "fwd", 4).flops
    assert all(case.size == OPS["conv2d"].cost(case.params, "fwd", 4).flops for case in OPS["conv2d"].cases)


# per element, (forward, forward + backward), as the lessons count them (tutorials/01-04)
ELEMENTWISE_FLOPS = {"relu": (1, 2), "sigmoid": (4, 7), "tanh": (5, 8), "softmax": (5, 9), "dropout": (2, 4),
                     "softmax_dropout": (7, 13)}


@pytest.mark.parametrize("name", ELEMENTWISE_FLOPS)
def test_elementwise_flops_per_element(name):
    p = {"shape": (3, 7)}
    fwd, both = ELEMENTWISE_FLOPS[name]
    assert OPS[name].cost(p, "fwd", 4).flops == fwd * 21 and OPS[name].cost(p, "fwd+bwd", 4).flops == both * 21


@pytest.mark.parametrize("name, tensors", [("relu", 3), ("softmax", 3), ("softmax_dropout", 3), ("dropout", 2)])
def test_elementwise_backward_bytes(name, tensors):
    """The backward reads y (or x) and dy and writes dx; dropout reads no mask (it
    regenerates it from the seed), so it moves one tensor fewer."""
    n = 21
    assert OPS[name].cost({"shape": (3, 7)}, "fwd+bwd", 4).bytes == (2 + tensors) * n * 4


@pytest.mark.parametrize("name, y_reads", [("linear", 1), ("linear_relu", 2)])
def test_gemm_backward_bytes(name, y_reads):
    """dX and dW read dy, W and X and write dX and dW; a fused activation's derivative
    reads y back too. The forward wrote y."""
    m, k, n = 5, 7, 3
    both = OPS[name].cost({"m": m, "k": k, "n": n}, "fwd+bwd", 2).bytes
    assert both == (3 * m * k + 3 * k * n + (1 + y_reads) * m * n) * 2
    assert runner.cost_of(OPS[name], {"m": m, "k": k, "n": n}, "bwd", 2).bytes == (2 * m * k + 2 * k * n + y_reads * m * n) * 2


def test_cli_quick_writes_report(tmp_path, capsys):
    assert cli.main(["bench", "--quick", "--ops", "relu", "flatten", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "results.csv").exists() and (tmp_path / "summary.md").exists()
    assert "median ms" in capsys.readouterr().out


@pytest.mark.parametrize("below", ["", "sub/folder"])
def test_cli_refuses_an_out_it_cannot_write_before_timing_anything(tmp_path, capsys, monkeypatch, below):
    def no_run(*a, **kw):
        raise AssertionError("timed before checking --out")
    monkeypatch.setattr(runner, "run", no_run)
    afile = tmp_path / "results.txt"
    afile.write_text("x")
    out = afile / below if below else afile
    assert cli.main(["bench", "--quick", "--ops", "relu", "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"bad --out: {afile} is a file, not a folder\n"


def test_prepare_says_when_the_folder_cannot_be_written(tmp_path, monkeypatch):
    def refuse(*a, **kw):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(report.tempfile, "TemporaryFile", refuse)
    with pytest.raises(OSError, match=f"cannot create the folder {tmp_path} or write in it: Permission denied"):
        report.prepare(tmp_path)


def test_repeated_ops_providers_and_modes_run_once(tmp_path):
    relu, tanh = _tiny("relu", {"shape": (3, 5)}), _tiny("tanh", {"shape": (3, 5)})
    df, _ = runner.run([relu, tanh, relu], providers=("torch", "reference", "torch"), modes=("fwd", "fwd"),
                       progress=False)
    assert list(zip(df["op"], df["provider"])) == [(o, p) for o in ("relu", "tanh") for p in ("torch", "reference")]
    assert cli.main(["bench", "--quick", "--ops", "relu", "relu", "--providers", "torch", "torch",
                     "--out", str(tmp_path)]) == 0
    assert len(pd.read_csv(tmp_path / "results.csv")) == len(runner.QUICK_MODES)


def test_cli_rejects_unknown_op(capsys):
    assert cli.main(["bench", "--ops", "nope"]) == 2
    assert "unknown op" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "tritonlab", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "bench" in r.stdout


def _csv(path, rows):
    pd.DataFrame(rows, columns=["op", "case", "mode", "provider", "ms_p50"]).to_csv(path, index=False)
    return str(path)


def test_compare_two_runs(tmp_path, capsys):
    a = _csv(tmp_path / "a.csv", [["relu", "4x4", "fwd", "torch", 2.0], ["relu", "4x4", "fwd", "reference", 3.0],
                                  ["relu", "4x4", "fwd", "naive", None]])
    b = _csv(tmp_path / "b.csv", [["relu", "4x4", "fwd", "torch", 1.0], ["relu", "4x4", "fwd", "reference", 6.0]])
    both = convert.compare(a, b).set_index("provider")
    assert list(both.index) == ["torch", "reference"]  # the naive row was not timed in A
    assert both.loc["torch", "ratio"] == 2.0 and both.loc["reference", "ratio"] == 0.5
    assert cli.main(["bench", "compare", a, b]) == 0
    assert "2.000" in capsys.readouterr().out


def test_compare_rejects_what_is_not_a_results_csv(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    assert cli.main(["bench", "compare", str(bad), str(bad)]) == 2
    assert "not a tritonlab results.csv" in capsys.readouterr().err
    assert cli.main(["bench", "compare", str(bad)]) == 2
    assert cli.main(["bench", "frobnicate"]) == 2


EXPECTED_CSV = "a tritonlab results.csv (columns op, case, mode, provider, ms_p50)"


@pytest.mark.parametrize("content, why", [
    (b"", "is empty; expected " + EXPECTED_CSV),
    (b"\x89PNG\r\n\x1a\n\x00\xff", f"is not {EXPECTED_CSV}: it does not read as CSV ('utf-8' codec can't decode"),
    (b'{"benchmarks": []}\n', f"is not {EXPECTED_CSV}: no column 'op'"),
    (b"op,case,mode,provider,ms_p50\nrelu,4x4,fwd,torch,fast\n", "ms_p50 holds text, not times in ms"),
    (b"op,case,mode,provider,ms_p50\n", "holds no rows, only a header; expected " + EXPECTED_CSV),
    (b"op,case,mode,provider,ms_p50\nrelu,4x4,fwd,torch,1\nrelu,4x4,fwd,torch,2\n",
     "2 rows share their op/case/mode/provider (e.g. op=relu, case=4x4, mode=fwd, provider=torch); expected one "
     "row each"),
    (None, "no such file; expected " + EXPECTED_CSV),
])
def test_compare_names_the_bad_file_and_what_it_expected(tmp_path, capsys, content, why):
    good = _csv(tmp_path / "good.csv", [["relu", "4x4", "fwd", "torch", 1.0]])
    bad = tmp_path / "bad.csv"
    if content is not None:
        bad.write_bytes(content)
    assert cli.main(["bench", "compare", good, str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(str(bad)) and why in err and err.count("\n") == 1


def test_compare_with_no_common_rows_says_so_and_fails(tmp_path, capsys):
    a = _csv(tmp_path / "a.csv", [["relu", "4x4", "fwd", "torch", 1.0]])
    b = _csv(tmp_path / "b.csv", [["relu", "8x8", "fwd", "torch", 1.0]])
    assert cli.main(["bench", "compare", a, b]) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err == (f"timed in one run only (A = {a}, B = {b}):\n"
                                         "  relu 4x4 fwd torch: A 1.000 ms; B: no such row\n"
                                         "  relu 8x8 fwd torch: B 1.000 ms; A: no such row\n"
                                         f"no row was timed in both {a} and {b} (rows match on op, case, mode and "
                                         "provider)\n")


def test_pytest_benchmark_suite_to_report(tmp_path):
    """The pytest-benchmark suite on one tiny selection, then its JSON through the CLI; a
    provider named twice runs once."""
    import os
    import subprocess
    import sys
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", "--bench-quick",
                        "--benchmark-only", f"--benchmark-json={out}", "-k", "flatten", "--bench-providers",
                        "reference", "torch", "torch"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    df, limits = convert.from_pytest_json(out)
    assert set(df["provider"]) == {"reference", "torch"} and set(df["mode"]) == set(runner.MODES) and len(df) == 6
    assert (df["ms_p50"] > 0).all() and limits.copy_gbps > 0
    assert cli.main(["bench", "--from-pytest-json", str(out), "--out", str(tmp_path / "rep")]) == 0
    assert len(pd.read_csv(tmp_path / "rep" / "results.csv")) == len(df)
    assert f"These rows come from pytest-benchmark ({out})" in (tmp_path / "rep" / "summary.md").read_text()


@pytest.mark.parametrize("options", [["--ops", "relu"], ["--dtype", "float32"], ["--quick"],
                                     ["--providers", "torch", "reference"], ["--time-budget", "0"]])
def test_from_pytest_json_refuses_the_options_of_a_run(tmp_path, capsys, options):
    assert cli.main(["bench", "--from-pytest-json", str(tmp_path / "bench.json"), *options]) == 2
    err = capsys.readouterr().err  # refused before the file is read
    assert err.startswith(f"--from-pytest-json reports the runs in the file as they are, so {options[0]} would be "
                          "ignored;") and err.count("\n") == 1


def test_im2col_buffer_bytes_are_reported():
    params = {"n": 2, "c": 3, "o": 4, "h": 6, "k": 3, "stride": 1, "padding": 1, "layout": "nchw"}
    df, _ = runner.run([_tiny("conv2d", params)], quick=True, providers=("triton",), progress=False)
    by = df.set_index(["provider", "mode"])["scratch_bytes"]
    assert by[("triton-im2col", "fwd")] == 2 * (2 * 6 * 6) * (3 * 3 * 3) * 4  # written once, read once
    assert by[("triton-implicit", "fwd")] == 0


def test_full_cases_only_with_full(monkeypatch):
    small = dataclasses.replace(OPS["relu"], cases=[Case("a", 1, {"shape": (2, 3)}), Case("b", 1, {"shape": (3, 2)},
                                                                                         full=True)])
    cases = {full: set(runner.run([small], providers=("torch",), modes=("fwd",), progress=False, full=full)[0]["case"])
             for full in (False, True)}
    assert cases == {False: {"a"}, True: {"a", "b"}}


def test_report_without_torch_rows(tmp_path):
    df, limits = runner.run([_tiny("relu", {"shape": (2, 3)})], quick=True, providers=("reference",), progress=False)
    files = report.write(df, limits, tmp_path)
    assert "## relu" in files["summary"].read_text() and df["speedup_vs_torch"].isna().all()


def test_a_rerun_leaves_no_stale_plots_and_the_default_folder_is_new(tmp_path, monkeypatch):
    (tmp_path / "sigmoid.png").write_bytes(b"x")  # an earlier report's plot of an op this run skips
    (tmp_path / "sketch.png").write_bytes(b"x")  # no report's file: not ours to remove
    df, limits = runner.run([_tiny("relu", {"shape": (2, 3)})], quick=True, providers=("torch",), progress=False)
    report.write(df, limits, tmp_path)
    assert not (tmp_path / "sigmoid.png").exists() and (tmp_path / "sketch.png").exists()
    monkeypatch.chdir(tmp_path)
    first = cli._default_out("Some GPU")
    first.mkdir(parents=True)
    assert cli._default_out("Some GPU") == first.with_name(first.name + "-2")


def test_outcome_of_a_raising_provider():
    assert runner._outcome(TypeError("float64 is not supported"), "triton-im2col") == \
        "skipped: float64 is not supported"
    assert runner._outcome(TypeError("bug"), "reference") == "failed: TypeError: bug"
    assert runner._outcome(NotImplementedError("no kernel"), "triton") == "skipped: no kernel"


def test_compare_folders_and_notes_a_dtype_difference(tmp_path):
    for name, dtype in (("a", "float32"), ("b", "float64")):
        (tmp_path / name).mkdir()
        pd.DataFrame([["relu", "4x4", "fwd", "torch", 1.0, dtype]],
                     columns=["op", "case", "mode", "provider", "ms_p50", "dtype"]).to_csv(
            tmp_path / name / "results.csv", index=False)
    both = convert.compare(tmp_path / "a", tmp_path / "b")
    assert len(both) == 1 and "differ in dtype: float32 vs float64" in both.attrs["note"]


def test_from_pytest_json_bad_path(tmp_path, capsys):
    assert cli.main(["bench", "--from-pytest-json", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def _run_csv(path, rows, tf32=False):
    """A results.csv of rows (op, case, mode, provider, ms_p50, status) in float32."""
    df = pd.DataFrame(rows, columns=["op", "case", "mode", "provider", "ms_p50", "status"])
    df.assign(dtype="float32", tf32=tf32).to_csv(path, index=False)
    return str(path)


def test_compare_lists_rows_timed_in_one_run_only_with_the_others_status(tmp_path, capsys):
    """A regression that makes a row fail, skip or vanish must show, not drop the row."""
    a = _run_csv(tmp_path / "a.csv", [["relu", "4x4", "fwd", "torch", 2.0, "ok"],
                                      ["relu", "4x4", "fwd", "naive", 3.0, "ok"],
                                      ["relu", "4x4", "fwd", "reference", 4.0, "ok"],
                                      ["relu", "8x8", "fwd", "naive", None, "skipped: too slow"]])
    b = _run_csv(tmp_path / "b.csv", [["relu", "4x4", "fwd", "torch", 1.0, "ok"],
                                      ["relu", "4x4", "fwd", "naive", None, "failed: RuntimeError: boom"],
                                      ["relu", "8x8", "fwd", "naive", 5.0, "ok"]], tf32=True)
    both = convert.compare(a, b)
    assert list(both["provider"]) == ["torch"] and both["ratio"].tolist() == [2.0]
    assert both.attrs["note"] == (f"note: the runs differ in tf32: False vs True\n"
                                  f"timed in one run only (A = {a}, B = {b}):\n"
                                  "  relu 4x4 fwd naive: A 3.000 ms; B: failed: RuntimeError: boom\n"
                                  "  relu 4x4 fwd reference: A 4.000 ms; B: no such row\n"
                                  "  relu 8x8 fwd naive: B 5.000 ms; A: skipped: too slow\n")
    assert cli.main(["bench", "compare", a, b]) == 0
    assert both.attrs["note"] in capsys.readouterr().out


def test_compare_with_no_common_rows_still_carries_what_differs(tmp_path):
    a = _run_csv(tmp_path / "a.csv", [["relu", "4x4", "fwd", "torch", 2.0, "ok"]])
    b = tmp_path / "b.csv"
    pd.read_csv(a).assign(ms_p50=None, status="failed: x", dtype="float64").to_csv(b, index=False)
    both = convert.compare(a, b)
    assert both.empty and both.attrs["note"].splitlines() == [
        "note: the runs differ in dtype: float32 vs float64", f"timed in one run only (A = {a}, B = {b}):",
        "  relu 4x4 fwd torch: A 2.000 ms; B: failed: x"]


def test_from_pytest_json_refuses_repeated_benchmarks_naming_them(tmp_path):
    import json
    bench = {"name": "test_op[relu-4x4-torch-fwd0]", "stats": {"median": 1e-3, "data": [1e-3, 1e-3]},
             "extra_info": {"op": "relu", "case": "4x4", "provider": "torch", "mode": "fwd", "bytes": 1, "flops": 1}}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"benchmarks": [bench, {**bench, "name": "test_op[relu-4x4-torch-fwd1]"}],
                                "tritonlab": {"common": {}, "ceilings": {"copy_gbps": 1, "matmul_tflops": 1,
                                                                         "launch_us": 1}}}))
    with pytest.raises(ValueError) as e:
        convert.from_pytest_json(path)
    assert str(e.value) == (f"{path} holds 2 benchmarks that share their op/case/mode/provider: "
                            "test_op[relu-4x4-torch-fwd0], test_op[relu-4x4-torch-fwd1]; expected one each")


def test_peak_memory_is_one_call_of_its_own_after_a_warm_one(monkeypatch):
    """Not do_bench's flush buffer nor a first call's autotuning: reset between two calls."""
    from tritonlab.bench import timing
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: events.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**20)
    assert timing.peak_mb(lambda: events.append("call"), torch.device("cuda")) == 3
    assert events == ["call", "reset", "call"]
    assert math.isnan(timing.peak_mb(lambda: None, torch.device("cpu")))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ceilings_measure_every_dtypes_matmul_and_the_runs_own_roofline(dtype, monkeypatch):
    from tritonlab.bench import ceilings
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    limits = ceilings.measure(torch.device("cpu"), dtype, quick=True)
    assert set(limits.matmul_all) == {"float32", "float16", "bfloat16"}
    assert all(v > 0 for v in limits.matmul_all.values())
    assert limits.matmul_tflops == limits.matmul_all[str(dtype).removeprefix("torch.")]
    assert limits.copy_gbps > 0 and limits.launch_us > 0


def test_the_floor_is_bytes_or_flops_and_at_least_the_smallest_op():
    from tritonlab.bench.ceilings import Ceilings
    limits = Ceilings(copy_gbps=1000, matmul_tflops=10, launch_us=5)
    assert limits.floor_ms(1e9, 0) == pytest.approx(1.0)    # 1 GB at 1 TB/s
    assert limits.floor_ms(1e9, 1e11) == pytest.approx(10.0)  # 100 GFLOP at 10 TFLOP/s
    assert limits.floor_ms(1e6, 1e6) == pytest.approx(0.005)  # 1 us of bytes: one launch, 5 us


def test_every_case_of_the_compile_provider_is_compiled(monkeypatch):
    """Dynamo allows 8 graphs per code object, then runs it eagerly without a word: a
    case compiles two (with and without grad), so each build starts a fresh Dynamo."""
    from torch._dynamo.utils import counters
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: real(m, backend="eager", **kw))  # Dynamo only: fast
    counters.clear()
    for width in range(5, 12):  # 7 cases: 14 graphs in all
        shape = (3, width)
        mod = prov.build(OPS["relu"], {"shape": shape}, "compile", OPS["relu"].torch({"shape": shape}),
                         torch.device("cpu"), torch.float32)
        x = torch.randn(shape)
        with torch.no_grad():
            mod(x)
        mod(x.requires_grad_()).sum().backward()
    assert counters["stats"]["unique_graphs"] == 14
