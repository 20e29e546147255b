"""Train a char-level model on a FASTA or text file; checkpoint, resume and sample.

    result = train(TrainConfig(model="lstm", steps=800))     # what `tritonlab train` runs
    model, vocab, ckpt = load_model("out/train-lstm/checkpoint.pt")
    print(sample(model, vocab, prime="ACGT", length=200, seed=0))

The checkpoint holds everything a run needs to continue exactly: model kind and
config, weights, vocabulary, optimizer state, step, the losses so far and the state
of both random generators (the batch sampler's and torch's global one, which dropout
draws from). So `steps=N` in one go and `steps=N/2` then `resume=True, steps=N` give
the same losses. The learning rate is constant for the same reason: a schedule tied
to the total step count would differ between the two.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn import functional as F

from .data import Vocab, default_genome_path, get_batch, iter_batches, load_sequence, split
from .models import MODEL_KINDS, build_model

__all__ = ["TrainConfig", "train", "evaluate", "save_checkpoint", "load_checkpoint", "load_model",
           "sample", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
_FORMAT = "tritonlab-charlm-1"  # tag that tells a checkpoint of ours from any other .pt file


@dataclass
class TrainConfig:
    """One training run. `data=None` is the chloroplast genome in data/; `out=None`
    is out/train-<model>; `model_config` holds sizes for `build_model` (empty: defaults)."""

    model: str = "lstm"
    data: str | None = None
    steps: int = 800
    batch: int = 64
    seq: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.01
    clip: float = 1.0
    eval_every: int = 500
    val_fraction: float = 0.1
    alphabet: str = "dna"
    unknown: str = "error"
    device: str = "cpu"
    backend: str | None = None
    seed: int = 0
    out: str | None = None
    resume: bool = False
    progress: bool = True
    model_config: dict = field(default_factory=dict)


def train(cfg: TrainConfig) -> dict:
    """Run (or, with `cfg.resume`, continue from `out/checkpoint.pt`) training up to
    `cfg.steps` steps in all. A resumed run takes the model kind's sizes, the vocabulary,
    the optimizer state (learning rate included) and the random state from the
    checkpoint; `model_config` is ignored. Returns
    {"losses": per-step training loss, "val": [(step, bits per base)], "checkpoint": path,
    "order0": bits per base on validation of the training part's character frequencies
    (the order-0 baseline a model must beat), "seconds": wall time}."""
    if cfg.model not in MODEL_KINDS:
        raise ValueError(f"model must be one of {MODEL_KINDS}, got {cfg.model!r}")
    for name in ("steps", "batch", "seq", "eval_every"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    t0 = time.perf_counter()
    device = torch.device(cfg.device)
    out = Path(cfg.out) if cfg.out else Path("out") / f"train-{cfg.model}"
    ckpt_path = out / CHECKPOINT_NAME
    data_path = cfg.data or default_genome_path()

    ckpt = load_checkpoint(ckpt_path, expect_kind=cfg.model) if cfg.resume else None
    seq = load_sequence(data_path, alphabet=cfg.alphabet, unknown=cfg.unknown)
    if ckpt is not None:
        vocab = Vocab(ckpt["vocab"])
    else:
        vocab = Vocab.dna() if cfg.alphabet == "dna" else Vocab.from_text(seq)
    ids = vocab.encode(seq).to(device)
    train_ids, val_ids = split(ids, cfg.val_fraction)

    torch.manual_seed(cfg.seed)  # weights and dropout
    model_config = ckpt["config"] if ckpt else {**cfg.model_config, "vocab_size": len(vocab)}
    model = build_model(cfg.model, backend=cfg.backend, **model_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = torch.Generator().manual_seed(cfg.seed)
    losses, val = [], []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        _set_rng(ckpt["rng"], batches)
        losses, val = list(ckpt["losses"]), [tuple(v) for v in ckpt["val"]]
    step = len(losses)

    def checkpoint():
        save_checkpoint(ckpt_path, model, vocab, optimizer, losses, val, batches, cfg)

    bar = _progress(cfg, step)
    model.train()
    while step < cfg.steps:
        tick = time.perf_counter()
        x, y = get_batch(train_ids, cfg.batch, cfg.seq, generator=batches)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        optimizer.step()
        losses.append(loss.item())
        step += 1
        postfix = {"loss": f"{losses[-1]:.4f}",
                   "bases/s": f"{cfg.batch * cfg.seq / (time.perf_counter() - tick):.0f}"}
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val.append((step, evaluate(model, val_ids, cfg.batch, cfg.seq)))
            checkpoint()
        if val:
            postfix["val bits/base"] = f"{val[-1][1]:.4f}"
        if bar is not None:
            bar.set_postfix(postfix, refresh=False)
            bar.update()
    if bar is not None:
        bar.close()
    if not val or val[-1][0] != step:  # resumed at or past cfg.steps: still report and save
        val.append((step, evaluate(model, val_ids, cfg.batch, cfg.seq)))
        checkpoint()
    return {"losses": losses, "val": val, "checkpoint": ckpt_path,
            "order0": _order0_bits(train_ids, val_ids, len(vocab)), "seconds": time.perf_counter() - t0}


@torch.no_grad()
def evaluate(model, data: torch.Tensor, batch: int, seq: int) -> float:
    """Bits per character over `data` in non-overlapping windows of `seq` (each window
    starts from an empty state/context), in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in iter_batches(data, batch, min(seq, len(data) - 1)):
        logits = model(x)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                 reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / count / math.log(2)


def save_checkpoint(path, model, vocab: Vocab, optimizer, losses, val, batches: torch.Generator,
                    cfg: TrainConfig) -> None:
    """Write the checkpoint to a temporary file beside `path`, then rename it over
    `path` (os.replace is atomic): a crash mid-write leaves the previous one intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = {"torch": torch.get_rng_state(), "batches": batches.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {
        "format": _FORMAT, "kind": model.kind, "config": dict(model.config),
        "model": model.state_dict(), "vocab": list(vocab.itos), "optimizer": optimizer.state_dict(),
        "step": len(losses), "losses": list(losses), "val": [list(v) for v in val],
        "rng": rng, "train_config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path, expect_kind: str | None = None) -> dict:
    """The checkpoint dict at `path`; FileNotFoundError if absent, ValueError if it is
    not a tritonlab char-model checkpoint or holds another kind than `expect_kind`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated, foreign or non-torch file
        raise ValueError(f"{path} is not a readable tritonlab checkpoint: {e}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a tritonlab char-model checkpoint (format {_FORMAT!r})")
    if expect_kind is not None and ckpt["kind"] != expect_kind:
        raise ValueError(
            f"{path} holds a {ckpt['kind']!r} model, but a {expect_kind!r} model was asked for; "
            f"pass --model {ckpt['kind']} or another --out folder"
        )
    return ckpt


def load_model(path, device="cpu", backend: str | None = None):
    """(model in eval mode on `device`, vocab, checkpoint dict) from a checkpoint file."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt["kind"], backend=backend, **ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), Vocab(ckpt["vocab"]), ckpt


@torch.no_grad()
def sample(model, vocab: Vocab, prime: str, length: int, temperature: float = 1.0,
           seed: int | None = None) -> str:
    """`length` characters drawn one at a time after `prime` (not included), each from
    softmax(logits / temperature). RNNs carry their state; the CNN re-reads its last
    receptive field of ids."""
    if not prime:
        raise ValueError("prime must hold at least one character")
    if not isinstance(length, int) or length < 0:
        raise ValueError(f"length must be a non-negative integer, got {length!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    model.eval()
    ids = vocab.encode(prime).to(device)[None]  # (1, len(prime)); ValueError on unknown letters
    window = getattr(model, "receptive_field", None)
    state, out = None, []
    x = ids
    for _ in range(length):
        if window is None:
            logits, state = model(x, state, return_state=True)
        else:
            logits = model(x[:, -window:])
        probs = torch.softmax(logits[0, -1].float() / temperature, dim=-1)
        nxt = torch.multinomial(probs, 1, generator=generator)
        out.append(int(nxt))
        x = nxt[None] if window is None else torch.cat([x, nxt[None]], dim=1)
    return vocab.decode(out)


def _order0_bits(train_ids: torch.Tensor, val_ids: torch.Tensor, n: int) -> float:
    # Add-one counts, so a character absent from training does not cost infinite bits.
    p = (torch.bincount(train_ids.cpu(), minlength=n).double() + 1).log2()
    p -= math.log2(len(train_ids) + n)
    return float(-p[val_ids.cpu()].mean())


def _set_rng(rng: dict, batches: torch.Generator) -> None:
    torch.set_rng_state(rng["torch"])
    batches.set_state(rng["batches"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _progress(cfg: TrainConfig, start: int):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.model}", unit="step")
