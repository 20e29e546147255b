import pytest
import torch
from torch import nn

import tritonlab
from parity import assert_matches_torch

CASES = [((2, 3, 4, 5), 1, -1), ((2, 3, 4, 5), 0, 2), ((2, 3, 4, 5), -2, -1), ((7,), 0, -1),
         ((1, 1, 1), 1, 1), ((3, 0, 2), 1, -1)]


@pytest.mark.parametrize("tier", ["naive", "reference"])
@pytest.mark.parametrize("shape,start,end", CASES, ids=str)
def test_matches_torch(shape, start, end, tier):
    x = torch.randn(shape, dtype=torch.float64)
    assert_matches_torch(tritonlab.Flatten(start, end), nn.Flatten(start, end), x, tier=tier)


@pytest.mark.parametrize("tier", ["naive", "reference"])
def test_contiguous_input_gives_a_view(tier):
    x = torch.randn(2, 3, 4)
    assert tritonlab.Flatten(backend=tier)(x).data_ptr() == x.data_ptr()
    # a non-contiguous input still flattens correctly (as a copy)
    xt = x.transpose(1, 2)
    torch.testing.assert_close(tritonlab.Flatten(backend=tier)(xt), nn.Flatten()(xt))


def test_scalar_input_like_torch():
    torch.testing.assert_close(tritonlab.Flatten(0, -1)(torch.tensor(2.0)), torch.tensor([2.0]))


@pytest.mark.parametrize("start,end", [(1, -1), (0, 5), (1, 0)])
def test_dims_out_of_range(start, end):
    with pytest.raises(ValueError, match="does not fit a .*-D input"):
        tritonlab.Flatten(start, end)(torch.randn(3) if (start, end) == (1, -1) else torch.randn(2, 3))


def test_integer_and_bool_tensors_flatten_like_torch():
    for x in (torch.arange(24).reshape(2, 3, 4), torch.ones(2, 3, 4, dtype=torch.bool)):
        assert torch.equal(tritonlab.Flatten()(x), nn.Flatten()(x))
