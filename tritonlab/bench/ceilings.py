"""The device's own limits, measured at the start of each run: copy bandwidth, matmul
FLOP/s for the benchmarked dtype, and the latency of the smallest op (a launch on a
GPU, the dispatcher's overhead on a CPU). Every row's roofline fraction divides the
op's floor time under these ceilings by its measured time."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .timing import time_fn


@dataclass(frozen=True)
class Ceilings:
    copy_gbps: float
    matmul_tflops: float
    launch_us: float

    def floor_ms(self, nbytes: float, flops: float) -> float:
        """The least time an op moving `nbytes` and doing `flops` can take here."""
        return max(nbytes / (self.copy_gbps * 1e9), flops / (self.matmul_tflops * 1e12)) * 1e3


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
    matmul_tflops = 0.0
    for m in sizes:
        a = torch.randn(m, m, device=device).to(dtype)
        b = torch.randn(m, m, device=device).to(dtype)
        ms, _, _ = time_fn(lambda: a @ b, device)
        matmul_tflops = max(matmul_tflops, 2 * m ** 3 / (ms * 1e-3) / 1e12)
    one = torch.zeros(1, device=device)
    ms, _, _ = time_fn(lambda: one.add_(0), device)
    return Ceilings(copy_gbps, matmul_tflops, ms * 1e3)
