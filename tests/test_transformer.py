"""The DNA transformer (tritonlab.models.CharTransformer): shapes, positions, context,
its torch.nn twin, and training, resuming and sampling it through tritonlab.train / the CLI."""
import copy
import math

import pytest
import torch

import tritonlab
from tritonlab.cli import main
from tritonlab.models import CharTransformer, build_model
from tritonlab.train import TrainConfig, load_model, sample, train

SMALL = {"embed": 8, "heads": 2, "hidden": 16, "layers": 2}


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_logits_shape_and_positions(positions):
    torch.manual_seed(0)
    model = build_model("transformer", vocab_size=4, context=12, positions=positions, **SMALL)
    assert model(torch.randint(4, (3, 12))).shape == (3, 12, 4) and model(torch.randint(4, (1, 1))).shape == (1, 1, 4)
    keys = set(model.state_dict())
    assert ("pos.weight" in keys) == (positions == "learned") and not any("table" in k for k in keys)
    if positions == "sinusoidal":  # PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(...)
        t, i = 5, 1
        assert model.table[t, 2 * i].item() == pytest.approx(math.sin(t / 10000 ** (2 * i / 8)), abs=1e-6)
        assert model.table[t, 2 * i + 1].item() == pytest.approx(math.cos(t / 10000 ** (2 * i / 8)), abs=1e-6)


def test_context_and_config_are_checked():
    model = CharTransformer(4, context=6, **SMALL)
    assert model.receptive_field == 6
    with pytest.raises(ValueError, match=r"at most context=6 ids per row, got 7 \(input shape \(2, 7\)\)"):
        model(torch.randint(4, (2, 7)))
    with pytest.raises(ValueError, match="heads, a positive divisor of embed=8, got 3"):
        CharTransformer(4, embed=8, heads=3)
    with pytest.raises(ValueError, match="positions must be 'learned' or 'sinusoidal', got 'rotary'"):
        CharTransformer(4, positions="rotary")


def test_blocks_use_causal_attention_without_weights(monkeypatch):
    """Each block's attention takes the causal hint with need_weights=False: the path that
    reaches the attention tier (the flash kernel on triton), not the materialised weights."""
    from tritonlab.layers import attention
    seen = []
    real = attention._ATTENTION["reference"]
    monkeypatch.setitem(attention._ATTENTION, "reference",
                        lambda q, k, v, mask, p, causal, scale: seen.append((mask, causal)) or
                        real(q, k, v, mask, p, causal, scale))
    build_model("transformer", vocab_size=4, backend="reference", **SMALL)(torch.randint(4, (2, 5)))
    assert seen == [(None, True)] * 2


def test_torch_twin_and_swap_give_the_same_outputs_and_gradients():
    """unswap makes the torch.nn twin (nn.MultiheadAttention, nn.Linear, ...); swapping it
    back gives the lab model's outputs and gradients again."""
    torch.manual_seed(0)
    lab = build_model("transformer", vocab_size=4, context=16, backend="reference", **SMALL).eval()
    twin = copy.deepcopy(lab)
    assert "blocks.0.attn" in tritonlab.unswap(twin).changed
    assert type(twin.blocks[1].attn) is torch.nn.MultiheadAttention
    x = torch.randint(4, (3, 16))

    def run(model):
        model.zero_grad()
        out = model(x)
        out.square().mean().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    expected = run(lab)
    for step in ("torch twin", "swapped back"):
        if step == "swapped back":
            assert "blocks.1.attn" in tritonlab.swap(twin, backend="reference").changed
        out, grads = run(twin)
        torch.testing.assert_close(out, expected[0], atol=1e-5, rtol=1e-5, msg=step)
        for n, g in expected[1].items():
            torch.testing.assert_close(grads[n], g, atol=1e-5, rtol=1e-5, msg=f"{step}: {n}")
    with torch.no_grad():  # torch's own MultiheadAttention fast path in eval, unswapped
        tritonlab.unswap(twin)
        torch.testing.assert_close(twin(x), expected[0], atol=1e-5, rtol=1e-5)


def _cfg(dna, out, **kw):
    base = dict(model="transformer", data=str(dna), steps=6, batch=8, seq=32, out=str(out), progress=False,
                backend="reference", model_config={**SMALL, "dropout": 0.1})
    return TrainConfig(**{**base, **kw})


def test_training_lowers_the_loss_and_the_context_is_the_sequence_length(dna, tmp_path):
    result = train(_cfg(dna, tmp_path, steps=40, lr=1e-2))
    first, last = sum(result["losses"][:5]) / 5, sum(result["losses"][-5:]) / 5
    assert last < first - 0.02
    step, bpb = result["val"][-1]
    assert step == 40 and 1.0 < bpb < 2.5
    net, vocab, ckpt = load_model(result["checkpoint"])
    assert ckpt["kind"] == "transformer" and ckpt["config"]["context"] == 32 == net.receptive_field
    text = sample(net, vocab, "ACGT" * 10, 50, seed=1)  # a prime longer than the context: its last 32 ids
    assert len(text) == 50 and set(text) <= set("ACGT") and sample(net, vocab, "ACGT" * 10, 50, seed=1) == text


def test_resume_continues_exactly_and_refuses_a_longer_sequence(dna, tmp_path):
    straight = train(_cfg(dna, tmp_path / "a"))
    train(_cfg(dna, tmp_path / "b", steps=3))
    resumed = train(_cfg(dna, tmp_path / "b", resume=True))  # dropout's random state carried over too
    assert resumed["losses"] == straight["losses"] and resumed["val"][-1] == straight["val"][-1]
    with pytest.raises(ValueError, match="seq 64 exceeds the transformer's context of 32 positions"):
        train(_cfg(dna, tmp_path / "b", steps=8, seq=64, resume=True))


def test_cli_trains_and_samples_the_transformer(dna, tmp_path, capsys):
    args = ["train", "--model", "transformer", "--data", str(dna), "--steps", "2", "--batch", "4", "--seq", "16",
            "--embed", "8", "--heads", "2", "--hidden", "16", "--layers", "1", "--positions", "sinusoidal",
            "--out", str(tmp_path), "--backend", "reference"]
    assert main(args) == 0
    assert "step 2: validation" in capsys.readouterr().out
    _, _, ckpt = load_model(tmp_path / "checkpoint.pt")
    assert ckpt["config"] == {"vocab_size": 4, "embed": 8, "heads": 2, "hidden": 16, "layers": 1, "context": 16,
                              "positions": "sinusoidal", "dropout": 0.1}
    assert main(["sample", str(tmp_path / "checkpoint.pt"), "--prime", "GATTACA", "--length", "30"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("GATTACA") and len(line) == 37
    assert main(["train", "--model", "lstm", "--heads", "2", "--out", str(tmp_path)]) == 2
    assert "--heads does not apply to --model lstm" in capsys.readouterr().err
    assert main(["train", "--model", "transformer", "--embed", "8", "--heads", "3", "--out", str(tmp_path / "x")]) == 2
    assert "positive divisor of embed=8" in capsys.readouterr().err
