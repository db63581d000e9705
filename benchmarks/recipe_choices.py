"""How the `best` and `mlp` recipes were chosen: candidate TrainConfigs scored on the validation split.

Each candidate is its recipe (`--recipe`, `best` unless told) with some fields changed, trained on the first 90% of
the training images and scored on the last 10% (6,000 images, which the test set never
replaces: choose on validation, report on test). Two ways to compare:

- ``--epochs N``: every candidate trains the same number of epochs (not the same seconds, so
  the machine's load that day cannot pick the winner); for choices that barely change the
  cost of a step. Training seconds are printed beside it.
- ``--time-budget S``: every candidate gets the recipe's time budget (the planner sets its
  steps); for nets whose steps cost different amounts, where what counts is accuracy in the
  time a user has.

Validation accuracy is printed for the plain image and for the test-time view sets in
VIEW_SETS; test accuracy for the record only. Results: BENCHMARKS.md ("How best was chosen").

    python benchmarks/recipe_choices.py --epochs 14 --candidates base,batch64,pool-first-batch64
    python benchmarks/recipe_choices.py --time-budget 300 --candidates pool-first-32-64,stride-64-128
    python benchmarks/recipe_choices.py --epochs 65.186 --candidates stride-64-128,erase-0.25,hidden-256
    python benchmarks/recipe_choices.py --epochs 17.778 --candidates stride-64-128,whiten-18 --seeds 0,1
    python benchmarks/recipe_choices.py --epochs 21.728 --candidates ensemble-3
    python benchmarks/recipe_choices.py --recipe mlp --epochs 5 --seeds 0,1,2,3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from fmnist import augment, data, engine, fit_inputs, models, recipes, train
from fmnist.models import ModelSpec

VALIDATION_SPLIT = 0.1
TRAINING_IMAGES = 60_000  # the dataset's training split, before the validation cut
CONV = {"arch": "cnn", "conv_filters": (32, 64), "hidden": (128,)}
POOL_FIRST = ModelSpec(**CONV, pool_first=True)
STRIDED = dataclasses.replace(POOL_FIRST, conv_filters=(32, 64, 128), conv_strides=(1, 2, 2))
WHITENED = dataclasses.replace(STRIDED, conv_filters=(18, 64, 128), whiten=True)  # the recipe since the sixth round
CANDIDATES = {  # name -> the fields changed from the best recipe
    # 2026-12-01, first round, from conv 32-64 with pooling last, batch 128 (--epochs 14)
    "base": {"model": ModelSpec(**CONV), "batch_size": 128, "learning_rate": 0.2},
    "hidden256-dropout": {
        "model": ModelSpec(**CONV | {"hidden": (256,)}, dropout=0.25),
        "batch_size": 128,
        "learning_rate": 0.2,
    },
    "batch64": {"model": ModelSpec(**CONV), "batch_size": 64, "learning_rate": 0.1},
    "pool-first-batch64": {"model": POOL_FIRST, "batch_size": 64, "learning_rate": 0.1},
    # second round, from that winner: conv 32-64 pool-first, batch 64 (--epochs 12.44: 10,500 steps)
    "pool-first-32-64": {"model": POOL_FIRST},
    "ema": {"model": POOL_FIRST, "ema": 0.995},
    "smoothing-0.2": {"model": POOL_FIRST, "label_smoothing": 0.2},
    "batch32": {"model": POOL_FIRST, "batch_size": 32, "learning_rate": 0.05},
    "32-48": {"model": dataclasses.replace(POOL_FIRST, conv_filters=(32, 48))},
    # third round: strided convs instead of the second pool (--time-budget 300)
    "stride-64": {"model": dataclasses.replace(POOL_FIRST, conv_strides=(1, 2))},
    "stride-128": {"model": dataclasses.replace(POOL_FIRST, conv_filters=(32, 128), conv_strides=(1, 2))},
    "stride-64-128": {"model": STRIDED},
    "stride-64-128-erase": {"model": STRIDED, "augment_erase": 0.25},
    # fourth round, from the strided recipe at 15 minutes' steps (--epochs 65.186: 55,000 steps)
    "erase-0.25": {"model": STRIDED, "augment_erase": 0.25},
    "hidden-256": {"model": dataclasses.replace(STRIDED, hidden=(256,))},
    # a step 1.39x the recipe's (--epochs 46.815: 39,500 steps, the same seconds)
    "conv-32-64-256": {"model": dataclasses.replace(STRIDED, conv_filters=(32, 64, 256))},
    # fifth round, at 5 minutes' steps (--epochs 17.778: 15,000 steps), against stride-64-128: its first conv
    # fixed to patch-whitening filters (18: nine directions and their negatives), then the recipe
    "whiten-18": {"model": WHITENED},
    # seventh round, at 15 minutes' steps: the recipe alone (--epochs 65.186: 55,000 steps), or an ensemble of
    # 3 trained side by side for a third of its steps each (--epochs 21.728), or of 2 for half (--epochs 32.593)
    "ensemble-3": {"model": dataclasses.replace(WHITENED, members=3)},
    "ensemble-2": {"model": dataclasses.replace(WHITENED, members=2)},
    # a second conv 64 at 7x7 after the strided one: three learned convs, not two (a step ~2x the recipe's)
    "repeat-64": {"model": dataclasses.replace(WHITENED, conv_repeats=(1, 2, 1))},
}
MLP = ModelSpec()
MLP_CANDIDATES = {  # name -> the fields changed from the mlp recipe (--recipe mlp --epochs 5)
    "mlp-before": {"model": MLP, "learning_rate": 2e-3},  # the recipe until 2026-12-01
    "batch16": {"model": MLP, "batch_size": 16, "learning_rate": 1.5e-3},
    "adamw": {"model": MLP, "learning_rate": 2e-3, "optimizer": "adamw", "weight_decay": 0.05},
    "dropout-0.1": {"model": ModelSpec(dropout=0.1), "learning_rate": 2e-3},
    "ema-0.999": {"model": MLP, "learning_rate": 2e-3, "ema": 0.999},
    "sgd-nesterov": {"model": MLP, "optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
    "standardize": {"learning_rate": 2e-3},
    "standardize-lr3e-3": {},  # the recipe now
    "standardize-no-smoothing": {"learning_rate": 2e-3, "label_smoothing": 0.0},
}
CHOICES = {"best": CANDIDATES, "mlp": MLP_CANDIDATES}  # recipe -> its candidates
VIEW_SETS = {
    "one view": ("identity",),
    "+ flip": ("identity", "flip"),
    "+ flip + shifts": ("identity", "flip", "left", "right", "up", "down"),
    "+ diagonal shifts": ("identity", "flip", *augment.SHIFTS),  # 10 views
    "+ mirrored shifts": augment.SHIFTED_AND_MIRRORED,  # 18, the recipe's
}


def candidate(recipe: str, name: str, seed: int, epochs: float | None, time_budget: float | None) -> train.TrainConfig:
    changes = CHOICES[recipe][name]
    config = dataclasses.replace(
        recipes.get(recipe).config, validation_split=VALIDATION_SPLIT, seed=seed, time_budget=time_budget,
        eval_views=("identity",), **changes,
    )  # fmt: skip
    if time_budget is not None:
        return config
    train_images = fit_inputs.train_size(TRAINING_IMAGES, VALIDATION_SPLIT)  # the cut fit itself makes
    return dataclasses.replace(config, steps=int(epochs * train_images / config.batch_size))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--epochs", type=float, default=14, help="epochs per candidate (the default)")
    how.add_argument("--time-budget", type=float, help="seconds per candidate, as `fmnist train --time-budget`")
    parser.add_argument("--recipe", choices=list(CHOICES), default="best", help="whose candidates")
    parser.add_argument("--candidates", help=f"from {', '.join(CANDIDATES)} (best), {', '.join(MLP_CANDIDATES)} (mlp)")
    parser.add_argument("--seeds", default="0", help="comma-separated; each candidate trains once per seed")
    args = parser.parse_args()
    names = args.candidates.split(",") if args.candidates else list(CHOICES[args.recipe])
    dataset = data.load_data()
    (x_train, y_train), _ = dataset
    cut = fit_inputs.train_size(len(x_train), VALIDATION_SPLIT)  # the cut fit itself makes
    x_val, y_val = x_train[cut:], y_train[cut:]
    for name, seed in ((n, int(s)) for n in names for s in args.seeds.split(",")):
        t = time.perf_counter()
        config = candidate(args.recipe, name, seed, args.epochs, args.time_budget)
        result = train.train(config, dataset=dataset, started=t)
        wall = time.perf_counter() - t
        views = list(dict.fromkeys(v for view_set in VIEW_SETS.values() for v in view_set))  # each view once
        outputs = dict(zip(views, engine.predict_views(result.model, x_val, views), strict=True))
        val = {
            k: round(float((sum(outputs[v] for v in view_set).argmax(1) == y_val).mean()), 4)
            for k, view_set in VIEW_SETS.items()
        }
        row = {
            "candidate": name, "seed": seed, "steps": result.config.steps, "val_accuracy": val,
            "train_seconds": round(result.train_seconds, 1), "wall_seconds": round(wall, 1),
            "test_accuracy_one_view": result.metrics["accuracy"],
        }  # fmt: skip
        for member in models.ensemble_members(result.model) or ():  # each alone, with the recipe's views
            alone = sum(engine.predict_views(member, x_val, augment.SHIFTED_AND_MIRRORED))
            row.setdefault("members_val_accuracy", []).append(round(float((alone.argmax(1) == y_val).mean()), 4))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
