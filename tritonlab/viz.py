"""Pictures of a trained char model: how it learned, and what it computes over real bases.

    paths = visualize("out/train-lstm/checkpoint.pt", "out/train-lstm/viz")   # `tritonlab viz`

Writes PNGs into the output folder and returns their paths:
- losses.png: training loss per step (raw and smoothed) and validation, in bits per
  base, against the order-0 baseline (what the base frequencies alone achieve);
- LSTM/GRU: hidden.png, the hidden state h_t (units x bases, a panel per layer), and
  gates_l<k>.png per layer, the gate activations (LSTM i f g o and the cell state c;
  GRU r z n);
- CNN: features.png, each convolution's output (channels x bases), taken by forward hooks;
- transformer: attention.png, each block's attention weights (averaged over heads; the
  bases read x the base reading them), asked of each attention module by a forward hook.
Each RNN/CNN/transformer picture starts with the model's surprisal, the bits it spends on each next
base, so a learner can see where activity lines up with easy or hard stretches.

torch's LSTM/GRU return h only, so `rnn_gates` recomputes every gate step by step from
the layer's weights; tests check that the h it rebuilds equals the layer's own output,
which is what makes the gates shown the real ones.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # Figure + savefig draw with Agg, without pyplot's global state
from torch import nn
from torch.nn import functional as F

from .data import default_genome_path, load_sequence, split
from .train import _order0_bits, load_model

__all__ = ["attention_maps", "rnn_gates", "visualize", "MAX_LENGTH"]

MAX_LENGTH = 400  # bases per picture: beyond this the base letters on the x axis cannot be read
_SHOWN = {" ": "␣", "\n": "\\n", "\t": "\\t"}  # invisible characters as tick labels
_GATES = {
    "lstm": [("i", "input gate i: share of the candidate g written into c", "sigmoid"),
             ("f", "forget gate f: share of c(t-1) kept", "sigmoid"),
             ("g", "candidate g = tanh(W x + U h(t-1) + b): what would be written", "tanh"),
             ("o", "output gate o: share of tanh(c) shown as h", "sigmoid"),
             ("c", "cell state c = f * c(t-1) + i * g", "free")],
    "gru": [("r", "reset gate r: share of h(t-1) used in the candidate n", "sigmoid"),
            ("z", "update gate z: share of h(t-1) kept (1 - z of n taken)", "sigmoid"),
            ("n", "candidate n = tanh(W x + b_in + r * (U h(t-1) + b_hn)): the proposed new state", "tanh")],
}


@torch.no_grad()
def rnn_gates(rnn: nn.Module, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Every gate and state of `rnn` (an nn.LSTM or nn.GRU, the lab's included) over `x`
    ((N, T, input) if rnn.batch_first, else (T, N, input)), from a zero initial state
    and without inter-layer dropout (eval mode). One dict per layer, each value (N, T, H):
    LSTM "i" "f" "g" "o" "c" "h", GRU "r" "z" "n" "h". PyTorch stacks the gates' weights
    in weight_ih_l<k> / weight_hh_l<k> in the order i, f, g, o (LSTM) and r, z, n (GRU)."""
    if not isinstance(rnn, (nn.LSTM, nn.GRU)):
        raise TypeError(f"rnn_gates expects an nn.LSTM or nn.GRU, got {type(rnn).__name__}")
    if rnn.bidirectional or getattr(rnn, "proj_size", 0):
        raise ValueError("rnn_gates handles one-directional RNNs without proj_size, "
                         f"got bidirectional={rnn.bidirectional}, proj_size={getattr(rnn, 'proj_size', 0)}")
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != rnn.input_size:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"rnn_gates expects a 3-D input with {rnn.input_size} features in the last "
                         f"dimension, got {got}")
    lstm = isinstance(rnn, nn.LSTM)
    inp = x if rnn.batch_first else x.transpose(0, 1)  # (N, T, I) from here on
    layers = []
    for k in range(rnn.num_layers):
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}")
        b_ih, b_hh = getattr(rnn, f"bias_ih_l{k}", None), getattr(rnn, f"bias_hh_l{k}", None)
        xs = F.linear(inp, w_ih, b_ih)  # the input's share of every gate, all steps at once
        h = inp.new_zeros(inp.shape[0], rnn.hidden_size)
        c = torch.zeros_like(h)
        steps = []
        for t in range(inp.shape[1]):
            hs = F.linear(h, w_hh, b_hh)
            if lstm:
                i, f, g, o = (xs[:, t] + hs).chunk(4, dim=-1)
                i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
                c = f * c + i * g
                h = o * c.tanh()
                steps.append((i, f, g, o, c, h))
            else:
                (xr, xz, xn), (hr, hz, hn) = xs[:, t].chunk(3, dim=-1), hs.chunk(3, dim=-1)
                r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
                n = (xn + r * hn).tanh()  # r scales U h + b_hn, as torch.nn.GRU does
                h = (1 - z) * n + z * h
                steps.append((r, z, n, h))
        names = "ifgoch" if lstm else "rznh"
        layer = {name: torch.stack(values, dim=1) for name, values in zip(names, zip(*steps))}
        layers.append(layer)
        inp = layer["h"]
    if not rnn.batch_first:
        layers = [{name: v.transpose(0, 1) for name, v in layer.items()} for layer in layers]
    return layers


def visualize(checkpoint, out, data=None, length: int | None = None, start: int = 0, device="cpu",
              backend: str | None = None) -> list[Path]:
    """Write the pictures of `checkpoint` into the folder `out`; return their paths.

    The sequence shown is `length` bases (default 100, or a transformer's context if
    that is shorter: it reads no more) of the validation part (the tail the model never
    trained on) from `start` on, cut as in training from `data`: by default the file the
    checkpoint was trained on, else the genome in data/. Raises FileNotFoundError /
    ValueError for a missing or foreign checkpoint, a missing data file, or a window that
    does not fit."""
    model, vocab, ckpt = load_model(checkpoint, device=device, backend=backend)
    context = ckpt["config"].get("context") if ckpt["kind"] == "transformer" else None
    if length is None:
        length = min(100, context or 100)
    for name, value, low in (("length", length, 1), ("start", start, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if length > MAX_LENGTH:
        raise ValueError(f"length must be at most {MAX_LENGTH} bases (so each base's letter stays "
                         f"readable), got {length}")
    if context is not None and length > context:
        raise ValueError(f"length {length} exceeds the transformer's context of {context} bases, the most "
                         f"it reads at once; pass a length of at most {context}")
    tc = ckpt.get("train_config") or {}
    path = Path(data or tc.get("data") or default_genome_path())
    if not path.is_file():
        hint = "" if data else " (the file the checkpoint was trained on); pass --data FILE"
        raise FileNotFoundError(f"data file {path} not found{hint}")
    seq = load_sequence(path, alphabet=tc.get("alphabet", "dna"), unknown=tc.get("unknown", "error"))
    train_ids, val_ids = split(vocab.encode(seq), tc.get("val_fraction", 0.1))
    if start + length + 1 > len(val_ids):  # +1: the last base's successor, for the surprisal
        raise ValueError(f"start {start} + length {length} + 1 next base exceeds the {len(val_ids)} "
                         f"bases of {path.name}'s validation part")
    window = val_ids[start:start + length + 1].to(device)
    x, y = window[None, :-1], window[None, 1:]
    unit = "base" if tc.get("alphabet", "dna") == "dna" else "character"  # what one id is, in words
    where = f"{path.name}, validation {unit}s {start}-{start + length - 1}"

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # the baseline of the data the curves were measured on (older checkpoints: this file's)
    order0 = ckpt.get("order0") or _order0_bits(train_ids, val_ids, len(vocab))
    paths = [_save(_loss_figure(ckpt, order0, unit), out / "losses.png")]
    with torch.no_grad():
        logits = model(x)
        surprisal = -F.log_softmax(logits.float(), -1).gather(-1, y[..., None])[0, :, 0] / math.log(2)
    labels = [_SHOWN.get(ch, ch) for ch in vocab.decode(x[0].cpu())]
    top = (surprisal.cpu().numpy(), labels, unit, len(vocab))
    kind = ckpt["kind"].upper()
    if ckpt["kind"] == "cnn":
        maps = _conv_outputs(model, x)
        seen = np.cumsum([1] + [(c.kernel_size[1] - 1) * c.dilation[1] for c in model.convs])[1:]
        panels = [(m, f"conv {k + 1} (kernel {c.kernel_size[1]}, dilation {c.dilation[1]}, sees the last {n} "
                      f"{unit}s): output before ReLU (ReLU zeroes the blue)", "channel", "free")
                  for k, (m, c, n) in enumerate(zip(maps, model.convs, seen))]
        fig = _panels_figure(f"{kind} feature maps over {where}", top, panels)
        paths.append(_save(fig, out / "features.png"))
        return paths
    if ckpt["kind"] == "transformer":
        panels = [(m[0].T.cpu().numpy(), f"block {k + 1}: attention weights, mean over heads (column t: how much "
                                         f"{unit} t reads each earlier {unit}; causal: 0 below the diagonal)",
                   f"{unit} read", "weights") for k, m in enumerate(attention_maps(model, x))]
        paths.append(_save(_panels_figure(f"{kind} attention over {where}", top, panels), out / "attention.png"))
        return paths
    with torch.no_grad():
        layers = rnn_gates(model.rnn, model.embed(x))
    panels = [(layer["h"][0].T.cpu().numpy(), f"layer {k + 1}: hidden state h(t) after reading each {unit}",
               "unit", "tanh") for k, layer in enumerate(layers)]
    paths.append(_save(_panels_figure(f"{kind} hidden state over {where}", top, panels), out / "hidden.png"))
    for k, layer in enumerate(layers):
        panels = [(layer[name][0].T.cpu().numpy(), title, "unit", scale)
                  for name, title, scale in _GATES[ckpt["kind"]]]
        fig = _panels_figure(f"{kind} layer {k + 1} gates over {where}", top, panels)
        paths.append(_save(fig, out / f"gates_l{k + 1}.png"))
    return paths


@torch.no_grad()
def attention_maps(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each block's attention weights (N, L, L), averaged over heads, for ids x. The model
    runs its own forward (need_weights=False); a forward hook on each attention module
    calls its forward again with the same inputs and need_weights=True (bypassing hooks)."""
    maps = []

    def ask(module, args, kwargs, out):
        maps.append(module.forward(*args, **{**kwargs, "need_weights": True})[1])

    hooks = [block.attn.register_forward_hook(ask, with_kwargs=True) for block in model.blocks]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return maps


def _conv_outputs(model, x) -> list[np.ndarray]:
    """Each convolution's output (channels, T) for the one sequence in x, via forward hooks."""
    maps = []
    hooks = [conv.register_forward_hook(lambda mod, args, output: maps.append(output[0, :, 0].cpu().numpy()))
             for conv in model.convs]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return maps


def _loss_figure(ckpt: dict, order0: float, unit: str = "base") -> Figure:
    bits = np.asarray(ckpt["losses"], dtype=float) / math.log(2)  # cross-entropy is in nats
    steps = np.arange(1, len(bits) + 1)
    fig = Figure(figsize=(9, 4.8), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(steps, bits, color="tab:blue", alpha=0.3, lw=0.8, label="training batch (raw)")
    w = max(1, len(bits) // 25)
    if w > 1:
        ax.plot(steps[w - 1:], np.convolve(bits, np.ones(w) / w, mode="valid"), color="tab:blue", lw=2,
                label=f"training, mean of the last {w} steps")
    if ckpt["val"]:
        vs, vb = zip(*ckpt["val"])
        ax.plot(vs, vb, "o-", color="tab:orange", lw=2, label="validation (held-out tail)")
    ax.axhline(order0, ls="--", color="gray", label=f"order-0 baseline: {order0:.3f} ({unit} frequencies alone)")
    final = f", final validation {ckpt['val'][-1][1]:.3f} bits/{unit}" if ckpt["val"] else ""
    ax.set_title(f"{ckpt['kind'].upper()} learning curve: {len(bits)} steps{final}")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"bits per {unit} (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


_SCALES = {"sigmoid": ("viridis", 0.0, 1.0), "tanh": ("RdBu_r", -1.0, 1.0)}


def _panels_figure(title: str, top, panels) -> Figure:
    """A surprisal strip over stacked heatmaps, all on one x axis of input characters. `top` is
    (surprisal per position, tick labels, "base" or "character", vocabulary size); `panels` holds
    (values (rows, T), title, row label, scale): "sigmoid" 0..1, "tanh" -1..1, "weights" 0..their
    99th percentile, or "free" (symmetric around 0 at the panel's largest magnitude)."""
    surprisal, labels, unit, n_symbols = top
    T = len(labels)
    heights = [1.3] + [max(1.6, 0.03 * v.shape[0]) for v, *_ in panels]
    fig = Figure(figsize=(max(10.0, 2.5 + 0.11 * T), sum(heights) + 1.2), layout="constrained")
    grid = fig.add_gridspec(len(heights), 2, height_ratios=heights, width_ratios=[1, 0.012])
    ax = fig.add_subplot(grid[0, 0])
    ax.bar(np.arange(T), surprisal, width=0.9, color="tab:gray")
    uniform = math.log2(n_symbols)
    ax.axhline(uniform, ls=":", color="black", lw=0.8)
    ax.set_title(f"model surprisal: bits spent on the next {unit} (dotted: {uniform:.3g} bits, a uniform "
                 f"guess among {n_symbols})", loc="left", fontsize=10)
    ax.set_ylabel("bits")
    ax.tick_params(labelbottom=False)
    fig.add_subplot(grid[0, 1]).axis("off")  # keeps the strip as wide as the heatmaps
    for row, (values, name, ylabel, scale) in enumerate(panels, start=1):
        hax = fig.add_subplot(grid[row, 0], sharex=ax)
        if scale in _SCALES:
            cmap, lo, hi = _SCALES[scale]
        elif scale == "weights":  # attention: most weights are ~1/t, a few near 1; clip at the 99th percentile
            cmap, lo, hi = "viridis", 0.0, float(np.percentile(values, 99)) or 1.0
        else:
            top_value = float(np.abs(values).max()) or 1.0
            cmap, lo, hi = "RdBu_r", -top_value, top_value
        image = hax.imshow(values, aspect="auto", interpolation="nearest", cmap=cmap, vmin=lo, vmax=hi)
        hax.set_title(name, loc="left", fontsize=10)
        hax.set_ylabel(ylabel)
        hax.tick_params(labelbottom=row == len(panels))
        fig.colorbar(image, cax=fig.add_subplot(grid[row, 1]))
    hax.set_xticks(np.arange(T), labels, fontsize=7, family="monospace")
    hax.set_xlabel(f"input {unit} (read left to right; column t is computed from {unit} t and those before it)")
    ax.set_xlim(-0.5, T - 0.5)
    fig.suptitle(title, fontsize=12)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    return path
