"""The train job and `fmnist train` / `fmnist evaluate` on a tiny budget: the run directory
holds everything a later command needs, and the saved model reproduces its metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from fmnist import cli, runs
from fmnist.train import StopWhen, TrainConfig, load_config


@pytest.fixture(scope="module")
def tiny_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "tiny"
    result = CliRunner().invoke(
        cli.app,
        ["train", "--limit", "600", "--epochs", "2", "--hidden", "32", "--hidden", "16",
         "--validation-split", "0.2", "--seed", "3", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, result.output


def test_train_writes_the_run_directory(tiny_run):
    out, output = tiny_run
    for name in ("model.keras", "config.json", "history.json", "history.csv", "metrics.json"):
        assert (out / name).is_file(), name
    assert (out / "figures" / "learning_curves.png").stat().st_size > 0
    assert "Epoch 1/2" in output and "Epoch 2/2" in output and "val_loss" in output
    assert f"run saved in {out}" in output


def test_config_round_trips_and_reproduces_the_flags(tiny_run):
    out, _ = tiny_run
    config = load_config(out)
    assert config.model.hidden == (32, 16)
    assert (config.epochs, config.seed, config.train_limit, config.validation_split) == (2, 3, 600, 0.2)
    saved = json.loads((out / "config.json").read_text())
    assert saved["epochs_run"] == 2 and saved["params"] == 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10


def test_history_files_agree(tiny_run):
    out, _ = tiny_run
    history = json.loads((out / "history.json").read_text())
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    rows = (out / "history.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,") and len(rows) == 3


def test_saved_model_opens_with_plain_keras_and_gives_the_recorded_accuracy(tiny_run, dataset):
    from fmnist._backend import keras

    out, _ = tiny_run
    model = keras.saving.load_model(out / "model.keras")
    _, (x_test, y_test) = dataset
    recorded = json.loads((out / "metrics.json").read_text())
    acc = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    assert acc == pytest.approx(recorded["accuracy"], abs=1e-6)


def test_evaluate_command_prints_and_writes_metrics(tiny_run):
    out, _ = tiny_run
    recorded = json.loads((out / "metrics.json").read_text())["accuracy"]
    (out / "metrics.json").unlink()
    result = CliRunner().invoke(cli.app, ["evaluate", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{recorded:.4f}" in result.output
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == pytest.approx(recorded, abs=1e-6)


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    cases = [
        ["train", "--activation", "bogus", "--out", str(tmp_path / "x")],
        ["evaluate", str(tmp_path / "missing")],
    ]
    for args in cases:
        proc = subprocess.run([sys.executable, "-m", "fmnist.cli", *args], capture_output=True, text=True)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(b"not a zip")
    with pytest.raises(runs.RunError, match="could not be loaded"):
        runs.load_model(damaged)


def test_stop_when_thresholds():
    class FakeModel:
        stop_training = False

    below = StopWhen("loss", 0.4)
    below.set_model(FakeModel())
    below.on_epoch_end(0, {"loss": 0.41})
    assert not below.model.stop_training
    below.on_epoch_end(1, {"loss": 0.39})
    assert below.model.stop_training and below.stopped_epoch == 1
    above = StopWhen("accuracy", 0.95)
    above.set_model(FakeModel())
    above.on_epoch_end(0, {"accuracy": 0.96})
    assert above.model.stop_training


def test_train_config_rejects_nonsense():
    from fmnist.errors import FmnistError

    with pytest.raises(FmnistError, match="epochs"):
        TrainConfig(epochs=0)
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


def test_staged_dir_replaces_whole_or_keeps_the_old_run(tmp_path):
    target = tmp_path / "run"
    with runs.staged_dir(target) as stage:
        (stage / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(KeyboardInterrupt), runs.staged_dir(target) as stage:
        (stage / "a.txt").write_text("half")
        raise KeyboardInterrupt  # an interrupted save
    assert (target / "a.txt").read_text() == "first"
    with runs.staged_dir(target) as stage:
        (stage / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"], "no staging or old folders left behind"


def test_every_setting_with_a_flag_has_help_and_maps_onto_its_field():
    """The train command's setting flags come from the ModelSpec/TrainConfig fields: each field that is a
    flag carries help text, and typing its flag sets that field (the same path `fmnist sweep` takes)."""
    import dataclasses

    from fmnist.cli import train as cli_train
    from fmnist.config import ModelSpec

    names = {f.name for cls in (ModelSpec, TrainConfig) for f in dataclasses.fields(cls)} - cli_train.NOT_FLAGS
    assert {f.field for f in cli_train.SETTING_FLAGS} == names
    for flag in cli_train.SETTING_FLAGS:
        owner = ModelSpec if flag.in_model else TrainConfig
        field = next(f for f in dataclasses.fields(owner) if f.name == flag.field)
        assert field.metadata["help"].strip(), flag.field
        option = flag.parameter.annotation.__metadata__[0]
        assert field.metadata["help"] in option.help, flag.field
    typed = ["--conv-repeat", "2", "--conv-repeat", "1", "--arch", "cnn", "--limit", "7", "--eval-view", "flip",
             "--time-budget", "2m", "--no-normalize", "--momentum", "0.5"]  # fmt: skip
    config = cli._fixed_flags(typed)
    assert config.model.conv_repeats == (2, 1) and config.model.arch == "cnn" and not config.model.normalize
    assert (config.train_limit, config.eval_views, config.time_budget, config.momentum) == (7, ("flip",), 120.0, 0.5)
