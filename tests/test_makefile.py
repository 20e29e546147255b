"""`make test` runs CI's suite anywhere: it hides any GPU (the conftest turns Triton's
interpreter on only where torch sees none), unless ARGS name the GPU checks. Checked
with `make -n`, which prints the commands without running them."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pytest_line(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("needs make")
    # not the flags and ARGS of a make this suite may run under (`make test ARGS=...`)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "ARGS")}
    done = subprocess.run(["make", "-n", "test", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return next(line for line in done.stdout.splitlines() if "-m pytest" in line)


def test_make_test_hides_the_gpu():
    line = _pytest_line()
    assert line.startswith("CUDA_VISIBLE_DEVICES= ") and line.rstrip().endswith("-m pytest"), line
    assert _pytest_line("ARGS=-q tests/test_flatten.py").startswith("CUDA_VISIBLE_DEVICES= ")


def test_the_gpu_checks_keep_it():
    line = _pytest_line("ARGS=-m gpu")
    assert "CUDA_VISIBLE_DEVICES" not in line and line.endswith("-m pytest -m gpu"), line
