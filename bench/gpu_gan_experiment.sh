#!/usr/bin/env bash
# Does GAN augmentation earn its place, on a GPU? One script: the 15-minute setting by default, larger with --scale.
#
#   bench/gpu_gan_experiment.sh                      # configs/experiments/gpu-gan-small.yaml (fits 15 min on an H200)
#   bench/gpu_gan_experiment.sh --scale full         # configs/experiments/gpu-full.yaml (days on one GPU)
#   bench/gpu_gan_experiment.sh --out DIR --resume   # continue an interrupted run (work is keyed, nothing redone)
#   bench/gpu_gan_experiment.sh --inception FILE     # also FID/KID in the standard Inception space (local weights)
#
# Writes DIR/report/report.md (rare-class answers, GAN cost per arm, verdicts over seeds and test images) and
# prints the summary; nvidia-smi and the load average go into DIR/env.txt. Needs the real HAM10000 copy at
# ../shared/data/ham10000_200x150 or DERMASYNTH_REAL_HAM10000. Stops itself at --limit seconds (default 840)
# so that the command returns inside the budget; finished runs are kept: rerun with --resume to finish.
set -euo pipefail
cd "$(dirname "$0")/.."
scale=small out="${OUT:-/tmp/dermasynth-gpu-gan}" resume="" inception="" limit=840
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) scale="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --resume) resume="--resume"; shift ;;
    --inception) inception="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    *) echo "unknown option $1 (accepted: --scale small|full, --out DIR, --resume, --inception FILE, --limit S)" >&2; exit 2 ;;
  esac
done
case "$scale" in
  small) config=configs/experiments/gpu-gan-small.yaml ;;
  full) config=configs/experiments/gpu-full.yaml ;;
  *) echo "--scale must be small or full, not $scale" >&2; exit 2 ;;
esac
python=${PYTHON:-python}
"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script needs a GPU')"
mkdir -p "$out"
if [ -n "$inception" ]; then  # the config with the standard feature space switched on
  "$python" - "$config" "$out/config.yaml" "$inception" <<'PY'
import sys, yaml
from pathlib import Path
src, dst, weights = sys.argv[1:]
raw = yaml.safe_load(Path(src).read_text())
raw.setdefault("quality", {})["inception_weights"] = str(Path(weights).resolve())
data = raw.get("data", {})
if "import_from" in data and not Path(data["import_from"]).is_absolute():
    data["import_from"] = str((Path(src).resolve().parent / data["import_from"]).resolve())
Path(dst).write_text(yaml.safe_dump(raw, sort_keys=False))
PY
  config="$out/config.yaml"
fi
{ nvidia-smi || true; uptime; nproc; } > "$out/env.txt" 2>&1
timeout --signal=INT "$limit" "$python" bench/experiment_cpu.py --config "$config" --out "$out" --threads "$(nproc)" $resume
