"""The launchers' plain integer helpers give triton's results (they replace
triton.cdiv and triton.next_power_of_2 in host code, where those cost ~2 us a call)."""
import pytest

triton = pytest.importorskip("triton")

from tritonlab.kernels._host import cdiv, next_power_of_2  # noqa: E402


def test_cdiv_is_tritons():
    pairs = [(a, b) for a in range(-70, 600) for b in range(1, 70)] + [(2**40 + 3, 4096), (2**31, 128)]
    assert [cdiv(a, b) for a, b in pairs] == [triton.cdiv(a, b) for a, b in pairs]


def test_next_power_of_2_is_tritons():
    ns = list(range(0, 4200)) + [2**31 - 1, 2**31, 2**31 + 1, 2**40 - 5]
    assert [next_power_of_2(n) for n in ns] == [triton.next_power_of_2(n) for n in ns]


def test_dot_precision_follows_the_flag_of_its_kind(monkeypatch):
    """One rule for every kernel module: full precision for float64 and for float32
    unless torch lets that kind of op (matmul, conv) use TF32; 16-bit dots are tensor-core
    dots either way."""
    import torch
    from tritonlab.kernels import _host
    allowed = {"matmul": True, "conv": False}
    monkeypatch.setattr(_host, "tf32_enabled", lambda kind="matmul": allowed[kind])
    assert _host.dot_precision(torch.float32) == "tf32" and _host.dot_precision(torch.float32, "conv") == "ieee"
    assert _host.dot_precision(torch.float64) == _host.dot_precision(torch.float64, "conv") == "ieee"
    assert _host.dot_precision(torch.float16) == _host.dot_precision(torch.bfloat16, "conv") == "tf32"
