"""Data-parallel training: N devices and N processes give the one-device weights.

A process's device count is fixed when JAX starts, so two simulated CPU devices
(``JAX_NUM_CPU_DEVICES=2``) and two processes joined over 127.0.0.1 (gloo) run in
subprocesses; the one-device reference runs here. Every case trains one short epoch.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fmnist import parallel
from fmnist.errors import DistributionError, FmnistError, ModelError

PROCESS_SECONDS = 240  # a subprocess's whole life (imports, compilation, training) on a busy 2-core machine
TOLERANCE = 1e-5  # float32 sums in another order: the weights agree to ~1e-6 after an epoch
CLI_ARGS = ("--limit", "320", "--epochs", "1", "--hidden", "32", "--seed", "3")  # 10 steps of batch 32

# Trains the seed MLP and a small cnn (BatchNorm: batch statistics over the global batch) on one
# device, on a DataParallel over one device and on one over two (explicit and set globally),
# and saves every weight; checks that a batch that does not split over the devices is refused.
WORKER = """
import json, sys
import numpy as np
from fmnist import engine, models
from fmnist._backend import keras
from fmnist.errors import ModelError

rng = np.random.default_rng(0)
x = rng.integers(0, 256, size=(200, 28, 28), dtype=np.uint8)
y = rng.integers(0, 10, size=200).astype(np.uint8)
one = keras.distribution.DataParallel(devices=["cpu:0"])
two = keras.distribution.DataParallel(devices=["cpu:0", "cpu:1"])
weights = {}
for arch, spec in (("mlp", models.ModelSpec()), ("cnn", models.ModelSpec(arch="cnn", conv_filters=(8, 16)))):
    for name, distribution, global_ in (("plain", None, False), ("one", one, False), ("two", two, False),
                                        ("two_global", two, True)):
        keras.utils.set_random_seed(0)
        model = models.compile_model(models.build_model(spec))
        if global_:
            keras.distribution.set_distribution(distribution)
        engine.fit(model, x, y, epochs=1, batch_size=32, seed=1, verbose=0, validation_split=0.1,
                   distribution=None if global_ else distribution)
        keras.distribution.set_distribution(None)
        for i, w in enumerate(model.get_weights()):
            weights[f"{arch}/{name}/{i}"] = w
try:
    engine.fit(model, x, y, batch_size=33, verbose=0, distribution=two)
    refused = ""
except ModelError as e:
    refused = str(e)
all_reduce = any("all-reduce" in p.as_text() for p in engine._PROGRAMS.values())
np.savez(sys.argv[1], **weights)
print(json.dumps({"refused": refused, "all_reduce": all_reduce}))
"""


def _env(**extra: str) -> dict[str, str]:
    """This process's environment (PYTHONPATH included: subprocesses import the same fmnist) plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERAS_DISTRIBUTION_")}
    return env | {"KERAS_BACKEND": "jax", **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fmnist(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("fmnist")
    return [str(script), *args] if script.is_file() else [sys.executable, "-m", "fmnist.cli", *args]


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(procs: dict[str, subprocess.Popen]) -> dict[str, str]:
    """Every process's output once all have ended; none outlives the test (killed on a timeout or failure)."""
    try:
        outputs = {name: p.communicate(timeout=PROCESS_SECONDS)[0] for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for name, p in procs.items():
        assert p.returncode == 0, f"{name} failed:\n{outputs[name]}"
    return outputs


def _weights(run: Path) -> list[np.ndarray]:
    from fmnist._backend import keras

    return keras.saving.load_model(run / "model.keras").get_weights()


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=TOLERANCE)


# --------------------------------------------------------------------------- one process, two devices
@pytest.fixture(scope="module")
def two_device_weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp") / "weights.npz"
    output = _finish({"worker": _start([sys.executable, "-c", WORKER, str(out)], _env(JAX_NUM_CPU_DEVICES="2"))})[
        "worker"
    ]
    return dict(np.load(out)), json.loads(output.strip().splitlines()[-1])


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_two_devices_train_the_one_device_weights(two_device_weights, arch):
    weights, _ = two_device_weights
    count = sum(k.startswith(f"{arch}/plain/") for k in weights)
    by_run = {
        run: [weights[f"{arch}/{run}/{i}"] for i in range(count)] for run in ("plain", "one", "two", "two_global")
    }
    for run in ("one", "two", "two_global"):
        _assert_same(by_run["plain"], by_run[run])


def test_gradients_are_all_reduced_and_uneven_batches_refused(two_device_weights):
    _, report = two_device_weights
    assert report["all_reduce"], "the two-device program has no all-reduce: it did not run data-parallel"
    assert "multiple of 2" in report["refused"]


# --------------------------------------------------------------------------- two processes over 127.0.0.1
@pytest.fixture(scope="module")
def scaled_runs(dataset, tmp_path_factory):
    """The same `fmnist train` as two processes (gloo over 127.0.0.1) and as one process on two devices.

    Process 1 is given its own --out so the test can see that it writes nothing.
    """
    root = tmp_path_factory.mktemp("scale")
    job = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{_free_port()}", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2"}
    procs = {
        f"process {i}": _start(
            _fmnist("train", *CLI_ARGS, "--out", str(root / f"process{i}")),
            _env(**job, KERAS_DISTRIBUTION_PROCESS_ID=str(i)),
        )
        for i in (0, 1)
    }
    procs["two devices"] = _start(
        _fmnist("train", *CLI_ARGS, "--devices", "2", "--out", str(root / "devices2")), _env()
    )
    return root, _finish(procs)


def test_two_processes_write_one_run_with_the_one_process_weights(scaled_runs, dataset):
    from fmnist.models import ModelSpec
    from fmnist.train import TrainConfig, train

    root, outputs = scaled_runs
    assert not (root / "process1").exists(), "process 1 wrote a run directory"
    assert "process 1 done: process 0 writes the run" in outputs["process 1"]
    run = root / "process0"
    for name in ("model.keras", "config.json", "metrics.json", "report.html"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert (config["processes"], config["devices"], config["steps_run"]) == (2, 1, 10)
    reference = train(TrainConfig(epochs=1, train_limit=320, seed=3, model=ModelSpec(hidden=(32,))), dataset=dataset)
    _assert_same(reference.model.get_weights(), _weights(run))


def test_devices_flag_trains_the_same_weights_and_is_recorded(scaled_runs):
    root, outputs = scaled_runs
    assert "on 2 devices" in outputs["two devices"]
    config = json.loads((root / "devices2" / "config.json").read_text())
    assert (config["devices"], config["processes"]) == (2, 1)
    _assert_same(_weights(root / "process0"), _weights(root / "devices2"))


# --------------------------------------------------------------------------- errors that say what to do
def test_model_parallel_is_refused(tiny_data):
    from fmnist import engine, models
    from fmnist._backend import keras

    x, y = tiny_data
    mesh = keras.distribution.DeviceMesh((1,), ["model"], devices=["cpu:0"])
    layouts = keras.distribution.LayoutMap(mesh)
    distribution = keras.distribution.ModelParallel(layout_map=layouts, batch_dim_name="model")
    with pytest.raises(ModelError, match="DataParallel"):
        engine.fit(models.compile_model(models.build_model()), x, y, verbose=0, distribution=distribution)


def test_a_global_data_parallel_over_one_device_changes_nothing(tiny_data):
    from fmnist import engine, models
    from fmnist._backend import keras

    x, y = tiny_data
    weights = []
    for distribution in (None, keras.distribution.DataParallel(devices=["cpu:0"])):
        keras.utils.set_random_seed(0)
        model = models.compile_model(models.build_model())
        keras.distribution.set_distribution(distribution)
        try:
            engine.fit(model, x, y, epochs=1, seed=2, verbose=0)
        finally:
            keras.distribution.set_distribution(None)
        weights.append(model.get_weights())
    _assert_same(*weights)


def test_more_devices_than_the_process_has_says_how_to_get_them():
    with pytest.raises(DistributionError, match="JAX_NUM_CPU_DEVICES=64"):
        parallel.data_parallel(64)


def test_devices_must_divide_the_batch():
    from fmnist.train import TrainConfig

    with pytest.raises(FmnistError, match="divide the batch size"):
        TrainConfig(devices=3, batch_size=32)


def test_a_job_without_its_address_says_which_variables_to_set(monkeypatch):
    monkeypatch.setenv(parallel.ENV_PROCESSES, "2")
    monkeypatch.delenv(parallel.ENV_ADDRESSES, raising=False)
    monkeypatch.delenv(parallel.ENV_PROCESS_ID, raising=False)
    with pytest.raises(DistributionError, match=parallel.ENV_ADDRESSES):
        parallel.setup(1)
    monkeypatch.setenv(parallel.ENV_PROCESSES, "two")
    with pytest.raises(DistributionError, match="number of processes"):
        parallel.multi_process()
