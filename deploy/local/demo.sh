#!/usr/bin/env bash
# `make demo`: the local embedded default, end to end on GENERATED demo lesions (no download needed).
#
# Starts what is missing of the local stack (Redis if none answers, a Celery worker, the gateway) on the
# filesystem store, then goes through the API as a user would: an API key, an upload of the generated
# dataset, a small synthesis job (GAN + synthetic images -> a new dataset) and a small training job on
# it. Everything it started is stopped when it ends (or is interrupted). The GAN and the classifier are
# deliberately tiny so the demo takes a few minutes on 2 cores; their numbers mean nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
VAR=${DERMASYNTH_DEMO_DIR:-var/demo}
mkdir -p "$VAR"
VAR=$(cd "$VAR" && pwd)

export DERMASYNTH_STORE=filesystem
export DERMASYNTH_STORE_ROOT="$VAR/store"
export DERMASYNTH_CACHE_ROOT="$VAR/cache"
export DERMASYNTH_JOB_KEY_PREFIX=${DERMASYNTH_JOB_KEY_PREFIX:-dermasynth-demo}
export DERMASYNTH_WORKER_METRICS_PORT=0
export DERMASYNTH_REDIS_URL=${DERMASYNTH_REDIS_URL:-redis://127.0.0.1:6379/0}

free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
field() {  # print a field of the JSON object on stdin: field result metrics n
  python -c 'import json, sys; value = json.load(sys.stdin)
for key in sys.argv[1:]: value = value[key]
print(value)' "$@"
}
redis_answers() { python -c 'import redis, sys; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()' \
  "$DERMASYNTH_REDIS_URL" 2>/dev/null; }

STARTED=()
cleanup() {
  local status=$?
  for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ ${#STARTED[@]} -gt 0 ] && echo "== stopped what the demo started"
  exit $status
}
trap cleanup EXIT INT TERM

echo "== 1. generated demo dataset (drawings of lesions, not real skin) -> $VAR/data"
if [ ! -f "$VAR/data/manifest.csv" ]; then
  dermasynth data make-demo "$VAR/data" --size 64 --count 700 --seed 0
fi
dermasynth data stats "$VAR/data" --plot "$VAR/class_distribution.png"

echo "== 2. Redis ($DERMASYNTH_REDIS_URL)"
if redis_answers; then
  echo "using the Redis that is running"
elif command -v redis-server >/dev/null; then
  port=$(free_port)
  export DERMASYNTH_REDIS_URL="redis://127.0.0.1:$port/0"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >"$VAR/redis.log" 2>&1 &
  STARTED+=($!)
  for _ in $(seq 50); do redis_answers && break; sleep 0.2; done
  redis_answers || { echo "redis-server did not start; see $VAR/redis.log"; exit 1; }
  echo "started redis-server on port $port"
else
  echo "No Redis answers at $DERMASYNTH_REDIS_URL and redis-server is not installed."
  echo "Install Redis (e.g. 'sudo apt install redis-server' or 'brew install redis'), or point"
  echo "DERMASYNTH_REDIS_URL at a running one, then run 'make demo' again."
  exit 1
fi
python - <<'PY'
import os, redis
client = redis.Redis.from_url(os.environ["DERMASYNTH_REDIS_URL"])
for key in client.scan_iter(match=os.environ["DERMASYNTH_JOB_KEY_PREFIX"] + ":*", count=1000):
    client.delete(key)  # a fresh start: only the demo's own keys
PY

echo "== 3. a Celery worker on queues gan, train, default (log: $VAR/worker.log)"
celery -A services.worker.celery_app worker --pool=solo -Q gan,train,default -n "demo-$$@%h" \
  --without-gossip --without-mingle --without-heartbeat -l INFO >"$VAR/worker.log" 2>&1 &
STARTED+=($!)

export DERMASYNTH_TRITON_URL="127.0.0.1:$(free_port)"
echo "== 3b. a local tritonserver on $DERMASYNTH_TRITON_URL serving $VAR/store/models (log: $VAR/triton/tritonserver.log)"
python -m services.inference --work-dir "$VAR/triton" --metrics-port 0 >"$VAR/triton.log" 2>&1 &
STARTED+=($!)

port=$(free_port)
export DERMASYNTH_GATEWAY_URL="http://127.0.0.1:$port"
echo "== 4. the gateway on $DERMASYNTH_GATEWAY_URL (log: $VAR/gateway.log)"
uvicorn services.gateway.app:create_app --factory --host 127.0.0.1 --port "$port" >"$VAR/gateway.log" 2>&1 &
STARTED+=($!)
for _ in $(seq 300); do
  python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
    "$DERMASYNTH_GATEWAY_URL/v1/health/live" 2>/dev/null && break
  sleep 0.5
done
for _ in $(seq 300); do grep -q " ready." "$VAR/worker.log" && break; sleep 0.5; done
grep -q " ready." "$VAR/worker.log" || { echo "the worker did not start; see $VAR/worker.log"; exit 1; }

echo "== 5. an engineer's API key"
DERMASYNTH_API_KEY=$(dermasynth keys create --name demo --scope engineer --scope deployer --owner demo 2>/dev/null)
export DERMASYNTH_API_KEY

echo "== 6. upload the generated dataset through the API (an ingest job on the worker imports it)"
DATASET=$(dermasynth datasets upload "$VAR/data" --name "generated demo lesions")
echo "dataset $DATASET"

echo "== 7. synthesis job: a tiny GAN, then synthetic images of the rare classes -> a new dataset"
SYNTHESIS=$(dermasynth jobs submit synthesis --params @deploy/local/synthesis.json --set "dataset_id=$DATASET" --wait)
SYNTHESIZED=$(dermasynth jobs status "$SYNTHESIS" --json | field result dataset_id)
echo "new dataset $SYNTHESIZED: classes $(dermasynth datasets show "$SYNTHESIZED" --json | field stats classes)"
echo "  sources $(dermasynth datasets show "$SYNTHESIZED" --json | field stats sources)"

echo "== 8. training job on the synthesized dataset (evaluated on held-out images only, never synthetic ones)"
TRAINING=$(dermasynth jobs submit training --params @deploy/local/training.json --set "dataset_id=$SYNTHESIZED" --wait)
dermasynth jobs status "$TRAINING" --json >"$VAR/training_job.json"
python - "$VAR/training_job.json" <<'PY'
import json, sys
metrics = json.load(open(sys.argv[1]))["result"]["metrics"]
print(f"test split: balanced accuracy {metrics['balanced_accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f} on "
      f"{metrics['n']} held-out images (never synthetic); a tiny demo model, so the numbers mean nothing")
PY

echo "== 9. export the trained model, deploy it on Triton, and ask for predictions as a clinician"
for _ in $(seq 300); do grep -q "tritonserver ready" "$VAR/triton.log" && break; sleep 0.5; done
grep -q "tritonserver ready" "$VAR/triton.log" || { echo "tritonserver did not start; see $VAR/triton.log"; exit 1; }
CLINICIAN_KEY=$(dermasynth keys create --name demo-clinician --scope clinician --owner demo 2>/dev/null)
VERSION=$(dermasynth models export "$TRAINING" --name classifier)  # waits for the export, whether done at once or as a job
dermasynth models deploy classifier "$VERSION"
python - "$VAR/noise.png" <<'PY'
import sys

import numpy as np
from PIL import Image

Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 85, 3), dtype=np.uint8)).save(sys.argv[1])
PY
mapfile -t LESIONS < <(ls "$VAR/data/images/"*.png | head -3)
DERMASYNTH_API_KEY="$CLINICIAN_KEY" dermasynth predict "${LESIONS[@]}" "$VAR/noise.png" --top-k 2

cat <<EOF2

Where to look:
  the generated dataset's classes:    $VAR/class_distribution.png
  the synthesized dataset:            $VAR/store/datasets/$SYNTHESIZED/ (manifest.csv, synthetic/)
  GAN samples per class:              $VAR/store/runs/$SYNTHESIS/gan/grids/
  the classifier's test evaluation:   $VAR/store/runs/$TRAINING/eval/test/ (metrics.json, *.png)
  checkpoints and result.json:        $VAR/store/runs/$TRAINING/
  the served model (Triton layout):   $VAR/store/models/classifier/ (config.pbtxt, 1/model.onnx, contract.json)
  the services' logs:                 $VAR/worker.log, $VAR/gateway.log, $VAR/triton/tritonserver.log
Next: 'make up' starts the same stack on these results and leaves it running: the web app (a page for
clinicians, pages for engineers: datasets, jobs, GAN samples, experiments, models), the API docs, and a
clinician and an engineer key; 'make down' stops it.
EOF2
