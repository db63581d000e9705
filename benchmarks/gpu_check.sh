#!/usr/bin/env bash
# The GPU figures in one run, under 8 minutes on an H200: the speed table (fmnist.fit against the same nets
# in PyTorch compiled with CUDA graphs, mode="reduce-overhead", and in eager PyTorch; mlp, cnn, vgg at batch
# 128 and 512; fmnist also with other chunk sizes), then one `fmnist train --recipe best --time-budget 60`.
# One JSON line per figure, on stdout and in $GPU_CHECK_OUT (default $OUT/gpu_check.jsonl where OUT names a
# folder, else ./gpu_check.jsonl). Each step has a time limit, so a slow compile cannot take the whole run; the
# figures written before it stopped are kept. See docs/gpu.md.
#
#   FMNIST_DATA_DIR=gpu_wheels/data benchmarks/gpu_check.sh
#   GPU_CHECK_LIMIT=600 GPU_CHECK_PLATFORM=cpu JAX_PLATFORMS=cpu benchmarks/gpu_check.sh   # a dry run on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
source benchmarks/gpu_env.sh
PLATFORM=${GPU_CHECK_PLATFORM:-gpu}
JSONL=${GPU_CHECK_OUT:-${OUT:-.}/gpu_check.jsonl}
TRAINERS=${GPU_CHECK_TRAINERS:-fmnist,torch-compiled,torch-eager}  # add torch-graphed for the hand-captured step
CHUNKS=${GPU_CHECK_CHUNKS:-64,256}  # fmnist's chunk sizes tried beside its default
BUDGET=${GPU_CHECK_BUDGET:-60}
EPOCHS=4  # the first compiles; the median of the other three is the steady epoch
TABLE_S=${GPU_CHECK_TABLE_S:-420}  # the speed table's limit: with the budget run's, the 8 minutes
args=()
if [ -n "${GPU_CHECK_LIMIT:-}" ]; then  # a dry run: few images, two epochs, a CPU-sized budget
  args+=(--limit "$GPU_CHECK_LIMIT"); EPOCHS=2; BUDGET=${GPU_CHECK_BUDGET:-120}
fi
RUN_S=$((BUDGET + 90))  # the budget run's limit: its budget, then startup, evaluation and saving
timeout "$TABLE_S" "$PYTHON" benchmarks/gpu_speed.py --platform "$PLATFORM" --models mlp,cnn,vgg \
  --batches 128,512 --trainers "$TRAINERS" --chunk-steps "$CHUNKS" --epochs "$EPOCHS" --out "$JSONL" "${args[@]}" \
  || echo "gpu_check: the speed table stopped (exit $?; limit ${TABLE_S} s): its figures so far are in $JSONL" >&2
timeout "$RUN_S" "$PYTHON" benchmarks/gpu_speed.py --platform "$PLATFORM" --models "" --budgets "$BUDGET" \
  --recipes best --out "$JSONL" "${args[@]}" \
  || echo "gpu_check: the budget run stopped (exit $?; limit ${RUN_S} s)" >&2
echo "gpu_check: $((SECONDS - start)) s; figures in $JSONL" >&2
