"""The autotune table names each autotuned kernel's pick per key."""
import pytest

pytest.importorskip("triton")
from triton import Config  # noqa: E402

from tritonlab.bench.autotune import COLUMNS, tuned_kernels, winners  # noqa: E402


def test_every_autotuned_kernel_is_found():
    import tritonlab.kernels.attention, tritonlab.kernels.conv, tritonlab.kernels.gemm  # noqa: F401, E401
    found = tuned_kernels()
    for name in ("gemm._matmul_tuned", "conv._conv_fwd_tuned", "conv._conv_dgrad_tuned", "conv._conv_wgrad_tuned",
                 "attention._fwd_tuned", "attention._dkdv_tuned", "attention._dq_tuned"):
        assert name in found, sorted(found)


def test_a_tuned_key_becomes_a_row():
    tuner = tuned_kernels()["gemm._matmul_tuned"]
    key = (7, 4096, 4096, 4096, 1, 2, "torch.bfloat16", "torch.bfloat16", "torch.float32")
    tuner.cache[key] = Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64}, num_warps=8, num_stages=3)
    try:
        table = winners()
    finally:
        del tuner.cache[key]
    assert list(table.columns) == COLUMNS
    row = table[table["kernel"] == "gemm._matmul_tuned"].iloc[-1]
    assert row["key"] == "M_BUCKET=7 N=4096 K=4096 K_PER_SPLIT=4096 PRECISION=1 LAYOUT=2"
    assert row["dtypes"] == "torch.bfloat16 torch.float32"
    assert row["config"] == "BLOCK_M=128 BLOCK_N=256 BLOCK_K=64"
    assert (row["num_warps"], row["num_stages"]) == (8, 3)
