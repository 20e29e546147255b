"""The Triton tier's autograd Functions, one file per op family.

Each file imports its kernels from `tritonlab.kernels` (and so imports triton); the
layers reach these through `_dispatch.lazy`, so `import tritonlab` stays triton-free.
"""
