"""The device kind in a training: --platform and --precision as settings, the per-kind choices the engine
reads (chunk sizes, kernels.py's CPU forms), the device recorded in the run, and mixed precision training.
Everything runs on a CPU-only machine: the GPU's row is read as data, the GPU's absence is the error path."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from fmnist import accelerator, batching, cli, engine, fitting, kernels, models, runs
from fmnist._backend import keras
from fmnist.config import TrainConfig
from fmnist.errors import DeviceError, FmnistError
from test_cli_data import assert_one_line_error, fmnist


# --------------------------------------------------------------------------- the settings
def test_platform_and_precision_are_settings_with_flags_and_checked():
    import typer

    from fmnist.cli.train import train_config

    train_command = typer.main.get_command(cli.app).get_command(None, "train")
    params = train_command.make_context("fmnist train", ["--platform", "cpu", "--precision", "bf16"]).params
    config = train_config(params)  # as `fmnist train` maps its flags
    assert (config.platform, config.precision) == ("cpu", "bf16")
    assert cli._fixed_flags(["--precision", "bf16"]).precision == "bf16"  # a sweep's trials take it too
    assert (TrainConfig().platform, TrainConfig().precision) == (None, None)  # the best there is, its default
    with pytest.raises(FmnistError, match="use cpu or gpu"):
        TrainConfig(platform="tpu")
    with pytest.raises(DeviceError, match="use one of float32, bf16, mixed"):
        TrainConfig(precision="fp16")


def test_a_sweep_refuses_a_platform():
    with pytest.raises(FmnistError, match="best device there is"):
        from fmnist import sweep

        sweep.parse_grid(["platform=cpu,gpu"])
    result = CliRunner().invoke(cli.app, ["sweep", "--set", "hidden=8,16", "--platform", "cpu"])
    assert isinstance(
        result.exception, FmnistError
    ) and "does not take --platform (a sweep's trials train on the best device there is)" in str(result.exception)


# --------------------------------------------------------------------------- what the engine reads per kind
def test_chunk_steps_come_from_the_kind_s_row():
    dense = models.build_model(models.ModelSpec(hidden=(8,)))
    conv = models.build_model(models.ModelSpec(arch="cnn", conv_filters=(4,), hidden=(8,)))
    assert (batching.default_chunk_steps(dense), batching.default_chunk_steps(conv)) == (256, 16)  # the CPU's
    gpu = accelerator.choices("gpu")
    assert batching.default_chunk_steps(dense, "gpu") == gpu.dense_chunk_steps
    assert batching.default_chunk_steps(conv, "gpu") == gpu.conv_chunk_steps
    assert batching.chunking(conv, 6400, 32).chunk_steps == 16


def test_the_cpu_forms_of_conv_and_pooling_are_used_only_where_the_kind_s_row_says(monkeypatch):
    from keras.src.backend.jax import nn as keras_jax_nn

    original = keras_jax_nn.conv
    with kernels.cpu_kernels():
        assert keras_jax_nn.conv is not original  # the CPU: kernels.py's forms
    monkeypatch.setattr(accelerator, "current_kind", lambda: "gpu")
    with kernels.cpu_kernels():
        assert keras_jax_nn.conv is original  # a GPU: XLA's own (cuDNN)
    assert keras_jax_nn.conv is original


# --------------------------------------------------------------------------- mixed precision
@pytest.mark.parametrize(
    ("precision", "spec"),
    [("mixed", {"hidden": (16,)}), ("bf16", {"arch": "cnn", "conv_filters": (4,), "hidden": (8,)})],
)
def test_a_mixed_precision_fit_trains_and_predicts_float32(tiny_data, precision, spec):
    x, y = tiny_data
    config = TrainConfig(model=spec, precision=precision, batch_size=20, seed=0)
    model = fitting.build(config, total_steps=20)
    assert keras.config.dtype_policy().name == "float32"  # the policy stayed with the build
    hidden = model.get_layer("hidden0")
    assert (hidden.compute_dtype, hidden.variable_dtype) == ("bfloat16", "float32")  # bf16 is mixed too
    assert model.get_layer("probabilities").compute_dtype == "float32"
    before = [w.copy() for w in model.get_weights()]
    history = engine.fit(model, x, y, batch_size=20, epochs=2, seed=0, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    moved = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True)]
    assert all(w.dtype == np.float32 for w in model.get_weights()) and moved[0] and moved[-1]
    probs = engine.predict_proba(model, x[:50])
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    scores = engine.evaluate(model, x[:50], y[:50])
    assert isinstance(scores["loss"], float) and 0.0 <= scores["accuracy"] <= 1.0
    plain = fitting.build(dataclasses.replace(config, precision=None), total_steps=20)
    assert plain.get_layer("hidden0").compute_dtype == "float32"  # nothing leaked into the next build


# --------------------------------------------------------------------------- the command
def test_train_on_the_cpu_records_the_device_and_the_report_shows_it(dataset, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--platform", "cpu", "--limit", "64", "--epochs", "1", "--hidden", "8", "--out", str(out)]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    name = accelerator.describe("cpu")
    assert f"device: {name}, precision float32" in result.output.splitlines()
    saved = json.loads((out / runs.CONFIG_FILE).read_text())
    assert saved["platform"] == "cpu" and saved["precision"] is None  # what was asked
    assert saved["device"] == {"platform": "cpu", "device": name, "precision": "float32"}  # where it ran
    assert f"trained on {name}, float32" in (out / "report.html").read_text()


def test_asking_for_a_gpu_here_is_one_line_naming_the_extra(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    proc = fmnist("train", "--platform", "gpu", "--limit", "64", cwd=tmp_path, env=env)
    assert_one_line_error(proc, "--platform gpu", "pip install 'fmnist[cuda]'")
    assert not (tmp_path / "runs").exists()  # nothing written
