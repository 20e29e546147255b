"""Options of the pytest-benchmark suite (`pytest benchmarks/ --benchmark-only`)."""
import pytest

from tritonlab.backend import interpreter_enabled, same_tf32, tf32_enabled


def pytest_addoption(parser):
    group = parser.getgroup("tritonlab")
    group.addoption("--bench-dtype", default="float32", choices=("float32", "float64", "float16", "bfloat16"))
    group.addoption("--bench-device", choices=("cuda", "cpu"), help="default: cuda when there is one")
    group.addoption("--bench-quick", action="store_true", help="only each op's quick case")
    group.addoption("--bench-full", action="store_true", help="every case, also those only `--full` runs")
    group.addoption("--bench-providers", nargs="+", help="default: what `tritonlab bench` runs on the device")


def pytest_configure(config):
    if interpreter_enabled():
        raise RuntimeError("the benchmark suite refuses to run under TRITON_INTERPRET=1; unset it")


@pytest.fixture(autouse=True)
def _same_tf32():
    """Convolutions and cuDNN's RNNs under the matmul's TF32 setting, as in `tritonlab bench`."""
    with same_tf32(tf32_enabled()):
        yield


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """The device's ceilings and the run's versions go into the JSON, so that
    `tritonlab bench --from-pytest-json` derives the same roofline columns."""
    import dataclasses

    import torch

    from tritonlab.bench import ceilings, runner

    device = torch.device(config.getoption("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, config.getoption("--bench-dtype"))
    output_json["tritonlab"] = {
        "ceilings": dataclasses.asdict(ceilings.measure(device, dtype, quick=True)),
        "common": runner.common_columns(device, dtype),
    }
