#!/usr/bin/env bash
# Issue 13's GPU check in one go (a few minutes): engine throughput on the decoded-cache path with GPU
# utilization sampled by nvidia-smi every 200 ms. Usage: bench/gpu_datapath.sh [--data DATASET_FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$(mktemp -d)}
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 \
  > "$out/gpu_util.csv" &
sampler=$!
trap 'kill $sampler 2>/dev/null || true' EXIT
python bench/gpu_datapath.py "$@" 2>&1 | tee "$out/gpu_datapath.log"
kill $sampler || true
# busy share while training ran: samples with utilization > 0 after the first busy one
python - "$out/gpu_util.csv" <<'PY'
import sys
rows = [line.split(",") for line in open(sys.argv[1]) if line.strip()]
util = [float(r[1]) for r in rows]
busy = [u for u in util[next((i for i, u in enumerate(util) if u > 0), len(util)):]]
if busy:
    print(f"GPU utilization over {len(busy)} samples: mean {sum(busy) / len(busy):.1f}%, "
          f">= 90%: {100 * sum(u >= 90 for u in busy) / len(busy):.1f}% of samples (goal: busy >= 90%)")
PY
