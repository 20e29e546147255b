import subprocess
import sys
import textwrap

import pytest
import torch

import tritonlab
from tritonlab.layers._dispatch import lazy, pick
from tritonlab.scratch import linear as scratch_linear


def test_setter_and_context_manager():
    assert tritonlab.get_backend() == "auto"
    tritonlab.use_backend("naive")
    assert tritonlab.get_backend() == "naive"
    with tritonlab.use_backend("reference"):
        assert tritonlab.get_backend() == "reference"
    assert tritonlab.get_backend() == "naive"
    tritonlab.use_backend("auto")


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match=r"one of \('auto', 'naive', 'reference', 'triton'\), got 'cuda'"):
        tritonlab.use_backend("cuda")
    with pytest.raises(ValueError, match="got 'fast'"):
        tritonlab.Linear(2, 2, backend="fast")


def test_dispatch_follows_global_and_layer_override(monkeypatch):
    calls = []
    for tier in ("naive", "reference"):
        real = getattr(scratch_linear, f"linear_{tier}")
        monkeypatch.setitem(tritonlab.layers.linear._LINEAR, tier,
                            lambda *a, tier=tier, real=real: calls.append(tier) or real(*a))
    x = torch.randn(2, 3)
    tritonlab.Linear(3, 4)(x)                         # auto on CPU -> reference
    with tritonlab.use_backend("naive"):
        tritonlab.Linear(3, 4)(x)                     # global choice
        tritonlab.Linear(3, 4, backend="reference")(x)  # layer wins over global
    assert calls == ["reference", "naive", "reference"]


def test_triton_on_cpu_without_interpreter_says_how(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        tritonlab.Linear(3, 2, backend="triton")(torch.randn(1, 3))


def test_triton_interpret_is_read_as_triton_reads_it(monkeypatch):
    triton = pytest.importorskip("triton")
    for value in ("1", "true", "TRUE", "yes", "on", "y", "0", "", "false", "off", "no", "2", " 1"):
        monkeypatch.setenv("TRITON_INTERPRET", value)
        assert tritonlab.backend.interpreter_enabled() == triton.knobs.runtime.interpret, repr(value)


def test_triton_without_a_kernel_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(tritonlab.backend, "triton_available", lambda: True)
    impls = {"naive": torch.neg, "reference": torch.neg}   # an op whose kernel has not landed
    with pytest.raises(NotImplementedError, match="no Triton kernel for neg yet; use backend='reference'"):
        pick("neg", impls, "triton", torch.randn(3))
    assert pick("neg", impls, "auto", torch.randn(3)) is torch.neg


def test_lazy_names_a_triton_tier_function_and_calls_it(triton_device):
    fn = lazy("activations", "relu_triton")  # tritonlab.layers.functions.activations.relu_triton
    assert fn.__name__ == "relu_triton"
    x = torch.tensor([-1.0, 2.0], device=triton_device)
    assert torch.equal(fn(x), torch.tensor([0.0, 2.0], device=triton_device))


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)


def test_import_does_not_load_triton():
    r = _run("import sys, tritonlab; print('triton' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_cpu_path_works_without_triton_installed():
    r = _run("""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "triton" or name.startswith("triton."):
                    raise ModuleNotFoundError("No module named 'triton'")
        sys.meta_path.insert(0, Block())
        import torch, tritonlab
        y = tritonlab.Linear(3, 2)(torch.randn(4, 3))
        print(tuple(y.shape))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(4, 2)"


_TF32_STATE = """
import torch
from tritonlab.backend import same_tf32, tf32_enabled
b = torch.backends
{setup}
def read(f):
    try:
        return f()
    except RuntimeError:
        return "raises"
def state():
    return (read(lambda: b.cuda.matmul.allow_tf32), read(lambda: b.cudnn.allow_tf32),
            read(torch.get_float32_matmul_precision), b.fp32_precision, b.cuda.matmul.fp32_precision,
            b.cudnn.fp32_precision, b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision)
kinds = ("matmul", "conv", "rnn")
before, enabled = state(), [tf32_enabled(k) for k in kinds]  # readable in every state
with same_tf32(True):
    assert [tf32_enabled(k) for k in kinds] == [True] * 3
with same_tf32(False):
    assert [tf32_enabled(k) for k in kinds] == [False] * 3
assert state() == before and [tf32_enabled(k) for k in kinds] == enabled, (before, state())
"""


@pytest.mark.parametrize("setup", [
    "pass", "b.fp32_precision = 'tf32'", "b.cudnn.allow_tf32 = False", "b.cudnn.conv.fp32_precision = 'ieee'",
    "torch.set_float32_matmul_precision('medium')", "b.cudnn.allow_tf32 = False; b.cudnn.rnn.fp32_precision = 'tf32'",
])
def test_same_tf32_sets_every_op_and_leaves_torchs_settings_as_they_were(setup):
    """In a fresh process per starting state (they are process-wide): legacy flags, torch
    >= 2.9's fp32_precision settings, the two set apart, and 'medium' matmul precision."""
    import subprocess
    import sys
    if not hasattr(torch.backends, "fp32_precision"):
        pytest.skip("torch < 2.9 has one TF32 API")
    run = subprocess.run([sys.executable, "-c", _TF32_STATE.format(setup=setup)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
