"""The train job: one TrainConfig in, a complete run directory out.

    config = TrainConfig(epochs=5)            # the tutorial's program, as data
    result = train(config, Path("runs/default"))
    result.metrics["accuracy"]                # test accuracy of the saved model

The CLI maps its flags onto TrainConfig; experiments build TrainConfigs; the run directory
stores it as config.json, so any run can be reproduced from its own folder.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmnist import data, engine, models, plots, runs
from fmnist._backend import keras
from fmnist.errors import FmnistError


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Defaults reproduce the tutorial."""

    model: models.ModelSpec = field(default_factory=models.ModelSpec)  # what to build (see ModelSpec)
    epochs: int = 5  # passes over the training set
    batch_size: int = 32  # images per gradient step (Keras' default)
    optimizer: str = "adam"  # adam, adamw, sgd, rmsprop or nadam
    learning_rate: float | None = None  # None keeps the optimizer's default (0.001 for Adam)
    validation_split: float = 0.0  # last fraction of the training set held out for val_loss/val_accuracy
    stop_at_loss: float | None = None  # the tutorial's callback: stop once training loss < this
    stop_at_accuracy: float | None = None  # stop once training accuracy > this
    early_stopping: int | None = None  # patience in epochs on val_loss (loss without validation)
    seed: int = 0  # weights, batch order and dropout; same seed -> same run on the CPU
    train_limit: int | None = None  # use only the first N training images (quick trials and smoke tests)
    data_dir: str | None = None  # where the dataset is (None: the usual search, see fmnist.data)

    def __post_init__(self):
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", models.spec_from_dict(self.model))
        if self.epochs < 1 or self.batch_size < 1:
            raise FmnistError(f"epochs and batch size must be at least 1 (got {self.epochs}, {self.batch_size}).")
        if not 0.0 <= self.validation_split < 1.0:
            raise FmnistError(f"validation split must be in [0, 1), got {self.validation_split}.")
        if self.train_limit is not None and self.train_limit < 1:
            raise FmnistError(f"train_limit must be at least 1, got {self.train_limit}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class StopWhen(keras.callbacks.Callback):
    """Stop training once ``logs[key]`` crosses ``threshold`` (below for losses, above otherwise).

    The tutorial's ``myCallback`` is ``StopWhen('loss', 0.4)``.
    """

    def __init__(self, key: str, threshold: float):
        super().__init__()
        self.key, self.threshold, self.stopped_epoch = key, threshold, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.key)
        if value is None:
            return
        crossed = value < self.threshold if "loss" in self.key else value > self.threshold
        if crossed:
            self.stopped_epoch = epoch
            self.model.stop_training = True


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch (compilation included in the first)."""

    def on_train_begin(self, logs=None):
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def config_callbacks(config: TrainConfig) -> list[keras.callbacks.Callback]:
    """The callbacks a config asks for (stop thresholds, early stopping)."""
    cbs: list[keras.callbacks.Callback] = []
    if config.stop_at_loss is not None:
        cbs.append(StopWhen("loss", config.stop_at_loss))
    if config.stop_at_accuracy is not None:
        cbs.append(StopWhen("accuracy", config.stop_at_accuracy))
    if config.early_stopping is not None:
        monitor = "val_loss" if config.validation_split > 0 else "loss"
        cbs.append(keras.callbacks.EarlyStopping(monitor, patience=config.early_stopping, restore_best_weights=True))
    return cbs


@dataclass
class TrainResult:
    model: keras.Model
    history: dict[str, list[float]]  # as Model.fit's History.history, plus per-epoch 'seconds'
    metrics: dict  # test-set evaluation (see engine.evaluate)
    train_seconds: float  # fit() wall clock, compilation included
    run_dir: Path | None


def train(
    config: TrainConfig,
    out: Path | None = None,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    dataset: tuple | None = None,
) -> TrainResult:
    """Build, train and evaluate the model ``config`` describes; write the run to ``out`` if given.

    ``dataset`` (as ``load_data()`` returns it) skips loading, for callers that train many times.
    """
    (x_train, y_train), (x_test, y_test) = dataset or data.load_data(config.data_dir)
    if config.train_limit:
        x_train, y_train = x_train[: config.train_limit], y_train[: config.train_limit]
    keras.utils.set_random_seed(config.seed)
    model = models.compile_model(models.build_model(config.model), config.optimizer, config.learning_rate)
    timer = EpochTimer()
    start = time.perf_counter()
    history = engine.fit(
        model,
        x_train,
        y_train,
        epochs=config.epochs,
        batch_size=config.batch_size,
        validation_split=config.validation_split,
        callbacks=[*config_callbacks(config), timer, *callbacks],
        seed=config.seed,
    )
    train_seconds = time.perf_counter() - start
    hist = {k: [float(v) for v in vs] for k, vs in history.history.items()} | {"seconds": timer.seconds}
    metrics = engine.evaluate(model, x_test, y_test)
    if out is not None:
        with runs.staged_dir(Path(out)) as stage:  # all or nothing: a previous run there survives a failure
            save_run(stage, model, config, hist, metrics, train_seconds)
    return TrainResult(model, hist, metrics, train_seconds, Path(out) if out is not None else None)


def save_run(out: Path, model, config: TrainConfig, history: dict, metrics: dict, train_seconds: float) -> None:
    """Write the run directory's core artifacts (model, config, history, metrics, learning curves)."""
    import jax

    runs.save_model(out / runs.MODEL_FILE, model)
    runs.write_json(
        out / runs.CONFIG_FILE,
        {
            **config.to_dict(),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "train_seconds": round(train_seconds, 3),
            "epochs_run": len(history.get("loss", [])),
            "params": int(model.count_params()),
            "model_description": config.model.describe(),  # for `fmnist runs`, which must not import Keras
            "versions": {"keras": keras.__version__, "jax": jax.__version__, "numpy": np.__version__},
            "device": str(jax.devices()[0].device_kind),
        },
    )
    runs.save_history(out, history)
    runs.write_json(out / runs.METRICS_FILE, metrics)
    runs.save_figure(out / runs.FIGURES_DIR / "learning_curves.png", plots.learning_curves(history))


def load_config(run_dir: Path) -> TrainConfig:
    return TrainConfig.from_dict(runs.read_json(Path(run_dir) / runs.CONFIG_FILE))
