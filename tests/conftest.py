import os

import pytest
import torch

# Without a GPU the triton tier runs on CPU tensors through Triton's interpreter. The
# flag is read when a kernel is decorated, so it is set before any kernel module loads.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import tritonlab  # noqa: E402
from tritonlab.backend import same_tf32, triton_available  # noqa: E402
from tritonlab.data import default_genome_path, load_sequence  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_state():
    """Every test starts from seed 0 and the global backend `auto`."""
    torch.manual_seed(0)
    with tritonlab.use_backend("auto"):
        yield


@pytest.fixture(scope="module")
def dna(tmp_path_factory):
    """A 6,000-base FASTA cut from the chloroplast genome (real structure, fast to train on)."""
    path = tmp_path_factory.mktemp("data") / "slice.fasta"
    seq = load_sequence(default_genome_path())[:6000]
    path.write_text(">slice\n" + "\n".join(seq[i:i + 70] for i in range(0, len(seq), 70)) + "\n")
    return path


@pytest.fixture
def triton_device() -> str:
    """Where the triton tier runs in this session: CUDA, or CPU under the interpreter."""
    if not triton_available():
        pytest.skip("needs the triton package")
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def on_triton_device(triton_device):
    """triton_device, also torch's default device for the test: tensors and modules built
    without a device land there. On CUDA, TF32 is off meanwhile (torch's convolutions and
    cuDNN's RNNs use it by default), so float32 still matches torch.nn at the tolerances
    written for the interpreter. On the CPU nothing changes. (The CUDA branch has not yet
    run on a GPU.)"""
    if triton_device == "cpu":
        yield triton_device
        return
    with torch.device(triton_device), same_tf32(False):
        yield triton_device


def pytest_collection_modifyitems(config, items):
    # TRITONLAB_TESTS_FIRST="test_a.py test_b.py": those files' tests run first, in that
    # order (scripts/gpu_check.sh: what changed since the last GPU run, before a time
    # limit cuts the rest); pytest itself collects in directory order
    first = os.environ.get("TRITONLAB_TESTS_FIRST", "").split()
    if first:
        rank = {name: i for i, name in enumerate(first)}
        items.sort(key=lambda item: rank.get(item.path.name, len(first)))  # stable: the rest keep their order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
