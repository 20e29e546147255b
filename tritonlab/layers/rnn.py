"""GRU, LSTM: torch.nn's classes with a tier-dispatched forward.

Parameters, initialisation and state_dict keys are torch.nn's own; only `forward` is
replaced. It accepts what torch's does: (T, N, I) or (N, T, I) with batch_first,
unbatched (T, I), or a PackedSequence, with the initial state given or omitted.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from ..backend import get_backend
from ..scratch import rnn as scratch
from ..scratch.dropout import dropout_reference
from . import _autocast
from ._base import LabLayer
from ._checks import check_input, check_like, check_size
from ._dispatch import lazy, pick_for_dtype

_GRU = {"naive": scratch.gru_naive, "reference": scratch.gru_reference,
        "triton": lazy("rnn", "gru_triton")}
_LSTM = {"naive": scratch.lstm_naive, "reference": scratch.lstm_reference,
         "triton": lazy("rnn", "lstm_triton")}
# the triton tier's recurrence kernels (layers/functions/rnn.py says what each does)
ALGOS = ("auto", "step", "persistent", "persistent-grid")
# dropout between layers: the triton tier's own kernel; the vectorized one for both
# scratch tiers (the naive tier's loops are over time and gates, not over a mask)
_TRITON_DROPOUT = lazy("softmax", "dropout_triton")


class _Recurrent(LabLayer):
    """What GRU and LSTM share: input and state checks, weights per (layer, direction),
    packing, and the call into the scratch driver.

    `algo` (keyword-only) picks the triton tier's recurrence: "step" (one launch per
    time step), "persistent" (one launch per sequence, a program per batch block),
    "persistent-grid" (hidden units split over co-resident programs with a grid barrier
    per step; GPU only) or "auto" (the module-wide default of layers/functions/rnn.py).
    The other tiers ignore it."""

    def __init__(self, *args, backend: str | None = None, algo: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)  # torch.nn's own constructor, via the MRO
        self._set_backend(backend)
        self.algo = algo

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return base if self.algo == "auto" else f"{base}, algo={self.algo!r}"

    @property
    def algo(self) -> str:
        return self._algo

    @algo.setter
    def algo(self, value: str) -> None:
        if value not in ALGOS:
            raise ValueError(f"{type(self).__name__} algo must be one of {ALGOS}, got {value!r}")
        self._algo = value

    def _weights(self) -> list[tuple]:
        """(w_ih, w_hh, b_ih, b_hh, w_hr) per (layer, direction), layer-major like h_n;
        None for what this module does not have (biases when bias=False, w_hr without
        proj_size)."""
        suffixes = ("", "_reverse") if self.bidirectional else ("",)
        return [tuple(getattr(self, f"{name}_l{layer}{sfx}", None)
                      for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"))
                for layer in range(self.num_layers) for sfx in suffixes]

    def _check_input(self, x) -> None:
        name = type(self).__name__
        if isinstance(x, PackedSequence):
            check_input(x.data, name, (2,), "(sum of lengths, input_size) as packed data")
        else:
            layout = "(N, T, input_size)" if self.batch_first else "(T, N, input_size)"
            check_input(x, name, (2, 3), f"{layout} batched or (T, input_size) unbatched")
            if x.shape[1 if self.batch_first and x.dim() == 3 else 0] == 0:
                raise ValueError(f"{name} expected a sequence length above 0, got input shape {tuple(x.shape)}")
        data = x.data if isinstance(x, PackedSequence) else x
        check_size(data, -1, self.input_size, name, "input features")
        check_like(data, self.weight_ih_l0, name)

    def _check_state(self, state, x, what: str, size: int) -> None:
        """`state` (h0 or c0) must be (num_layers * directions, N, size), without N for
        unbatched input, on the weights' device and dtype."""
        name = type(self).__name__
        check_input(state, f"{name} {what}", (), "")
        layers = self.num_layers * (2 if self.bidirectional else 1)
        if isinstance(x, PackedSequence):
            expected = (layers, int(x.batch_sizes[0]), size)
        elif x.dim() == 2:
            expected = (layers, size)
        else:
            expected = (layers, x.shape[0 if self.batch_first else 1], size)
        if tuple(state.shape) != expected:
            raise ValueError(f"{name} expected {what} of shape {expected} (num_layers * num_directions, "
                             f"{'' if len(expected) == 2 else 'batch, '}hidden), got {tuple(state.shape)}")
        check_like(state, self.weight_ih_l0, name, f"initial state {what}")

    def _run(self, op: str, impls: dict, x, hx):
        """Run the tier's driver; for packed input, sort `hx` to the packed order first
        and the final state back to the caller's order after, as torch does."""
        packed = isinstance(x, PackedSequence)
        data = x.data if packed else x
        requested = self.backend if self.backend is not None else get_backend()
        if requested == "auto" and self.proj_size:
            # the Triton kernels have no projection: `auto` takes the reference tier, as for
            # an op without kernels (an explicit "triton" gets the tier's own error)
            impls = {tier: fn for tier, fn in impls.items() if tier != "triton"}
        fn = pick_for_dtype(op, impls, self.backend, data)  # float64 too
        if packed and x.sorted_indices is not None:
            hx = _map(lambda s: s.index_select(1, x.sorted_indices), hx)
        # "auto" leaves the choice to the module-wide default (variant=None)
        triton = fn is impls.get("triton")
        extra = {"variant": None if self.algo == "auto" else self.algo} if triton else {}
        out, h_n = _autocast.call(_autocast.MATMUL, fn, data, hx, self._weights(), **extra,
                                  bidirectional=self.bidirectional, batch_first=self.batch_first,
                                  dropout=self.dropout, training=self.training,
                                  dropout_fn=_TRITON_DROPOUT if triton else dropout_reference,
                                  batch_sizes=x.batch_sizes if packed else None)
        if not packed:
            return out, h_n
        if x.unsorted_indices is not None:
            h_n = _map(lambda s: s.index_select(1, x.unsorted_indices), h_n)
        return PackedSequence(out, x.batch_sizes, x.sorted_indices, x.unsorted_indices), h_n


def _map(f, state):
    """`f` applied to a state: one tensor (GRU), a tuple of them (LSTM), or None."""
    if state is None:
        return None
    return f(state) if isinstance(state, torch.Tensor) else tuple(f(s) for s in state)


class GRU(_Recurrent, nn.GRU):
    """torch.nn.GRU; forward(input, h0=None) -> (output, h_n)."""

    def forward(self, input, hx=None):
        self._check_input(input)
        if hx is not None:
            self._check_state(hx, input, "h0", self.hidden_size)
        return self._run("gru", _GRU, input, hx)


class LSTM(_Recurrent, nn.LSTM):
    """torch.nn.LSTM; forward(input, (h0, c0)=None) -> (output, (h_n, c_n))."""

    def forward(self, input, hx=None):
        self._check_input(input)
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"LSTM expected hx as a tuple (h0, c0), got {type(hx).__name__}")
            self._check_state(hx[0], input, "h0", self.proj_size or self.hidden_size)
            self._check_state(hx[1], input, "c0", self.hidden_size)
            hx = tuple(hx)
        return self._run("lstm", _LSTM, input, hx)

