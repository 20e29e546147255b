"""The benchmark's attention op: its cost model against torch's FLOP counter, its torch
baseline, and the runner end to end on the quick CPU case (never a timing assertion)."""
import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tritonlab.bench import runner
from tritonlab.bench import providers as prov
from tritonlab.bench.ops import OPS

OP = OPS["attention"]


def _counted(params, backward: bool) -> int:
    """torch.utils.flop_counter's count for torch's SDPA on `params` (meta tensors: shapes only)."""
    with torch.device("meta"):
        mod = OP.torch(params)
        inputs = [t.requires_grad_() for t in OP.inputs(params)]
    with FlopCounterMode(display=False) as counter:
        out = mod(*inputs)
        if backward:
            out.backward(torch.ones_like(out))
    return counter.get_total_flops()


@pytest.mark.parametrize("case", OP.cases, ids=lambda c: f"{c.device} {c.label}")
def test_cost_model_flops_match_torch_flop_counter(case):
    """The counter counts every score, causal or not, and no recomputation: our causal
    forward is half its count, and our fwd+bwd is its count plus the backward's
    recomputed QK^T (FlashAttention-2's five backward matmuls against its four)."""
    p = case.params
    fwd = _counted(p, backward=False)
    causal = 2 if p["causal"] else 1
    assert OP.cost(p, "fwd", 2).flops * causal == fwd == 4 * p["b"] * p["h"] * p["l"] ** 2 * p["e"]
    assert OP.cost(p, "fwd+bwd", 2).flops * causal == _counted(p, backward=True) + fwd / 2
    assert case.size == OP.cost(p, "fwd", 2).flops


def test_cost_model_bytes():
    p = {"b": 2, "h": 8, "hkv": 2, "l": 16, "e": 4, "causal": True}
    q, kv = 2 * 8 * 16 * 4, 2 * 2 * 16 * 4
    assert OP.cost(p, "fwd", 2).bytes == 2 * (2 * q + 2 * kv)                 # q, k, v read; o written
    assert OP.cost(p, "fwd+bwd", 2).bytes == 2 * (2 * q + 2 * kv + 4 * q + 4 * kv)  # + q, k, v, o, dO; dq, dk, dv


def test_cases_cover_the_issue_and_stay_small_on_cpu():
    cuda = [c.params for c in OP.cases if c.device == "cuda"]
    assert {p["e"] for p in cuda} == {64, 128} and {p["causal"] for p in cuda} == {True, False}
    assert min(p["l"] for p in cuda) == 512 and max(p["l"] for p in cuda) == 16384
    assert all(4 <= p["b"] <= 16 and 8 <= p["h"] <= 32 for p in cuda)
    default = [c.params for c in OP.cases if c.device == "cuda" and not c.full]
    assert any(p["l"] == 4096 and p["e"] == 128 and p["causal"] == causal for p in default for causal in (0, 1))
    steps = {c.quick: OP.naive_steps(c.params) for c in OP.cases if c.device == "cpu"}
    assert steps[True] <= runner.NAIVE_MAX_STEPS  # the quick case runs every provider


@pytest.fixture
def _no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the runner refuses to time under it


def test_runner_end_to_end_on_the_quick_cpu_case(_no_interpreter):
    quick = dataclasses.replace(OP, cases=[c for c in OP.cases if c.quick and c.device == "cpu"])
    df, _ = runner.run([quick], quick=True, progress=False)
    assert len(df) == len(prov.for_op(OP, prov.DEFAULT["cpu"])) * len(runner.QUICK_MODES)
    ok = df[df["status"] == "ok"]
    assert set(ok["provider"]) == {"naive", "reference", "torch"} and len(ok) == 6
    assert (ok["max_abs_err"] < 1e-5).all() and (ok["ms_p50"] > 0).all()
    assert (ok["flops"] == ok["mode"].map({"fwd": 2 ** 19, "fwd+bwd": 3.5 * 2 ** 19})).all()
    assert df[df["provider"] == "triton"]["status"].str.contains("CUDA only").all()


def test_compile_provider_runs_the_reference_tier(_no_interpreter):
    quick = dataclasses.replace(OP, cases=[c for c in OP.cases if c.quick and c.device == "cpu"])
    df, _ = runner.run([quick], quick=True, providers=("compile",), modes=("fwd",), progress=False)
    assert df["status"].iloc[0] == "ok" and df["max_abs_err"].iloc[0] < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_torch_baseline_is_flash_or_says_why_not(dtype):
    p = {"b": 2, "h": 4, "hkv": 4, "l": 256, "e": 64, "causal": True}
    mod = OP.torch(p)
    q, k, v = (t.to("cuda", dtype) for t in OP.inputs(p))
    if dtype == torch.float32:
        with pytest.warns(UserWarning, match="flash backend refused torch.float32"):
            out = mod(q, k, v)
        assert "torch.float32" in mod.fallback
    else:
        out = mod(q, k, v)
        assert mod.fallback is None and mod._flash
    expected = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    torch.testing.assert_close(out.double(), expected, atol=2e-2, rtol=2e-2)
