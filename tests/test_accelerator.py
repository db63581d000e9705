"""The device kind: the per-kind table, choosing a kind (and the error where a GPU is asked and none is),
the device's name, and the precision's Keras dtype policy, scoped. All of it runs on a CPU-only machine."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fmnist import accelerator, models
from fmnist._backend import keras
from fmnist.errors import DeviceError, FmnistError

SRC = str(Path(accelerator.__file__).resolve().parents[1])


# --------------------------------------------------------------------------- the table
def test_the_cpu_row_uses_the_cpu_kernels_and_the_measured_chunks():
    cpu = accelerator.choices("cpu")
    assert cpu.cpu_kernels is True
    assert (cpu.chunk_steps(has_conv=False), cpu.chunk_steps(has_conv=True)) == (256, 16)
    assert cpu.precision == "float32"


def test_the_gpu_row_uses_xla_s_own_kernels_in_float32():
    gpu = accelerator.choices("gpu")
    assert gpu.cpu_kernels is False
    assert gpu.precision == "float32"
    assert gpu.chunk_steps(has_conv=True) == gpu.conv_chunk_steps >= 1
    assert gpu.chunk_steps(has_conv=False) == gpu.dense_chunk_steps >= 1


def test_every_kind_has_a_row_and_another_accelerator_gets_the_gpu_s():
    assert set(accelerator.CHOICES) == set(accelerator.KINDS)
    assert accelerator.choices("tpu") == accelerator.choices("gpu")
    for row in accelerator.CHOICES.values():
        assert row.precision in accelerator.PRECISIONS


@pytest.mark.parametrize(
    ("jax_platform", "kind"), [("cpu", "cpu"), ("gpu", "gpu"), ("cuda", "gpu"), ("rocm", "gpu"), ("tpu", "tpu")]
)
def test_jax_platform_names_map_to_kinds(jax_platform, kind):
    assert accelerator.kind_of(jax_platform) == kind


# --------------------------------------------------------------------------- naming
def test_device_names_say_the_kind_and_the_model():
    assert accelerator.device_name("gpu", device_kind="NVIDIA H200") == "gpu: NVIDIA H200"
    assert accelerator.device_name("cpu", cpu_model="AMD EPYC 9654", cores=16) == "cpu: AMD EPYC 9654 (16 cores)"
    assert accelerator.device_name("cpu", cpu_model="Cortex-A72", cores=1) == "cpu: Cortex-A72 (1 core)"


def test_this_machine_is_named_as_its_cpu():
    name = accelerator.describe()
    assert accelerator.current_kind() == "cpu"
    assert (
        name == f"cpu: {accelerator.cpu_model()} ({accelerator.cpu_cores()} core{'s' * (accelerator.cpu_cores() > 1)})"
    )
    assert accelerator.cpu_model() and accelerator.cpu_cores() >= 1
    assert accelerator.record("mixed") == {"platform": "cpu", "device": name, "precision": "mixed"}
    assert accelerator.record()["precision"] == "float32"  # the kind's default


# --------------------------------------------------------------------------- choosing the kind
def test_asking_for_a_gpu_on_a_cpu_only_machine_is_one_line_naming_the_extra_and_the_driver():
    assert accelerator.available_kinds() == ["cpu"]
    with pytest.raises(DeviceError) as caught:
        accelerator.select("gpu")
    message = str(caught.value)
    assert isinstance(caught.value, FmnistError) and "\n" not in message
    assert "pip install 'fmnist[cuda]'" in message and ">= 580" in message
    assert accelerator.current_kind() == "cpu"  # nothing changed


def test_a_gpu_excluded_by_jax_platforms_is_said_so():
    message = accelerator.no_gpu_message("cpu")
    assert "JAX_PLATFORMS" in message and "'cpu'" in message and "\n" not in message


def test_cpu_and_the_best_there_is_select_the_cpu_here():
    assert accelerator.select("cpu") == "cpu"
    assert accelerator.select(None) == "cpu"


@pytest.fixture
def gpu_seen(monkeypatch):
    """JAX as on a GPU machine after ``select('cpu')`` in the same process: the CPU is the default device."""
    import jax

    saved = jax.config.jax_default_device
    monkeypatch.setattr(accelerator, "available_kinds", lambda: ["cpu", "gpu"])
    jax.config.update("jax_default_device", jax.devices("cpu")[0])
    yield jax
    jax.config.update("jax_default_device", saved)


def test_the_best_there_is_after_choosing_the_cpu_clears_the_cpu_choice(gpu_seen):
    accelerator.select(None)
    assert gpu_seen.config.jax_default_device is None


def test_a_gpu_asked_after_choosing_the_cpu_is_never_the_cpu(gpu_seen):
    # here the default backend is the CPU, so clearing the CPU choice still finds no GPU: the error, not "cpu"
    with pytest.raises(DeviceError, match="--platform gpu"):
        accelerator.select("gpu")
    assert gpu_seen.config.jax_default_device is None


def test_an_unknown_platform_lists_the_kinds():
    with pytest.raises(DeviceError, match="use one of cpu, gpu"):
        accelerator.select("tpu")


def _fresh(code: str, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}  # JAX's own choice, unless given
    environment.update(PYTHONPATH=SRC, KERAS_BACKEND="jax", **env)
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120)


def test_selecting_before_jax_starts_sets_its_platforms():
    done = _fresh(
        "import jax; from fmnist import accelerator as a; from jax._src import xla_bridge as x\n"
        "assert not x.backends_are_initialized()\n"
        "print(a.select('cpu'), jax.config.jax_platforms, a.describe())\n"
    )
    assert done.returncode == 0, done.stderr
    kind, platforms, name = done.stdout.split(maxsplit=2)
    assert (kind, platforms) == ("cpu", "cpu") and name.startswith("cpu: ")


def test_a_fresh_process_asking_for_a_gpu_gets_the_error():
    done = _fresh(
        "from fmnist import accelerator as a\n"
        "try:\n    a.select('gpu')\nexcept a.DeviceError as e:\n    print('error:', e)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("error: --platform gpu: JAX sees no GPU") and "fmnist[cuda]" in done.stdout


# --------------------------------------------------------------------------- precision
def test_precisions_map_to_keras_policies():
    # bf16 is mixed: bfloat16 variables do not train (small updates round away), so it is no policy of its own
    assert accelerator.PRECISIONS == {"float32": "float32", "bf16": "mixed_bfloat16", "mixed": "mixed_bfloat16"}
    for precision, policy in accelerator.PRECISIONS.items():
        assert accelerator.dtype_policy(precision) == policy
    with pytest.raises(DeviceError, match="use one of float32, bf16, mixed"):
        accelerator.dtype_policy("fp8")
    for foreign in ("mixed_float16", "bfloat16"):  # Keras' names are not --precision values
        with pytest.raises(DeviceError):
            accelerator.dtype_policy(foreign)


def test_a_model_built_in_a_precision_scope_keeps_it_and_nothing_leaks():
    before = keras.config.dtype_policy().name
    with accelerator.precision_scope("mixed") as policy:
        assert policy == "mixed_bfloat16"
        model = models.build_model(models.ModelSpec())
    assert keras.config.dtype_policy().name == before == "float32"
    dense = model.get_layer("hidden0")
    assert (dense.compute_dtype, dense.variable_dtype) == ("bfloat16", "float32")
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert models.build_model(models.ModelSpec()).get_layer("hidden0").compute_dtype == "float32"


def test_the_policy_is_restored_after_an_error_and_is_per_thread():
    with pytest.raises(RuntimeError), accelerator.precision_scope("bf16"):
        raise RuntimeError("a failed build")
    assert keras.config.dtype_policy().name == "float32"
    seen = []
    with accelerator.precision_scope("bf16"):
        worker = threading.Thread(target=lambda: seen.append(keras.config.dtype_policy().name))
        worker.start()
        worker.join()
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert seen == ["float32"]
