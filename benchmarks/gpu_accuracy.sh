#!/usr/bin/env bash
# One 5-minute run: `fmnist train --recipe best --time-budget 300` on the GPU, its wall clock and test accuracy
# as one JSON line (stdout and $GPU_ACCURACY_OUT, default $OUT/gpu_accuracy.jsonl where OUT names a folder, else
# ./gpu_accuracy.jsonl). Seed 0 unless GPU_ACCURACY_SEED says otherwise.
#
#   FMNIST_DATA_DIR=gpu_wheels/data benchmarks/gpu_accuracy.sh
#   GPU_ACCURACY_LIMIT=600 GPU_ACCURACY_BUDGET=120 GPU_ACCURACY_PLATFORM=cpu JAX_PLATFORMS=cpu benchmarks/gpu_accuracy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_env.sh
JSONL=${GPU_ACCURACY_OUT:-${OUT:-.}/gpu_accuracy.jsonl}
args=()
if [ -n "${GPU_ACCURACY_LIMIT:-}" ]; then
  args+=(--limit "$GPU_ACCURACY_LIMIT")
fi
"$PYTHON" benchmarks/gpu_speed.py --platform "${GPU_ACCURACY_PLATFORM:-gpu}" --models "" \
  --budgets "${GPU_ACCURACY_BUDGET:-300}" --recipes "${GPU_ACCURACY_RECIPE:-best}" --seed "${GPU_ACCURACY_SEED:-0}" \
  --out "$JSONL" "${args[@]}"
