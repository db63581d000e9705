"""Named, measured training recipes: a recipe is a TrainConfig with a name and its record.

    fmnist train --recipe best                 # the highest accuracy within 5 minutes on 2 CPU cores
    fmnist train --recipe best --epochs 3      # a flag beside a recipe overrides that field only
    fmnist recipes                             # the list, with what each measured

Every figure in ``Recipe.measured`` comes from ``benchmarks/time_to_accuracy.py`` on the project's
2-core machine (BENCHMARKS.md holds each with its date): test accuracy (mean of
seeds 0 and 1) and the wall clock of the whole ``fmnist train`` command, start to final metrics. The
choices inside a recipe were made on a validation split (the last 6,000 training images); the test set
only scores them.
A recipe is the same on every device kind (``--platform``): a time budget plans its steps from a probe on
the device it runs on. None was chosen on a GPU yet: one would be, on validation, from
benchmarks/gpu_check.sh and gpu_accuracy.sh output (docs/gpu.md), with its figures measured there.
For ``mlp`` (BENCHMARKS.md, third round): standardizing each pixel with the training images' mean
and std raised validation accuracy from 0.888 to 0.895 (4 seeds, benchmarks/recipe_choices.py
--recipe mlp), where batch size, AdamW, dropout, EMA and SGD had moved it by 0.15 points at most;
peak lr 3e-3 and no label smoothing scored within noise of 2e-3 (lr 3e-3 was kept from a first run
of the same seeds). For ``best`` (BENCHMARKS.md, "How best was chosen"): at 5 minutes the conv
32-64 net beat the 5-conv VGG nets (0.932 validation accuracy against 0.918-0.924: on two CPU
cores more epochs of a smaller net beat fewer of a deeper one); then, at 14 epochs each
(benchmarks/recipe_choices.py), batch 64 beat 128 (0.9328 against 0.9303) and pooling before
BatchNorm beat pooling after it (0.9352; BatchNorm and relu then see a quarter of the values). At
10,500 steps each, EMA of the weights, label smoothing 0.2 and batch 32 changed nothing beyond noise. Then, each
with the 5-minute budget: a stride-2 conv in place of the second pool computes a quarter of that conv's
outputs, so conv 32, then 64 and 128 at stride 2 fitted nearly twice the steps of conv 32-64 in the
budget (BENCHMARKS.md, second round) and scored 0.9417 validation accuracy
with flip and shift views (0.9390 with the flip view alone; conv 32-64 at 10,500 steps: 0.9373 and
0.9372). At the 15-minute budget's ~55,000 steps, random erasing, Dense 256 and (in the same
seconds) conv 32-64-256 scored 0.9468-0.9497 against the recipe's 0.9488: none is in it. The
recipe's 18 test-time views (the image and its eight 1 px shifts, each also mirrored) beat its
earlier six (flip and four shifts) on all four models scored (BENCHMARKS.md, fourth round):
+0.08 to +0.15 points of validation accuracy. Then (sixth round, 15,000 steps each, seeds 0 and 1)
the first conv fixed to 18 patch-whitening filters, as in airbench, in place of 32 learned ones:
0.9416 validation accuracy with the 18 views against 0.9398 (one view: 0.9356 against 0.9360), in a
faster step (BENCHMARKS.md, sixth round): no gradient for that conv and its pool, and conv 64 reads 18
channels, not 32. At the 15-minute budget's 55,000 steps (seventh round, seed 0), an ensemble of three such
nets (``ModelSpec(members=3)``) trained side by side for a third of the steps each, in the same seconds,
scored 0.9432 validation accuracy with the 18 views against the one net's 0.9495, and a second conv 64
after the strided one (``conv_repeats=(1, 2, 1)``, longer steps: 30,000 of them) 0.9473: neither is in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmnist import augment
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
            measured="0.8699 test accuracy, 13 s",
        ),
        Recipe(
            "mlp",
            "the same 784-128-10 MLP trained better: standardized pixels, one-cycle Adam to 3e-3, label "
            "smoothing, 5 epochs",
            TrainConfig(
                model=ModelSpec(standardize=True),
                epochs=5,
                batch_size=32,
                learning_rate=3e-3,
                schedule="one-cycle",
                warmup=0.2,
                label_smoothing=0.1,
                recipe="mlp",
            ),
            measured="0.8911 test accuracy, 17 s",
        ),
        Recipe(
            "best",
            "a fixed whitening conv 18 (max-pooled, then BatchNorm), conv 64 and 128 at stride 2, Dense 128; batch 64, "
            "SGD-Nesterov one-cycle, label smoothing, ±2 px shifts + flips; 18 test-time views (the image and its "
            "eight 1 px shifts, each also mirrored); "
            "planned to finish in 5 minutes",
            TrainConfig(
                model=ModelSpec(
                    arch="cnn",
                    conv_filters=(18, 64, 128),
                    conv_strides=(1, 2, 2),
                    hidden=(128,),
                    pool_first=True,
                    whiten=True,
                ),
                batch_size=64,
                optimizer="sgd",
                learning_rate=0.1,
                momentum=0.9,
                nesterov=True,
                weight_decay=5e-4,
                schedule="one-cycle",
                warmup=0.25,
                label_smoothing=0.1,
                augment_shift=2,
                augment_flip=True,
                eval_views=augment.SHIFTED_AND_MIRRORED,
                time_budget=300.0,
                recipe="best",
            ),
            measured="0.9418 test accuracy (0.9382 with one view), 284 s; with --time-budget 15m: 0.9475, 933 s "
            "(on a day the machine ran 1.5x slower: 0.9386 in 290 s, 0.9447 in 868 s)",
        ),
    )
}


def get(name: str) -> Recipe:
    """The recipe called ``name``, or an FmnistError listing them."""
    if name not in RECIPES:
        raise FmnistError(f"unknown recipe {name!r}: use one of {', '.join(RECIPES)} (see `fmnist recipes`).")
    return RECIPES[name]
