"""fmnist.fit vs Keras' Model.fit on the tutorial's seed program, in one process, alternating.

The seed program: Rescaling(1/255) → Flatten → Dense(128, relu) → Dense(10, softmax), Adam,
sparse categorical cross-entropy, accuracy, 5 epochs, batch 32, the 60,000 training images.
Each repetition builds the model from the same seed for both trainers (same initial
weights), trains it, and evaluates it on the 10,000 test images. Training seconds are wall
clock of the fit call, compilation included (a user pays it; no persistent compilation
cache is enabled, so every fit compiles its programs from scratch). Per-epoch times of
epochs 2+ show the steady state without compilation. Results: BENCHMARKS.md.

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


def seed_model(seed: int):
    keras.utils.set_random_seed(seed)
    return models.compile_model(models.build_model())


def run_fmnist(seed, x, y, epochs, batch_size):
    model, timer = seed_model(seed), EpochTimer()
    t = time.perf_counter()
    engine.fit(model, x, y, epochs=epochs, batch_size=batch_size, seed=seed, callbacks=[timer])
    return time.perf_counter() - t, timer.seconds, model


def run_keras(seed, x, y, epochs, batch_size):
    model, timer = seed_model(seed), EpochTimer()
    t = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[timer])
    return time.perf_counter() - t, timer.seconds, model


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
    results = {"fmnist.fit": [], "Model.fit": []}
    later = {"fmnist.fit": [], "Model.fit": []}  # epochs after the first: no compilation in them
    for rep in range(args.reps):
        # Alternate which goes first so slow drifts of a noisy machine hit both alike.
        order = [("fmnist.fit", run_fmnist), ("Model.fit", run_keras)]
        for name, runner in order if rep % 2 == 0 else order[::-1]:
            seconds, per_epoch, model = runner(rep, x, y, args.epochs, args.batch_size)
            acc = engine.evaluate(model, x_test, y_test)["accuracy"]
            results[name].append((seconds, acc))
            later[name].extend(per_epoch[1:])
            print(f"rep {rep} seed {rep} {name:10} {seconds:6.2f} s (first epoch {per_epoch[0]:.2f} s, "
                  f"then {statistics.median(per_epoch[1:] or [float('nan')]):.2f} s/epoch)   "
                  f"test accuracy {acc:.4f}", flush=True)  # fmt: skip

    med = {name: statistics.median(s for s, _ in r) for name, r in results.items()}
    acc = {name: statistics.mean(a for _, a in r) for name, r in results.items()}
    ratios = [k[0] / f[0] for f, k in zip(results["fmnist.fit"], results["Model.fit"], strict=True)]
    for name in results:
        print(f"{name:10} median {med[name]:6.2f} s ({med[name] / args.epochs:.2f} s/epoch), "
              f"mean test accuracy {acc[name]:.4f}")  # fmt: skip
    print(f"speed-up (Model.fit / fmnist.fit): median {statistics.median(ratios):.2f}x "
          f"(per repetition: {', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip
    steady = statistics.median(later["Model.fit"]) / statistics.median(later["fmnist.fit"])
    print(f"epochs 2+ only (compiled, steady state): Model.fit {statistics.median(later['Model.fit']):.3f} s/epoch, "
          f"fmnist.fit {statistics.median(later['fmnist.fit']):.3f} s/epoch: {steady:.2f}x")  # fmt: skip
    print(f"accuracy difference (fmnist - Keras): {100 * (acc['fmnist.fit'] - acc['Model.fit']):+.2f} points")


if __name__ == "__main__":
    main()
