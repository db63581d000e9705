"""The Keras callbacks a run trains with: the tutorial's stop threshold, early stopping, an epoch timer.

Each carries state a resumed fit continues with (``state_dict``/``load_state_dict``, see fit_state).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fmnist._backend import keras

if TYPE_CHECKING:
    from fmnist.config import TrainConfig


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

    def state_dict(self) -> dict:  # what a resumed fit needs (see fit_state.callback_state)
        return {"stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.stopped_epoch = state["stopped_epoch"]


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch (compilation included in the first).

    A fit resumed inside an epoch (after an interruption, or after a time budget's probe) adds
    the seconds that epoch had already taken.
    """

    def on_train_begin(self, logs=None):
        self.seconds: list[float] = []
        self._start, self._carried = None, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._carried = time.perf_counter() - self._carried, 0.0

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        self._start = None

    def state_dict(self) -> dict:  # a resumed run's history keeps the epochs timed before
        into = 0.0 if self._start is None else time.perf_counter() - self._start
        return {"seconds": list(self.seconds), "into_epoch": into}

    def load_state_dict(self, state: dict) -> None:
        self.seconds, self._carried = list(state["seconds"]), float(state.get("into_epoch", 0.0))


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


def run_callbacks(config: TrainConfig, extra) -> tuple[EpochTimer, list[keras.callbacks.Callback]]:
    """A run's callbacks: the config's, an EpochTimer (returned first, to read) and ``extra``."""
    timer = EpochTimer()
    return timer, [*config_callbacks(config), timer, *extra]
