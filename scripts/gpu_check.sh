#!/usr/bin/env bash
# One pass on a lent GPU machine that has torch, triton, pandas, pytest, matplotlib and
# tqdm but reaches no package registry: the GPU tests, the lessons of tutorials/ (their
# ladders of timings), then the benchmark per dtype.
# Everything lands under $OUT (default out/gpu-check) as few files: the device tool
# brings back at most 8, so each report folder is packed into one archive.
#
#   OUT=/tmp/out scripts/gpu_check.sh                   # tests, then float32 and bfloat16 reports
#   DTYPES=bfloat16 TESTS=0 LESSONS=0 scripts/gpu_check.sh --ops conv2d linear --quick
#
# Extra arguments go to every `tritonlab bench`.
set -uo pipefail
out=${OUT:-out/gpu-check}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/device.txt" 2>&1
if [ "${TESTS:-1}" != 0 ]; then
  python -m pytest -m gpu -q -p no:cacheprovider tests/ > "$out/gpu-tests.txt" 2>&1
  echo "pytest -m gpu exit code $?" >> "$out/gpu-tests.txt"
  tail -3 "$out/gpu-tests.txt"
fi
if [ "${LESSONS:-1}" != 0 ]; then  # the learning path's ladders of timings, one file
  for lesson in tutorials/[0-9][0-9]_*.py; do
    echo "### $lesson"; timeout 300 python "$lesson" 2>&1; echo "exit code $?"
  done > "$out/tutorials.txt"
  grep -c "^exit code 0" "$out/tutorials.txt" | sed 's/$/ lessons ran/'
fi
for dtype in ${DTYPES:-float32 bfloat16}; do
  python -m tritonlab bench --dtype "$dtype" --out "$out/$dtype" "$@" > "$out/bench-$dtype.txt" 2>&1
  echo "bench $dtype exit code $?" | tee -a "$out/bench-$dtype.txt"
  tar czf "$out/report-$dtype.tar.gz" -C "$out" "$dtype" && rm -rf "${out:?}/$dtype"
done
