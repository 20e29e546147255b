"""Tier `triton`: Triton kernels and their launch functions, one file per op family.

Nothing here is imported by `import tritonlab`; the layers load a kernel module on
first use, so the CPU path works where triton is not installed.
"""
