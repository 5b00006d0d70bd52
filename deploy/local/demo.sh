#!/usr/bin/env bash
# `make demo`: the local embedded default, end to end on GENERATED demo lesions (no download needed).
set -euo pipefail
cd "$(dirname "$0")/../.."
VAR=${DERMASYNTH_DEMO_DIR:-var/demo}
mkdir -p "$VAR"

echo "== 1. generated demo dataset (drawings of lesions, not real skin) -> $VAR/data"
if [ ! -f "$VAR/data/manifest.csv" ]; then
  dermasynth data make-demo "$VAR/data" --size 64 --count 700 --seed 0
fi
dermasynth data stats "$VAR/data" --plot "$VAR/class_distribution.png"
echo "look at: $VAR/class_distribution.png"
