"""Data-parallel throughput: the seed model and a conv net on 1 device and on 2, in one process.

The process starts JAX with two CPU devices (fmnist.parallel.setup(2), as `fmnist train
--devices 2` does) and trains each model three ways, from the same initial weights:
  1 device               fmnist.fit's single-device programs (the default for --devices 1);
  DataParallel, 1 device the data-parallel programs on one device (what the layout costs);
  DataParallel, 2 devices each global batch split over the two devices, gradients all-reduced.
Throughput is training images per second over the epochs after the first (the first
compiles). What this machine can and cannot show: its two "devices" are simulated on the
same 2 CPU cores that one device's XLA program already uses, so 2 devices cannot train
faster here; the numbers show what splitting costs (all-reduce, per-chunk batch layout)
and that the result does not change: the max weight difference against 1 device, beside
the noise floor, 1 device from initial weights nudged by one part in 10^7. A conv net's
max-pooling and ReLUs turn rounding-size differences into visible ones within tens of
steps (any reordering of float sums does it), so its two columns grow together; the MLP's
stay at rounding. Real speed-up needs devices with their own compute: GPUs, TPUs, or
processes on other hosts.

Repetitions alternate between the ways (this machine is shared: its speed drifts); the
table gives each way's median.

    python benchmarks/scaling.py [--limit 12000] [--epochs 3] [--batch-size 32] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

from fmnist import parallel

NUDGE = 1e-7  # relative change of the initial weights that sets the noise floor (about one float32 ulp)
MODELS = {"seed mlp": {}, "cnn 32-64": {"arch": "cnn", "conv_filters": (32, 64)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=12_000, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first compiles, not timed)")
    parser.add_argument("--batch-size", type=int, default=32, help="global batch (split over the devices)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions, alternating between the ways")
    args = parser.parse_args()
    parallel.setup(2)  # before any JAX computation: two CPU devices in this process

    import jax
    import numpy as np

    from fmnist import data, engine, models
    from fmnist._backend import keras
    from fmnist.train import EpochTimer

    (x, y), _ = data.load_data()
    x, y = x[: args.limit], y[: args.limit]
    devices = jax.local_devices()[:2]
    ways = {
        "1 device": None,
        "DataParallel, 1 device": keras.distribution.DataParallel(devices=[f"cpu:{devices[0].id}"]),
        "DataParallel, 2 devices": keras.distribution.DataParallel(devices=[f"cpu:{d.id}" for d in devices]),
        f"1 device, nudged {NUDGE:.0e}": None,
    }

    def run(spec: dict, how: str, distribution) -> tuple[float, list]:
        """Steady training images per second (epochs after the first) and the trained weights."""
        keras.utils.set_random_seed(0)
        model, timer = models.compile_model(models.build_model(models.ModelSpec(**spec))), EpochTimer()
        if "nudged" in how:
            model.set_weights([w * (1 + NUDGE) for w in model.get_weights()])
        engine.fit(model, x, y, epochs=args.epochs, batch_size=args.batch_size, seed=0, verbose=0,
                   callbacks=[timer], distribution=distribution)  # fmt: skip
        seconds = statistics.median(timer.seconds[1:]) if len(timer.seconds) > 1 else timer.seconds[0]
        return len(x) / seconds, model.get_weights()

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
          f"{len(devices)} CPU devices; {len(x)} images × {args.epochs} epochs, batch {args.batch_size}, "
          f"median of {args.reps} reps")  # fmt: skip
    print(f"{'model':10} {'how':24} {'images/s':>9} {'ms/step':>8} {'vs 1 device':>11} {'max |Δw|':>9}")
    steps = -(-len(x) // args.batch_size)
    for name, spec in MODELS.items():
        rates: dict[str, list[float]] = {how: [] for how in ways}
        weights = {}
        for _ in range(args.reps):
            for how, distribution in ways.items():
                rate, weights[how] = run(spec, how, distribution)
                rates[how].append(rate)
        baseline = statistics.median(rates["1 device"])
        for how in ways:
            rate = statistics.median(rates[how])
            diff = max(float(np.max(np.abs(a - b))) for a, b in zip(weights[how], weights["1 device"], strict=True))
            print(f"{name:10} {how:24} {rate:9.0f} {1000 * len(x) / rate / steps:8.2f} {rate / baseline:10.2f}x "
                  f"{diff:9.1e}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
