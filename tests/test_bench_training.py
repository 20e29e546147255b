"""The training-step benchmark on CPU at its quick sizes; never a timing assertion."""
import math

import pytest
import torch

from tritonlab.backend import tf32_enabled
from tritonlab.bench import runner, training
from tritonlab.layers import linear as lab_linear


@pytest.fixture(scope="module", autouse=True)
def _no_interpreter():
    """Timing refuses the interpreter, which conftest turns on for the triton tier's
    tests; these tests time real CPU code, so they run without it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("TRITON_INTERPRET", raising=False)
        yield


@pytest.fixture(scope="module")
def quick_run():
    return training.run_training("cpu", torch.float32, steps=3, quick=True)


def test_one_row_per_model_and_provider_with_the_columns(quick_run):
    df = quick_run
    assert list(zip(df["model"], df["provider"])) == [(m, p) for m in ("lstm", "gru", "cnn", "transformer")
                                                      for p in ("torch", "swapped-reference")]
    assert list(df.columns[:len(training.COLUMNS)]) == training.COLUMNS
    assert {"dtype", "device", "torch_version", "triton_version", "timestamp"} <= set(df.columns)
    assert (df["status"] == "ok").all() and (df["dtype"] == "float32").all()
    assert (df["batch"] == 4).all() and (df["seq"] == 32).all()


def test_rows_name_the_model_size_and_its_parameter_count(quick_run):
    lstm = quick_run[quick_run["model"] == "lstm"]
    assert set(lstm["config"]) == {"embed=8 hidden=16 layers=1 dropout=0.2"}
    assert set(quick_run.loc[quick_run["model"] == "cnn", "config"]) == {
        "embed=8 channels=16 kernel=5 layers=3 dropout=0.2"}  # the defaults it was built with too
    expected = training._provider_model(training.build_model("lstm", vocab_size=4, embed=8, hidden=16, layers=1),
                                        "torch")
    assert set(lstm["params"]) == {sum(p.numel() for p in expected.parameters())}
    assert ("transformer embed=16 heads=2 hidden=32 layers=1 context=32 positions=" in
            training.training_markdown(quick_run))


def test_times_throughput_and_speedup_are_consistent(quick_run):
    df = quick_run
    assert (df["ms_p20"] > 0).all() and (df["ms_p20"] <= df["ms_p50"]).all() and (df["ms_p50"] <= df["ms_p80"]).all()
    assert df["bases_per_s"].tolist() == pytest.approx((4 * 32 / (df["ms_p50"] * 1e-3)).tolist())
    for model, g in df.groupby("model"):
        torch_ms = g.loc[g["provider"] == "torch", "ms_p50"].item()
        assert g["speedup_vs_torch"].tolist() == pytest.approx((torch_ms / g["ms_p50"]).tolist()), model
        assert g.loc[g["provider"] == "torch", "speedup_vs_torch"].item() == 1
    assert df["peak_mem_mb"].isna().all()  # measured on a GPU only


def test_providers_start_from_the_same_weights_and_train_alike(quick_run):
    """Same batches and initial weights; only dropout's masks differ between torch.nn
    and the lab, so after 3 steps the losses sit close together near ln 4 (random
    guessing of 4 bases)."""
    for model, g in quick_run.groupby("model"):
        losses = g["loss_after"].tolist()
        assert all(abs(v - math.log(4)) < 0.1 for v in losses), (model, losses)
        assert max(losses) - min(losses) < 0.03, (model, losses)


def test_a_provider_that_raises_is_recorded_and_the_run_goes_on(monkeypatch):
    def broken(x, w, b):
        raise RuntimeError("kernel exploded\nsecond line")
    monkeypatch.setitem(lab_linear._LINEAR, "reference", broken)
    df = training.run_training("cpu", models=["cnn"], steps=1, quick=True).set_index("provider")
    assert df.loc["swapped-reference", "status"] == "failed: RuntimeError: kernel exploded"
    assert math.isnan(df.loc["swapped-reference", "speedup_vs_torch"])
    assert df.loc["torch", "status"] == "ok" and df.loc["torch", "speedup_vs_torch"] == 1
    md = training.training_markdown(df.reset_index())
    assert "| cnn | swapped-reference | failed: RuntimeError: kernel exploded |" in md


def test_a_provider_whose_weights_get_no_gradient_fails_its_row(monkeypatch):
    """A Linear that computes with detached copies of its weights still lowers the loss
    through the other layers: only the gradient check catches it."""
    monkeypatch.setitem(lab_linear._LINEAR, "reference", lambda x, w, b: torch.nn.functional.linear(
        x, w.detach(), None if b is None else b.detach()))
    df = training.run_training("cpu", models=["cnn"], steps=1, quick=True).set_index("provider")
    assert df.loc["torch", "status"] == "ok"
    status = df.loc["swapped-reference", "status"]
    assert status.startswith("failed: RuntimeError: 2 of ") and "got no gradient in training: " in status, status
    assert "head.weight" in status and "head.bias" in status and math.isnan(df.loc["swapped-reference", "ms_p50"])


def test_an_optimizer_that_never_steps_fails_every_row(monkeypatch):
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
    df = training.run_training("cpu", models=["lstm"], steps=2, quick=True)
    assert df["status"].str.contains(r"^failed: RuntimeError: \d+ of \d+ parameters never moved").all(), \
        df["status"].tolist()


def test_tf32_flags_alike_while_training_then_the_callers_return(monkeypatch):
    seen, bench = [], training._bench
    flags = lambda: (tf32_enabled("matmul"), tf32_enabled("conv"))  # noqa: E731
    monkeypatch.setattr(training, "_bench", lambda *a: (seen.append(flags()), bench(*a))[1])
    with training.same_tf32(False):  # this session's flags back after the test
        torch.backends.cudnn.allow_tf32 = True  # torch's default: convolutions on TF32
        training.run_training("cpu", models=["cnn"], steps=1, quick=True)
        assert seen == [(False, False)] * 2 and flags() == (False, True)
        training.run_training("cpu", models=["cnn"], steps=1, quick=True, tf32=True)
        assert seen[2:] == [(True, True)] * 2 and flags() == (False, True)


def test_a_spent_time_budget_skips_the_providers_left_and_says_so(monkeypatch):
    clock = iter(range(0, 1000, 10))  # each reading of the budget's clock 10 s later than the last
    monkeypatch.setattr(runner, "_clock", lambda: next(clock))
    df = training.run_training("cpu", models=["cnn", "gru"], steps=1, quick=True, time_budget_s=25)
    status = df.set_index(["model", "provider"])["status"]
    assert (status.loc["cnn"] == "ok").all()  # started within the budget
    assert (status.loc["gru"] == "skipped: the run's time budget (25 s) was spent").all()
    assert df.loc[df["model"] == "gru", "ms_p50"].isna().all()
    assert "| gru | torch | skipped: the run's time budget (25 s) was spent |" in training.training_markdown(df)


def test_the_torch_baselines_rnn_weights_are_flattened_after_the_copy(monkeypatch):
    """A deep copy gives every weight its own tensor; cuDNN then copies them into one
    chunk on every call unless flatten_parameters() runs (a no-op on CPU)."""
    from tritonlab.models import build_model
    from tritonlab.swap import unswap
    base = build_model("lstm", vocab_size=4, embed=8, hidden=16, layers=1)
    unswap(base)
    flattened = []
    monkeypatch.setattr(torch.nn.RNNBase, "flatten_parameters", lambda self: flattened.append(self))
    model = training._provider_model(base, "torch")
    assert flattened and flattened == [m for m in model.modules() if isinstance(m, torch.nn.RNNBase)]


def test_markdown_section(quick_run):
    md = training.training_markdown(quick_run)
    lines = md.splitlines()
    assert lines[0] == "## Training step" and "batch 4 × 32 bases" in md
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| model | provider | ms | bases/s | peak MiB | ×torch | loss after |"
    assert len(table) == 1 + len(quick_run)
    r = quick_run.iloc[1]
    assert table[2].startswith(f"| lstm | swapped-reference | {r['ms_p50']:.2f} (")
    assert f"| {r['speedup_vs_torch']:.2f} | {r['loss_after']:.4f} |" in table[2]


def test_refuses_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="refusing to time under TRITON_INTERPRET=1"):
        training.run_training("cpu", quick=True)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"models": ["mlp"]}, ValueError, r"models must be a non-empty list of \('lstm', 'gru', 'cnn', 'transformer'\), got \['mlp'\]"),
    ({"models": []}, ValueError, "models must be a non-empty list"),
    ({"steps": 0}, ValueError, "steps must be a positive integer, got 0"),
    ({"dtype": torch.int64}, TypeError, "dtype must be a floating torch.dtype, got torch.int64"),
    ({"device": "meta"}, ValueError, "device must be cuda or cpu, got meta"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        training.run_training(**{"device": "cpu", "quick": True, **kwargs})


@pytest.mark.gpu
def test_gpu_triton_provider_runs_and_reports_peak_memory():
    df = training.run_training("cuda", torch.float32, steps=3, quick=True)
    assert set(df["provider"]) == {"torch", "swapped-triton", "swapped-reference"}
    assert (df["status"] == "ok").all(), df[["model", "provider", "status"]]
    assert (df["peak_mem_mb"] > 0).all() and (df["ms_p50"] > 0).all()
    for model, g in df.groupby("model"):
        losses = g["loss_after"]
        assert losses.max() - losses.min() < 0.05, (model, losses.tolist())
