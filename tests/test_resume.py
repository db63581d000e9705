"""Nothing lost: a training killed at any point continues to the same result.

Library level (in process): every FitState a fit hands its checkpoint hook, saved and read
back, continues to bit-identical weights and history. Command level (real processes, since
signals are the point): `fmnist train` killed with SIGKILL, or stopped with SIGTERM, during a
later epoch, then `fmnist train --resume`, ends exactly as the same run never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import finish
from fmnist import cli, engine, runs
from fmnist.errors import CheckpointError, Interrupted, RunError
from fmnist.train import StopWhen, TrainConfig, config_from_json, load_config, resume_status, train


# --------------------------------------------------------------------------- engine.fit(resume_from=...)
def _model(dropout: float = 0.3):
    from fmnist._backend import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((28, 28)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu"), keras.layers.Dropout(dropout),
        keras.layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _callbacks():
    from fmnist._backend import keras

    return [keras.callbacks.EarlyStopping("val_loss", patience=2, restore_best_weights=True), StopWhen("loss", 0.0)]


def test_every_checkpoint_continues_to_the_identical_fit(tiny_data, tmp_path):
    from fmnist import augment

    x, y = tiny_data
    args = dict(epochs=4, batch_size=16, validation_split=0.2, seed=5, augment=augment.Augment(1, True))
    saved = []

    def hook(state: engine.FitState):
        saved.append((runs.save_checkpoint(tmp_path / f"{len(saved)}.npz", state.to_tree()), state.at_epoch_end))

    model = _model()
    history = engine.fit(model, x, y, chunk_steps=3, checkpoint=hook, callbacks=_callbacks(), **args).history
    assert any(end for _, end in saved) and any(not end for _, end in saved)  # epoch ends and chunk boundaries
    for path, _ in saved[:: max(1, len(saved) // 6)] + saved[-1:]:
        resumed = _model()
        state = engine.FitState.from_tree(runs.load_checkpoint(path))
        again = engine.fit(resumed, x, y, resume_from=state, callbacks=_callbacks(), **args).history
        assert again == history, path
        for a, b in zip(model.get_weights(), resumed.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_another_fit_is_refused(tiny_data, tmp_path):
    x, y = tiny_data
    states = []
    engine.fit(_model(), x, y, epochs=1, batch_size=16, seed=0, checkpoint=states.append)
    with pytest.raises(engine.ModelError, match="batch_size 16 then, 32 now"):
        engine.fit(_model(), x, y, epochs=2, batch_size=32, seed=0, resume_from=states[-1])


def test_a_checkpoint_of_another_precision_is_refused_and_one_that_predates_the_record_resumes(tiny_data):
    import dataclasses

    from fmnist import accelerator

    x, y = tiny_data
    states = []
    engine.fit(_model(), x, y, epochs=1, batch_size=16, seed=0, checkpoint=states.append)
    with accelerator.precision_scope("mixed"):
        mixed = _model()
    with pytest.raises(engine.ModelError, match="dtype_policy float32 then, mixed_bfloat16 now"):
        engine.fit(mixed, x, y, epochs=2, batch_size=16, seed=0, resume_from=states[-1])
    older = dataclasses.replace(states[-1], plan={k: v for k, v in states[-1].plan.items() if k != "dtype_policy"})
    engine.fit(_model(), x, y, epochs=2, batch_size=16, seed=0, resume_from=older)


def test_checkpoint_files_round_trip_and_damage_is_a_checkpoint_error(tmp_path):
    tree = {"a": [np.arange(3, dtype=np.float32), {"b": 2**100, "c": None}], "d": float("inf")}
    path = runs.save_checkpoint(tmp_path / "c.npz", tree)
    back = runs.load_checkpoint(path)
    np.testing.assert_array_equal(back["a"][0], tree["a"][0])
    assert back["a"][1] == tree["a"][1] and back["d"] == float("inf")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is damaged"):
        runs.load_checkpoint(path)


# --------------------------------------------------------------------------- the train job and its run directory
TINY = TrainConfig(model={"hidden": (16,)}, epochs=2, train_limit=600, seed=1)


@pytest.fixture
def interrupted(dataset, tmp_path) -> Path:
    """A run stopped (as on Ctrl-C) after its first chunk: a stage with a checkpoint, no run yet."""
    out = tmp_path / "run"
    with pytest.raises(Interrupted, match=f"fmnist train --resume {out}"):
        train(TINY, out, dataset=dataset, should_stop=lambda: True)
    return out


def test_an_interrupted_run_keeps_its_stage_and_resumes_from_the_cli(interrupted, dataset):
    stage = runs.partial_dir(interrupted)
    assert (stage / runs.CHECKPOINT_FILE).is_file() and load_config(stage) == TINY
    assert not interrupted.exists()
    result = CliRunner().invoke(cli.app, ["train", "--resume", str(interrupted)])
    assert result.exit_code == 0, result.output
    assert f"resuming {interrupted}" in result.output
    assert not stage.exists() and not (interrupted / runs.CHECKPOINT_FILE).exists()
    reference = train(TINY, None, dataset=dataset)
    history = json.loads((interrupted / runs.HISTORY_FILE).read_text())
    assert {k: v for k, v in history.items() if k != "seconds"} == {
        k: v for k, v in reference.history.items() if k != "seconds"
    }
    again = CliRunner().invoke(cli.app, ["train", "--resume", str(interrupted)])
    assert again.exit_code == 0 and "is finished: nothing to resume" in again.output


def test_epoch_end_checkpoints_are_at_most_one_every_checkpoint_seconds_and_a_stop_always_saves(tmp_path, monkeypatch):
    import types

    import fmnist.train

    now = [0.0]
    monkeypatch.setattr(fmnist.train, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    stop = [False]
    checkpointer = fmnist.train.Checkpointer(tmp_path / "run", should_stop=lambda: stop[0])
    checkpointer.path.parent.mkdir(parents=True)

    def state(epoch, at_epoch_end=True):
        return types.SimpleNamespace(at_epoch_end=at_epoch_end, epoch=epoch, chunk=0 if at_epoch_end else 1,
                                     steps=epoch, to_tree=lambda: {"epoch": epoch})  # fmt: skip

    def saved():
        return runs.load_checkpoint(checkpointer.path)["epoch"] if checkpointer.path.is_file() else None

    seen = []
    for epoch, at in enumerate([0.5, 1.9, 2.1, 3.0, 4.0, 4.2]):  # seconds since the fit began, at each epoch end
        now[0] = at
        checkpointer(state(epoch))
        seen.append(saved())
    assert fmnist.train.CHECKPOINT_SECONDS == 2.0
    assert seen == [None, None, 2, 2, 2, 5]  # 2 s after the start, then 2 s after the last save
    now[0], stop[0] = 4.3, True
    with pytest.raises(Interrupted, match="--resume"):
        checkpointer(state(6, at_epoch_end=False))
    assert saved() == 6


def test_a_time_budget_run_resumes_with_its_recorded_steps(dataset, tmp_path, monkeypatch):
    import fmnist.train

    out, more = tmp_path / "budget", 25
    config = TrainConfig(model={"hidden": (16,)}, time_budget=60.0, train_limit=600, seed=2)
    monkeypatch.setattr(fmnist.train, "plan_steps", lambda config, probe, *args: probe.state.steps + more)
    with pytest.raises(Interrupted, match="before anything was saved"):  # Ctrl-C while the probe runs
        train(config, out, dataset=dataset, should_stop=lambda: True)
    assert resume_status(out) == "none"  # the same command starts over
    planned = runs.partial_dir(out) / runs.CONFIG_FILE
    with pytest.raises(Interrupted, match="--resume"):  # Ctrl-C once the plan is recorded
        train(config, out, dataset=dataset, should_stop=planned.is_file)
    recorded = load_config(runs.partial_dir(out))  # recorded before the run went on from its probe
    assert recorded.steps == recorded.probe_steps + more

    def must_not_plan(*args):
        raise AssertionError("a resumed run replays its recorded steps")

    monkeypatch.setattr(fmnist.train, "plan_steps", must_not_plan)
    monkeypatch.setattr(fmnist.train, "run_probe", must_not_plan)  # it goes on from its checkpoint
    result = fmnist.train.resume(out, dataset=dataset)
    assert result.config == recorded and int(result.model.optimizer.iterations.numpy()) == recorded.steps
    monkeypatch.undo()
    reference = train(recorded, None, dataset=dataset)
    assert result.history["loss"] == reference.history["loss"]


def test_training_over_an_interrupted_run_asks_to_resume_or_restart(interrupted):
    result = CliRunner().invoke(cli.app, ["train", "--limit", "300", "--hidden", "8", "--out", str(interrupted)])
    assert isinstance(result.exception, RunError)  # the CLI's main() makes it one line and exit 2
    assert "--resume" in str(result.exception) and "--restart" in str(result.exception)
    result = CliRunner().invoke(
        cli.app, ["train", "--limit", "300", "--hidden", "8", "--epochs", "1", "--out", str(interrupted), "--restart"]
    )
    assert result.exit_code == 0, result.output
    assert load_config(interrupted).model.hidden == (8,)


def test_a_damaged_checkpoint_is_one_line_naming_restart(interrupted):
    checkpoint = runs.partial_dir(interrupted) / runs.CHECKPOINT_FILE
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    result = subprocess.run(
        [sys.executable, "-m", "fmnist.cli", "train", "--resume", str(interrupted)],
        capture_output=True, text=True, timeout=120, env=os.environ | {"COLUMNS": "1000"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "damaged" in result.stderr and "--restart" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_resume_flag_mistakes(tmp_path):
    nothing = CliRunner().invoke(cli.app, ["train", "--resume", str(tmp_path / "none")])
    assert nothing.exit_code == 1 and "no interrupted training" in str(nothing.exception)
    mixed = CliRunner().invoke(cli.app, ["train", "--resume", str(tmp_path / "none"), "--epochs", "3"])
    assert "give it no other training flags (got epochs)" in str(mixed.exception)


def test_a_second_writer_is_refused_at_once(tmp_path):
    out = tmp_path / "run"
    with runs.run_lock(out):
        result = CliRunner().invoke(cli.app, ["train", "--limit", "300", "--out", str(out)])
    assert isinstance(result.exception, RunError)
    assert f"being written by another fmnist process (pid {os.getpid()})" in str(result.exception)
    with runs.run_lock(out):  # released when the holder is done
        pass


# --------------------------------------------------------------------------- config.json schema
def test_a_run_resumes_on_another_platform_to_the_same_result(interrupted, dataset):
    """The checkpoint is device-independent: a run started with --platform gpu continues with --platform cpu
    (here both on this CPU; the chunking comes from the checkpoint's plan), and config.json keeps what was asked
    beside where it ran."""
    stage_config = runs.partial_dir(interrupted) / runs.CONFIG_FILE
    runs.write_json(stage_config, json.loads(stage_config.read_text()) | {"platform": "gpu"})
    result = CliRunner().invoke(cli.app, ["train", "--resume", str(interrupted), "--platform", "cpu"])
    assert result.exit_code == 0, result.output
    assert "device: cpu: " in result.output
    saved = json.loads((interrupted / runs.CONFIG_FILE).read_text())
    assert saved["platform"] == "gpu" and saved["device"]["platform"] == "cpu"
    reference = train(TINY, None, dataset=dataset)
    history = json.loads((interrupted / runs.HISTORY_FILE).read_text())
    assert {k: v for k, v in history.items() if k != "seconds"} == {
        k: v for k, v in reference.history.items() if k != "seconds"
    }


def test_config_json_is_versioned_and_nothing_is_dropped_silently():
    record = TrainConfig().to_json()
    assert record["schema"] == 4 and config_from_json(record) == TrainConfig()
    with pytest.raises(RunError, match=r"unknown TrainConfig fields \['epoch'\]"):
        config_from_json(record | {"epoch": 3})
    with pytest.raises(RunError, match=r"lacks the config fields \['seed'\]"):
        config_from_json({k: v for k, v in record.items() if k != "seed"})
    with pytest.raises(RunError, match="upgrade"):
        config_from_json(record | {"schema": 99})
    # schema 0 (no "schema" key): missing fields take their defaults, the documented migration
    old = {k: v for k, v in record.items() if k not in ("schema", "ema", "eval_views")} | {"epochs": 3}
    assert config_from_json(old) == TrainConfig(epochs=3)
    # schemas 1 and 2 lack only the fields added since (augment_erase, probe_steps): they take their defaults
    v1 = {k: v for k, v in record.items() if k not in ("augment_erase", "probe_steps")} | {"schema": 1}
    assert config_from_json(v1) == TrainConfig()
    v2 = {k: v for k, v in record.items() if k != "probe_steps"} | {"schema": 2, "steps": 900}
    assert config_from_json(v2) == TrainConfig(steps=900)  # a plan made before probes were the run's first steps
    with pytest.raises(RunError, match=r"lacks the config fields \['probe_steps'\]"):
        config_from_json(v2 | {"schema": 3})
    # schema 3 lacks platform and precision: the best device there is, the kind's default precision
    v3 = {k: v for k, v in record.items() if k not in ("platform", "precision")} | {"schema": 3, "epochs": 2}
    assert config_from_json(v3) == TrainConfig(epochs=2) and config_from_json(v3).platform is None
    with pytest.raises(RunError, match=r"lacks the config fields \['platform', 'precision'\]"):
        config_from_json(v3 | {"schema": 4})
    with pytest.raises(RunError, match=r"lacks the config fields \['seed'\]"):
        config_from_json({k: v for k, v in v1.items() if k != "seed"})
    # a model field added later (standardize) is missing from older files: off, as they were trained
    older_model = record | {"model": {k: v for k, v in record["model"].items() if k != "standardize"}}
    assert config_from_json(older_model).model.standardize is False
    with pytest.raises(RunError, match="unknown model spec fields"):
        config_from_json(record | {"model": record["model"] | {"standardise": True}})


# --------------------------------------------------------------------------- killed processes
# `fmnist train` with a pause after every compiled chunk (the same numbers, only slower), so that
# the test can kill it at a chosen point of a chosen epoch.
SLOW_CLI = """
import sys, time
import fmnist.train
from fmnist import cli
from fmnist.cli import train as train_cli  # where `fmnist train` looks up _progress_callback

progress = train_cli._progress_callback

def slow(*args):
    callback = progress(*args)
    chunk_end = callback.on_train_batch_end
    def on_train_batch_end(step, logs=None):
        time.sleep(0.25)
        chunk_end(step, logs)
    callback.on_train_batch_end = on_train_batch_end
    return callback

train_cli._progress_callback = slow
fmnist.train.CHECKPOINT_SECONDS = 0.0  # a checkpoint at every epoch end: the kill lands after epoch 2's
sys.argv[0] = "fmnist"
cli.main()
"""
# 2,700 training images in batches of 8: two compiled chunks per epoch; dropout and shifts
# exercise the random streams a resumed run must continue.
TRAIN_ARGS = ["train", "--limit", "3000", "--batch-size", "8", "--hidden", "16", "--dropout", "0.2",
              "--augment-shift", "1", "--validation-split", "0.1", "--early-stopping", "3", "--epochs", "5",
              "--seed", "7"]  # fmt: skip
KILL_AFTER_EPOCHS = 2  # the kill lands during epoch 3, after the checkpoint of epoch 2


def _fmnist(*args, slow=False) -> subprocess.Popen:
    code = ["-c", SLOW_CLI] if slow else ["-m", "fmnist.cli"]
    env = os.environ | {"COLUMNS": "1000"}
    return subprocess.Popen([sys.executable, *code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _wait_for_checkpoint(proc: subprocess.Popen, out: Path, epochs: int, timeout: float = 240) -> dict:
    path = runs.partial_dir(out) / runs.CHECKPOINT_FILE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.is_file():
            tree = runs.load_checkpoint(path)
            if tree["epoch"] >= epochs:
                return tree
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no checkpoint of epoch {epochs} appeared: {finish(proc)}")


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    rc, _, stderr = finish(_fmnist(*TRAIN_ARGS, "--out", str(out)))
    assert rc == 0, stderr
    return out


def _assert_same_run(run: Path, reference: Path) -> None:
    from fmnist._backend import keras

    a, b = (keras.saving.load_model(p / runs.MODEL_FILE).get_weights() for p in (run, reference))
    for wa, wb in zip(a, b, strict=True):
        np.testing.assert_array_equal(wa, wb)
    ha, hb = (json.loads((p / runs.HISTORY_FILE).read_text()) for p in (run, reference))
    assert ha.pop("seconds") and hb.pop("seconds")
    assert ha == hb
    ma, mb = (json.loads((p / runs.METRICS_FILE).read_text()) for p in (run, reference))
    assert ma["accuracy"] == mb["accuracy"] and ma["loss"] == mb["loss"]


def test_sigkill_during_an_epoch_then_resume_gives_the_identical_run(uninterrupted, tmp_path):
    out = tmp_path / "run"
    proc = _fmnist(*TRAIN_ARGS, "--out", str(out), slow=True)
    _wait_for_checkpoint(proc, out, KILL_AFTER_EPOCHS)
    time.sleep(0.3)  # into the next epoch's first chunk
    proc.send_signal(signal.SIGKILL)
    rc, _, _ = finish(proc)
    assert rc == -signal.SIGKILL and not out.exists()
    rc, stdout, stderr = finish(_fmnist("train", "--resume", str(out)))
    assert rc == 0, stderr
    assert f"resuming {out}" in stdout and f"Epoch {KILL_AFTER_EPOCHS + 1}/5" in stdout
    assert "Epoch 1/5" not in stdout  # the finished epochs were not trained again
    _assert_same_run(out, uninterrupted)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_stops_at_a_chunk_with_a_checkpoint_and_resume_gives_the_identical_run(
    signum, uninterrupted, tmp_path
):
    out = tmp_path / "run"
    proc = _fmnist(*TRAIN_ARGS, "--out", str(out), slow=True)
    _wait_for_checkpoint(proc, out, 1)
    time.sleep(0.1)
    proc.send_signal(signum)
    rc, _, stderr = finish(proc)
    assert rc == 128 + signum, stderr  # 143 for SIGTERM, 130 for Ctrl-C
    assert f"continue it with `fmnist train --resume {out}`" in stderr and "Traceback" not in stderr
    tree = runs.load_checkpoint(runs.partial_dir(out) / runs.CHECKPOINT_FILE)
    assert tree["epoch"] >= 1 and not out.exists()
    rc, _, stderr = finish(_fmnist("train", "--resume", str(out)))
    assert rc == 0, stderr
    _assert_same_run(out, uninterrupted)
