"""The `tritonlab` command (also `python -m tritonlab`)."""
from __future__ import annotations

import argparse
import datetime
import re
import sys
from pathlib import Path

DTYPES = ("float32", "float64", "float16", "bfloat16")


def _default_out(device_name: str) -> Path:
    """out/<device>-<date>, or -2, -3, ... after it when an earlier run took that name."""
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")[:40]
    base = Path("out") / f"{slug}-{datetime.date.today().isoformat()}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _seconds(text: str) -> float:
    """argparse type: a number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _device_problem(device: str, backend: str | None) -> str | None:
    """Why `device` and `backend` cannot run here, in one line; None when they can."""
    import torch

    from .backend import interpreter_enabled, triton_available

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device!r} is not a device; expected cpu, cuda or cuda:N"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device} asked for, but torch sees no CUDA device (use --device cpu)"
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        return f"--device {device} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)"
    if dev.type not in ("cpu", "cuda"):
        return f"--device {device}: expected cpu, cuda or cuda:N"
    if backend == "triton" and not triton_available():
        return "--backend triton needs the triton package (pip install triton)"
    if backend == "triton" and dev.type == "cpu" and not interpreter_enabled():
        return ("--backend triton on the CPU runs Triton's interpreter: set TRITON_INTERPRET=1 before the "
                "command (slow; meant for tests), or use --device cuda")
    return None


def _print_table(df) -> None:
    import pandas as pd

    print(f"\nmedian ms on {df['device'].iloc[0]}, {df['dtype'].iloc[0]} (– = not run; see summary.md for why)")
    if df["ms_p50"].isna().all():
        print(f"nothing was timed: {df['status'].iloc[0]}" if len(df) else "nothing was timed")
        return
    table = df.pivot_table(index=["op", "case", "mode"], columns="provider", values="ms_p50", sort=False,
                           dropna=False)  # an op nothing of which was timed keeps its rows ...
    table = table.loc[pd.MultiIndex.from_frame(df[["op", "case", "mode"]].drop_duplicates())]  # ... its own only
    table = table[[p for p in df["provider"].unique() if p in table.columns]]
    print(table.to_string(float_format=lambda v: f"{v:.3f}", na_rep="–"))


def _compare(paths: list[str]) -> int:
    from .bench.convert import compare

    if len(paths) != 2:
        print("usage: tritonlab bench compare A.csv B.csv", file=sys.stderr)
        return 2
    try:
        both = compare(*paths)
    except (OSError, ValueError) as e:
        print(e, file=sys.stderr)
        return 2
    if both.empty:
        if both.attrs.get("note"):  # e.g. each row timed in one run only, and why not in the other
            print(both.attrs["note"].rstrip(), file=sys.stderr)
        print(f"no row was timed in both {paths[0]} and {paths[1]} (rows match on op, case, mode and provider)",
              file=sys.stderr)
        return 1
    print(f"ratio = time in {paths[0]} / time in {paths[1]} (above 1: the second is faster)")
    if both.attrs.get("note"):
        print(both.attrs["note"].rstrip())
    print(both.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def _writable(out: Path) -> bool:
    """Whether the report can go to `out` (created if need be); if not, says why in one line."""
    from .bench.report import prepare

    try:
        prepare(out)
    except OSError as e:
        print(f"bad --out: {e}", file=sys.stderr)
        return False
    return True


# what chooses the work of a run: refused with --from-pytest-json, whose runs are made
_RUN_ONLY = ("ops", "dtype", "device", "providers", "modes", "quick", "full", "no_training", "time_budget", "tf32")


def _given(args, names) -> list[str]:
    """The options among `names` that the command line set (not left at their defaults:
    None, or False for a switch; --no-tf32 stores False, and its default is None)."""
    return [f"--{'no-' if k == 'tf32' and v is False else ''}{k.replace('_', '-')}" for k, v in vars(args).items()
            if k in names and v is not None and (v is not False or k == "tf32")]  # 0 s is a budget: `is not`


def _bench(args) -> int:
    if args.action:
        if args.action[0] != "compare":
            print(f"unknown bench action {args.action[0]!r}; did you mean `tritonlab bench compare A.csv B.csv`?",
                  file=sys.stderr)
            return 2
        given = _given(args, (*_RUN_ONLY, "out", "from_pytest_json"))
        if given:
            print(f"bench compare reads two results.csv files and writes nothing, so {', '.join(given)} would be "
                  "ignored", file=sys.stderr)
            return 2
        return _compare(args.action[1:])
    if args.out is not None and not args.out.strip():
        print("--out is empty; give a folder, or leave it out for out/<device>-<date>", file=sys.stderr)
        return 2

    import torch

    from .backend import interpreter_enabled
    from .bench import autotune, report, runner
    from .bench.ops import OPS

    training, interrupted = None, False
    if args.from_pytest_json:
        given = _given(args, _RUN_ONLY)
        if given:
            print(f"--from-pytest-json reports the runs in the file as they are, so {', '.join(given)} would be "
                  "ignored; choose what the suite runs with its --bench-* options and -k", file=sys.stderr)
            return 2
        from .bench.convert import from_pytest_json
        try:
            df, limits = from_pytest_json(args.from_pytest_json)
        except (OSError, ValueError, KeyError) as e:
            print(f"cannot read {args.from_pytest_json} as a pytest-benchmark JSON of benchmarks/: {e}",
                  file=sys.stderr)
            return 2
        out = Path(args.out) if args.out else _default_out(df["device"].iloc[0])
        if not _writable(out):
            return 2
    else:
        unknown = sorted(set(args.ops or ()) - set(OPS))
        if unknown:
            print(f"unknown op(s) {unknown}; choose from {sorted(OPS)}", file=sys.stderr)
            return 2
        if args.quick and args.full:
            print("--quick (one small case per op) and --full (every case) exclude each other; pick one",
                  file=sys.stderr)
            return 2
        if interpreter_enabled():
            print("TRITON_INTERPRET is set, so Triton kernels would run in its CPU interpreter, which is for "
                  "tests and never timed; run the benchmark without it (env -u TRITON_INTERPRET tritonlab bench ...)",
                  file=sys.stderr)
            return 2
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        problem = _device_problem(str(device), None)
        if problem:
            print(problem, file=sys.stderr)
            return 2
        out = Path(args.out) if args.out else _default_out(runner.device_name(device))
        if not _writable(out):  # before the run, not after minutes of it
            return 2
        dtype = getattr(torch, args.dtype or "float32")
        if args.tf32 is not None and (device.type != "cuda" or dtype != torch.float32):
            print(f"note: --{'' if args.tf32 else 'no-'}tf32 changes nothing here: TF32 is for float32 on a GPU",
                  file=sys.stderr)
        started = runner._clock()  # the budget's start, for the training step too
        df, limits = runner.run(args.ops, dtype, device, args.quick,
                                providers=args.providers, modes=args.modes, full=args.full,
                                time_budget_s=args.time_budget, tf32=args.tf32, started=started)
        interrupted = (df["status"] == runner.INTERRUPTED).any()
        if not (args.ops or args.no_training or interrupted):  # a whole run also times the training step
            from .bench.training import run_training
            report.write(df, limits, out, draw=False)  # the op rows kept, whatever the training step meets
            training = run_training(device, dtype, quick=args.quick, time_budget_s=args.time_budget,
                                    started=started, tf32=args.tf32)
            interrupted = (training["status"] == runner.INTERRUPTED).any()
    source = (f"These rows come from pytest-benchmark ({args.from_pytest_json}): only the tests that ran, timed by "
              "its wall clock, each GPU call ending with a synchronize." if args.from_pytest_json else "")
    files = report.write(df, limits, out, training, None if args.from_pytest_json else autotune.winners(),
                         source=source)
    _print_table(df)
    if training is not None:
        print(training.to_string(index=False, columns=["model", "provider", "ms_p50", "bases_per_s", "speedup_vs_torch",
                                                       "status"], float_format=lambda v: f"{v:.3f}"))
    plots = len(files["plots"])
    print(f"\nwrote {', '.join(str(f) for k, f in files.items() if k != 'plots')} and {plots} "
          f"plot{'' if plots == 1 else 's'} in {out}")
    if interrupted:
        print("tritonlab bench: interrupted; the report holds the rows timed before it", file=sys.stderr)
        return 130
    return 0


# the training options that default to the checkpoint's with --resume, TrainConfig's otherwise
_SETTINGS = ("model", "data", "steps", "batch", "seq", "lr", "eval_every", "alphabet", "unknown", "device",
             "backend", "amp", "seed")
# the model options that only some kinds take
_APPLIES = {"hidden": ("lstm", "gru", "transformer"), "channels": ("cnn",), "heads": ("transformer",),
            "positions": ("transformer",)}


def _train(args) -> int:
    import warnings

    from .train import TrainConfig, load_checkpoint, resume_config, train

    sizes = {k: v for k, v in (("embed", args.embed), ("hidden", args.hidden), ("channels", args.channels),
                               ("layers", args.layers), ("dropout", args.dropout), ("heads", args.heads),
                               ("positions", args.positions)) if v is not None}
    model = args.model or "lstm"
    wrong = [k for k in sizes if model not in _APPLIES.get(k, (model,))]
    if wrong and not args.resume:  # a resume checks sizes against the checkpoint's own
        print(f"--{wrong[0]} does not apply to --model {model}", file=sys.stderr)
        return 2
    # only what the command line names: a resume takes the rest from the checkpoint
    given = {k: getattr(args, k) for k in _SETTINGS if getattr(args, k) is not None}
    out = Path(args.out or Path("out") / f"train-{model}")
    with warnings.catch_warnings():
        # a warning is one line of the command's own, not a Python source location
        warnings.showwarning = lambda message, *_, **__: print(
            f"tritonlab train: warning: {message}", file=sys.stderr)
        try:
            if args.resume:
                cfg = resume_config(out, model_config=sizes, **given)
            else:
                cfg = TrainConfig(**given, out=args.out, model_config=sizes, overwrite=args.overwrite)
            problem = _device_problem(cfg.device, cfg.backend)
            if problem:
                from_checkpoint = args.resume and not (args.device or args.backend)
                raise ValueError(problem + (" (the checkpoint's setting)" if from_checkpoint else ""))
            result = train(cfg)
        except KeyboardInterrupt:
            try:
                saved = f"{out / 'checkpoint.pt'} holds step {load_checkpoint(out / 'checkpoint.pt')['step']}: " \
                        f"continue with --resume"
            except (OSError, ValueError):
                saved = "no checkpoint was written yet (one is, every --eval-every steps)"
            print(f"tritonlab train: interrupted; {saved}", file=sys.stderr)
            return 130
        except (OSError, ValueError) as e:
            hint = " (pass --model KIND or --out DIR)" if args.resume and not (args.out or args.model) \
                and isinstance(e, FileNotFoundError) and not out.exists() else ""
            print(f"tritonlab train: {e}{hint}", file=sys.stderr)
            return 2
    if result["rank"] != 0:  # under torchrun every rank holds the same result; one prints it
        return 0
    step, bpb = result["val"][-1]
    print(f"step {step}: validation {bpb:.4f} bits per base (order-0 baseline, the training part's "
          f"base frequencies: {result['order0']:.4f}); {result['seconds']:.1f} s; "
          f"checkpoint {result['checkpoint']}")
    return 0


def _sample(args) -> int:
    from .train import load_model, sample

    problem = _device_problem(args.device, args.backend)
    if problem:
        print(f"tritonlab sample: {problem}", file=sys.stderr)
        return 2
    try:
        model, vocab, _ = load_model(args.checkpoint, device=args.device, backend=args.backend)
        prime = args.prime if args.prime is not None else vocab.itos[0]
        if "".join(vocab.itos) == "ACGT":  # DNA is read in any case, so a prime may be too
            prime = prime.upper()
        text = sample(model, vocab, prime, args.length, temperature=args.temperature, seed=args.seed)
    except (OSError, ValueError) as e:
        print(f"tritonlab sample: {e}", file=sys.stderr)
        return 2
    print(prime + text)
    return 0


def _viz(args) -> int:
    from .viz import visualize

    out = args.out or Path(args.checkpoint).parent / "viz"
    problem = _device_problem(args.device, args.backend)
    if problem:
        print(f"tritonlab viz: {problem}", file=sys.stderr)
        return 2
    try:
        paths = visualize(args.checkpoint, out, data=args.data, length=args.length, start=args.start,
                          device=args.device, backend=args.backend)
    except (OSError, ValueError) as e:
        print(f"tritonlab viz: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


def _add_model_parsers(sub) -> None:
    from .backend import BACKENDS
    from .models import MODEL_KINDS

    t = sub.add_parser("train", help="train a char-level LSTM/GRU/CNN/transformer on a FASTA or text file",
                       description="Train a char-level model (AdamW, gradient clipping), report validation "
                                   "bits per base and keep an atomically written checkpoint in --out.")
    # The settings default to None: TrainConfig's default for a new run, the checkpoint's on --resume
    t.add_argument("--model", choices=MODEL_KINDS, help="default: lstm")
    t.add_argument("--data", help="FASTA file, or a text file with --alphabet chars (default: the chloroplast "
                                  "genome in data/)")
    t.add_argument("--steps", type=int, help="total steps (default: 800; with --resume: up to this step, by "
                                             "default the checkpoint's own target)")
    t.add_argument("--batch", type=int, help="default: 64")
    t.add_argument("--seq", type=int,
                   help="bases per training window (default: 128; for a new transformer also its context, "
                        "the longest window)")
    t.add_argument("--lr", type=float, help="default: 3e-3")
    t.add_argument("--eval-every", type=int, help="validate and checkpoint every N steps (default: 500)")
    t.add_argument("--alphabet", choices=("dna", "chars"), help="default: dna")
    t.add_argument("--unknown", choices=("error", "drop", "map"),
                   help="letters that are not A/C/G/T (dna alphabet; default: error)")
    t.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cpu)")
    t.add_argument("--backend", choices=BACKENDS, help="tier for every layer (default: the global auto)")
    t.add_argument("--amp", action=argparse.BooleanOptionalAction,
                   help="mixed precision: forward and loss under torch.autocast in bfloat16, float32 weights")
    t.add_argument("--seed", type=int, help="default: 0")
    t.add_argument("--out", help="folder for checkpoint.pt (default: out/train-<model>)")
    t.add_argument("--overwrite", action="store_true",
                   help="start anew in an --out that holds a checkpoint (refused without it or --resume)")
    t.add_argument("--resume", action="store_true",
                   help="continue from --out's checkpoint.pt with its settings, except those given here "
                        "(a changed batch, lr, ... applies, with a warning; sizes cannot change)")
    # the model's settings (fixed for a run: a resume takes the checkpoint's); defaults per models.py
    t.add_argument("--embed", type=int, help="embedding width (default: 16; transformer 64)")
    t.add_argument("--hidden", type=int, help="LSTM/GRU hidden size (default: 64); the transformer's MLP width "
                                              "(default: 256)")
    t.add_argument("--channels", type=int, help="CNN channels (default: 64)")
    t.add_argument("--heads", type=int, help="transformer attention heads (default: 4; --embed must be a multiple)")
    t.add_argument("--positions", choices=("learned", "sinusoidal"),
                   help="transformer position encoding (default: learned)")
    t.add_argument("--layers", type=int, help="layers (default: LSTM/GRU 1, CNN 3, transformer 2)")
    t.add_argument("--dropout", type=float, help="dropout probability (default: 0.2; transformer 0.1)")
    t.set_defaults(run=_train)

    s = sub.add_parser("sample", help="draw text from a trained checkpoint",
                       description="Print PRIME followed by LENGTH characters drawn from the model.")
    s.add_argument("checkpoint")
    s.add_argument("--prime", help="text to start from (default: the vocabulary's first character)")
    s.add_argument("--length", type=int, default=200)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--seed", type=int)
    s.add_argument("--device", default="cpu")
    s.add_argument("--backend", choices=BACKENDS)
    s.set_defaults(run=_sample)

    v = sub.add_parser("viz", help="draw PNGs of a trained checkpoint: learning curve, hidden state, gates, "
                                   "feature maps",
                       description="Write losses.png (training and validation bits per base against the "
                                   "order-0 baseline) and, over a validation window, hidden.png and "
                                   "gates_l<k>.png (LSTM/GRU) or features.png (CNN); print their paths.")
    v.add_argument("checkpoint")
    v.add_argument("--out", help="folder for the PNGs (default: viz/ beside the checkpoint)")
    v.add_argument("--data", help="FASTA or text file (default: the checkpoint's training data, else the "
                                  "genome in data/)")
    v.add_argument("--length", type=int, help="bases shown (1 to 400; default: 100, or a transformer's context if "
                                               "shorter)")
    v.add_argument("--start", type=int, default=0, help="first base shown, counted from the start of the "
                                                         "validation part")
    v.add_argument("--device", default="cpu")
    v.add_argument("--backend", choices=BACKENDS)
    v.set_defaults(run=_viz)


def main(argv: list[str] | None = None) -> int:
    from .bench.providers import BASE
    from .bench.runner import MODES

    parser = argparse.ArgumentParser(prog="tritonlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser(
        "bench", help="time every tier against torch.nn and the device's limits",
        description="Time every tier against torch.nn and the device's limits and write results.csv, "
                    "summary.md and plots. `tritonlab bench compare A.csv B.csv` prints per-row ratios "
                    "of two runs.")
    bench.add_argument("action", nargs="*", help="`compare A.csv B.csv`, or nothing to run the benchmark")
    bench.add_argument("--ops", nargs="+", metavar="OP", help="ops to run (default: all)")
    bench.add_argument("--dtype", choices=DTYPES, help="default: float32")
    bench.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when there is one")
    bench.add_argument("--providers", nargs="+", choices=BASE, metavar="P",
                       help=f"of {', '.join(BASE)} (default: all but compile, which runs when named; "
                            "no graph on a CPU)")
    bench.add_argument("--modes", nargs="+", choices=MODES, metavar="M",
                       help=f"of {', '.join(MODES)} (default: all; fwd and fwd+bwd with --quick)")
    bench.add_argument("--quick", action="store_true", help="one small case per op")
    bench.add_argument("--full", action="store_true",
                       help="every case (on a GPU: all ResNet-50 layers in both layouts, every RNN size, ...)")
    bench.add_argument("--no-training", action="store_true",
                       help="skip the training-step benchmark of the char models (skipped anyway with --ops)")
    bench.add_argument("--time-budget", type=_seconds, metavar="SECONDS",
                       help="start no new case after this long, counted from the start (the ceilings' "
                            "measurement included); the rest are recorded as skipped, the training-step "
                            "benchmark too: a report even under a hard time limit")
    bench.add_argument("--tf32", action=argparse.BooleanOptionalAction,
                       help="float32 on a GPU: TF32 on (--tf32) or off (--no-tf32) for every provider, "
                            "convolutions and cuDNN's RNNs too (default: torch's setting for float32 matmuls, "
                            "off unless changed)")
    bench.add_argument("--out", help="output folder, new or holding an earlier report, which is replaced "
                                     "(default: out/<device>-<date>)")
    bench.add_argument("--from-pytest-json", metavar="FILE",
                       help="write the report from `pytest benchmarks/ --benchmark-json FILE` instead of running; "
                            "takes --out only (what runs is chosen by the suite's --bench-* options and -k)")
    bench.set_defaults(run=_bench)
    _add_model_parsers(sub)
    args = parser.parse_args(argv)
    return args.run(args)
