#!/usr/bin/env bash
# The training runs the README quotes: the default LSTM, the transformer at 300 steps, and
# data-parallel on two processes against one. Prints each command, the load before it,
# its result line and wall time; the checkpoints go under ${RUNS:-out/training-runs}.
#
#   PATH=$PWD/.venv/bin:$PATH scripts/training_runs.sh > reports/cpu-<date>/training-runs.txt
set -u
runs=${RUNS:-out/training-runs}
rm -rf "$runs"
run() {
  echo "\$ $*"
  echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  TIMEFORMAT="# wall %R s"
  { time "$@" 2>&1 | grep -v "step/s\|^\*\|OMP_NUM_THREADS"; } 2>&1
  echo
}
echo "# $(date -u +%FT%TZ), $(getconf _NPROCESSORS_ONLN) cores, torch $(python -c 'import torch; print(torch.__version__)')"
run tritonlab train --out "$runs/lstm"
run tritonlab train --model transformer --steps 300 --out "$runs/transformer"
run python -m torch.distributed.run --standalone --nproc_per_node 2 -m tritonlab train --out "$runs/lstm-two"
run tritonlab train --steps 200 --dropout 0 --out "$runs/one"
run python -m torch.distributed.run --standalone --nproc_per_node 2 -m tritonlab train --steps 200 --dropout 0 \
  --out "$runs/two"
python - "$runs" <<'PY'
import sys
import torch
a, b = (torch.load(f"{sys.argv[1]}/{k}/checkpoint.pt", weights_only=True)["losses"] for k in ("one", "two"))
print("# largest |loss difference| over 200 steps, 1 vs 2 processes, dropout 0:",
      max(abs(x - y) for x, y in zip(a, b)))
PY
