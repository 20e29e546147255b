import pytest
import torch

import tritonlab


@pytest.fixture(autouse=True)
def _fresh_state():
    """Every test starts from seed 0 and the global backend `auto`."""
    torch.manual_seed(0)
    with tritonlab.use_backend("auto"):
        yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
