"""GPU tier (`pytest -m gpu`, skipped without CUDA): the scratch tiers on CUDA tensors
at real sizes and in half precision, against torch.nn on the same device.

Tolerances: fp16/bf16 round every stored value (bf16 keeps 8 bits of mantissa), and
float32 matmuls may run in TF32 when torch allows it, so float32 gets the TF32 bound
whenever either TF32 flag is on.
"""
import pytest
import torch
from torch import nn

import tritonlab
from parity import assert_matches_torch

pytestmark = pytest.mark.gpu

HALF = {torch.float16: 2e-2, torch.bfloat16: 1e-1}


def _tol(dtype):
    if dtype in HALF:
        return HALF[dtype]
    tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
    return 2e-2 if tf32 else 1e-4


CASES = [
    ("linear", lambda d: (tritonlab.Linear(1024, 512), nn.Linear(1024, 512)), (64, 1024)),
    ("conv", lambda d: (tritonlab.Conv2d(64, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1)), (8, 64, 28, 28)),
    ("softmax", lambda d: (tritonlab.Softmax(-1), nn.Softmax(-1)), (512, 4096)),
    ("tanh", lambda d: (tritonlab.Tanh(), nn.Tanh()), (512, 4096)),
    ("gru", lambda d: (tritonlab.GRU(256, 256), nn.GRU(256, 256)), (32, 8, 256)),
    ("lstm", lambda d: (tritonlab.LSTM(256, 256, num_layers=2), nn.LSTM(256, 256, num_layers=2)), (32, 8, 256)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name,build,shape", CASES, ids=[c[0] for c in CASES])
def test_reference_tier_on_cuda(name, build, shape, dtype):
    lab, ref = (m.to("cuda", dtype) for m in build(dtype))
    x = torch.randn(shape, device="cuda", dtype=dtype)
    tol = _tol(dtype)
    assert_matches_torch(lab, ref, x, tier="reference", atol=tol, rtol=tol, to_scale=True)


def test_auto_picks_a_working_tier_on_cuda():
    x = torch.randn(4, 8, device="cuda")
    assert tritonlab.backend.resolve(None, x) == "triton"  # auto on CUDA tensors
    torch.testing.assert_close(tritonlab.Softmax(-1)(x), torch.softmax(x, -1))


def test_dropout_mask_reproducible_on_cuda():
    """Same seed, same mask; another seed, another; the mask drops about p and scales the
    rest by 1 / (1 - p) (a dropout that dropped nothing would pass the first check alone)."""
    x = torch.randn(64, 256, device="cuda")

    def draw(seed):
        torch.manual_seed(seed)
        return tritonlab.Dropout(0.5, backend="reference")(x)
    a, b, c = draw(3), draw(3), draw(4)
    assert torch.equal(a, b) and not torch.equal(a, c) and a.device.type == "cuda"
    kept = a != 0
    assert abs(kept.float().mean().item() - 0.5) < 0.05  # 16384 draws: 0.05 is 12 standard deviations
    torch.testing.assert_close(a[kept], 2 * x[kept])
