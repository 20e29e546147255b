"""tritonlab.viz and `tritonlab viz`: PNGs from tiny trained checkpoints, the gates rebuilt
step by step give the LSTM/GRU's own hidden states, hooks for the CNN and the transformer's
attention, bad input."""
import matplotlib.image
import pytest
import torch
from torch import nn

from tritonlab.cli import main
from tritonlab.train import TrainConfig, load_checkpoint, load_model, train
from tritonlab.viz import _conv_outputs, _loss_figure, attention_maps, rnn_gates, visualize

PICTURES = {"lstm": ["losses.png", "hidden.png", "gates_l1.png", "gates_l2.png"],
            "gru": ["losses.png", "hidden.png", "gates_l1.png", "gates_l2.png"],
            "cnn": ["losses.png", "features.png"], "transformer": ["losses.png", "attention.png"]}


@pytest.fixture(scope="module")
def checkpoints(dna, tmp_path_factory):
    """A checkpoint per model kind after 5 steps; two layers, so every layer gets its gates."""
    paths = {}
    for kind in PICTURES:
        sizes = {"embed": 4, "layers": 2, "channels" if kind == "cnn" else "hidden": 12}
        if kind == "transformer":
            sizes["context"] = 48  # the pictures' 40 bases in one window
        out = tmp_path_factory.mktemp(kind)
        train(TrainConfig(model=kind, data=str(dna), steps=5, eval_every=2, batch=4, seq=24, out=str(out),
                          progress=False, backend="reference", model_config=sizes))
        paths[kind] = out / "checkpoint.pt"
    return paths


def assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600, image.shape
    assert image[..., :3].std() > 0.05  # drawn on, not a blank canvas


@pytest.mark.parametrize("kind", PICTURES)
def test_visualize_writes_the_pictures(checkpoints, tmp_path, kind):
    paths = visualize(checkpoints[kind], tmp_path / "viz", length=40)
    assert [p.name for p in paths] == PICTURES[kind]
    assert all(p.parent == tmp_path / "viz" for p in paths)
    for path in paths:
        assert_png(path)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gates_rebuild_the_models_hidden_states(checkpoints, kind):
    model, _, _ = load_model(checkpoints[kind])
    x = model.embed(torch.randint(4, (3, 25)))
    layers = rnn_gates(model.rnn, x)
    out, state = model.rnn(x)
    assert len(layers) == 2 and set(layers[0]) == set("ifgoch" if kind == "lstm" else "rznh")
    torch.testing.assert_close(layers[-1]["h"], out, atol=1e-5, rtol=0)
    h_n = state[0] if kind == "lstm" else state
    for k, layer in enumerate(layers):
        torch.testing.assert_close(layer["h"][:, -1], h_n[k], atol=1e-5, rtol=0)
        if kind == "lstm":
            torch.testing.assert_close(layer["c"][:, -1], state[1][k], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("bias", [True, False])
def test_gates_match_torch_nn_seq_first(cls, bias):
    rnn = cls(5, 7, num_layers=2, bias=bias).double()
    x = torch.randn(9, 3, 5, dtype=torch.float64)  # (T, N, I): batch_first=False
    layers = rnn_gates(rnn, x)
    assert layers[0]["h"].shape == (9, 3, 7)
    torch.testing.assert_close(layers[-1]["h"], rnn(x)[0])


def test_conv_feature_maps_by_hooks(checkpoints):
    model, _, _ = load_model(checkpoints["cnn"])
    x = torch.randint(4, (1, 30))
    maps = _conv_outputs(model, x)
    assert [m.shape for m in maps] == [(12, 30), (12, 30)]
    assert all(not conv._forward_hooks for conv in model.convs)  # hooks removed again
    # each map is its convolution's output, rebuilt layer by layer (eval: no dropout; the
    # causal left padding as the model pads)
    h = model.embed(x).transpose(1, 2).unsqueeze(2)
    with torch.no_grad():
        for conv, m in zip(model.convs, maps, strict=True):
            out = conv(torch.nn.functional.pad(h, ((conv.kernel_size[1] - 1) * conv.dilation[1], 0)))
            torch.testing.assert_close(torch.from_numpy(m), out[0, :, 0])
            h = torch.relu(out)


def test_attention_maps_are_the_causal_weights_torch_computes(checkpoints):
    import copy

    import tritonlab
    model, _, _ = load_model(checkpoints["transformer"])
    x = torch.randint(4, (2, 30))
    maps = attention_maps(model, x)
    twin = copy.deepcopy(model)
    tritonlab.unswap(twin)  # torch.nn.MultiheadAttention computes the weights its own way
    assert len(maps) == 2 and maps[0].shape == (2, 30, 30)
    for m, expected in zip(maps, attention_maps(twin, x)):
        torch.testing.assert_close(m, expected, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(m.sum(-1), torch.ones(2, 30))
        assert (m.triu(1) == 0).all()  # no base reads a later one
    assert not any(block.attn._forward_hooks for block in model.blocks)  # hooks removed again


def test_loss_figure_shows_validation_and_baseline(checkpoints):
    ckpt = load_checkpoint(checkpoints["lstm"])
    lines = {line.get_label(): line for line in _loss_figure(ckpt, 1.95).axes[0].get_lines()}
    assert list(lines["validation (held-out tail)"].get_xdata()) == [2, 4, 5]
    assert list(lines["order-0 baseline: 1.950 (base frequencies alone)"].get_ydata()) == [1.95, 1.95]
    assert len(lines["training batch (raw)"].get_ydata()) == 5
    assert _loss_figure(ckpt, 4.5, "character").axes[0].get_ylabel() == "bits per character (lower is better)"


def test_cli_prints_the_paths(checkpoints, tmp_path, capsys):
    assert main(["viz", str(checkpoints["gru"]), "--out", str(tmp_path), "--length", "30", "--start", "7"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / name) for name in PICTURES["gru"]]
    assert main(["viz", str(checkpoints["cnn"]), "--length", "20"]) == 0  # default: viz/ beside the checkpoint
    assert capsys.readouterr().out.split() == [str(checkpoints["cnn"].parent / "viz" / name)
                                               for name in PICTURES["cnn"]]


def test_transformer_window_defaults_to_its_context_and_refuses_more(checkpoints, tmp_path):
    """The default 100 bases would exceed a context of 48: the default shrinks to it, and
    an explicit longer window is refused before any picture is written."""
    paths = visualize(checkpoints["transformer"], tmp_path / "viz")
    assert [p.name for p in paths] == PICTURES["transformer"]
    with pytest.raises(ValueError, match="length 60 exceeds the transformer's context of 48"):
        visualize(checkpoints["transformer"], tmp_path / "more", length=60)
    assert not (tmp_path / "more").exists()


def test_moved_training_data_needs_data_option(checkpoints, dna, tmp_path, capsys):
    ckpt = torch.load(checkpoints["cnn"], weights_only=True)
    ckpt["train_config"]["data"] = str(tmp_path / "moved.fasta")
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    assert main(["viz", str(tmp_path / "checkpoint.pt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "moved.fasta" in err and "pass --data FILE" in err
    assert main(["viz", str(tmp_path / "checkpoint.pt"), "--out", str(tmp_path), "--data", str(dna)]) == 0


def bad_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")


@pytest.mark.parametrize("args, message", [
    (["{tmp}/absent.pt"], "no checkpoint at"),
    (["{tmp}/junk.pt"], "is not a readable tritonlab checkpoint"),
    (["{tmp}/foreign.pt"], "is not a tritonlab char-model checkpoint"),
    (["{ckpt}", "--length", "0"], "length must be an integer >= 1, got 0"),
    (["{ckpt}", "--length", "401"], "length must be at most 400 bases"),
    (["{ckpt}", "--start", "-1"], "start must be an integer >= 0, got -1"),
    (["{ckpt}", "--start", "590"], "exceeds the 600 bases of slice.fasta's validation part"),
    (["{ckpt}", "--data", "{tmp}/none.fasta"], "none.fasta"),
])
def test_cli_bad_input(checkpoints, tmp_path, capsys, args, message):
    bad_files(tmp_path)
    argv = ["viz", *(a.format(tmp=tmp_path, ckpt=checkpoints["lstm"]) for a in args), "--out", str(tmp_path / "v")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "v").exists()  # nothing written before the input was checked


def test_rnn_gates_bad_input():
    with pytest.raises(TypeError, match="expects an nn.LSTM or nn.GRU, got Linear"):
        rnn_gates(nn.Linear(3, 3), torch.randn(2, 3, 3))
    with pytest.raises(ValueError, match="bidirectional=True"):
        rnn_gates(nn.GRU(3, 4, bidirectional=True), torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match=r"3 features in the last dimension, got \(5, 2, 4\)"):
        rnn_gates(nn.LSTM(3, 4), torch.randn(5, 2, 4))


@pytest.mark.gpu
@pytest.mark.parametrize("kind", PICTURES)
def test_visualize_on_gpu_with_the_triton_tier(checkpoints, tmp_path, kind):
    paths = visualize(checkpoints[kind], tmp_path, length=50, device="cuda", backend="triton")
    assert [p.name for p in paths] == PICTURES[kind]
    for path in paths:
        assert_png(path)
    if kind in ("lstm", "gru"):  # the gates shown still rebuild the triton tier's hidden states (TF32 allowed)
        model, _, _ = load_model(checkpoints[kind], device="cuda", backend="triton")
        x = model.embed(torch.randint(4, (3, 25), device="cuda"))
        torch.testing.assert_close(rnn_gates(model.rnn, x)[-1]["h"], model.rnn(x)[0], atol=2e-3, rtol=0)
