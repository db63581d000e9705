"""Named, measured training recipes: a recipe is a TrainConfig with a name and its record.

    fmnist train --recipe best                 # the highest accuracy within 5 minutes on 2 CPU cores
    fmnist train --recipe best --epochs 3      # a flag beside a recipe overrides that field only
    fmnist recipes                             # the list, with what each measured

Every figure in ``Recipe.measured`` comes from ``benchmarks/time_to_accuracy.py`` on the
project's 2-core machine, 2026-11-28 (BENCHMARKS.md): test accuracy (mean of seeds 0 and 1)
and the wall clock of the whole ``fmnist train`` command, start to final metrics. The choices inside a recipe
were made on a validation split (the last 6,000 training images); the test set only scores them.
For ``best``, at 5 minutes (BENCHMARKS.md): the conv 32-64 net reached 0.932 validation accuracy
in 16 epochs, the 5-conv VGG nets 0.918 (24-48-96, 4.4 epochs) and 0.924 (16-32-64, 8 epochs):
on two CPU cores more epochs of a smaller net beat fewer of a deeper one.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmnist.errors import FmnistError
from fmnist.models import ModelSpec
from fmnist.train import TrainConfig


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str  # one line: what it is
    config: TrainConfig
    measured: str  # test accuracy and wall clock, as measured (see the module docstring)


RECIPES = {
    r.name: r
    for r in (
        Recipe(
            "tutorial",
            "the lesson's program: 784-128-10 MLP, Adam, batch 32, 5 epochs",
            TrainConfig(recipe="tutorial"),
            measured="0.8710 test accuracy, 8 s",
        ),
        Recipe(
            "mlp",
            "the same 784-128-10 MLP trained better: one-cycle Adam to 2e-3, label smoothing, 5 epochs",
            TrainConfig(
                epochs=5,
                batch_size=32,
                learning_rate=2e-3,
                schedule="one-cycle",
                warmup=0.2,
                label_smoothing=0.1,
                recipe="mlp",
            ),
            measured="0.8847 test accuracy, 7 s",
        ),
        Recipe(
            "best",
            "conv 32-64 (BatchNorm, max pool) + Dense 128, SGD-Nesterov one-cycle, label smoothing, "
            "±2 px shifts + flips, flip test-time view; planned to finish in 5 minutes",
            TrainConfig(
                model=ModelSpec(arch="cnn", conv_filters=(32, 64), hidden=(128,)),
                batch_size=128,
                optimizer="sgd",
                learning_rate=0.2,
                momentum=0.9,
                nesterov=True,
                weight_decay=5e-4,
                schedule="one-cycle",
                warmup=0.25,
                label_smoothing=0.1,
                augment_shift=2,
                augment_flip=True,
                eval_views=("identity", "flip"),
                time_budget=300.0,
                recipe="best",
            ),
            measured="0.9265 test accuracy (0.9250 without the flip view), 281 s; "
            "with --time-budget 15m: 0.9387, 864 s",
        ),
    )
}


def get(name: str) -> Recipe:
    """The recipe called ``name``, or an FmnistError listing them."""
    if name not in RECIPES:
        raise FmnistError(f"unknown recipe {name!r}: use one of {', '.join(RECIPES)} (see `fmnist recipes`).")
    return RECIPES[name]
