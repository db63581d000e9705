"""The device kind a process trains on: choosing it, naming it, and what fmnist does differently on it.

    fmnist train                   # the best there is: a GPU where JAX sees one, else the CPU
    fmnist train --platform cpu    # the CPU even where a GPU is
    fmnist train --platform gpu    # a GPU, or one line saying what to install

JAX chooses its platforms once, when it first initialises its backends (``jax_platforms``, or the
``JAX_PLATFORMS`` variable). ``select`` sets that before then where it can: ``--platform cpu`` then
never starts the CUDA plugin, so no GPU memory is taken. Where JAX has already started (a
notebook, a test), the CPU is chosen per device instead: ``jax_default_device`` becomes the first
CPU device, and the GPU stays idle until a later ``select`` of the GPU (or of the best there is)
clears it. ``--devices N`` stays the count of devices of the kind chosen.

What fmnist does differently per kind is one table (``CHOICES``) of pure data: tests read the GPU
row on a CPU-only machine, and the engine looks its row up by ``current_kind()``.

Precision: ``float32`` (the default on every kind), or ``bf16`` = ``mixed`` (Keras' ``mixed_bfloat16``:
bfloat16 maths, float32 weights). Weights in bfloat16 too (Keras' ``bfloat16`` policy) are not offered:
with them neither fmnist.fit nor Keras' own Model.fit moved the seed model's first kernel at all over
16 Adam steps at lr 1e-3 (Keras 3.15.1, CPU): an update below bfloat16's 8-bit mantissa rounds away.
A Keras dtype policy is read when a layer is built, so ``precision_scope`` covers building the
model; it restores the previous policy on leaving, so nothing leaks into the next fit or test.
"""

from __future__ import annotations

import contextlib
import os
import platform as _platform
from dataclasses import dataclass

from fmnist.errors import DeviceError

KINDS = ("cpu", "gpu")  # what --platform accepts
CUDA_EXTRA = "pip install 'fmnist[cuda]'"
# JAX's installation guide: its CUDA 13 wheels (the extra's) need an NVIDIA driver >= 580 on Linux and a GPU
# of compute capability 7.5 or newer; drivers 525-579 can use JAX's CUDA 12 wheels (pip install 'jax[cuda12]').
CUDA_DRIVER = "an NVIDIA driver >= 580 and a GPU of compute capability >= 7.5"


@dataclass(frozen=True)
class DeviceChoices:
    """What fmnist does on one kind of device."""

    dense_chunk_steps: int  # training steps per compiled program, models without convolutions
    conv_chunk_steps: int  # the same, models with convolutions
    cpu_kernels: bool  # trace conv and max pooling with kernels.py's CPU forms (else XLA's own: cuDNN on a GPU)
    precision: str  # the default of --precision

    def chunk_steps(self, has_conv: bool) -> int:
        return self.conv_chunk_steps if has_conv else self.dense_chunk_steps


CHOICES = {
    # The 2-core CPU machine (benchmarks/engine_schedule.py, BENCHMARKS.md, batch 32): a 256-step loop runs a
    # seed-model step 1.7x faster than one call per step; conv models run 16-step loops of kernels.py's patch
    # products, which stay fast inside a loop where XLA:CPU's own convolution ran ~6x slower.
    "cpu": DeviceChoices(dense_chunk_steps=256, conv_chunk_steps=16, cpu_kernels=True, precision="float32"),
    # A GPU: XLA's own convolution and pooling (cuDNN). The chunk sizes are those the H200 run used until
    # benchmarks/gpu_check.sh measures the GPU row (docs/gpu.md): benchmarks/gpu_speed.py --chunk-steps measures
    # the alternatives.
    "gpu": DeviceChoices(dense_chunk_steps=256, conv_chunk_steps=16, cpu_kernels=False, precision="float32"),
}


def choices(kind: str) -> DeviceChoices:
    """The row of ``CHOICES`` for ``kind``; another accelerator (a TPU) gets the GPU's: XLA's own kernels."""
    return CHOICES.get(kind, CHOICES["gpu"])


def kind_of(jax_platform: str) -> str:
    """fmnist's kind for a JAX platform name: 'cpu' -> 'cpu'; 'gpu', 'cuda', 'rocm' -> 'gpu'; others as they are."""
    return "gpu" if jax_platform in ("gpu", "cuda", "rocm") else jax_platform


# --------------------------------------------------------------------------- choosing the kind
def select(platform: str | None = None) -> str:
    """Make ``platform`` ('cpu' or 'gpu'; None: the best there is) the kind this process trains on; returns it.

    Process-wide, like JAX's own settings: applications (the CLI) call it before any JAX
    computation; the library never does. Raises DeviceError when the kind is not there.
    """
    import jax

    if platform is not None and platform not in KINDS:
        raise DeviceError(
            f"--platform {platform!r}: use one of {', '.join(KINDS)} (or leave it out for the best there is)."
        )
    if platform == "cpu" and not _backends_started() and not jax.config.jax_platforms:
        jax.config.update("jax_platforms", "cpu")  # the CUDA plugin is never started: no GPU memory taken
    kinds, limited = available_kinds(), jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS")
    if platform == "gpu" and "gpu" not in kinds:
        raise DeviceError(no_gpu_message(limited))
    if platform == "cpu" and "cpu" not in kinds:
        raise DeviceError(f"--platform cpu: JAX is limited to {limited!r} (JAX_PLATFORMS): add cpu to it, or unset it.")
    if platform == "cpu" and current_kind() != "cpu":
        jax.config.update("jax_default_device", jax.devices("cpu")[0])
    if platform != "cpu" and "gpu" in kinds and current_kind() == "cpu":
        jax.config.update("jax_default_device", None)  # an earlier select("cpu") in this process is undone
    if platform == "gpu" and current_kind() != "gpu":
        raise DeviceError(no_gpu_message(limited))
    return current_kind()


def no_gpu_message(jax_platforms: str | None = None) -> str:
    """The one line for ``--platform gpu`` where JAX sees no GPU (``jax_platforms``: JAX's setting, if any)."""
    if jax_platforms and "gpu" not in jax_platforms and "cuda" not in jax_platforms:
        return (
            f"--platform gpu: JAX is limited to {jax_platforms!r} (JAX_PLATFORMS or jax_platforms): unset it, or "
            "leave out --platform gpu."
        )
    return (
        f"--platform gpu: JAX sees no GPU here. Install JAX's CUDA wheels with {CUDA_EXTRA} (they need "
        f"{CUDA_DRIVER}; `nvidia-smi` shows the driver), or leave out --platform to train on the CPU."
    )


def available_kinds() -> list[str]:
    """The kinds JAX has devices of here (starts JAX's backends if they have not started)."""
    import jax

    found = []
    for kind in KINDS:
        with contextlib.suppress(RuntimeError, AssertionError):  # JAX's errors for a platform it has not got
            if jax.devices(kind):
                found.append(kind)
    return found


def current_kind() -> str:
    """The kind this process trains on: that of ``jax_default_device`` if set, else of JAX's default backend."""
    import jax

    device = jax.config.jax_default_device
    if device is None:
        return kind_of(jax.default_backend())
    return kind_of(device if isinstance(device, str) else device.platform)


def _backends_started() -> bool:
    from jax._src import xla_bridge  # JAX has no public name for it; its own jax_platforms check reads the same

    return xla_bridge.backends_are_initialized()


# --------------------------------------------------------------------------- naming it
def device_name(kind: str, device_kind: str = "", cpu_model: str = "", cores: int = 1) -> str:
    """'gpu: NVIDIA H200' for an accelerator (JAX's ``device_kind``), 'cpu: <model> (N cores)' for the CPU."""
    if kind == "cpu":
        return f"cpu: {cpu_model or 'unknown model'} ({cores} core{'s' if cores != 1 else ''})"
    return f"{kind}: {device_kind or 'unknown model'}"


def describe(kind: str | None = None) -> str:
    """The name of the device this process trains on (of ``kind``'s first device if given)."""
    import jax

    kind = kind or current_kind()
    if kind == "cpu":
        return device_name("cpu", cpu_model=cpu_model(), cores=cpu_cores())
    return device_name(kind, device_kind=jax.devices(kind)[0].device_kind)


def record(precision: str | None = None) -> dict:
    """What config.json and the report record of the device: its kind, its name and the precision."""
    kind = current_kind()
    return {"platform": kind, "device": describe(kind), "precision": precision or choices(kind).precision}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what Python's platform module says."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
        for line in info:
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return _platform.processor() or _platform.machine()


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity, not the machine's total where they differ)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# --------------------------------------------------------------------------- precision
# --precision -> Keras policy; bf16 is mixed (see the module docstring: bfloat16 weights do not train).
PRECISIONS = {"float32": "float32", "bf16": "mixed_bfloat16", "mixed": "mixed_bfloat16"}


def dtype_policy(precision: str) -> str:
    """The Keras dtype policy name of a ``--precision`` value."""
    if precision not in PRECISIONS:
        raise DeviceError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}.")
    return PRECISIONS[precision]


@contextlib.contextmanager
def precision_scope(precision: str):
    """Layers built inside this block use ``precision``'s Keras dtype policy; the previous one is restored after.

    Keras keeps the policy per thread, so another thread's fit is not affected.
    """
    from fmnist._backend import keras

    policy = dtype_policy(precision)
    saved = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(saved)
