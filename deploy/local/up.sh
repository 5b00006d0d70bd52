#!/usr/bin/env bash
# `make up`: start the local stack and leave it running: Redis (if none answers), a Celery worker, a local
# tritonserver, the gateway and the web app. Prints the URLs and a clinician and an engineer API key.
# `make down` (deploy/local/down.sh) stops exactly what this started, from the pid file it writes.
#
# It uses the same folder as `make demo` (var/demo: the store with the demo's datasets, runs and models), so
# after a demo the web app shows what the demo made. Options (environment):
#   DERMASYNTH_LOCAL_DIR    the folder (default var/demo)
#   DERMASYNTH_UP_GATEWAY_PORT / DERMASYNTH_UP_WEB_PORT   ports (default 8080 / 8501, or free ones if taken)
#   DERMASYNTH_REDIS_URL    a Redis to use (default: the local one, else a redis-server started here)
#   DERMASYNTH_UP_OWNER     the owner (team) of the two keys it issues (default local)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
VAR=${DERMASYNTH_LOCAL_DIR:-var/demo}
mkdir -p "$VAR"
VAR=$(cd "$VAR" && pwd)
PIDS="$VAR/stack.pids"

export PYTHONPATH="$ROOT/shared:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export DERMASYNTH_STORE=filesystem
export DERMASYNTH_STORE_ROOT="$VAR/store"
export DERMASYNTH_CACHE_ROOT="$VAR/cache"
export DERMASYNTH_JOB_KEY_PREFIX=${DERMASYNTH_JOB_KEY_PREFIX:-dermasynth-demo}
export DERMASYNTH_WORKER_METRICS_PORT=0
export DERMASYNTH_GATEWAY_INTERNAL_PORT=${DERMASYNTH_GATEWAY_INTERNAL_PORT:-0}  # its /metrics port; 0: off (two stacks would share 9809)
export DERMASYNTH_REDIS_URL=${DERMASYNTH_REDIS_URL:-redis://127.0.0.1:6379/0}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
if [ -f "$PIDS" ]; then
  while read -r _ pid _; do
    if alive "$pid"; then echo "the stack of $VAR is already running (pid $pid); 'make down' first"; exit 1; fi
  done <"$PIDS"
  rm -f "$PIDS"
fi

free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_or_free() {  # the wanted port if nothing listens there, else a free one
  python -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1]))); print(sys.argv[1])
except OSError:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' "$1"
}
redis_answers() { python -c 'import redis, sys; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()' \
  "$DERMASYNTH_REDIS_URL" 2>/dev/null; }
answers() { python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null; }
start_time() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# Every process is started in a session of its own (setsid), recorded as "name pid start-time": down.sh
# stops each one's process group, and only if the pid still belongs to the process started here.
started() { echo "$1 $2 $(start_time "$2")" >>"$PIDS"; }
fail() {
  echo "make up: $1" >&2
  bash "$ROOT/deploy/local/down.sh" >/dev/null 2>&1 || true
  exit 1
}
trap 'fail "interrupted"' INT TERM

echo "== Redis ($DERMASYNTH_REDIS_URL)"
if redis_answers; then
  echo "using the Redis that is running"
elif command -v redis-server >/dev/null; then
  port=$(free_port)
  export DERMASYNTH_REDIS_URL="redis://127.0.0.1:$port/0"
  setsid redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >"$VAR/redis.log" 2>&1 &
  started redis $!
  for _ in $(seq 50); do redis_answers && break; sleep 0.2; done
  redis_answers || fail "redis-server did not start; see $VAR/redis.log"
  echo "started redis-server on port $port"
else
  fail "no Redis answers at $DERMASYNTH_REDIS_URL and redis-server is not installed (sudo apt install redis-server)"
fi

echo "== a Celery worker on queues gan, train, default (log: $VAR/worker.log)"
setsid celery -A services.worker.celery_app worker --pool=solo -Q gan,train,default -n "local-$$@%h" \
  --without-gossip --without-mingle --without-heartbeat -l INFO >"$VAR/worker.log" 2>&1 &
started worker $!

export DERMASYNTH_TRITON_URL="127.0.0.1:$(free_port)"
echo "== tritonserver on $DERMASYNTH_TRITON_URL (log: $VAR/triton/tritonserver.log)"
setsid python -m services.inference --work-dir "$VAR/triton" --metrics-port 0 >"$VAR/triton.log" 2>&1 &
started tritonserver $!

port=$(port_or_free "${DERMASYNTH_UP_GATEWAY_PORT:-8080}")
export DERMASYNTH_GATEWAY_URL="http://127.0.0.1:$port"
echo "== the gateway on $DERMASYNTH_GATEWAY_URL (log: $VAR/gateway.log)"
setsid uvicorn services.gateway.app:create_app --factory --host 127.0.0.1 --port "$port" >"$VAR/gateway.log" 2>&1 &
started gateway $!

web_port=$(port_or_free "${DERMASYNTH_UP_WEB_PORT:-8501}")
WEB="http://127.0.0.1:$web_port"
echo "== the web app on $WEB (log: $VAR/webapp.log)"
(cd services/frontend && exec setsid streamlit run app.py --server.port "$web_port" --server.address 127.0.0.1 \
  >"$VAR/webapp.log" 2>&1) &
started webapp $!

for _ in $(seq 600); do answers "$DERMASYNTH_GATEWAY_URL/v1/health/live" && break; sleep 0.5; done
answers "$DERMASYNTH_GATEWAY_URL/v1/health/live" || fail "the gateway did not start; see $VAR/gateway.log"
for _ in $(seq 600); do grep -q " ready." "$VAR/worker.log" && break; sleep 0.5; done
grep -q " ready." "$VAR/worker.log" || fail "the worker did not start; see $VAR/worker.log"
for _ in $(seq 600); do grep -q "tritonserver ready" "$VAR/triton.log" && break; sleep 0.5; done
grep -q "tritonserver ready" "$VAR/triton.log" || fail "tritonserver did not start; see $VAR/triton.log"
for _ in $(seq 600); do answers "$WEB/_stcore/health" && break; sleep 0.5; done
answers "$WEB/_stcore/health" || fail "the web app did not start; see $VAR/webapp.log"

OWNER=${DERMASYNTH_UP_OWNER:-local}
CLINICIAN_KEY=$(dermasynth keys create --name "local clinician" --scope clinician --owner "$OWNER" 2>/dev/null) \
  || fail "cannot issue the clinician key (dermasynth keys create)"
ENGINEER_KEY=$(dermasynth keys create --name "local engineer" --scope engineer --scope deployer --owner "$OWNER" \
  2>/dev/null) || fail "cannot issue the engineer key (dermasynth keys create)"
trap - INT TERM

cat <<EOF

DermaSynth is running (stop it with 'make down'):
  web app:         $WEB
  API docs:        $DERMASYNTH_GATEWAY_URL/docs
  clinician key:   $CLINICIAN_KEY
  engineer key:    $ENGINEER_KEY   (engineer and deployer scopes)
  store and logs:  $VAR (worker.log, gateway.log, triton/tritonserver.log, webapp.log)
Keys are per person: issue one for each colleague with
  DERMASYNTH_REDIS_URL=$DERMASYNTH_REDIS_URL DERMASYNTH_JOB_KEY_PREFIX=$DERMASYNTH_JOB_KEY_PREFIX \\
    dermasynth keys create --name "Dr A. Jones" --scope clinician --owner $OWNER
EOF
