"""The training step benchmarked: torch.nn against the swapped lab layers, per model.

    df = run_training("cuda", torch.float32)        # one row per model x provider
    print(training_markdown(df))                     # the report's "Training step" section

Providers: `torch` is the char model (`tritonlab.models.build_model`) turned back into
torch.nn modules by `tritonlab.unswap` (cuDNN/cuBLAS on a GPU, oneDNN/ATen on CPU);
`swapped-<tier>` is a deep copy of that same model put through `tritonlab.swap(model,
backend=<tier>)`, so every provider starts from the same weights. On a GPU the tiers
are triton and reference, on CPU reference only (the triton tier would run under the
interpreter, which is never timed).

One timed step is what `tritonlab train` does per batch: forward, cross-entropy,
backward, gradient clipping, AdamW step. Before timing, each provider trains `steps`
steps on the same genome batches (compilation, autotuning and allocator warm-up happen
there); the last of those losses is `loss_after`, a sanity check that every provider
trained the same model alike (not equally: the lab's dropout draws other masks than
torch.nn's). A provider in whose warm-up a parameter got no gradient or never moved
fails its row instead of being timed. The timed step then repeats on one fixed batch. Peak
memory is measured over one separate step (do_bench's L2-flush buffer would otherwise
count): the model, its gradients, AdamW's state and the step's activations.
"""
from __future__ import annotations

import copy

import pandas as pd
import torch
from torch.nn import functional as F

from ..swap import swap, unswap
from ..data import Vocab, default_genome_path, get_batch, load_sequence
from ..models import MODEL_KINDS, build_model
from ..backend import same_tf32, tf32_enabled
from ..train import TrainConfig
from . import runner
from .report import _fmt, _table
from .runner import common_columns
from .timing import peak_mb, refuse_interpreter, time_fn

PROVIDERS = {"cuda": ("torch", "swapped-triton", "swapped-reference"), "cpu": ("torch", "swapped-reference")}
# (batch, seq) and model sizes per device (RNNs, CNN, transformer: its context is the seq);
# quick: a smoke run
SIZES = {
    ("cuda", False): ((64, 256), {"embed": 32, "hidden": 256, "layers": 2}, {"embed": 32, "channels": 256},
                      {"embed": 256, "heads": 4, "hidden": 1024, "layers": 2, "context": 256}),
    ("cuda", True): ((32, 128), {"embed": 16, "hidden": 128, "layers": 1}, {"embed": 16, "channels": 128},
                     {"embed": 128, "heads": 2, "hidden": 256, "layers": 1, "context": 128}),
    ("cpu", False): ((16, 64), {"embed": 16, "hidden": 64, "layers": 1}, {"embed": 16, "channels": 64},
                     {"embed": 32, "heads": 2, "hidden": 64, "layers": 1, "context": 64}),
    ("cpu", True): ((4, 32), {"embed": 8, "hidden": 16, "layers": 1}, {"embed": 8, "channels": 16},
                    {"embed": 16, "heads": 2, "hidden": 32, "layers": 1, "context": 32}),
}
COLUMNS = ["model", "config", "params", "provider", "batch", "seq", "ms_p50", "ms_p20", "ms_p80", "bases_per_s", "peak_mem_mb",
           "loss_after", "speedup_vs_torch", "status"]


def run_training(device=None, dtype=torch.float32, models=MODEL_KINDS, steps: int | None = None,
                 quick: bool = False, time_budget_s: float | None = None,
                 started: float | None = None, tf32: bool | None = None) -> pd.DataFrame:
    """One row per model x provider (see the module docstring) with COLUMNS and
    runner.common_columns. `steps`: training steps before timing (default 20, 5 if
    quick). A provider that raises gets a row whose status names the error.
    `time_budget_s`, counted from the runner._clock() reading `started` (default: this
    call; `tritonlab bench` passes its own start): once spent, no provider starts and
    the rows left say so; after an interrupt (KeyboardInterrupt) they say
    runner.INTERRUPTED. `tf32`: as in runner.run. Without the genome (an installed
    wheel has no data/) every row is skipped and says why."""
    refuse_interpreter()
    started = runner._clock() if started is None else started
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    models = (models,) if isinstance(models, str) else tuple(models)
    _check(device, dtype, models)
    steps = (5 if quick else 20) if steps is None else steps
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    (batch, seq), rnn_sizes, cnn_sizes, transformer_sizes = SIZES[(device.type, quick)]
    sizes = {kind: {"cnn": cnn_sizes, "transformer": transformer_sizes}.get(kind, rnn_sizes) for kind in models}
    vocab = Vocab.dna()
    setting = tf32_enabled() if tf32 is None else tf32
    with same_tf32(setting):  # the CNN's convolutions too; the rows' tf32 column reads it
        common = common_columns(device, dtype)
        path = default_genome_path()
        if not path.is_file():  # an installed wheel carries no data/: the op rows still get their report
            configs = {kind: _config(build_model(kind, vocab_size=len(vocab), **sizes[kind])) for kind in models}
            return _derive(pd.DataFrame([{"model": kind, "provider": provider, "config": configs[kind],
                                          "batch": batch, "seq": seq, **common,
                                          "status": f"skipped: no training data ({path} is absent)"}
                                         for kind in models for provider in PROVIDERS[device.type]]))
        ids = vocab.encode(load_sequence(path)).to(device)
        budget = 0.2 if quick else 0.5
        rows = []
        stop = None  # runner.INTERRUPTED once an interrupt came: every row left says so
        for kind in models:
            torch.manual_seed(0)
            base = build_model(kind, vocab_size=len(vocab), **sizes[kind])
            unswap(base)  # torch.nn modules with the lab's initialisation
            base = base.to(device=device, dtype=dtype)
            params = sum(p.numel() for p in base.parameters())
            for provider in PROVIDERS[device.type]:
                row = {"model": kind, "config": _config(base), "params": params, "provider": provider,
                       "batch": batch, "seq": seq, **common}
                row["status"] = stop or runner.budget_spent(started, time_budget_s)
                if row["status"]:
                    rows.append(row)
                    continue
                try:
                    row.update(_bench(_provider_model(base, provider), ids, batch, seq, steps, device, budget))
                    row["status"] = "ok"
                except KeyboardInterrupt:  # as runner.run: the rows timed are kept
                    stop = row["status"] = runner.INTERRUPTED
                except Exception as e:  # recorded, so one broken provider does not end the run
                    msg = str(e).strip().split("\n")[0][:200]
                    row["status"] = f"failed: {type(e).__name__}: {msg}"
                rows.append(row)
    return _derive(pd.DataFrame(rows))


def _check(device: torch.device, dtype, models: tuple) -> None:
    if device.type not in PROVIDERS:
        raise ValueError(f"device must be cuda or cpu, got {device}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if not models or any(m not in MODEL_KINDS for m in models):
        raise ValueError(f"models must be a non-empty list of {MODEL_KINDS}, got {list(models)}")


def _config(model) -> str:
    """The built model's settings (its `config`, as build_model takes them) but the
    vocabulary, e.g. "embed=16 hidden=64 layers=1 dropout=0.2"."""
    return " ".join(f"{k}={v}" for k, v in model.config.items() if k != "vocab_size")


def _provider_model(base, provider: str):
    model = copy.deepcopy(base)
    if provider == "torch":
        for m in model.modules():
            if isinstance(m, torch.nn.RNNBase):  # the copy's weights are separate tensors: one cuDNN chunk again
                m.flatten_parameters()
    else:
        report = swap(model, backend=provider.removeprefix("swapped-"))
        if not report.changed:
            raise RuntimeError(f"{provider}: swap changed nothing\n{report}")
    return model


def _bench(model, ids, batch: int, seq: int, steps: int, device, budget: float) -> dict:
    cfg = TrainConfig()  # the learning rate, weight decay and clipping of `tritonlab train`
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # dropout
    model.train()

    def step(x, y) -> torch.Tensor:
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        optimizer.step()
        return loss

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for _ in range(steps):
        loss = step(*get_batch(ids, batch, seq, generator=batches))
    loss_after = loss.item()
    _check_trains(model, before)
    del before
    x, y = get_batch(ids, batch, seq, generator=batches)
    peak = peak_mb(lambda: step(x, y), device)
    p50, p20, p80 = time_fn(lambda: step(x, y), device, budget)
    return {"ms_p50": p50, "ms_p20": p20, "ms_p80": p80, "peak_mem_mb": peak, "loss_after": loss_after}


def _check_trains(model, before: dict) -> None:
    """Raise unless every parameter got a gradient in the last warm-up step and moved
    since the first: a layer that computes with a copy of its weights, or a backward
    that returns zeros, would otherwise be timed as a fast provider (AdamW's weight
    decay moves even a parameter without a gradient, hence both checks)."""
    params = dict(model.named_parameters())
    no_grad = [n for n, p in params.items() if p.grad is None or not p.grad.any()]
    still = [n for n, p in params.items() if torch.equal(p.detach(), before[n])]
    for what, names in (("got no gradient", no_grad), ("never moved", still)):
        if names:
            raise RuntimeError(f"{len(names)} of {len(params)} parameters {what} in training: "
                               + ", ".join(names[:4]) + (", ..." if len(names) > 4 else ""))


def _derive(df: pd.DataFrame) -> pd.DataFrame:
    for col in ("params", "ms_p50", "ms_p20", "ms_p80", "peak_mem_mb", "loss_after"):
        if col not in df:
            df[col] = float("nan")
    df["bases_per_s"] = df["batch"] * df["seq"] / (df["ms_p50"] * 1e-3)
    torch_ms = df[df["provider"] == "torch"].set_index("model")["ms_p50"]
    df["speedup_vs_torch"] = df["model"].map(torch_ms) / df["ms_p50"]
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


def training_markdown(df: pd.DataFrame) -> str:
    """The report section: each model's size, then per model and provider the step time,
    bases/s, peak memory, speed-up vs torch.nn and the loss after the warm-up steps."""
    if df.empty:
        return "## Training step\n\nNo rows."
    first = df.iloc[0]
    out = ["## Training step", "",
           f"One `tritonlab train` step (forward, cross-entropy, backward, clip, AdamW) of the char models "
           f"on {first['device']}, {first['dtype']}, batch {first['batch']} × {first['seq']} bases: `torch` is "
           "the model with torch.nn layers, `swapped-<tier>` the same weights after `tritonlab.swap(model, "
           "backend=<tier>)`. ms is the median step (p20–p80); ×torch is torch's time over the provider's; "
           "peak memory is measured on a GPU only; loss after is the last of the warm-up steps, on the "
           "same batches for every provider (dropout masks differ between torch.nn and the lab).", ""]
    if "config" in df:  # reports written before the sizes were recorded lack them
        sizes = df.drop_duplicates("model")
        out += ["Models (their `build_model` settings; a transformer's context is the `--seq` of `tritonlab "
                "train`): " + "; ".join(
            f"{r['model']} {r['config']}" + (f" ({int(r['params']):,} parameters)" if pd.notna(r.get("params"))
                                             else "") for _, r in sizes.iterrows()) + ".", ""]
    rows = []
    for _, r in df.iterrows():
        ok = r["status"] == "ok"
        rows.append([r["model"], r["provider"],
                     f"{r['ms_p50']:.2f} ({r['ms_p20']:.2f}–{r['ms_p80']:.2f})" if ok else r["status"],
                     _fmt(r["bases_per_s"], ",.0f") if ok else "", _fmt(r["peak_mem_mb"], ".0f") if ok else "",
                     _fmt(r["speedup_vs_torch"], ".2f") if ok else "", _fmt(r["loss_after"], ".4f") if ok else ""])
    out.append(_table(["model", "provider", "ms", "bases/s", "peak MiB", "×torch", "loss after"], rows))
    return "\n".join(out)
