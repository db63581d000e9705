"""A TrainConfig made concrete: the compiled model it describes, and engine.fit called as it says.

What a run (fmnist.train) and its time budget's probe (fmnist.budget) both train with, so the
probe's steps are the run's own.
"""

from __future__ import annotations

import numpy as np

from fmnist import accelerator, augment, data, engine, fit_inputs, models
from fmnist._backend import keras
from fmnist.config import TrainConfig
from fmnist.errors import FmnistError


def make_optimizer(config: TrainConfig, total_steps: int | None) -> keras.optimizers.Optimizer:
    """The optimizer ``config`` describes, with its learning-rate schedule laid out over ``total_steps``.

    ``total_steps`` None (a time budget's probe, before the steps are planned): the schedule held
    at its starting rate, with the same variables, so the run continues from the probe's state.
    """
    if config.optimizer not in models.OPTIMIZERS:
        raise FmnistError(f"unknown optimizer {config.optimizer!r}: use one of {', '.join(models.OPTIMIZERS)}.")
    cls = keras.optimizers.get(config.optimizer).__class__
    peak = config.learning_rate if config.learning_rate is not None else cls().learning_rate.numpy().item()
    lr = peak
    if config.schedule == "one-cycle" and total_steps is None:
        lr = keras.optimizers.schedules.CosineDecay(peak / 10, decay_steps=1, alpha=1.0)  # peak / 10 at every step
    elif config.schedule == "one-cycle":
        warm = max(1, round(config.warmup * total_steps))
        lr = keras.optimizers.schedules.CosineDecay(
            peak / 10, decay_steps=max(1, total_steps - warm), alpha=0.0, warmup_target=peak, warmup_steps=warm
        )
    kwargs = {"learning_rate": lr}
    if config.optimizer == "sgd":
        kwargs |= {"momentum": config.momentum, "nesterov": config.nesterov}
    if config.weight_decay is not None:
        kwargs["weight_decay"] = config.weight_decay
    if config.ema is not None:
        kwargs |= {"use_ema": True, "ema_momentum": config.ema}
    return cls(**kwargs)


def build(config: TrainConfig, total_steps: int | None, x_train: np.ndarray | None = None) -> keras.Model:
    """The compiled model ``config`` describes (weights drawn from ``config.seed``).

    ``x_train``: the images it will train on, for a standardizing model's statistics.
    """
    keras.utils.set_random_seed(config.seed)
    with accelerator.precision_scope(train_precision(config)):  # layers keep the policy; nothing leaks past the build
        model = models.build_model(config.model, x_train=x_train)
        loss = (
            keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
            if config.label_smoothing
            else "sparse_categorical_crossentropy"
        )
        model.compile(optimizer=make_optimizer(config, total_steps), loss=loss, metrics=["accuracy"])
    return model


def train_precision(config: TrainConfig) -> str:
    """The precision ``config`` trains in: its own, else the default of the device kind this process trains on."""
    return config.precision or accelerator.choices(accelerator.current_kind()).precision


def fit_images(config: TrainConfig, x_train: np.ndarray) -> np.ndarray:
    """The training images that train: without the validation split, which fit takes from the end."""
    return x_train[: fit_inputs.train_size(len(x_train), config.validation_split)]


def fit(model, config: TrainConfig, x, y, *, epochs: int, max_steps: int | None, callbacks=(), **fit_kwargs):
    """engine.fit as ``config`` says; ``fit_kwargs``: engine.fit's checkpoint, resume_from, distribution."""
    if config.label_smoothing:
        y = np.eye(data.NUM_CLASSES, dtype=np.float32)[y]  # the smoothed loss takes one-hot targets
    augment_fn = augment.Augment(config.augment_shift, config.augment_flip, config.augment_erase)
    return engine.fit(
        model, x, y, epochs=epochs, batch_size=config.batch_size, validation_split=config.validation_split,
        callbacks=callbacks, seed=config.seed, augment=augment_fn if augment_fn.active else None, max_steps=max_steps,
        verbose=0,  # the CLI reports progress through its own callback
        **fit_kwargs,
    )  # fmt: skip
