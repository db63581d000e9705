"""fmnist.trials: results are kept as trials finish, keyed by what decides them; a killed experiment
resumes with only its missing trials and writes the same numbers; failures are recorded, not fatal;
Ray stays optional."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from fmnist import experiment_report
from fmnist import trials as tr
from fmnist.errors import FmnistError
from fmnist.models import ModelSpec
from fmnist.train import TrainConfig

TINY_TRAIN = 300  # training images per trial
TINY_TEST = 200  # test images
KILL_DEADLINE_S = 240  # for the killed experiment to keep its first trial, on a busy 2-core machine
# Numbers that are measured, not timed: they must be identical however the trials were run.
MEASURED = ("accuracy", "loss", "train_loss", "train_accuracy", "epochs_run", "params")


@pytest.fixture(scope="module")
def tiny_dataset(dataset):
    (x_train, y_train), (x_test, y_test) = dataset
    return (x_train[:TINY_TRAIN], y_train[:TINY_TRAIN]), (x_test[:TINY_TEST], y_test[:TINY_TEST])


# --------------------------------------------------------------------------- the store
def test_a_key_covers_the_full_config_the_seed_and_the_data(tmp_path, tiny_dataset):
    folder = tmp_path / "kept"
    store = tr.TrialStore(folder, tr.data_fingerprint(tiny_dataset))
    trial = tr.Trial(TrainConfig(epochs=1))
    keys = {
        store.key(trial),
        store.key(replace(trial, config=replace(trial.config, seed=1))),
        store.key(replace(trial, config=replace(trial.config, learning_rate=1e-2))),
        store.key(replace(trial, config=replace(trial.config, model=ModelSpec(hidden=(512, 256))))),
        store.key(replace(trial, test_at=(1,))),
        tr.TrialStore(folder, "other data").key(trial),
    }
    assert len(keys) == 6
    assert store.key(tr.Trial(TrainConfig(epochs=1))) == store.key(trial)  # equal configs, equal keys
    assert store.get(trial) is None
    store.put(trial, {"history": {"loss": [0.5]}, "metrics": {"accuracy": 0.8, "loss": float("nan")}})
    kept = store.get(trial)
    assert kept["history"] == {"loss": [0.5]} and kept["metrics"]["loss"] != kept["metrics"]["loss"]  # NaN kept
    assert [p.name for p in folder.iterdir()] == [f"{store.key(trial)}.json"]  # no temporary file left
    store.path(trial).write_text('{"trial": ')  # damaged: the trial runs again instead of failing
    assert store.get(trial) is None
    store.clear()
    assert not folder.exists()


def test_run_trials_runs_only_what_the_store_lacks(tmp_path, tiny_dataset):
    trials = [tr.Trial(TrainConfig(epochs=1, seed=s)) for s in range(3)]
    store = tr.TrialStore(tmp_path, tr.data_fingerprint(tiny_dataset))
    first = tr.run_trials(trials[:2], workers=0, dataset=tiny_dataset, store=store)
    assert store.writes == 2 and store.hits == 0
    again = tr.TrialStore(tmp_path, tr.data_fingerprint(tiny_dataset))
    events = []
    results = tr.run_trials(trials, workers=0, dataset=tiny_dataset, store=again, progress=events.append)
    assert again.hits == 2 and again.writes == 1  # only the third ran
    assert [(e.done, e.total, e.kept) for e in events] == [(0, 1, 2), (1, 1, 2)]
    assert results[:2] == json.loads(json.dumps(first))  # read back exactly as they were written


def test_a_failed_trial_is_recorded_and_the_others_still_run(tiny_dataset, tmp_path):
    bad = tr.Trial(TrainConfig(epochs=1, batch_size=32, validation_split=0.9999))  # nothing left to train on
    good = tr.Trial(TrainConfig(epochs=1))
    store = tr.TrialStore(tmp_path)
    results = tr.run_trials([bad, good], workers=0, dataset=tiny_dataset, store=store)
    assert results[0]["failed"].startswith("ModelError: validation_split=")
    assert "metrics" in results[1]
    assert store.writes == 1  # a failure is not kept: the next run tries it again


def test_the_ray_executor_without_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(FmnistError, match=r"pip install 'fmnist\[ray\]'"):
        tr.run_trials([tr.Trial(TrainConfig())], executor="ray")
    with pytest.raises(FmnistError, match="unknown executor"):
        tr.run_trials([tr.Trial(TrainConfig())], executor="dask")


@pytest.mark.parametrize(("workers", "preallocate"), [(1, None), (2, "false")])
def test_workers_sharing_the_machine_take_gpu_memory_as_they_use_it(monkeypatch, tiny_dataset, workers, preallocate):
    """Two workers each taking JAX's usual 75% of a GPU's memory at their start would not both fit."""
    from fmnist import engine, trial_workers

    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    monkeypatch.setattr(trial_workers, "_worker_dataset", None)  # restored after: this process is no worker
    monkeypatch.setattr(engine, "enable_compilation_cache", lambda directory: None)
    pool = trial_workers.make_executor("local", workers, "", tiny_dataset, None)
    pool.shutdown()
    trial_workers._init_worker(*pool._initargs)  # what each spawned worker runs first, run here
    assert os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE") == preallocate
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")  # the caller's own setting is kept
    trial_workers._init_worker(*pool._initargs)
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"


# --------------------------------------------------------------------------- killed and resumed
def _measured(results: dict) -> dict:
    return {
        name: {v: [{k: r[k] for k in MEASURED} for r in recs] for v, recs in exp["records"].items()}
        for name, exp in results["experiments"].items()
    }


def test_an_experiment_killed_midway_reruns_only_its_missing_trials(dataset, tmp_path, monkeypatch):
    """SIGKILL once a trial is kept; the rerun runs only the others, and the numbers equal an uninterrupted run."""
    from fmnist.cli import app
    from fmnist.trials import TRIALS_DIR

    args = ["experiment", "normalization", "--seeds", "2", "--workers", "0", "--epochs-scale", "0.1"]
    args += ["--limit", str(TINY_TRAIN)]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    kept_dir = killed / TRIALS_DIR
    proc = subprocess.Popen(
        [sys.executable, "-m", "fmnist.cli", *args, "--out", str(killed)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + KILL_DEADLINE_S
        while not list(kept_dir.glob("*.json")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no trial was kept in time"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    kept = len(list(kept_dir.glob("*.json")))
    total = 4  # 2 variants x 2 seeds
    assert 1 <= kept < total, "the experiment finished before it could be killed"
    assert not (killed / experiment_report.RESULTS_FILE).exists()

    ran = []  # the trials the rerun trains (in this process: --workers 0)
    real_run_trial = tr.run_trial
    monkeypatch.setattr(
        tr, "run_trial", lambda trial, dataset=None: ran.append(trial) or real_run_trial(trial, dataset)
    )
    resumed = CliRunner().invoke(app, [*args, "--out", str(killed)])
    assert resumed.exit_code == 0, resumed.output
    assert len(ran) == total - kept and f"{kept} kept from an interrupted run" in resumed.output
    saved = json.loads((killed / experiment_report.RESULTS_FILE).read_text())
    assert saved["trials"] == total and saved["trials_kept"] == kept
    assert not kept_dir.exists()  # the report is written: nothing left to resume

    monkeypatch.setattr(tr, "run_trial", real_run_trial)
    uninterrupted = CliRunner().invoke(app, [*args, "--out", str(whole)])
    assert uninterrupted.exit_code == 0, uninterrupted.output
    reference = json.loads((whole / experiment_report.RESULTS_FILE).read_text())
    assert _measured(saved) == _measured(reference)
    assert (
        saved["experiments"]["normalization"]["conclusion"] == reference["experiments"]["normalization"]["conclusion"]
    )


# --------------------------------------------------------------------------- one record for experiments and sweeps
def _outcome() -> dict:
    """A trained trial's outcome as run_trial returns it: 3 epochs, a test snapshot after epoch 2."""
    history = {
        "loss": [0.9, 0.6, 0.5],
        "accuracy": [0.7, 0.8, 0.85],
        "val_loss": [0.8, 0.55, 0.6],
        "val_accuracy": [0.72, 0.81, 0.8],
        "seconds": [3.0, 1.0, 1.2],
    }
    return {
        "history": history,
        "metrics": {"accuracy": 0.84, "loss": 0.52},
        "snapshots": {"2": {"accuracy": 0.82, "loss": 0.58}},
        "params": 101_770,
        "fit_seconds": 5.5,
        "validation": {"accuracy": 0.83, "loss": 0.57, "n": 60},
    }


def test_one_trial_record_reads_a_trial_whole_or_cut_at_an_earlier_epoch():
    whole, cut = tr.trial_record(_outcome()), tr.trial_record(_outcome(), 2)
    assert whole["accuracy"] == 0.84 and whole["epochs_run"] == 3 and whole["train_loss"] == 0.5
    assert whole["best_val_epoch"] == 2 and whole["best_val_loss"] == 0.55 and whole["gap"] == pytest.approx(0.1)
    assert whole["seconds_per_epoch"] == pytest.approx(1.1) and whole["compile_seconds"] == pytest.approx(1.9)
    assert cut["accuracy"] == 0.82 and cut["loss"] == 0.58  # the test snapshot after epoch 2, not the final model
    assert cut["epochs_run"] == 2 and cut["history"]["loss"] == [0.9, 0.6] and cut["train_seconds"] == 4.0


def test_experiments_and_sweeps_read_the_same_record_and_split():
    from fmnist import experiments, sweep, sweep_report

    assert experiments.VALIDATION_SPLIT == sweep.VALIDATION_SPLIT == tr.VALIDATION_SPLIT
    assert (experiments.DEFAULT_SEEDS, sweep.DEFAULT_SEEDS) == (3, 2)  # on purpose: 3 for the tutorial's answers
    point = sweep.Point((("hidden", (128,)),))
    record = sweep._record(point, 0, _outcome())
    shared = tr.trial_record(_outcome())
    assert list(record) == ["seed", "run", *sweep.NUMBERS]
    assert {k: record[k] for k in ("accuracy", "loss", "train_loss", "epochs_run", "params")} == {
        k: shared[k] for k in ("accuracy", "loss", "train_loss", "epochs_run", "params")
    }
    # A sweep chooses on the final model's held-out score and counts the whole training's seconds.
    assert (record["val_accuracy"], record["val_loss"], record["train_seconds"]) == (0.83, 0.57, 5.5)
    assert experiments._record(_outcome(), 3) == shared
    assert sweep.write_report is sweep_report.write_report and sweep.RESULTS_FILE == sweep_report.RESULTS_FILE
    with pytest.raises(AttributeError):
        sweep.no_such_name  # noqa: B018
