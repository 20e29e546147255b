"""Compile kernels for an H100/H200 (sm_90) without a GPU: the interpreter never
compiles, so GPU-only failures (layouts, types, register and shared-memory budgets that
ptxas rejects) would surface only on a GPU. Triton ships LLVM and ptxas; a script built
on PRELUDE runs in a process without TRITON_INTERPRET (kernels decorated under the
interpreter cannot be compiled)."""
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

PRELUDE = r"""
import inspect
import sys
try:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError:
    sys.exit(3)
if list(inspect.signature(ASTSource).parameters) != ["fn", "signature", "constexprs", "attrs"]:
    sys.exit(3)  # another ahead-of-time API than the one written against (triton 3.6 - 3.9)
TARGET = GPUTarget("cuda", 90, 32)
"""
KNOWN = ("3.6.", "3.7.", "3.8.", "3.9.")  # the triton versions PRELUDE's API was written against


def compile_for_sm90(body: str) -> None:
    """Run PRELUDE + body; skip where this triton lacks the API, fail on any error."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", PRELUDE + body], env=env, cwd=root, capture_output=True,
                          text=True, timeout=600)
    if done.returncode == 3:
        # a triton this was written against must have the API: only a newer one may skip
        version = importlib.metadata.version("triton")
        assert not version.startswith(KNOWN), f"triton {version} should have triton.compiler.ASTSource"
        pytest.skip(f"triton {version} has another ahead-of-time compile API than triton.compiler.ASTSource")
    assert done.returncode == 0, done.stderr[-4000:]
