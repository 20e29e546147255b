"""Registers, spills and shared memory of the kernels whose sm_90 compile figures the
lessons (tutorials/*.py) and kernel comments (tritonlab/kernels/*.py) quote, compiled
ahead of time for an H100/H200 (sm_90) without a GPU.

Each configuration is one kernel with the constexprs, num_warps, num_stages and dtypes
its source text names. The kernel is compiled with triton.compile(ASTSource(...),
target=GPUTarget("cuda", 90, 32)) as a launch would specialize it (pointers 16-byte
aligned, an integer equal to 1 a constant, one divisible by 16 marked so, except the
do_not_specialize ones). Registers and spill bytes per thread come from the `ptxas -v`
log of Triton's own compile (its flags; where that log is missing, from the ptxas
Triton ships, run here as `ptxas -v --gpu-name sm_90a`); shared memory per program is
Triton's own metadata. Lesson kernels are read out of the
lesson files (their imports and @triton.jit functions only, so no lesson runs).

These are compile results, not measurements on a GPU. One line per configuration:

    name  triton=X  registers=N  spill_stores=N  spill_loads=N  shared=N  mma=wgmma|mma|none
    [sass_per_element: total=N IMAD=N LOP3=N]   (elementwise kernels: SASS opcodes / elements a thread)
    [sass_kernel: total=N FFMA=N LDS=N loop=N]  (a whole kernel's static SASS opcodes; loop: those
                                                 inside its widest backward branch)

Run (no GPU needed; TRITON_INTERPRET is ignored):
    .venv/bin/python scripts/sm90_resources.py [--only SUBSTRING ...] [--list]
    PYTHONPATH=/tmp/tr36lib:. .venv/bin/python scripts/sm90_resources.py   # another triton
Exit code 0: every configuration compiled; 1: one or more failed (their lines say why);
2: no configuration matches --only; 3, with a message: this triton has no (or another)
ahead-of-time compile API.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import inspect
import io
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # kernels decorated under the interpreter cannot be compiled
os.environ["TRITON_ALWAYS_COMPILE"] = "1"  # so that ptxas runs (not a cache hit) and
os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"  # Triton prints its own ptxas -v log
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def refuse(why: str):
    print(f"sm90_resources: {why}; nothing compiled", file=sys.stderr)
    sys.exit(3)


try:
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource
except ImportError as e:
    refuse(f"this triton lacks the ahead-of-time compile API ({e})")
if list(inspect.signature(ASTSource).parameters) != ["fn", "signature", "constexprs", "attrs"]:
    refuse(f"triton {triton.__version__} has another ASTSource API than the one written against (triton 3.6 - 3.9)")

TARGET = GPUTarget("cuda", 90, 32)
TMP = tempfile.TemporaryDirectory(prefix="sm90_resources_")
_LESSONS: dict[str, object] = {}


def lesson(stem: str):
    """tutorials/<stem>.py's top-level imports and @triton.jit functions, as a module (the
    source must stay on disk: triton.jit reads it)."""
    if stem not in _LESSONS:
        text = (ROOT / "tutorials" / f"{stem}.py").read_text()
        lines = text.splitlines()
        keep = []
        for node in ast.parse(text).body:
            jit = isinstance(node, ast.FunctionDef) and any("triton.jit" in ast.unparse(d) for d in node.decorator_list)
            if jit or isinstance(node, (ast.Import, ast.ImportFrom)):
                first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
                keep.append("\n".join(lines[first - 1:node.end_lineno]))
        path = Path(TMP.name) / f"lesson_{stem}.py"
        path.write_text("\n\n\n".join(keep) + "\n")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _LESSONS[stem] = module
    return _LESSONS[stem]


def build(fn, args: dict, consts: dict, num_warps: int = 4, num_stages: int = 3):
    """Compile `fn` for sm_90. args: every non-constexpr argument as a launch passes it: a
    pointer as its type ("*fp32"), an int or float by value, None for an absent pointer."""
    sig, constexprs, attrs = {}, {}, {}
    for i, p in enumerate(fn.params):
        name, value = p.name, consts.get(p.name, args.get(p.name))
        if name not in consts and name not in args:
            raise KeyError(f"{fn.__name__}: no value for {name}")
        free = not p.do_not_specialize
        if name in consts or value is None or (free and value is not True and value == 1 and isinstance(value, int)):
            sig[name], constexprs[(i,)] = "constexpr", value
        elif isinstance(value, str):
            sig[name], attrs[(i,)] = value, [["tt.divisibility", 16]]
        elif isinstance(value, float):
            sig[name] = "fp32"
        else:
            sig[name] = "i32" if -2**31 <= value < 2**31 else "i64"
            if free and value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        compiled = triton.compile(ASTSource(fn, sig, constexprs, attrs), target=TARGET,
                                  options={"num_warps": num_warps, "num_stages": num_stages})
    compiled.ptxas_log = log.getvalue()
    return compiled


def ptxas_report(compiled) -> dict:
    """Registers and spills from the ptxas -v log of Triton's own compile (its flags, e.g.
    3.9's --regAllocOptLevel=2); where that log is missing, from `ptxas -v` run here."""
    log = compiled.ptxas_log
    if "Used" not in log:
        tool = get_ptxas(90)
        ptx = Path(TMP.name) / "kernel.ptx"
        ptx.write_text(compiled.asm["ptx"])
        done = subprocess.run([getattr(tool, "path", tool), "-v", "--gpu-name", "sm_90a", str(ptx), "-o", os.devnull],
                              capture_output=True, text=True, check=True)
        log = done.stderr
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return {"registers": int(regs.group(1)), "spill_stores": int(spills.group(1)), "spill_loads": int(spills.group(2))}


def _sass(compiled) -> list[tuple[int, str, str]]:
    """(address, opcode, operands) of each SASS instruction of the cubin Triton built
    (its bundled cuobjdump), NOPs left out."""
    cuobjdump = Path(getattr(get_ptxas(90), "path", "")).with_name("cuobjdump")
    cubin = Path(TMP.name) / "kernel.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    sass = subprocess.run([str(cuobjdump), "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    found = re.findall(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T\d]\s+)?([A-Z][A-Z0-9_]*)[^;]*?([^;]*);", sass)
    return [(int(a, 16), op, rest) for a, op, rest in found if op != "NOP"]


def sass_counts(compiled) -> Counter:
    """SASS opcodes of the cubin Triton built."""
    return Counter(op for _, op, _ in _sass(compiled))


def loop_length(compiled) -> int:
    """Instructions inside the widest backward branch (a kernel's outer loop): what a warp
    issues per iteration when the loop holds no inner loop."""
    code = _sass(compiled)
    spans = [(int(t.group(1), 16), a) for a, op, rest in code if op == "BRA"
             for t in [re.search(r"0x([0-9a-f]+)", rest)] if t and int(t.group(1), 16) < a]
    lo, hi = max(spans, key=lambda s: s[1] - s[0], default=(0, -1))
    return sum(lo <= a <= hi for a, _, _ in code)


def report(name: str, compiled, per_thread: int | str | None = None) -> str:
    r = ptxas_report(compiled)
    ptx = compiled.asm["ptx"]
    mma = "wgmma" if "wgmma" in ptx else "mma" if re.search(r"\bmma\.sync", ptx) else "none"
    line = (f"{name}  triton={triton.__version__}  registers={r['registers']}  spill_stores={r['spill_stores']}"
            f"  spill_loads={r['spill_loads']}  shared={compiled.metadata.shared}  mma={mma}")
    if per_thread == "kernel":  # the static count of the whole kernel
        ops = sass_counts(compiled)
        line += (f"  sass_kernel: total={sum(ops.values())} FFMA={ops['FFMA']} LDS={ops['LDS']}"
                 f" loop={loop_length(compiled)}")
    elif per_thread:
        ops = sass_counts(compiled)
        line += (f"  sass_per_element: total={sum(ops.values()) / per_thread:.1f}"
                 f" IMAD={sum(n for op, n in ops.items() if op.startswith('IMAD')) / per_thread:.1f}"
                 f" LOP3={ops['LOP3'] / per_thread:.1f}")
    return line


# ---- the configurations ---------------------------------------------------------------
# name -> a function returning (compiled kernel, elements a thread or None)

def softmax_v1(cols, warps):
    fn = lesson("02_softmax").softmax_v1_kernel
    args = dict(x_ptr="*fp32", y_ptr="*fp32", n_cols=cols, stride_x=cols, stride_y=cols)
    return build(fn, args, dict(BLOCK=cols), warps), None


N03, P03 = 8192 * 4096, 0.1  # lesson 03's GPU size: 8192 x 4096 float32, p = 0.1, BLOCK = 1024, 4 warps
DROP03 = dict(n=N03, p=P03, scale=1 / (1 - P03), seed=1234)


def dropout_v1():
    fn = lesson("03_dropout").dropout_v1_kernel
    return build(fn, dict(DROP03, x_ptr="*fp32", out_ptr="*fp32"), dict(BLOCK=1024)), 1024 // 128


def dropout_v2():
    fn = lesson("03_dropout").dropout_v2_kernel
    args = dict(DROP03, x_ptr="*fp32", out_ptr="*fp32", mask_ptr="*fp32")  # no mask stored: out passed
    return build(fn, args, dict(BLOCK=1024, STORE_MASK=False)), 1024 // 128


def dropout_layer():
    """tritonlab.Dropout on lesson 03's (8192, 4096): softmax._fwd_kernel, softmax off,
    _config(4096, 8192) = (not looped, 1 row, BLOCK_N 4096, 8 warps)."""
    from tritonlab.kernels import softmax
    args = dict(x_ptr="*fp32", out_ptr="*fp32", lse_ptr="*fp32", seed_ptr="*i64", p=P03, scale=1 / (1 - P03),
                n_rows=8192, n=4096, inner=1, sx_o=4096, sx_n=1, sx_i=0)
    consts = dict(SOFTMAX=False, DROPOUT=True, SAVE_LSE=False, LOOPED=False, ROWS=1, BLOCK_N=4096, ACC=tl.float32)
    return build(softmax._fwd_kernel, args, consts, 8), 4096 // 256


def matmul_v3(dtype):
    fn = lesson("05_gemm").matmul_v2_kernel  # v3 is v2 autotuned; its first config
    n = 4096
    args = dict(a_ptr="*" + dtype, b_ptr="*" + dtype, c_ptr="*" + dtype, M=n, N=n, K=n, stride_am=n, stride_ak=1,
                stride_bk=n, stride_bn=1, stride_cm=n, stride_cn=1)
    return build(fn, args, dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8), 8, 3), None


def lstm_step():
    fn = lesson("07_rnn_step").lstm_step_kernel
    args = dict(xp_ptr="*fp32", w_ptr="*fp32", h_ptr="*fp32", c_ptr="*fp32", h_next_ptr="*fp32", B=8, H=256)
    return build(fn, args, dict(BLOCK_B=16, BLOCK_H=32, BLOCK_K=32)), None


def lstm_on_chip(transposed=False):
    """Lesson 08's v2, or v3 (W_T: the kernel reads W_hhᵀ)."""
    fn = lesson("08_persistent_rnn").lstm_on_chip_kernel
    args = dict(xp_ptr="*fp32", w_ptr="*fp32", c_ptr="*fp32", out_ptr="*fp32", T=128, B=64, H=64)
    return build(fn, args, dict(BLOCK_B=16, H_PAD=64, W_T=transposed), 8), "kernel"


def attention(version, block_m, warps, B, H, L, E, stages=3):
    """Lesson 09's v1 (all S keys at once) or v2 (BLOCK_N = 64 keys a step), fp16."""
    module = lesson("09_attention")
    fn = module.attention_v1_kernel if version == 1 else module.attention_v2_kernel
    strides = {}
    for t in "qkvo":
        strides.update({f"s{t}b": H * L * E, f"s{t}h": L * E, f"s{t}{'m' if t in 'qo' else 'n'}": E})
    args = dict(strides, q_ptr="*fp16", k_ptr="*fp16", v_ptr="*fp16", o_ptr="*fp16", scale=E ** -0.5,
                H=H, L=L, S=L, E=E)
    consts = dict(BLOCK_M=block_m, BLOCK_E=E, **({"BLOCK_S": L} if version == 1 else {"BLOCK_N": 64}))
    return build(fn, args, consts, warps, stages), None


def rnn(kernel, dtype, mode, block_b, block_h, block_k, resident, warps=8, stages=2, B=16, H=256):
    """tritonlab.kernels.rnn's LSTM kernels as _launch compiles them (REVERSE=False, not
    packed; c, dh, dc fp32; tf32 for 16-bit inputs, ieee for fp32, the forward then reading
    W_hhᵀ); mode: the name of
    one of kernels.rnn's MODE values (STEP, PERSISTENT, PERSISTENT_GRID)."""
    from tritonlab.kernels import rnn as R
    mode = getattr(R, mode)
    fn = {"fwd": R._lstm_fwd_kernel, "bwd": R._lstm_bwd_kernel}[kernel]
    args = {n: ("*fp32" if n in ("c_ptr", "dh_ptr", "dc_ptr") else "*" + dtype) for n in fn.arg_names if n.endswith("_ptr")}
    args.update(offs_ptr=None, sizes_ptr=None, sync_ptr="*i32" if mode == R.PERSISTENT_GRID else None,
                B=B, H=H, T=512, s_begin=0, s_end=512)
    consts = dict(REVERSE=False, PACKED=False, MODE=mode, PRECISION="ieee" if dtype == "fp32" else "tf32",
                  W_RESIDENT=resident, BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k)
    if kernel == "fwd":  # it reads W_hhᵀ where the dot is ieee (kernels.rnn._transposed_w)
        consts["W_T"] = dtype == "fp32"
    return build(fn, args, consts, warps, stages), None


def rnn_configs(*shapes) -> dict:
    """name -> compile for each (kernel, dtype, mode, block_b, block_h, block_k[, resident
    [, options for rnn()]]), the name spelled from those settings."""
    configs = {}
    for kernel, dtype, mode, bb, bh, bk, *rest in shapes:
        resident = bool(rest) and rest[0]
        options = {"warps": 8, "stages": 2, **(rest[1] if len(rest) > 1 else {})}
        where = mode.lower().replace("_", "-") + (" resident H 256," if resident else "")
        name = f"rnn.py LSTM {kernel} {where} {bb}x{bh}x{bk}, {dtype}, {options['warps']} warps, {options['stages']} stages"
        configs[name] = (lambda a=(kernel, dtype, mode, bb, bh, bk, resident), o=options: rnn(*a, **o))
    return configs


def softmax_bwd(warps):
    """softmax._bwd_kernel at 16384 columns as _config picks it (1 row, 32 warps), fp32,
    softmax and dropout on, from logits (the layer's fused backward)."""
    from tritonlab.kernels import softmax
    args = dict(src_ptr="*fp32", lse_ptr="*fp32", dout_ptr="*fp32", dx_ptr="*fp32", seed_ptr="*i64", p=0.1,
                scale=1 / 0.9, n_rows=4096, n=16384, inner=1, ss_o=16384, ss_n=1, ss_i=0, sd_o=16384, sd_n=1, sd_i=0)
    consts = dict(SOFTMAX=True, DROPOUT=True, FROM_LOGITS=True, LOOPED=False, ROWS=1, BLOCK_N=16384, ACC=tl.float32)
    return build(softmax._bwd_kernel, args, consts, warps), None


CONFIGS = {
    "02_softmax v1, 4096 cols, fp32, 4 warps": lambda: softmax_v1(4096, 4),
    "02_softmax v1, 32768 cols, fp32, 4 warps": lambda: softmax_v1(32768, 4),
    "02_softmax v1, 32768 cols, fp32, 32 warps": lambda: softmax_v1(32768, 32),
    "03_dropout v1, BLOCK 1024, fp32, 4 warps": dropout_v1,
    "03_dropout v2, BLOCK 1024, fp32, 4 warps": dropout_v2,
    "03_dropout layer (softmax._fwd_kernel), 4096 cols, fp32, 8 warps": dropout_layer,
    "05_gemm v3 128x256x64, fp16, 8 warps, 3 stages": lambda: matmul_v3("fp16"),
    "05_gemm v3 128x256x64, fp32, 8 warps, 3 stages": lambda: matmul_v3("fp32"),
    "07_rnn_step lstm_step_kernel 16x32x32, fp32, 4 warps": lstm_step,
    "08_persistent_rnn lstm_on_chip_kernel BLOCK_B 16, H_PAD 64, fp32, 8 warps": lstm_on_chip,
    "08_persistent_rnn lstm_on_chip_kernel v3 (W_T), BLOCK_B 16, H_PAD 64, fp32, 8 warps": lambda: lstm_on_chip(True),
    "09_attention v1 BLOCK_M 16, S 512, E 64, fp16, 8 warps": lambda: attention(1, 16, 8, 16, 32, 512, 64),
    "09_attention v1 BLOCK_M 32, S 512, E 64, fp16, 8 warps": lambda: attention(1, 32, 8, 16, 32, 512, 64),
    "09_attention v1 BLOCK_M 64, S 512, E 64, fp16, 8 warps": lambda: attention(1, 64, 8, 16, 32, 512, 64),
    "09_attention v1 BLOCK_M 16, S 512, E 64, fp16, 4 warps": lambda: attention(1, 16, 4, 16, 32, 512, 64),
    "09_attention v2 128x64, E 64, fp16, 8 warps, 3 stages": lambda: attention(2, 128, 8, 16, 32, 512, 64),
    "09_attention v2 128x64, E 128, fp16, 8 warps, 3 stages": lambda: attention(2, 128, 8, 4, 16, 4096, 128),
    **rnn_configs(
        ("fwd", "fp32", "PERSISTENT_GRID", 16, 16, 256, True), ("bwd", "fp32", "PERSISTENT_GRID", 16, 16, 1024, True),
        ("fwd", "fp32", "PERSISTENT_GRID", 32, 16, 256, True, {"B": 32}),
        ("bwd", "fp32", "PERSISTENT_GRID", 32, 16, 1024, True, {"B": 32}),
        ("fwd", "fp32", "STEP", 16, 32, 32), ("fwd", "fp32", "STEP", 16, 32, 32, False, {"warps": 4}),
        ("fwd", "fp32", "STEP", 16, 32, 32, False, {"stages": 3}), ("fwd", "fp32", "STEP", 16, 32, 64),
        ("fwd", "fp16", "STEP", 32, 32, 32, False, {"B": 64}), ("fwd", "fp16", "STEP", 32, 32, 64, False, {"B": 64}),
        ("fwd", "fp16", "STEP", 64, 32, 32, False, {"B": 64}), ("fwd", "fp16", "STEP", 16, 32, 64, False, {"warps": 4}),
        ("fwd", "fp32", "PERSISTENT", 16, 64, 32), ("fwd", "fp32", "PERSISTENT", 16, 64, 32, False, {"warps": 4}),
        ("fwd", "fp32", "PERSISTENT", 16, 64, 64), ("fwd", "fp16", "PERSISTENT", 16, 64, 64),
        ("fwd", "fp16", "PERSISTENT", 32, 64, 64, False, {"B": 64}),
        ("fwd", "fp16", "PERSISTENT", 64, 64, 32, False, {"B": 64}),
    ),
    "softmax.py _bwd_kernel 16384 cols, fp32, 32 warps": lambda: softmax_bwd(32),
    "softmax.py _bwd_kernel 16384 cols, fp32, 16 warps": lambda: softmax_bwd(16),
    "softmax.py _bwd_kernel 16384 cols, fp32, 8 warps": lambda: softmax_bwd(8),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=[], help="run only configurations whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="print the configuration names and exit")
    opts = parser.parse_args(argv)
    names = [n for n in CONFIGS if not opts.only or any(s in n for s in opts.only)]
    if opts.list or not names:
        print("\n".join(names or ["no configuration matches --only"]))
        return 0 if names else 2
    failed = 0
    for name in names:
        try:
            compiled, per_thread = CONFIGS[name]()
            print(report(name, compiled, per_thread), flush=True)
        except Exception as e:  # one failing configuration does not hide the others
            failed += 1
            print(f"{name}  triton={triton.__version__}  FAILED: {type(e).__name__}: {str(e).splitlines()[0][:300]}",
                  flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
