"""The benchmark's cases and providers under pytest-benchmark, one test per
(op, case, provider, mode), through the same runner functions as `tritonlab bench`:
same modules, same forward check before timing, same cost model in extra_info.

    pytest benchmarks/ --benchmark-only --benchmark-json out/bench.json
    tritonlab bench --from-pytest-json out/bench.json --out out/from-pytest

pytest-benchmark times wall clock; on a GPU every call ends with a synchronize, so
small kernels include their launch latency (the runner's CUDA-event medians do not).
Skipped tests leave no entry in the JSON, so a report made from it lists only what ran.
"""
import pytest
import torch

from tritonlab.bench import providers as prov
from tritonlab.bench import runner
from tritonlab.bench.ops import OPS


def pytest_generate_tests(metafunc):
    if "item" not in metafunc.fixturenames:
        return
    opt = metafunc.config.getoption
    device = torch.device(opt("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    providers = dict.fromkeys(opt("--bench-providers") or prov.DEFAULT[device.type])  # a repeat would run twice
    items, ids = [], []
    for op in OPS.values():
        for case in op.cases:
            wanted = case.quick if opt("--bench-quick") else opt("--bench-full") or not case.full
            if case.device != device.type or not wanted:
                continue
            for provider in prov.for_op(op, providers):
                for mode in runner.MODES:
                    items.append((op, case, provider, mode, device, getattr(torch, opt("--bench-dtype"))))
                    ids.append(f"{op.name}-{case.label.replace(' ', '_')}-{provider}-{mode}")
    metafunc.parametrize("item", items, ids=ids)


def test_op(benchmark, item):
    op, case, provider, mode, device, dtype = item
    reason = runner.skip_reason(op, case.params, provider, mode, device)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)
    ref = op.torch(case.params).to(device=device, dtype=dtype)
    inputs = [t.to(device=device, dtype=dtype) for t in op.inputs(case.params)]
    mod = prov.build(op, case.params, provider, ref, device, dtype)
    checked = runner.check(op, mod, ref, inputs, dtype, device)
    assert checked["status"] == "ok", f"{provider}: {checked['status']} (max abs err {checked['max_abs_err']:.3g})"
    fn = runner.make_callable(mod, inputs, mode)
    cost = runner.cost_of(op, case.params, mode, inputs[0].element_size())
    benchmark.extra_info.update(
        op=op.name, case=case.label, provider=provider, mode=mode, size=case.size, size_unit=op.size_unit,
        bytes=cost.bytes, flops=cost.flops, dtype=str(dtype).removeprefix("torch."),
        device=runner.device_name(device), max_abs_err=checked["max_abs_err"],
        first_call_ms=checked["first_call_ms"],
        scratch_bytes=op.scratch_bytes(case.params, provider, inputs[0].element_size()) if mode != "bwd" else 0.0)

    def timed():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    timed()  # the first backward (and any compile) outside the samples
    benchmark(timed)  # pytest-benchmark's own calibration: at least 5 rounds, about a second
