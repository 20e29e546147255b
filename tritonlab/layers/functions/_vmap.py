"""torch.vmap rules for the Triton tier's forward ops.

Without a rule torch runs an op once per sample and warns of the cost. A rule instead
folds vmap's batch dimension into one the kernel already walks (rows of an
elementwise or softmax kernel, the batch of a GEMM, conv or attention), so the whole
vmap is one launch. Where folding would need copies or would change semantics
(per-sample weights, a per-sample mask, one dropout mask shared by every sample), a
rule calls the op per sample as torch's fallback would.

Dropout under vmap: torch refuses a random draw by default. With
randomness="different" the seed drawn outside the op is batched, one per sample; one
launch with the first of them gives every sample its own Philox offsets, so masks are
still independent across samples (not the ones the per-sample seeds would give). With
randomness="same" the seed is unbatched and every sample must get the same mask: per
sample. The backward regenerates the mask from the seed the launch used.

GRU and LSTM have no rule: their ops take a packed, time-major row layout whose batch
the layer fixes before the call, so torch's fallback runs them per sample (and warns).

The backward ops need no rule: a triton-tier backward under a transform is refused
(layers/_dispatch.py), and autograd outside a vmap differentiates the folded call.
"""
from __future__ import annotations

import torch


def front(t: torch.Tensor, bdim: int | None, size: int) -> torch.Tensor:
    """`t` with vmap's batch dimension first; an unbatched `t` expanded (a stride-0 view)."""
    return t.expand(size, *t.shape) if bdim is None else t.movedim(bdim, 0)


def per_sample(op, info, in_dims, *args):
    """What torch's fallback does: `op` on each sample, the outputs stacked along dim 0."""
    # in_dims holds None for an unbatched tensor and for non-tensors (a list for int[])
    outs = [op(*(a.select(d, i) if isinstance(a, torch.Tensor) and d is not None else a
                 for a, d in zip(args, in_dims)))
            for i in range(info.batch_size)]
    if isinstance(outs[0], tuple):
        return tuple(torch.stack(o) for o in zip(*outs)), (0,) * len(outs[0])
    return torch.stack(outs), 0


def one_seed(seed: torch.Tensor, bdim: int | None) -> torch.Tensor:
    """The first sample's seed of a batched (randomness="different") seed."""
    return seed.select(bdim, 0)
