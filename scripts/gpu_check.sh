#!/usr/bin/env bash
# One time-boxed pass on a lent GPU machine that has torch, triton, pandas, pytest,
# matplotlib and tqdm but reaches no package registry: the GPU tests, the lessons of
# tutorials/ (their ladders of timings), then the benchmark per dtype. Each phase has its
# own time limit in seconds, split evenly over its lessons or dtypes (0 skips it); the
# defaults add up to 600 s, one device call, and whatever ran is kept. PROBE_S (default 0)
# adds a last phase, scripts/rnn_probe.py: an RNN forward's fixed and per-step time, in
# rnn-probe.txt (the default phases already write 8 files, the most the device tool
# brings back: use it with LESSONS_S=0 or one dtype). NCU_S (default 0), after it: Nsight
# Compute's counters (stall reasons, issue rate) for one persistent-grid LSTM forward of
# the char model's size, fp32, in ncu.txt, one more file (the device tool's notes say
# its Firecracker machines read counters and its gVisor ones fail to: ncu.txt then holds
# that failure; "no ncu" where there is none). TESTS_MARK (default gpu) is the
# tests' -m expression; empty runs every test in TESTS, GPU-compiled where conftest sees
# CUDA (e.g. TESTS_MARK= TESTS="tests/test_triton_rnn.py": its unmarked tests on CUDA).
# Everything lands under $OUT (default out/gpu-check) as few files: the device tool
# brings back at most 8, so each report folder is packed into one archive.
#
#   OUT=/tmp/out scripts/gpu_check.sh                         # everything: 240 + 120 + 240 s at most
#   OUT=$OUT TESTS_S=200 LESSONS_S=30 LESSONS=tutorials/08_persistent_rnn.py BENCH_S=200 PROBE_S=90 NCU_S=40 \
#     DTYPES=bfloat16 scripts/gpu_check.sh \
#     --ops gru lstm attention softmax_dropout linear relu --providers reference triton torch graph
#                                                             # the next lent GPU: lesson 08's v2 against v3
#                                                             # (bank conflicts), the least-measured ops, then
#                                                             # where an RNN step's time goes (8 files)
#   TESTS_S=200 TESTS="tests/test_gpu.py tests/test_swap.py" LESSONS_S=0 BENCH_S=150 \
#     DTYPES=bfloat16 scripts/gpu_check.sh --ops attention --quick
#
# Extra arguments go to every `tritonlab bench`. Failing tests are listed with their
# messages at the end of gpu-tests.txt (-rfE, short tracebacks) and in gpu-tests.xml.
# Each time limit first sends SIGINT, which pytest and `tritonlab bench` answer by
# writing what they have (the failures' summary and XML; the rows timed so far), then
# SIGKILL 30 s later. TESTS_FIRST names the test files that run first (those that
# changed most since the last GPU run; tests/conftest.py orders them).
set -uo pipefail
out=${OUT:-out/gpu-check}
py=${PYTHON:-python3}  # on the lent machine python3 is the interpreter that holds torch
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv > "$out/device.txt" 2>&1
$py -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
  >> "$out/device.txt" 2>&1
tests_s=${TESTS_S:-240} lessons_s=${LESSONS_S:-120} bench_s=${BENCH_S:-240}
limit() { timeout --preserve-status -s INT -k 30 "$@"; }  # the command's own exit code
if [ "$tests_s" != 0 ]; then
  workers=$($py -c "import xdist" 2>/dev/null && echo "-n ${WORKERS:-8}")
  per_test=$($py -c "import pytest_timeout" 2>/dev/null && echo "--timeout=${TEST_TIMEOUT_S:-90}")
  export TRITONLAB_TESTS_FIRST=${TESTS_FIRST-test_triton_rnn.py test_triton_attention.py test_gpu.py}
  mark=${TESTS_MARK-gpu}
  # shellcheck disable=SC2086  # TESTS, workers and per_test are word lists
  limit "$tests_s" $py -m pytest ${mark:+-m "$mark"} -q -rfE --tb=short -p no:cacheprovider $workers $per_test \
    --junitxml="$out/gpu-tests.xml" ${TESTS:-tests/} > "$out/gpu-tests.txt" 2>&1
  echo "pytest${mark:+ -m $mark} exit code $? (2: interrupted by TESTS_S=$tests_s)" >> "$out/gpu-tests.txt"
  tail -3 "$out/gpu-tests.txt"
fi
if [ "$lessons_s" != 0 ]; then  # the learning path's ladders of timings, one file
  lessons=(${LESSONS:-tutorials/[0-9][0-9]_*.py})
  for lesson in "${lessons[@]}"; do
    # at least 1 s each: timeout 0 would mean no limit at all
    echo "### $lesson"; limit $(( lessons_s / ${#lessons[@]} > 0 ? lessons_s / ${#lessons[@]} : 1 )) $py "$lesson" 2>&1
    echo "exit code $?"
  done > "$out/tutorials.txt"
  grep -c "^exit code 0" "$out/tutorials.txt" | sed 's/$/ lessons ran/'
fi
if [ "$bench_s" != 0 ]; then
  dtypes=(${DTYPES:-float32 bfloat16})
  per=$(( bench_s / ${#dtypes[@]} > 0 ? bench_s / ${#dtypes[@]} : 1 ))
  for dtype in "${dtypes[@]}"; do
    # the run stops starting cases at 2/3 of its share, so it writes its report before the kill
    limit "$per" $py -m tritonlab bench --dtype "$dtype" --out "$out/$dtype" \
      --time-budget $(( per * 2 / 3 )) "$@" > "$out/bench-$dtype.txt" 2>&1
    echo "bench $dtype exit code $? (130: interrupted at ${per} s of BENCH_S=$bench_s)" | tee -a "$out/bench-$dtype.txt"
    tar czf "$out/report-$dtype.tar.gz" -C "$out" "$dtype" && rm -rf "${out:?}/$dtype"
  done
fi
if [ "${PROBE_S:-0}" != 0 ]; then  # it stops starting configurations at 2/3 of its share, then prints its summary
  limit "$PROBE_S" $py scripts/rnn_probe.py --out "$out/rnn-probe.csv" --time-budget $(( PROBE_S * 2 / 3 )) \
    > "$out/rnn-probe.txt" 2>&1
  echo "rnn_probe exit code $? (3: its time budget ran out; 130: interrupted at PROBE_S=$PROBE_S)" \
    | tee -a "$out/rnn-probe.txt"
  # one file, not two: the device tool brings back at most 8
  if [ -f "$out/rnn-probe.csv" ]; then
    { echo "### rnn-probe.csv"; cat "$out/rnn-probe.csv"; } >> "$out/rnn-probe.txt" && rm "$out/rnn-probe.csv"
  fi
fi
if [ "${NCU_S:-0}" != 0 ]; then  # where one persistent-grid LSTM forward's step time goes, by hardware counters
  ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  if [ -n "$ncu" ]; then  # Nsight Compute; --clock-control none leaves the clocks as they are (METHOD.md)
    limit "$NCU_S" "$ncu" --clock-control none --section SpeedOfLight --section Occupancy --section SchedulerStats \
      --section WarpStateStats -k regex:_lstm_fwd_kernel -c 1 \
      $py scripts/rnn_probe.py --cells lstm --sizes 64x64 --precisions fp32 --providers persistent-grid \
      --out "$out/ncu-probe.csv" --time-budget 30 > "$out/ncu.txt" 2>&1
    echo "ncu exit code $?" >> "$out/ncu.txt"
    rm -f "$out/ncu-probe.csv"
  else
    echo "no ncu on this machine: NCU_S skipped" | tee "$out/ncu.txt"
  fi
fi
