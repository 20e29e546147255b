"""Small character-level language models built from the lab's layers.

    model = build_model("lstm", vocab_size=4, hidden=128)   # or "gru", "cnn", "transformer"
    logits = model(x)                                        # x (N, T) int64 ids -> (N, T, vocab_size)

Every model is embedding -> a stack (LSTM, GRU, causal 1-D convolutions, or causal
self-attention blocks) -> a Linear head, and keeps the keyword arguments it was built with in `model.config`, so
`build_model(model.kind, **model.config)` rebuilds it (what a checkpoint stores).
`backend=` goes to every lab layer (None: the global choice, see `use_backend`).

The default sizes are small and use dropout 0.2 because the default data is small: on
the 139K training bases of the chloroplast genome a 128-unit LSTM without dropout
reaches its best validation score within a few hundred steps and then memorises.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .layers import GRU, LSTM, Conv2d, Dropout, Linear, MultiheadAttention, ReLU

__all__ = ["MODEL_KINDS", "CharRNN", "CharCNN", "CharTransformer", "build_model"]


class CharRNN(nn.Module):
    """Embedding -> LSTM or GRU (batch_first) -> Dropout -> Linear head.

    forward(x, state=None) returns logits (N, T, vocab_size); with `return_state=True`
    also the recurrent state, so sampling can feed one character at a time.
    """

    def __init__(self, vocab_size: int, cell: str = "lstm", embed: int = 16, hidden: int = 64,
                 layers: int = 1, dropout: float = 0.2, *, backend: str | None = None):
        super().__init__()
        rnn_cls = {"lstm": LSTM, "gru": GRU}.get(cell)
        if rnn_cls is None:
            raise ValueError(f"CharRNN cell must be 'lstm' or 'gru', got {cell!r}")
        self.kind = cell
        self.config = dict(vocab_size=vocab_size, embed=embed, hidden=hidden, layers=layers,
                           dropout=dropout)
        self.embed = nn.Embedding(vocab_size, embed)
        # torch.nn's inter-layer dropout warns for one layer; pass it only where it acts.
        self.rnn = rnn_cls(embed, hidden, num_layers=layers, batch_first=True,
                           dropout=dropout if layers > 1 else 0.0, backend=backend)
        self.drop = Dropout(dropout, backend=backend)
        self.head = Linear(hidden, vocab_size, backend=backend)

    def forward(self, x: torch.Tensor, state=None, return_state: bool = False):
        _check_ids(x, self.config["vocab_size"])
        out, state = self.rnn(self.embed(x), state)
        logits = self.head(self.drop(out))
        return (logits, state) if return_state else logits


class CharCNN(nn.Module):
    """Embedding -> `layers` causal convolutions (kernel `kernel`, dilation doubling per
    layer, ReLU, Dropout) -> Linear head.

    Each convolution is the lab's Conv2d with a (1, kernel) kernel over a (N, C, 1, T)
    view, padded only on the left so position t sees ids t-receptive+1 .. t and never a
    later one. Receptive field: 1 + (kernel - 1) * (2**layers - 1) ids.
    """

    def __init__(self, vocab_size: int, embed: int = 16, channels: int = 64, kernel: int = 5,
                 layers: int = 3, dropout: float = 0.2, *, backend: str | None = None):
        super().__init__()
        self.kind = "cnn"
        self.config = dict(vocab_size=vocab_size, embed=embed, channels=channels, kernel=kernel,
                           layers=layers, dropout=dropout)
        self.embed = nn.Embedding(vocab_size, embed)
        self.convs = nn.ModuleList(
            Conv2d(embed if i == 0 else channels, channels, (1, kernel), dilation=(1, 2**i),
                   backend=backend)
            for i in range(layers)
        )
        self.act = ReLU(backend=backend)
        self.drop = Dropout(dropout, backend=backend)
        self.head = Linear(channels, vocab_size, backend=backend)

    @property
    def receptive_field(self) -> int:
        return 1 + (self.config["kernel"] - 1) * (2 ** self.config["layers"] - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_ids(x, self.config["vocab_size"])
        h = self.embed(x).transpose(1, 2).unsqueeze(2)  # (N, E, 1, T)
        for conv in self.convs:
            left = (conv.kernel_size[1] - 1) * conv.dilation[1]
            h = self.drop(self.act(conv(F.pad(h, (left, 0)))))
        return self.head(h.squeeze(2).transpose(1, 2))  # (N, T, C) -> (N, T, vocab)


class Block(nn.Module):
    """One pre-norm transformer block: x + Dropout(attention(LN(x))), then
    x + Dropout(MLP(LN(x))); the attention causal, the MLP Linear -> ReLU -> Linear."""

    def __init__(self, embed: int, heads: int, hidden: int, dropout: float, backend: str | None):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(embed), nn.LayerNorm(embed)
        self.attn = MultiheadAttention(embed, heads, dropout=dropout, batch_first=True, backend=backend)
        self.mlp = nn.Sequential(Linear(embed, hidden, backend=backend), ReLU(backend=backend),
                                 Linear(hidden, embed, backend=backend))
        self.drop = Dropout(dropout, backend=backend)

    def forward(self, x: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        # the mask is what torch.nn requires beside is_causal; with need_weights=False the
        # hint alone reaches the attention tier (the causal flash kernel on triton)
        x = x + self.drop(self.attn(h, h, h, attn_mask=causal_mask, is_causal=True, need_weights=False)[0])
        return x + self.drop(self.mlp(self.norm2(x)))


class CharTransformer(nn.Module):
    """Embedding + positions -> `layers` pre-norm causal self-attention Blocks ->
    LayerNorm -> Linear head (a small GPT).

    Position t sees ids 0..t of its window and never a later one. `context` is the
    longest window (the learned position table's rows; the training sequence length
    when `tritonlab train` builds it), also what sampling re-reads (`receptive_field`).
    positions: "learned" (an nn.Embedding) or "sinusoidal" (Vaswani et al.'s fixed
    table, a buffer outside the state_dict). LayerNorm and Embedding are torch.nn's:
    the lab has none.
    """

    def __init__(self, vocab_size: int, embed: int = 64, heads: int = 4, hidden: int = 256, layers: int = 2,
                 context: int = 128, positions: str = "learned", dropout: float = 0.1, *,
                 backend: str | None = None):
        super().__init__()
        if positions not in ("learned", "sinusoidal"):
            raise ValueError(f"CharTransformer positions must be 'learned' or 'sinusoidal', got {positions!r}")
        if not isinstance(context, int) or context < 1:
            raise ValueError(f"CharTransformer context must be a positive integer, got {context!r}")
        if not (isinstance(heads, int) and heads > 0 and embed % heads == 0):
            raise ValueError(f"CharTransformer expected heads, a positive divisor of embed={embed}, got {heads!r}")
        self.kind = "transformer"
        self.config = dict(vocab_size=vocab_size, embed=embed, heads=heads, hidden=hidden, layers=layers,
                           context=context, positions=positions, dropout=dropout)
        self.embed = nn.Embedding(vocab_size, embed)
        if positions == "learned":
            self.pos = nn.Embedding(context, embed)
        else:
            self.register_buffer("table", _sinusoids(context, embed), persistent=False)
        self.drop = Dropout(dropout, backend=backend)
        self.blocks = nn.ModuleList(Block(embed, heads, hidden, dropout, backend) for _ in range(layers))
        self.norm = nn.LayerNorm(embed)
        self.head = Linear(embed, vocab_size, backend=backend)

    @property
    def receptive_field(self) -> int:
        return self.config["context"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_ids(x, self.config["vocab_size"])
        T = x.shape[1]
        if T > self.receptive_field:
            raise ValueError(f"CharTransformer expected at most context={self.receptive_field} ids per row, "
                             f"got {T} (input shape {tuple(x.shape)})")
        at = torch.arange(T, device=x.device)
        h = self.drop(self.embed(x) + (self.pos(at) if hasattr(self, "pos") else self.table[:T]))
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)  # True: masked out
        for block in self.blocks:
            h = block(h, causal)
        return self.head(self.norm(h))


def _sinusoids(length: int, dim: int) -> torch.Tensor:
    """PE[t, 2i] = sin(t / 10000^(2i/dim)), PE[t, 2i+1] = cos(the same) (Vaswani et al. 2017)."""
    t = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(t * freq)
    table[:, 1::2] = torch.cos(t * freq[: dim // 2])
    return table


MODEL_KINDS = ("lstm", "gru", "cnn", "transformer")


def build_model(kind: str, vocab_size: int, *, backend: str | None = None, **config) -> nn.Module:
    """A model of `kind` ("lstm", "gru", "cnn", "transformer") with the sizes in
    `config` (defaults otherwise; see CharRNN, CharCNN and CharTransformer for the names)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
    if kind == "cnn":
        return CharCNN(vocab_size, backend=backend, **config)
    if kind == "transformer":
        return CharTransformer(vocab_size, backend=backend, **config)
    return CharRNN(vocab_size, cell=kind, backend=backend, **config)


def _check_ids(x, vocab_size: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.long or x.dim() != 2:
        got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a (batch, seq) int64 tensor of ids, got {got}")
