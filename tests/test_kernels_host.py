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
