#!/usr/bin/env bash
# Wheels to carry to a GPU machine that has JAX with CUDA and PyTorch but no Keras and no network
# (benchmarks/gpu_check.sh and gpu_accuracy.sh install them): keras and its small dependencies at the
# versions of this environment, and the four dataset files. fmnist itself is not among them: the scripts run
# it from the source tree's src/, so the GPU runs the code checked out beside them.
#
#   benchmarks/gpu_wheels.sh [DIR]            # default gpu_wheels/ (git-ignored); carry DIR with the tree
#   GPU_PYTHON=3.11 benchmarks/gpu_wheels.sh /tmp/w   # for another CPython (default 3.12, the H200 machine's)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-gpu_wheels}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then
  PY=.venv/bin/python  # the project's environment: the versions its tests ran with
else
  PY=${PYTHON:-python3}
fi
GPU_PYTHON=${GPU_PYTHON:-3.12}
# What the H200 machine lacked (see BENCHMARKS.md, GPU): keras and the packages keras and fmnist's data module
# import that it had not got. The same versions as here, so the GPU runs the code the CPU tests ran.
PACKAGES=(keras namex optree pooch platformdirs)
mkdir -p "$DIR/data"
pins=()
for p in "${PACKAGES[@]}"; do
  pins+=("$p==$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$p")")
done
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$GPU_PYTHON" \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform any -d "$DIR" "${pins[@]}"  # glibc 2.28 or newer, as on the H200 machine
# The dataset (fmnist verifies it on load by its digests): the four files wherever fmnist finds them here.
"$PY" -c "import fmnist.data as d; print('\n'.join(map(str, d.locate(download_missing=False).files.values())))" \
  | while read -r f; do cp "$f" "$DIR/data/"; done
ls -l "$DIR" "$DIR/data"
echo "carry $DIR; on the GPU machine: FMNIST_DATA_DIR=$DIR/data GPU_WHEELS=$DIR benchmarks/gpu_check.sh"
