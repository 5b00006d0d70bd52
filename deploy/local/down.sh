#!/usr/bin/env bash
# `make down`: stop exactly what `make up` started, from its pid file; nothing else is touched.
# A recorded pid is stopped only while it still belongs to the process up.sh started (same start time), so a
# pid the system has since given to another program is left alone. SIGTERM first (the worker hands its job
# back within its grace period), SIGKILL for what is still there after DERMASYNTH_DOWN_GRACE_S (default 100).
set -uo pipefail
cd "$(dirname "$0")/../.."
VAR=${DERMASYNTH_LOCAL_DIR:-var/demo}
PIDS="$VAR/stack.pids"
GRACE=${DERMASYNTH_DOWN_GRACE_S:-100}

if [ ! -f "$PIDS" ]; then
  echo "nothing to stop: no $PIDS (make up writes it)"
  exit 0
fi

ours() { [ -e "/proc/$1" ] && [ "$(awk '{print $22}' "/proc/$1/stat" 2>/dev/null)" = "$2" ]; }

mapfile -t lines < <(tac "$PIDS")  # the web app first, Redis last
for line in "${lines[@]}"; do
  read -r name pid since <<<"$line"
  if ours "$pid" "$since"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    echo "stopping $name (pid $pid)"
  fi
done
deadline=$((SECONDS + GRACE))
for line in "${lines[@]}"; do
  read -r name pid since <<<"$line"
  while ours "$pid" "$since" && [ $SECONDS -lt $deadline ]; do
    # a process that exited but was not reaped (its parent is gone) counts as stopped
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = "Z" ] && break
    sleep 0.2
  done
  if ours "$pid" "$since" && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ]; then
    echo "$name (pid $pid) did not stop in ${GRACE} s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  fi
done
rm -f "$PIDS"
echo "stopped what 'make up' started"
