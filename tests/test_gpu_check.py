"""What scripts/gpu_check.sh relies on that can be checked without a GPU."""
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _collected(env_first: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITONLAB_TESTS_FIRST"}
    if env_first is not None:
        env["TRITONLAB_TESTS_FIRST"] = env_first
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "tests/test_flatten.py", "tests/test_dropout.py", "tests/test_data.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    files = [line.split("::")[0].removeprefix("tests/") for line in done.stdout.splitlines() if "::" in line]
    return list(dict.fromkeys(files))  # each file once, in the order its tests come


def test_the_files_named_first_run_first_in_that_order_and_the_rest_as_collected():
    assert _collected(None) == ["test_flatten.py", "test_dropout.py", "test_data.py"]  # as pytest collects them
    assert _collected("test_data.py test_flatten.py") == ["test_data.py", "test_flatten.py", "test_dropout.py"]


def _gpu_check(out, **phases):
    """Run scripts/gpu_check.sh into `out` with every phase off but those given (NAME_S
    and other settings as strings); its exit code must be 0."""
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "TESTS_S": "0", "LESSONS_S": "0",
           "BENCH_S": "0", **phases}
    done = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def test_the_probe_phase_runs_only_when_asked_and_keeps_its_output(tmp_path):
    """PROBE_S: scripts/rnn_probe.py as the last phase, its output in rnn-probe.txt (here
    its refusal: no GPU); without PROBE_S there is no such phase."""
    assert not (_gpu_check(tmp_path / "none") / "rnn-probe.txt").exists()
    if not torch.cuda.is_available():
        out = _gpu_check(tmp_path / "probe", PROBE_S="20")
        text = (out / "rnn-probe.txt").read_text()
        assert "needs a CUDA device" in text and "rnn_probe exit code 2" in text
        assert not (out / "rnn-probe.csv").exists()  # folded into the txt when there is one


def test_tests_mark_picks_the_marker_expression(tmp_path):
    """TESTS_MARK: -m gpu by default; empty, no -m at all (gpu-tests.txt's last line says
    which ran)."""
    def last_line(name, **extra):
        out = _gpu_check(tmp_path / name, TESTS_S="120", TESTS="tests/test_flatten.py", **extra)
        return (out / "gpu-tests.txt").read_text().splitlines()[-1]
    assert last_line("default").startswith("pytest -m gpu exit code ")
    assert last_line("none", TESTS_MARK="").startswith("pytest exit code 0 ")  # test_flatten's CPU tests ran and passed


@pytest.mark.skipif(bool(shutil.which("ncu") or glob.glob("/usr/local/cuda*/bin/ncu")
                         or glob.glob("/opt/nvidia/nsight-compute/*/ncu")),
                    reason="this machine has ncu: the phase would profile")
def test_the_ncu_phase_says_when_there_is_no_ncu(tmp_path):
    _gpu_check(tmp_path, NCU_S="20", PATH="/usr/bin:/bin")
    assert (tmp_path / "ncu.txt").read_text() == "no ncu on this machine: NCU_S skipped\n"
