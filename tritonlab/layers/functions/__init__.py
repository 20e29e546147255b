"""The Triton tier's entry points, one file per op family, each registering its ops
as torch.library custom ops (see scratch/_autograd.py).

Each file imports its kernels from `tritonlab.kernels` (and so imports triton); the
layers reach this package through `_dispatch.lazy` on the triton tier's first use, so
`import tritonlab` stays triton-free, and importing it registers every tritonlab:: op.
"""
from . import activations, attention, conv, linear, rnn, softmax  # noqa: F401
