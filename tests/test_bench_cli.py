"""`tritonlab bench`'s guards: the folder it writes into, options that cannot apply, the
interpreter, a run that keeps its op rows whatever the training step meets, and the
correctness check that a wrong shape cannot slip through."""
import dataclasses

import pandas as pd
import pytest
import torch

from tritonlab import cli
from tritonlab.bench import runner, training
from tritonlab.bench.ops import OPS, Case


@pytest.fixture(autouse=True)
def _no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the runner refuses to time under it


RELU = ["bench", "--quick", "--ops", "relu", "--providers", "torch"]


def test_a_folder_of_other_files_is_refused_and_left_alone(tmp_path, capsys):
    (tmp_path / "diagram.png").write_text("mine")
    assert cli.main([*RELU, "--out", str(tmp_path)]) == 2
    assert "holds files but no results.csv" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["diagram.png"]


def test_an_earlier_report_is_replaced_and_nothing_else_is_touched(tmp_path):
    assert cli.main([*RELU, "--modes", "fwd", "--out", str(tmp_path)]) == 0
    (tmp_path / "README.md").write_text("notes on the run")
    (tmp_path / "sigmoid.png").write_text("a plot of the earlier run")
    assert cli.main([*RELU, "--out", str(tmp_path)]) == 0
    assert set(pd.read_csv(tmp_path / "results.csv")["mode"]) == set(runner.QUICK_MODES)
    assert (tmp_path / "README.md").read_text() == "notes on the run"
    assert not (tmp_path / "sigmoid.png").exists()  # the earlier report's plot: gone with it


@pytest.mark.parametrize("argv, message", [
    (["bench", "compare", "a.csv", "b.csv", "--ops", "relu", "--out", "x"],
     "bench compare reads two results.csv files and writes nothing, so --ops, --out would be ignored"),
    ([*RELU, "--full"], "--quick (one small case per op) and --full (every case) exclude each other"),
    ([*RELU, "--out", ""], "--out is empty"),
])
def test_options_that_cannot_apply_are_refused(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("ran despite a refused option"))
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_interpreter_is_refused_in_one_line_before_any_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert cli.main([*RELU, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "TRITON_INTERPRET is set" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_an_interrupt_in_the_training_step_keeps_every_row_timed_and_exits_130(tmp_path, monkeypatch, capsys):
    calls, real = [], training._bench

    def bench(*args, **kwargs):  # the third provider's step is interrupted
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(training, "_bench", bench)
    assert cli.main(["bench", "--quick", "--providers", "torch", "--modes", "fwd", "--out", str(tmp_path)]) == 130
    assert set(pd.read_csv(tmp_path / "results.csv")["op"]) >= {"relu", "linear"}
    assert "## relu" in (tmp_path / "summary.md").read_text()
    steps = pd.read_csv(tmp_path / "training.csv")
    assert list(steps["status"][:2]) == ["ok", "ok"] and (steps["status"][2:] == runner.INTERRUPTED).all()
    assert "interrupted; the report holds the rows timed before it" in capsys.readouterr().err


def test_without_the_genome_the_training_step_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(training, "default_genome_path", lambda: tmp_path / "absent.fasta")
    df = training.run_training("cpu", models=["gru"], quick=True)
    assert (df["status"] == f"skipped: no training data ({tmp_path / 'absent.fasta'} is absent)").all()
    assert len(df) == len(training.PROVIDERS["cpu"])


def test_the_console_table_keeps_an_op_nothing_of_which_was_timed_and_only_its_own_cases(capsys):
    df = pd.DataFrame({"op": ["relu", "relu", "lstm"], "case": ["a", "a", "b"], "mode": ["fwd"] * 3,
                       "provider": ["torch", "reference", "torch"], "ms_p50": [1.0, 2.0, float("nan")],
                       "device": ["cpu"] * 3, "dtype": ["float32"] * 3, "status": ["ok", "ok", "skipped: budget"]})
    cli._print_table(df)
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines() if line.startswith(("relu", "lstm"))]
    assert rows == [["relu", "a"], ["lstm", "b"]]  # no "relu b", no "lstm a"


def test_a_folder_whose_results_csv_is_not_a_reports_is_refused(tmp_path, capsys):
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    (tmp_path / "summary.md").write_text("my notes")
    assert cli.main([*RELU, "--out", str(tmp_path)]) == 2
    assert "no results.csv of tritonlab's" in capsys.readouterr().err
    assert (tmp_path / "summary.md").read_text() == "my notes"


@pytest.mark.parametrize("argv, message", [
    (["bench", "compare", "a.csv", "b.csv", "--no-tf32"], "so --no-tf32 would be ignored"),
    ([*RELU, "--out", "  "], "--out is empty"),
])
def test_more_options_that_cannot_apply(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_tf32_on_a_cpu_says_it_changes_nothing(tmp_path, capsys):
    assert cli.main([*RELU, "--modes", "fwd", "--tf32", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "note: --tf32 changes nothing here: TF32 is for float32 on a GPU" in out.err
    assert "and 2 plots in" in out.out  # relu's and the roofline


class _ExtraDim(torch.nn.Module):
    def forward(self, x):
        return torch.relu(x)[None]  # the right values, broadcast against torch's without a word


def test_an_output_of_another_shape_is_wrong_not_timed():
    op = dataclasses.replace(OPS["relu"], cases=[Case("tiny", 1, {"shape": (3, 5)}, quick=True)],
                             lab=lambda p: _ExtraDim())
    df, _ = runner.run([op], quick=True, providers=("reference", "torch"), progress=False)
    mine, torchs = df[df["provider"] == "reference"], df[df["provider"] == "torch"]
    assert (mine["status"] == "wrong").all() and mine["ms_p50"].isna().all()
    assert (torchs["status"] == "ok").all()
