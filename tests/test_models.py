"""tritonlab.models: shapes per kind, causality, lab layers inside, config round trip, bad input."""
import pytest
import torch

import tritonlab as tl
from tritonlab.models import MODEL_KINDS, CharCNN, build_model


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_logits_shape_per_kind(kind):
    torch.manual_seed(0)
    model = build_model(kind, vocab_size=5, embed=4, layers=2, backend="reference")
    x = torch.randint(5, (3, 7))
    assert model(x).shape == (3, 7, 5)
    assert model.kind == kind
    assert model.config["vocab_size"] == 5


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_rebuild_from_config_loads_weights(kind):
    model = build_model(kind, vocab_size=4, embed=4, layers=1).eval()  # dropout off
    again = build_model(model.kind, **model.config).eval()
    again.load_state_dict(model.state_dict())
    x = torch.randint(4, (2, 9))
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_made_of_lab_layers_with_the_backend(kind):
    model = build_model(kind, vocab_size=4, backend="naive")
    lab = [m for m in model.modules() if isinstance(m, (tl.LSTM, tl.GRU, tl.Conv2d, tl.Linear, tl.MultiheadAttention))]
    assert lab and all(m.backend == "naive" for m in lab)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_causal_later_ids_do_not_change_earlier_logits(kind):
    torch.manual_seed(0)
    model = build_model(kind, vocab_size=4, embed=4, layers=2).eval()
    x = torch.randint(4, (2, 12))
    y = x.clone()
    y[:, 8:] = (y[:, 8:] + 1) % 4
    torch.testing.assert_close(model(x)[:, :8], model(y)[:, :8], rtol=0, atol=1e-6)
    assert not torch.allclose(model(x)[:, 8:], model(y)[:, 8:])


def test_cnn_receptive_field_is_exact():
    torch.manual_seed(0)
    model = CharCNN(4, embed=3, channels=4, kernel=3, layers=2).eval()
    rf = model.receptive_field
    assert rf == 1 + 2 * 3
    x = torch.randint(4, (1, 20))
    y = x.clone()
    y[0, 19 - rf] = (y[0, 19 - rf] + 1) % 4  # just outside the last position's field
    torch.testing.assert_close(model(x)[0, -1], model(y)[0, -1], rtol=0, atol=0)
    y[0, 20 - rf] = (y[0, 20 - rf] + 1) % 4  # the oldest id inside it
    assert not torch.allclose(model(x)[0, -1], model(y)[0, -1])


def test_rnn_state_carries_over_chunks():
    torch.manual_seed(0)
    model = build_model("gru", vocab_size=4, embed=3, hidden=8).eval()
    x = torch.randint(4, (2, 10))
    first, state = model(x[:, :6], return_state=True)
    rest = model(x[:, 6:], state)
    torch.testing.assert_close(torch.cat([first, rest], 1), model(x), rtol=0, atol=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="model kind must be one of"):
        build_model("mamba", vocab_size=4)
    model = build_model("lstm", vocab_size=4)
    with pytest.raises(ValueError, match=r"\(batch, seq\) int64 .* got torch.float32"):
        model(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"got torch.int64 tensor of shape \(5,\)"):
        model(torch.randint(4, (5,)))


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_triton_tier_matches_reference(kind, triton_device):
    torch.manual_seed(0)
    ref = build_model(kind, vocab_size=4, embed=4, layers=1, backend="reference", **(
        {"channels": 5} if kind == "cnn" else {"hidden": 6})).eval()  # dropout off
    tri = build_model(ref.kind, backend="triton", **ref.config).eval()
    tri.load_state_dict(ref.state_dict())
    x = torch.randint(4, (2, 5))
    torch.testing.assert_close(tri.to(triton_device)(x.to(triton_device)).cpu(), ref(x), rtol=1e-5, atol=1e-5)
