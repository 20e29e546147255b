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

Data-parallel: under torchrun (WORLD_SIZE > 1 in the environment) `train` joins a
torch.distributed group (gloo on CPU, NCCL on CUDA with one GPU per process,
cuda:LOCAL_RANK) and wraps the model in DistributedDataParallel; a group that is
already initialised is used as it is and left up.

    torchrun --standalone --nproc_per_node 2 -m tritonlab train --batch 64

`batch` stays the global batch: every process draws the same global batch from the
identically seeded sampler and trains on its own contiguous slice of batch/world rows,
so with DDP's gradient averaging a step is the 1-process step (up to float rounding),
and the logged loss and validation are reduced over all processes. Dropout draws from
torch's generator, which is seeded per process (rank 0 keeps the 1-process stream,
rank r > 0 starts from a seed derived from (seed, r)), so the masks of the processes
are independent, as they would be across the rows of one batch; with dropout the
losses therefore differ from a 1-process run, without it they match. Rank 0 alone
shows the progress bar and writes the checkpoint (the model without DDP's "module."
prefix, plus every rank's random state); the others wait at a barrier until it is in
place. A checkpoint resumes on any number of processes; exactly (dropout included)
on the number that wrote it.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import distributed as dist
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from .data import Vocab, default_genome_path, get_batch, iter_batches, load_sequence, split
from .models import MODEL_KINDS, build_model

__all__ = ["TrainConfig", "train", "resume_config", "evaluate", "save_checkpoint", "load_checkpoint", "load_model",
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
    amp: bool = False  # forward and loss under torch.autocast in bfloat16 (see train())
    seed: int = 0
    out: str | None = None
    resume: bool = False
    overwrite: bool = False  # a new run may replace a checkpoint in `out` (else that is refused)
    progress: bool = True
    model_config: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Group:
    """This process's place in a data-parallel run; world 1 is a plain run."""

    rank: int = 0
    world: int = 1
    owned: bool = False  # created by `train`, so `train` destroys it


def train(cfg: TrainConfig) -> dict:
    """Run (or, with `cfg.resume`, continue from `out/checkpoint.pt`) training up to
    `cfg.steps` steps in all. A new run refuses an `out` that holds a checkpoint unless
    `cfg.overwrite`. A resumed run takes the model kind's sizes, the vocabulary, the
    optimizer state and the random state (so the seed too) from the checkpoint
    (`model_config` is ignored) and the other settings from `cfg`: one that differs from
    the checkpoint's (batch, lr, data, ...) applies, with a warning that the run no longer
    equals an uninterrupted one; `resume_config(out, ...)` builds a cfg from the
    checkpoint's. Under torchrun it trains data-parallel (see the module docstring).
    `amp`: the forward passes and the loss (training and validation) run under
    torch.autocast in bfloat16, the weights and optimizer stay float32; bfloat16 keeps
    float32's exponent range, so no loss scaling is needed (float16 would need a
    GradScaler, and is not offered). Returns, on every process,
    {"losses": per-step training loss, "val": [(step, bits per base)], "checkpoint": path,
    "order0": bits per base on validation of the training part's character frequencies
    (the order-0 baseline a model must beat), "seconds": wall time, "rank", "world_size"}."""
    if cfg.model not in MODEL_KINDS:
        raise ValueError(f"model must be one of {MODEL_KINDS}, got {cfg.model!r}")
    for name in ("amp", "resume", "overwrite"):
        if not isinstance(getattr(cfg, name), bool):
            raise ValueError(f"{name} must be True or False, got {getattr(cfg, name)!r}")
    for name in ("steps", "batch", "seq", "eval_every"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    t0 = time.perf_counter()
    group, device = _join_group(cfg)
    try:
        return _train(cfg, group, device, t0)
    finally:
        if group.owned:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, group: _Group, device: torch.device, t0: float) -> dict:
    out = Path(cfg.out) if cfg.out else Path("out") / f"train-{cfg.model}"
    ckpt_path = out / CHECKPOINT_NAME
    if cfg.data:  # recorded as an absolute path: a resume or viz from another folder finds it
        cfg = replace(cfg, data=str(Path(cfg.data).resolve()))
    data_path = cfg.data or default_genome_path()

    _check_amp(cfg.amp, device)
    if not cfg.resume and not cfg.overwrite and ckpt_path.exists():
        raise FileExistsError(f"{ckpt_path} holds a run already: resume it (--resume, resume=True), start "
                              f"anew over it (--overwrite, overwrite=True) or pick another out folder")
    ckpt = load_checkpoint(ckpt_path, expect_kind=cfg.model) if cfg.resume else None
    saved = ckpt.get("train_config", {}) if ckpt is not None else {}
    if saved.get("seed", cfg.seed) != cfg.seed:
        raise ValueError(f"{ckpt_path} was trained with seed={saved['seed']}, and a resume carries on its "
                         f"random state, so seed={cfg.seed} cannot apply; leave the seed out")
    seq = load_sequence(data_path, alphabet=cfg.alphabet, unknown=cfg.unknown)
    if ckpt is not None:
        vocab = Vocab(ckpt["vocab"])
    else:
        vocab = Vocab.dna() if cfg.alphabet == "dna" else Vocab.from_text(seq)
    ids = vocab.encode(seq).to(device)
    train_ids, val_ids = split(ids, cfg.val_fraction)
    order0 = _order0_bits(train_ids, val_ids, len(vocab))

    torch.manual_seed(cfg.seed)  # weights (the same on every rank) and rank 0's dropout
    model_config = ckpt["config"] if ckpt else {**cfg.model_config, "vocab_size": len(vocab)}
    if cfg.model == "transformer":
        model_config.setdefault("context", cfg.seq)  # its position table covers the training windows
        if cfg.seq > model_config["context"]:
            raise ValueError(f"seq {cfg.seq} exceeds the transformer's context of {model_config['context']} "
                             f"positions; train with seq <= {model_config['context']}")
    if ckpt is not None:
        _warn_changed(ckpt_path, saved, cfg)
        if len(ckpt["losses"]) >= cfg.steps:
            warnings.warn(f"{ckpt_path} is at step {len(ckpt['losses'])} already, at or past steps={cfg.steps}: "
                          f"nothing to train", stacklevel=3)
    net = build_model(cfg.model, backend=cfg.backend, **model_config).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = torch.Generator().manual_seed(cfg.seed)  # the global batch: the same on every rank
    losses, val = [], []
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        for pg in optimizer.param_groups:  # the checkpoint's, unless the resume changed them
            pg.update(lr=cfg.lr, weight_decay=cfg.weight_decay)
        losses, val = list(ckpt["losses"]), [tuple(v) for v in ckpt["val"]]
        _set_rng(ckpt["rng"], batches, group, device, _rank_seed(cfg.seed, group.rank, len(losses)))
    elif group.rank:
        torch.manual_seed(_rank_seed(cfg.seed, group.rank, 0))
    step = len(losses)
    model = net
    if group.world > 1:
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    try:
        share = cfg.batch // group.world
        rows = slice(group.rank * share, (group.rank + 1) * share)

        def validate():
            sums = _eval_sums(net, val_ids, cfg.batch, cfg.seq, group.rank, group.world, cfg.amp)
            total_count = torch.tensor(sums, dtype=torch.float64, device=device)
            if group.world > 1:
                dist.all_reduce(total_count)
            total, count = total_count.tolist()
            return total / count / math.log(2)

        def checkpoint():
            rank_rng = _gather_rng(device) if group.world > 1 else None
            if group.rank == 0:
                save_checkpoint(ckpt_path, net, vocab, optimizer, losses, val, batches, cfg, rank_rng=rank_rng,
                                order0=order0)
            if group.world > 1:
                dist.barrier()  # nobody returns (and reads the file) before it is in place

        bar = _progress(cfg, step) if group.rank == 0 else None
        model.train()
        while step < cfg.steps:
            tick = time.perf_counter()
            x, y = get_batch(train_ids, cfg.batch, cfg.seq, generator=batches)
            x, y = x[rows], y[rows]
            with _autocast(device, cfg.amp):
                logits = model(x)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP averages the gradients: the global batch's mean-loss gradient
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            losses.append(_global_mean(loss, group))
            step += 1
            postfix = {"bits/base": f"{losses[-1] / math.log(2):.4f}",  # the loss, in val's unit
                       "bases/s": f"{cfg.batch * cfg.seq / (time.perf_counter() - tick):.0f}"}
            if step % cfg.eval_every == 0 or step == cfg.steps:
                val.append((step, validate()))
                checkpoint()
            if val:
                postfix["val bits/base"] = f"{val[-1][1]:.4f}"
            if bar is not None:
                bar.set_postfix(postfix, refresh=False)
                bar.update()
        if bar is not None:
            bar.close()
        if not val or val[-1][0] != step:  # resumed at or past cfg.steps: still report and save
            val.append((step, validate()))
            checkpoint()
    finally:
        # DDP's reducer holds the process group. Dropped now (also when an exception's
        # traceback keeps this frame), destroy_process_group frees the group with the GIL
        # released; freed later from the reducer, it holds the GIL while it joins gloo's
        # threads, which may need the GIL to free a finished work's tensors: a deadlock.
        model = None  # noqa: F841
    return {"losses": losses, "val": val, "checkpoint": ckpt_path,
            "order0": order0, "seconds": time.perf_counter() - t0,
            "rank": group.rank, "world_size": group.world}


# the settings that decide the batches and the updates: a resume that changes one goes
# on, but no longer equals one uninterrupted run
_RUN_SETTINGS = ("data", "batch", "seq", "lr", "weight_decay", "clip", "val_fraction", "alphabet", "unknown",
                 "amp")


def _warn_changed(ckpt_path: Path, saved: dict, cfg: TrainConfig) -> None:
    def same(name, a, b):
        if name == "data":  # None is the genome in data/; a path may be spelled two ways
            return Path(a or default_genome_path()).resolve() == Path(b or default_genome_path()).resolve()
        return a == b

    changed = [f"{k}={saved[k]!r} and is resumed with {k}={getattr(cfg, k)!r}" for k in _RUN_SETTINGS
               if k in saved and not same(k, saved[k], getattr(cfg, k))]
    if changed:
        warnings.warn(f"{ckpt_path} was trained with {'; '.join(changed)}: the run goes on, but no longer "
                      f"equals one uninterrupted run", stacklevel=4)


def resume_config(out, **changes) -> TrainConfig:
    """The TrainConfig that the checkpoint in `out` was trained with, with resume=True and
    `changes` applied: what `tritonlab train --resume` runs, so that a resume names only
    what it changes (`train(resume_config(out, steps=1600))` continues a run exactly).
    `model_config` in `changes` must agree with the checkpoint's sizes: a resume keeps
    the model it loads, so a size it cannot honour is an error, not silently dropped."""
    path = Path(out) / CHECKPOINT_NAME
    ckpt = load_checkpoint(path, expect_kind=changes.get("model"))
    sizes = changes.pop("model_config", None) or {}
    foreign = [k for k in sizes if k not in ckpt["config"]]
    if foreign:
        raise ValueError(f"{', '.join(foreign)} does not apply to the {ckpt['kind']!r} model in {path}")
    clash = {k: v for k, v in sizes.items() if ckpt["config"][k] != v}
    if clash:
        have = ", ".join(f"{k}={ckpt['config'][k]!r}" for k in clash)
        raise ValueError(f"{path} holds a model with {have}; a resume keeps the checkpoint's model settings, "
                         f"so {', '.join(f'{k}={v!r}' for k, v in clash.items())} cannot apply (leave it out, "
                         f"or train anew in another out folder)")
    known = TrainConfig.__dataclass_fields__
    saved = {k: v for k, v in ckpt.get("train_config", {}).items() if k in known}
    data = saved.get("data")
    if "data" not in changes and data and not Path(data).is_file():
        raise FileNotFoundError(f"{data}, the file {path} was trained on, is not there; pass its new place "
                                f"(--data FILE, data=...)")
    return TrainConfig(**{**saved, "model": ckpt["kind"], **changes, "out": str(out), "resume": True})


def evaluate(model, data: torch.Tensor, batch: int, seq: int) -> float:
    """Bits per character over `data` in non-overlapping windows of `seq` (each window
    starts from an empty state/context), in eval mode; the model's mode is restored."""
    total, count = _eval_sums(model, data, batch, seq)
    return total / count / math.log(2)


def _check_amp(amp: bool, device: torch.device) -> None:
    """bfloat16 needs compute capability 8.0 (Ampere) or newer: torch.cuda.is_bf16_supported()
    also says yes where bfloat16 is only emulated (V100, T4), far slower than float32."""
    if not amp or device.type != "cuda":
        return
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        raise ValueError(f"amp trains in bfloat16, which {torch.cuda.get_device_name(device)} (compute "
                         f"capability {major}.{minor}) does not support natively; train without amp")


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)


@torch.no_grad()
def _eval_sums(model, data: torch.Tensor, batch: int, seq: int, rank: int = 0, world: int = 1,
               amp: bool = False):
    """(summed cross-entropy in nats, number of targets) over this rank's share of the
    evaluation batches: batch i belongs to rank i % world; under bfloat16 autocast with amp."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i, (x, y) in enumerate(iter_batches(data, batch, min(seq, len(data) - 1))):
        if i % world != rank:
            continue
        with _autocast(data.device, amp):
            logits = model(x)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                     reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total, count


def save_checkpoint(path, model, vocab: Vocab, optimizer, losses, val, batches: torch.Generator,
                    cfg: TrainConfig, rank_rng: list | None = None, order0: float | None = None) -> None:
    """Write the checkpoint to a temporary file beside `path`, then rename it over
    `path` (os.replace is atomic): a crash mid-write leaves the previous one intact.
    `rank_rng` is every rank's random state in a data-parallel run (see `_gather_rng`);
    a DDP-wrapped model is stored unwrapped, so any run loads it. `order0`: the training
    data's order-0 baseline in bits per character, which `tritonlab viz` draws."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(model, DistributedDataParallel):
        model = model.module
    rng = {"torch": torch.get_rng_state(), "batches": batches.get_state()}
    if rank_rng is not None:
        rng["ranks"] = rank_rng
    elif torch.cuda.is_available() and torch.cuda.is_initialized():
        # One process: every device's state. (A DDP rank must not touch other ranks' GPUs.)
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {
        "format": _FORMAT, "kind": model.kind, "config": dict(model.config),
        "model": model.state_dict(), "vocab": list(vocab.itos), "optimizer": optimizer.state_dict(),
        "step": len(losses), "losses": list(losses), "val": [list(v) for v in val],
        "rng": rng, "train_config": {k: v for k, v in asdict(cfg).items() if k not in ("progress", "overwrite")},
        "world_size": len(rank_rng) if rank_rng is not None else 1, "order0": order0,
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
        # torch's own message advises loading with weights_only=False, which would run
        # code from the file: not advice to pass on for a file that is no checkpoint
        raise ValueError(f"{path} is not a readable tritonlab checkpoint (torch.load: {type(e).__name__}; "
                         "not a torch file, a truncated one, or one holding more than tensors)") from None
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
    receptive field of ids, the transformer its last `context` ids (its training length)."""
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


def _join_group(cfg: TrainConfig) -> tuple[_Group, torch.device]:
    """This process's group and device: torchrun's environment (WORLD_SIZE, RANK,
    LOCAL_RANK) or an already initialised group; a plain run without either."""
    device = torch.device(cfg.device)
    if dist.is_available() and dist.is_initialized():
        group = _Group(dist.get_rank(), dist.get_world_size())
    else:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        group = _Group(int(os.environ.get("RANK", "0")), world, owned=world > 1)
    if group.world == 1:
        return group, device
    if cfg.batch % group.world:
        raise ValueError(
            f"batch is the global batch, split evenly over the {group.world} processes, so it must be a "
            f"multiple of {group.world}; got batch {cfg.batch}")
    if device.type == "cuda":
        if device.index is not None:
            raise ValueError(f"under torchrun each process takes the GPU cuda:LOCAL_RANK; pass device 'cuda', "
                             f"got {cfg.device!r}")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", group.rank)))
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"data-parallel training runs on 'cpu' (gloo) or 'cuda' (NCCL), got {cfg.device!r}")
    if group.owned:
        if not dist.is_available():
            raise ValueError("WORLD_SIZE > 1 asks for data-parallel training, but this torch build has no "
                             "torch.distributed")
        # Its functions default to `group=group.WORLD`, evaluated at import; imported after
        # init (DDP does, through torch._dynamo) they pin the group, destroy_process_group
        # cannot free it, and gloo's threads outlive Python: an occasional abort at exit.
        from torch.distributed.nn import functional  # noqa: F401
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return group, device


def _global_mean(loss: torch.Tensor, group: _Group) -> float:
    """The mean over the global batch of the per-rank means (equal shares)."""
    if group.world == 1:
        return loss.item()
    total = loss.detach().clone()
    dist.all_reduce(total)
    return total.item() / group.world


def _gather_rng(device: torch.device) -> list[dict]:
    """Every rank's torch (and own-GPU) random state, in rank order (a collective)."""
    mine = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, mine)
    return states


def _rank_seed(seed: int, rank: int, step: int) -> int:
    """A seed for a rank's dropout stream that no other rank or resume point shares."""
    return ((seed * 1_000_003 + rank) * 1_000_003 + step) % 2**63


def _set_rng(rng: dict, batches: torch.Generator, group: _Group, device: torch.device, reseed: int) -> None:
    """Restore the random state a checkpoint saved for this rank; a rank the writing run
    did not have (it had fewer processes) seeds its dropout stream with `reseed`."""
    batches.set_state(rng["batches"])
    if "ranks" not in rng:  # written by one process
        if group.rank:
            torch.manual_seed(reseed)
            return
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available() and group.world == 1:
            torch.cuda.set_rng_state_all(rng["cuda"])
        return
    if group.rank >= len(rng["ranks"]):
        torch.manual_seed(reseed)
        return
    mine = rng["ranks"][group.rank]
    torch.set_rng_state(mine["torch"])
    if "cuda" in mine and device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda"], device)


def _progress(cfg: TrainConfig, start: int):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.model}", unit="step")
