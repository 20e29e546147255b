"""The device's own limits, measured at the start of each run: copy bandwidth, matmul
FLOP/s (fp32, fp16 and bf16, and on a GPU fp32 with TF32 on too; the run's own setting
gives the roofline, the others are measured at one small size on a CPU), and the latency of the smallest op (a launch on a GPU, the
dispatcher's overhead on a CPU). Every row's roofline fraction divides the op's floor
time under these ceilings (bytes at the copy bandwidth or FLOPs at the matmul rate, at
least one smallest op) by its measured time."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..backend import same_tf32, tf32_enabled
from .timing import time_fn


@dataclass(frozen=True)
class Ceilings:
    copy_gbps: float
    matmul_tflops: float
    launch_us: float
    matmul_all: dict = field(default_factory=dict)  # label -> TFLOP/s, every dtype measured

    def floor_ms(self, nbytes: float, flops: float) -> float:
        """The least time an op moving `nbytes` and doing `flops` can take here: its
        bytes at the copy bandwidth or its FLOPs at the matmul rate, whichever is
        longer, and never less than the smallest op (an op is at least one launch, so a
        tiny case's share says how close it comes to that, not to a bandwidth it
        cannot reach)."""
        return max(nbytes / (self.copy_gbps * 1e9), flops / (self.matmul_tflops * 1e12), self.launch_us * 1e-6) * 1e3


def measure(device: torch.device, dtype: torch.dtype, quick: bool = False) -> Ceilings:
    gpu = device.type == "cuda"
    n = (1 << 28 if gpu else 1 << 24) // (2 if quick else 1)  # elements: 1 GiB / 64 MiB of float32
    src = torch.empty(n, dtype=torch.float32, device=device).fill_(1)
    dst = torch.empty_like(src)
    ms, _, _ = time_fn(lambda: dst.copy_(src), device)
    copy_gbps = 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9  # read + write
    del src, dst
    # the best of several sizes: a single small matmul undershoots what large ones reach
    sizes = (4096, 8192) if gpu else ((512, 1024) if quick else (512, 1024, 2048))
    labels = {"float32": (torch.float32, False), "float16": (torch.float16, False),
              "bfloat16": (torch.bfloat16, False)}
    if gpu:
        labels["float32+tf32"] = (torch.float32, True)
    run_label = _label(dtype, gpu and tf32_enabled())
    labels.setdefault(run_label, (dtype, gpu and tf32_enabled()))
    # a CPU without 16-bit matmul units takes seconds at the run's sizes: the others at 512 only
    matmul_all = {label: _matmul_tflops(device, dt, tf32, sizes if gpu or label == run_label else (512,))
                  for label, (dt, tf32) in labels.items()}
    one = torch.zeros(1, device=device)
    ms, _, _ = time_fn(lambda: one.add_(0), device)
    return Ceilings(copy_gbps, matmul_all[run_label], ms * 1e3, matmul_all)


def _label(dtype: torch.dtype, tf32: bool) -> str:
    name = str(dtype).removeprefix("torch.")
    return name + "+tf32" if tf32 and dtype == torch.float32 else name


def _matmul_tflops(device, dtype, tf32: bool, sizes) -> float:
    """Best matmul FLOP/s over `sizes`, with torch's TF32 set to `tf32` meanwhile."""
    best = 0.0
    with same_tf32(tf32):
        for m in sizes:
            a = torch.randn(m, m, device=device).to(dtype)
            b = torch.randn(m, m, device=device).to(dtype)
            ms, _, _ = time_fn(lambda: a @ b, device)
            best = max(best, 2 * m ** 3 / (ms * 1e-3) / 1e12)
    return best
