"""Who runs an op in the benchmark, registered once.

- `naive`, `reference`, `triton`: tritonlab's layers pinned to that tier; an op may
  split `triton` into variants (e.g. conv's `triton-im2col` and `triton-implicit`),
  each setting attributes on the op's layers.
- `torch`: torch.nn (oneDNN on CPU, cuDNN / cuBLAS on GPU) with the same weights.
- `compile`: torch.compile of the reference tier (what inductor makes of the same math).
- `graph`: the reference tier captured once as a CUDA graph and replayed, so the cost
  of launching its many small kernels shows apart from their work (RNNs).
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers._base import LabLayer
from .ops import Op

BASE = ("naive", "reference", "triton", "torch", "compile", "graph")
# what a plain `tritonlab bench` runs: compile only when named, as inductor takes seconds
# to minutes per case and mode (tens of graphs on a GPU, where the default run is to
# take minutes)
DEFAULT = {"cpu": tuple(p for p in BASE if p not in ("compile", "graph")),  # no CUDA graphs on a CPU
           "cuda": tuple(p for p in BASE if p != "compile")}


def for_op(op: Op, providers) -> list[str]:
    """`providers` as they apply to `op`: `triton` stands for all of an op's variants."""
    names = []
    for p in providers:
        names += list(op.variants) if p == "triton" and op.variants else [p]
    return names


def skip_reason(op: Op, provider: str, device: torch.device) -> str | None:
    if provider.startswith("triton") and device.type != "cuda":
        return "skipped: Triton kernels are timed on CUDA only (never under the interpreter)"
    if provider == "compile" and not op.compiled:
        return "skipped: torch.compile would unroll the whole op into one graph (minutes of compile)"
    if provider == "graph" and not op.graphed:
        return "skipped: one launch per call already; a CUDA graph adds nothing"
    if provider == "graph" and device.type != "cuda":
        return "skipped: CUDA graphs need a CUDA device"
    return None


def build(op: Op, params: dict, provider: str, ref: nn.Module, device, dtype) -> nn.Module:
    """The module that runs `op` for `provider`, holding `ref`'s weights."""
    if provider == "torch":
        return ref
    tier = "reference" if provider in ("compile", "graph") else provider.split("-")[0]
    lab = op.lab(params).to(device=device, dtype=dtype)
    lab.load_state_dict(ref.state_dict())
    for m in lab.modules():
        if isinstance(m, LabLayer):
            m.backend = tier
            for name, value in op.variants.get(provider, {}).items():
                setattr(m, name, value)
    lab.train(ref.training)
    if provider == "compile":
        # a fresh Dynamo per case: every case's graphs (with and without grad) count
        # against one recompile limit (8) per code object, past which Dynamo runs the
        # module eagerly without a word, so a fifth case would time eager code as
        # compiled. Static shapes: each case compiled for its own
        torch._dynamo.reset()
        return torch.compile(lab, dynamic=False)
    if provider == "graph":
        return CudaGraphed(lab)
    return lab


class CudaGraphed(nn.Module):
    """`mod` captured as a CUDA graph on its first call and replayed after.

    Without grad the forward is captured; with grad, torch.cuda.make_graphed_callables
    captures forward and backward. The inputs must stay the same tensors (the runner
    calls with the same ones): a replay reads the captured addresses.
    """

    def __init__(self, mod: nn.Module):
        super().__init__()
        self.mod = mod
        self._graph = self._out = self._inputs = self._train = None

    def forward(self, *inputs):
        if torch.is_grad_enabled():
            if self._train is None:
                self._train = torch.cuda.make_graphed_callables(self.mod, inputs)
            return self._train(*inputs)
        if self._graph is None:
            self._inputs = inputs
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside capture (allocator, lazy init)
                self.mod(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._out = self.mod(*inputs)
        if any(a is not b for a, b in zip(inputs, self._inputs)):
            raise ValueError("a captured CUDA graph replays on the tensors it was captured with")
        self._graph.replay()
        return self._out
