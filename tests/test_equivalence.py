"""A swapped model trains like the torch.nn model it was made from (issue 7, item 5).

Each test builds a model of pure torch.nn layers, deep-copies it, `tritonlab.swap`s the
copy, then trains both 20 steps (AdamW, gradient clipping) from the same weights on the
same batches of the chloroplast genome, and compares per-step losses and final weights.

What holds, measured on CPU (reference tier against oneDNN / ATen, seeds 0-7, the sizes
below), and why:
- float64: losses agree to ~2e-16 relative and weights to ~1e-14: the same math.
- float32, RNNs: losses to <= 1.8e-7 relative (one or two ulps), weights to <= 4e-6.
  Weights drift further than losses because AdamW divides each gradient component by
  its own running RMS: a component that cancels to near zero (|g| ~ AdamW's eps, 1e-8)
  carries a rounding error that is tiny against the whole sum but not against itself,
  and its normalised update (up to lr per step) inherits that relative error.
- float32, CNN: on seeds 1-7 as close as the RNNs, but seed 0 (the one tested) is
  ill-conditioned: after the first step one body.2 weight gradient is 1.26e-8 in one run
  and 1.34e-8 in the other, AdamW turns that into a 4.6e-5 weight difference, and by
  step 4 a ReLU input near zero changes sign; losses then part by up to 1.7e-4 relative
  and weights by 3.5e-3 (with 1 or 2 threads alike). torch.nn's own float32 run drifts
  from its float64 run by as much on some thread counts, so this is float32 training
  being chaotic, not the lab; the float64 test is the check of the math.
Tolerances are about 10x the gaps measured (3x for the CNN's weights).
"""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import tritonlab
from tritonlab.data import Vocab, default_genome_path, get_batch, load_sequence, split

STEPS = 20
LR = 3e-3
KINDS = ["lstm", "gru", "cnn"]
# (loss rtol, weight atol) per kind in float32 (see the module docstring), and in float64
FLOAT32 = {"lstm": (2e-6, 4e-5), "gru": (2e-6, 4e-5), "cnn": (2e-3, 1e-2)}
FLOAT64 = (1e-12, 1e-12)
# on CUDA (T=256, cuDNN against the triton tier): unmeasured, 10x the RNNs' CPU ones (CNN 30x its CPU gap)
GPU_FLOAT32 = {"lstm": (2e-5, 4e-4), "gru": (2e-5, 4e-4), "cnn": (5e-3, 3e-2)}


class RNNLM(nn.Module):
    """Embedding -> nn.LSTM / nn.GRU (2 layers, batch_first) -> Dropout -> Linear: a logit per position."""

    def __init__(self, cell: str, embed: int = 16, hidden: int = 64, p: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(4, embed)
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell](embed, hidden, num_layers=2, batch_first=True, dropout=p)
        self.drop = nn.Dropout(p)
        self.head = nn.Linear(hidden, 4)

    def forward(self, x):
        return self.head(self.drop(self.rnn(self.embed(x))[0]))


class CNNClassifier(nn.Module):
    """Embedding -> two Conv2d over a (N, E, 1, T) view -> Flatten -> Linear/Tanh/Dropout
    -> Linear -> Softmax: the probabilities of the base after the window."""

    def __init__(self, window: int, embed: int = 8, channels: int = 16, p: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(4, embed)
        self.body = nn.Sequential(
            nn.Conv2d(embed, channels, (1, 5), padding=(0, 2)), nn.ReLU(),
            nn.Conv2d(channels, channels, (1, 3), stride=(1, 2)), nn.ReLU(), nn.Flatten(),
            nn.Linear(channels * ((window - 3) // 2 + 1), 32), nn.Tanh(), nn.Dropout(p),
            nn.Linear(32, 4), nn.Softmax(dim=-1))

    def forward(self, x):
        return self.body(self.embed(x).transpose(1, 2).unsqueeze(2))


# kind -> (batch, seq): the CNN predicts one base per window, so it takes more windows
SIZES = {"lstm": (16, 64), "gru": (16, 64), "cnn": (64, 64)}


def build(kind: str, p: float = 0.0, seed: int = 0, window: int = SIZES["cnn"][1], **sizes) -> nn.Module:
    """The torch.nn model of `kind`, its weights drawn from seed `seed`."""
    torch.manual_seed(seed)
    return CNNClassifier(window, p=p, **sizes) if kind == "cnn" else RNNLM(kind, p=p, **sizes)


def loss_of(model: nn.Module, x, y) -> torch.Tensor:
    out = model(x)
    if out.dim() == 2:  # probabilities of the next base after each window
        return F.nll_loss(out.log(), y[:, -1])
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def train(model: nn.Module, ids, batch: int, seq: int, steps: int = STEPS, seed: int = 0) -> torch.Tensor:
    """Per-step losses (float64) of `steps` AdamW steps with clipping; the batches come
    from a generator seeded with `seed`, dropout from torch's generator seeded with `seed`."""
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    batches = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.train()
    losses = []
    for _ in range(steps):
        x, y = get_batch(ids, batch, seq, generator=batches)
        loss = loss_of(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float64)


def swapped_copy(model: nn.Module, backend: str) -> nn.Module:
    """A deep copy with every layer but the Embedding (which the lab has not) swapped;
    checked, so a swap that did nothing could not pass for an equivalent one."""
    twin = copy.deepcopy(model)
    report = tritonlab.swap(twin, backend=backend)
    flatten = {"body.4"} if backend == "triton" and isinstance(model, CNNClassifier) else set()  # no kernel
    left = {"embed"} | flatten
    assert set(report.left) == left, str(report)
    for name in report.changed:
        layer = twin.get_submodule(name)
        assert type(layer).__module__.startswith("tritonlab.") and layer.backend == backend, name
    return twin


def assert_same_training(start: dict, ref: nn.Module, lab: nn.Module, ref_losses, lab_losses, loss_rtol,
                         weight_atol):
    """Losses and final weights agree, and training moved the weights (more than one
    step of lr: two untrained models would agree trivially)."""
    torch.testing.assert_close(lab_losses, ref_losses, rtol=loss_rtol, atol=0)
    labs = dict(lab.named_parameters())
    assert labs.keys() == dict(ref.named_parameters()).keys()  # a parameter lost in the swap goes uncompared otherwise
    for name, p in ref.named_parameters():
        torch.testing.assert_close(labs[name], p, rtol=loss_rtol, atol=weight_atol, msg=lambda m: f"{name}: {m}")
    moved = max((p - start[n].to(p)).abs().max().item() for n, p in ref.named_parameters())
    assert moved > LR, f"training moved the weights by only {moved:.2e}"


@pytest.fixture(scope="module")
def genome_ids():
    """(train, val) ids of the chloroplast genome."""
    return split(Vocab.dna().encode(load_sequence(default_genome_path())), 0.1)


def check_float32_training(kind: str, ids, backend: str, batch: int, seq: int, steps: int = STEPS,
                           tol: dict = FLOAT32, **sizes):
    """torch.nn and its swapped copy, on ids' device, train alike within tol[kind]."""
    ref = build(kind, **sizes).to(ids.device)
    lab = swapped_copy(ref, backend)
    start = copy.deepcopy(ref.state_dict())
    ref_losses, lab_losses = train(ref, ids, batch, seq, steps), train(lab, ids, batch, seq, steps)
    assert_same_training(start, ref, lab, ref_losses, lab_losses, *tol[kind])


@pytest.fixture
def no_tf32():
    """float32 matmuls and convolutions in full precision (torch's and the lab's GEMMs
    follow these flags), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("kind", KINDS)
def test_swapped_model_trains_exactly_like_torch_nn_in_float64(genome_ids, kind):
    """Dropout p=0 in every exact check: tritonlab's Dropout draws one seed from
    torch's generator and derives its mask from it, torch.nn.Dropout draws a Bernoulli
    per element, so with p>0 the two never share a mask and per-step losses differ by
    mask noise (test_with_dropout_both_train_alike compares those runs)."""
    ref = build(kind).double()
    lab = swapped_copy(ref, "reference")
    start = copy.deepcopy(ref.state_dict())
    batch, seq = SIZES[kind]
    assert_same_training(start, ref, lab, train(ref, genome_ids[0], batch, seq), train(lab, genome_ids[0], batch, seq), *FLOAT64)


@pytest.mark.parametrize("kind", KINDS)
def test_swapped_model_trains_like_torch_nn_in_float32(genome_ids, kind):
    check_float32_training(kind, genome_ids[0], "reference", *SIZES[kind])


def eval_loss(model: nn.Module, x, y) -> float:
    model.eval()
    with torch.no_grad():
        loss = loss_of(model, x, y).item()
    model.train()
    return loss


@pytest.mark.parametrize("kind", ["lstm", "cnn"])
def test_with_dropout_both_train_alike(genome_ids, kind):
    """Dropout p=0.3 (LSTM: between its layers and before the head; CNN: in the MLP).
    The masks differ by design (see the float64 test), so the runs are compared as
    training runs, not step by step: on a fixed validation batch, in eval mode (no
    dropout), both models start identical, both improve by more than 0.015 nats, and
    end within 0.01 of each other. Measured over seeds 0-4: improvements 0.02-0.04,
    final gaps <= 0.004."""
    ref = build(kind, p=0.3)
    lab = swapped_copy(ref, "reference")
    x, y = get_batch(genome_ids[1], 256, SIZES[kind][1], generator=torch.Generator().manual_seed(1))
    before = eval_loss(ref, x, y), eval_loss(lab, x, y)
    assert before[1] == pytest.approx(before[0], rel=1e-6)
    ref_losses, lab_losses = train(ref, genome_ids[0], *SIZES[kind]), train(lab, genome_ids[0], *SIZES[kind])
    assert not torch.equal(ref_losses, lab_losses)  # the masks did differ
    after = eval_loss(ref, x, y), eval_loss(lab, x, y)
    assert before[0] - after[0] > 0.015 and before[1] - after[1] > 0.015, (before, after)
    assert abs(after[0] - after[1]) < 0.01, (before, after)


@pytest.mark.parametrize("kind", KINDS)
def test_triton_tier_trains_like_torch_nn(genome_ids, kind, triton_device, no_tf32):
    """The triton tier under the interpreter (CPU) or on CUDA, at tiny sizes and 3 steps
    to keep the interpreter fast; the float32 tolerances of the reference tier hold."""
    sizes = {"embed": 4, "channels": 4, "window": 12} if kind == "cnn" else {"embed": 4, "hidden": 8}
    ids = genome_ids[0][:5000].to(triton_device)
    check_float32_training(kind, ids, "triton", batch=4, seq=12, steps=3, **sizes)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", KINDS)
def test_gpu_triton_tier_trains_like_torch_nn(genome_ids, kind, no_tf32):
    """Real sizes on CUDA, float32 with TF32 off: cuDNN/cuBLAS against the triton tier,
    20 steps, within GPU_FLOAT32 (not yet run on a GPU)."""
    sizes = {"embed": 16, "channels": 64, "window": 256} if kind == "cnn" else {"embed": 32, "hidden": 256}
    check_float32_training(kind, genome_ids[0].to("cuda"), "triton", batch=64, seq=256, tol=GPU_FLOAT32, **sizes)
