"""The parity harness hands a layer its input as the test built it."""
import torch
from parity import _leaf


def test_a_leaf_keeps_a_sliced_views_strides_and_values():
    view = torch.randn(4, 6, 10)[:, 1:, ::2]
    leaf = _leaf(view)
    assert leaf.stride() == view.stride() and torch.equal(leaf, view)
    assert leaf.is_leaf and leaf.requires_grad and leaf.data_ptr() != view.data_ptr()


def test_a_leaf_of_an_expanded_tensor_or_integers():
    expanded = torch.randn(3, 1).expand(3, 5)
    leaf = _leaf(expanded)
    assert torch.equal(leaf, expanded) and leaf.requires_grad
    ids = _leaf(torch.arange(6))
    assert torch.equal(ids, torch.arange(6)) and not ids.requires_grad
