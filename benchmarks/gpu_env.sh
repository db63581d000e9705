# Sourced by gpu_check.sh and gpu_accuracy.sh (from the source tree's root): make fmnist importable on a GPU
# machine without Keras or network. fmnist comes from this tree's src/, so the GPU runs the code checked out here.
#   GPU_WHEELS   the carried wheels of what the machine lacks (benchmarks/gpu_wheels.sh made them; default gpu_wheels)
#   GPU_SITE     where they are installed (default /tmp/fmnist-site; a fresh folder each run)
#   PYTHON       the interpreter that has JAX with CUDA and PyTorch (default python3)
#   FMNIST_DATA_DIR  the four dataset files (default GPU_WHEELS/data)
PYTHON=${PYTHON:-python3}
GPU_WHEELS=${GPU_WHEELS:-gpu_wheels}
GPU_SITE=${GPU_SITE:-/tmp/fmnist-site}
export FMNIST_DATA_DIR=${FMNIST_DATA_DIR:-$GPU_WHEELS/data}
export KERAS_BACKEND=jax
# JAX takes 75% of the GPU's memory at start by default; half leaves PyTorch, in the same process, room enough.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}
ls "$GPU_WHEELS"/*.whl >/dev/null || { echo "no wheels in $GPU_WHEELS: run benchmarks/gpu_wheels.sh where pip works" >&2; exit 2; }
rm -rf "$GPU_SITE"
# --no-deps: the machine's own JAX, numpy, torch… stay as they are; only what it lacks comes from the wheels.
"$PYTHON" -m pip install --quiet --no-index --no-deps --target "$GPU_SITE" "$GPU_WHEELS"/*.whl
export PYTHONPATH="$PWD/src:$GPU_SITE${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PYTHON" -c "import fmnist, jax, keras, torch; print('fmnist from', fmnist.__file__); \
print('jax', jax.__version__, jax.devices(), '| keras', keras.__version__, '| torch', torch.__version__, \
'cuda' if torch.cuda.is_available() else 'cpu')"
