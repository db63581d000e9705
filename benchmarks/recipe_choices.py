"""How the `best` recipe was chosen: candidate TrainConfigs scored on the validation split.

Each candidate is the `best` recipe with one or two fields changed, trained for the same
number of epochs (not the same seconds, so the machine's load that day cannot pick the
winner) on the first 90% of the training images and scored on the last 10% (6,000 images,
which the test set never replaces: choose on validation, report on test). Training seconds
are printed beside it: a candidate that is as accurate per epoch and faster per epoch gets
more epochs into the recipe's time budget. Test accuracy is printed for the record only.
Results: BENCHMARKS.md ("How best was chosen").

    python benchmarks/recipe_choices.py [--epochs 14] [--candidates base,batch64,...] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from fmnist import fit_inputs, recipes, train
from fmnist.models import ModelSpec

VALIDATION_SPLIT = 0.1
TRAINING_IMAGES = 60_000  # the dataset's training split, before the validation cut
CONV = {"arch": "cnn", "conv_filters": (32, 64), "hidden": (128,)}
CANDIDATES = {  # name -> the fields changed from the recipe as it stood before (batch 128, conv → BN → relu → pool)
    "base": {"model": ModelSpec(**CONV), "batch_size": 128, "learning_rate": 0.2},
    "hidden256-dropout": {
        "model": ModelSpec(**CONV | {"hidden": (256,)}, dropout=0.25),
        "batch_size": 128,
        "learning_rate": 0.2,
    },
    "batch64": {"model": ModelSpec(**CONV), "batch_size": 64, "learning_rate": 0.1},
    "pool-first-batch64": {"model": ModelSpec(**CONV, pool_first=True), "batch_size": 64, "learning_rate": 0.1},
}


def candidate(name: str, epochs: float, seed: int) -> train.TrainConfig:
    config = dataclasses.replace(
        recipes.get("best").config, time_budget=None, validation_split=VALIDATION_SPLIT, seed=seed, **CANDIDATES[name]
    )
    train_images = fit_inputs.train_size(TRAINING_IMAGES, VALIDATION_SPLIT)  # the cut fit itself makes
    return dataclasses.replace(config, steps=int(epochs * train_images / config.batch_size))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=14, help="epochs per candidate (the 5-minute recipe's ~14)")
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help=f"from {', '.join(CANDIDATES)}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in args.candidates.split(","):
        t = time.perf_counter()
        result = train.train(candidate(name, args.epochs, args.seed))
        row = {
            "candidate": name,
            "epochs": args.epochs,
            "val_accuracy": round(result.history["val_accuracy"][-1], 4),
            "train_seconds": round(result.train_seconds, 1),
            "test_accuracy": result.metrics["accuracy"],
            "wall_seconds": round(time.perf_counter() - t, 1),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
