"""scripts/host_overhead.py runs and prints a row per layer (in a subprocess: it stubs
every Triton launch in its own process). What it measures is timing, never asserted."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    # the script's sys.path[0] is scripts/: tritonlab from this checkout, installed or not
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "scripts/host_overhead.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)


def test_a_row_of_four_times_per_layer():
    done = _run("relu", "linear", "softmax_dropout", "--calls", "5")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[1:]}
    assert list(rows) == ["relu", "linear", "softmax_dropout"]
    for name in ("relu", "linear"):
        assert len(rows[name]) == 4 and all(float(v) > 0 for v in rows[name]), rows[name]
    lab_fwd, torch_fwd, lab_both, torch_both = rows["softmax_dropout"]
    assert float(lab_fwd) > 0 and float(lab_both) > 0 and torch_fwd == torch_both == "–"  # no torch.nn twin


@pytest.mark.parametrize("args, message", [(("conv3d",), "unknown layer(s) ['conv3d']; choose from"),
                                           (("relu", "--calls", "0"), "--calls must be at least 1, got 0")])
def test_bad_arguments_are_refused(args, message):
    done = _run(*args)
    assert done.returncode == 2 and message in done.stderr
