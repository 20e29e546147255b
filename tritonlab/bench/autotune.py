"""Which config each autotuned kernel picked in this process, for the report.

Triton's autotuner keeps its choice per key in `Autotuner.cache`: the key arguments'
values, then every tensor argument's dtype. Naming the winners beside the timings shows
where a kernel's config list is thin (one config winning everywhere, or always the
largest), which a GPU run's timings alone do not say. Under the interpreter the
kernels take fixed configs and nothing is tuned, so the table is empty there.
"""
from __future__ import annotations

import sys

import pandas as pd

COLUMNS = ["kernel", "key", "dtypes", "config", "num_warps", "num_stages"]


def tuned_kernels() -> dict[str, object]:
    """{"module.name": Autotuner} for every autotuned kernel of the tritonlab.kernels
    modules imported so far: one never imported tuned nothing (and importing it here
    would decorate its kernels for whatever TRITON_INTERPRET says now). Empty without
    triton."""
    try:
        from triton.runtime.autotuner import Autotuner
    except ImportError:
        return {}
    prefix = f"{__package__.rpartition('.')[0]}.kernels."
    return {f"{name.removeprefix(prefix)}.{attr}": obj
            for name, module in sorted(sys.modules.items()) if name.startswith(prefix)
            for attr, obj in vars(module).items() if isinstance(obj, Autotuner)}


def winners() -> pd.DataFrame:
    """One row per (kernel, key) the autotuners have tuned so far in this process."""
    rows = []
    for kernel, tuner in sorted(tuned_kernels().items()):
        n = len(tuner.keys)
        for key, config in tuner.cache.items():
            rows.append({
                "kernel": kernel,
                "key": " ".join(f"{k}={v}" for k, v in zip(tuner.keys, key[:n])),
                "dtypes": " ".join(dict.fromkeys(map(str, key[n:]))),  # one per tensor argument: deduplicated
                "config": " ".join(f"{k}={v}" for k, v in config.kwargs.items()),
                "num_warps": config.num_warps, "num_stages": config.num_stages,
            })
    return pd.DataFrame(rows, columns=COLUMNS)
