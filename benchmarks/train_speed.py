"""fmnist.fit vs Keras' Model.fit on the tutorial's seed program, in one process, alternating.

The seed program: Flatten → Dense(128, relu) → Dense(10, softmax), Adam, sparse categorical
cross-entropy, accuracy, 5 epochs, batch 32, the 60,000 training images. Trainers:
  fmnist.fit               uint8 images, Rescaling(1/255) inside the model (fmnist's default);
  Model.fit tutorial       the lesson's literal program: float64 x / 255.0 arrays, no Rescaling
                           layer, steps_per_execution=1;
  Model.fit spe=K          the fastest Model.fit a Keras user can write: uint8 images with the
                           Rescaling layer, steps_per_execution K in {1, 32, 256}.
Each repetition builds the model from the same seed for every trainer (same initial
weights), trains it, and evaluates it on the 10,000 test images. Training seconds are wall
clock of the fit call, compilation included (no persistent compilation cache); per-epoch
times of epochs 2+ show the steady state. Results: BENCHMARKS.md.

    python benchmarks/train_speed.py [--reps 3] [--epochs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax

from fmnist import data, engine, models
from fmnist._backend import keras
from fmnist.train import EpochTimer


def seed_model(seed: int, normalize: bool = True, steps_per_execution: int = 1):
    keras.utils.set_random_seed(seed)
    model = models.build_model(models.ModelSpec(normalize=normalize))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)  # fmt: skip
    return model


def run_fmnist(seed, x, y, epochs, batch_size):
    model, timer = seed_model(seed), EpochTimer()
    t = time.perf_counter()
    engine.fit(model, x, y, epochs=epochs, batch_size=batch_size, seed=seed, callbacks=[timer], verbose=0)
    return time.perf_counter() - t, timer.seconds, model


def keras_runner(normalize: bool, steps_per_execution: int):
    def run(seed, x, y, epochs, batch_size):
        model, timer = seed_model(seed, normalize, steps_per_execution), EpochTimer()
        x = x if normalize else x / 255.0  # the tutorial divides the arrays: float64
        t = time.perf_counter()
        model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[timer])
        return time.perf_counter() - t, timer.seconds, model

    return run


TRAINERS = {
    "fmnist.fit": run_fmnist,
    "Model.fit tutorial": keras_runner(normalize=False, steps_per_execution=1),
    "Model.fit spe=1": keras_runner(normalize=True, steps_per_execution=1),
    "Model.fit spe=32": keras_runner(normalize=True, steps_per_execution=32),
    "Model.fit spe=256": keras_runner(normalize=True, steps_per_execution=256),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each trainer (seeds 0..reps-1)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    (x, y), (x_test, y_test) = data.load_data()
    device = jax.devices()[0].device_kind
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} on {device}, "
          f"keras {keras.__version__}; {args.epochs} epochs, batch {args.batch_size}")  # fmt: skip
    results = {name: [] for name in TRAINERS}
    later = {name: [] for name in TRAINERS}  # epochs after the first: no compilation in them
    for rep in range(args.reps):
        # Alternate the order so slow drifts of a noisy machine hit every trainer alike.
        order = list(TRAINERS) if rep % 2 == 0 else list(TRAINERS)[::-1]
        for name in order:
            seconds, per_epoch, model = TRAINERS[name](rep, x, y, args.epochs, args.batch_size)
            x_eval = x_test if name != "Model.fit tutorial" else x_test / 255.0
            acc = float(model.evaluate(x_eval, y_test, verbose=0, return_dict=True)["accuracy"])
            results[name].append((seconds, acc))
            later[name].append(statistics.median(per_epoch[1:] or [float("nan")]))
            print(f"rep {rep} {name:18} {seconds:6.2f} s (first epoch {per_epoch[0]:.2f} s, then "
                  f"{later[name][-1]:.3f} s/epoch)   test accuracy {acc:.4f}", flush=True)  # fmt: skip

    ours = results["fmnist.fit"]
    print("\n| trainer | total s (median) | epochs 2+ s/epoch (median) | fmnist.fit faster, total | "
          "fmnist.fit faster, epochs 2+ | test accuracy (mean) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        total = statistics.median(s for s, _ in r)
        steady = statistics.median(later[name])
        ratio = statistics.median(k[0] / f[0] for f, k in zip(ours, r, strict=True))
        ratio2 = statistics.median(k / f for f, k in zip(later["fmnist.fit"], later[name], strict=True))
        print(f"| {name} | {total:.2f} | {steady:.3f} | {ratio:.2f}x | {ratio2:.2f}x | "
              f"{statistics.mean(a for _, a in r):.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
