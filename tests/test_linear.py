import inspect

import pytest
import torch
from torch import nn

import tritonlab
from tritonlab.scratch import linear as scratch_linear
from parity import assert_matches_torch

# (leading dims, in_features, out_features)
CASES = [((1,), 1, 1), ((5,), 7, 3), ((2, 3), 13, 17), ((2, 1, 4), 33, 67), ((), 11, 2)]


@pytest.mark.parametrize("tier", ["naive", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead,fin,fout", CASES, ids=str)
def test_matches_torch(lead, fin, fout, bias, dtype, tier):
    lab = tritonlab.Linear(fin, fout, bias=bias, dtype=dtype)
    x = torch.randn(*lead, fin, dtype=dtype)
    assert_matches_torch(lab, nn.Linear(fin, fout, bias=bias, dtype=dtype), x, tier=tier)


@pytest.mark.parametrize("tier", ["naive", "reference"])
def test_gradcheck(tier):
    lab = tritonlab.Linear(4, 3, dtype=torch.float64, backend=tier)
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    fn = getattr(scratch_linear, f"linear_{tier}")
    assert torch.autograd.gradcheck(fn, (x, lab.weight, lab.bias))


@pytest.mark.parametrize("tier", ["naive", "reference"])
def test_empty_batch(tier):
    """No rows: shape (0, 4) and zero gradients, as torch gives (the naive tier's loop
    runs no iteration, yet its output must still reach x, W and b)."""
    assert_matches_torch(tritonlab.Linear(3, 4), nn.Linear(3, 4), torch.empty(0, 3), tier=tier)


def test_state_dict_round_trip_both_ways():
    ref = nn.Linear(6, 5)
    lab = tritonlab.Linear(6, 5)
    lab.load_state_dict(ref.state_dict())
    assert lab.state_dict().keys() == ref.state_dict().keys()
    back = nn.Linear(6, 5)
    back.load_state_dict(lab.state_dict())
    torch.testing.assert_close(back.weight, ref.weight, rtol=0, atol=0)


def test_signature_and_init_match_torch():
    sig = inspect.signature(tritonlab.Linear.__init__).parameters
    ref = inspect.signature(nn.Linear.__init__).parameters
    assert [p for p in sig if p != "backend"] == list(ref)
    torch.manual_seed(3)
    a = nn.Linear(9, 4)
    torch.manual_seed(3)
    b = tritonlab.Linear(9, 4)
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)
    torch.testing.assert_close(a.bias, b.bias, rtol=0, atol=0)


def test_wrong_feature_size():
    with pytest.raises(ValueError, match="expected 6 input features.*got 5"):
        tritonlab.Linear(6, 2)(torch.randn(3, 5))


def test_integer_input():
    with pytest.raises(TypeError, match="floating-point"):
        tritonlab.Linear(3, 2)(torch.ones(2, 3, dtype=torch.int32))


def test_scalar_input():
    with pytest.raises(ValueError, match="0-D"):
        tritonlab.Linear(1, 2)(torch.tensor(1.0))


def test_dtype_mismatch_names_both():
    with pytest.raises(TypeError, match="torch.float32 weights.*torch.float64 input"):
        tritonlab.Linear(3, 2)(torch.randn(2, 3, dtype=torch.float64))


def test_not_a_tensor():
    with pytest.raises(TypeError, match="torch.Tensor, got list"):
        tritonlab.Linear(3, 2)([1.0, 2.0, 3.0])


@pytest.mark.parametrize("tier", ["naive", "reference"])
def test_zero_in_features_gives_the_bias(tier):
    lab = tritonlab.Linear(0, 2)
    assert_matches_torch(lab, nn.Linear(0, 2), torch.randn(3, 0), tier=tier)
