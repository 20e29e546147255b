import pytest
import torch
from torch import nn

import tritonlab
from parity import assert_matches_torch

# (shape, dim): rows of 1, odd lengths, every dim position, negative dims
CASES = [((1, 1), -1), ((3, 17), 1), ((4, 1000), -1), ((2, 5000), 1), ((5,), 0), ((2, 3, 7), 0),
         ((2, 3, 7), 1), ((2, 3, 7), -1), ((2, 1, 3, 5), 2), ((), 0), ((2, 0), 1), ((0, 3), 1), ((2, 0), 0)]


@pytest.mark.parametrize("tier", ["naive", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,dim", CASES, ids=str)
def test_matches_torch(shape, dim, dtype, tier):
    x = torch.randn(shape, dtype=dtype) * 3
    assert_matches_torch(tritonlab.Softmax(dim), nn.Softmax(dim), x, tier=tier)


@pytest.mark.parametrize("tier", ["naive", "reference"])
def test_large_logits_do_not_overflow(tier):
    x = torch.tensor([[1000.0, 999.0, -1000.0], [-1e4, -1e4, -1e4]])
    assert_matches_torch(tritonlab.Softmax(1), nn.Softmax(1), x, tier=tier)


@pytest.mark.parametrize("tier", ["naive", "reference"])
def test_gradcheck(tier):
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(tritonlab.Softmax(dim=0, backend=tier), (x,))


def test_implicit_dim_like_torch():
    x = torch.randn(2, 3, 4)
    with pytest.warns(UserWarning):
        expected = nn.Softmax()(x)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        torch.testing.assert_close(tritonlab.Softmax()(x), expected)


@pytest.mark.parametrize("dim", [2, -3])
def test_dim_out_of_range(dim):
    with pytest.raises(ValueError, match=rf"dim={dim} is out of range for a 2-D input.*\[-2, 1\]"):
        tritonlab.Softmax(dim)(torch.randn(2, 3))


def test_integer_input():
    with pytest.raises(TypeError, match="floating-point.*torch.int64"):
        tritonlab.Softmax(-1)(torch.arange(6).reshape(2, 3))
