"""A sweep's wall clock with 1 and 2 workers, on local worker processes and on Ray.

The same small grid (learning rates × seeds, the seed model) runs four ways into fresh folders,
so no trial is kept from an earlier pass:
  local, 1 worker   (XLA's own threading: one training on every core);
  local, 2 workers  (XLA single-threaded each: one training per core);
  ray,   1 CPU      (a private local Ray; every task single-threaded);
  ray,   2 CPUs.
Warm-up passes (1 and 2 workers) first fill JAX's persistent compilation cache, so the timed passes measure
training, not compiling; Ray's passes include starting Ray and its worker processes, which is
what a user waits for. On a 2-core machine, 2 workers can gain at most the ~10% that two
single-threaded trainings gain over one two-threaded one (see experiments' DEFAULT_WORKERS);
the numbers say how much of that survives the start-up costs, not how a cluster scales.

    python benchmarks/sweep_scaling.py [--rates 1e-3,3e-3,1e-2] [--seeds 2] [--epochs 1] [--limit 6000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fmnist import data
from fmnist import sweep as sw
from fmnist.train import TrainConfig

WAYS = (("local", 1), ("local", 2), ("ray", 1), ("ray", 2))  # (executor, workers or CPUs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1e-3,3e-3,1e-2", help="learning rates: the grid's points")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit", type=int, default=6000, help="training images per trial")
    args = parser.parse_args()
    grid = sw.parse_grid([f"learning_rate={args.rates}"])
    base = TrainConfig(epochs=args.epochs, train_limit=args.limit)
    trials = len(sw.points(grid)) * args.seeds
    print(
        f"{trials} trials: learning_rate={args.rates}, {args.seeds} seeds, {args.epochs} epoch(s), {args.limit} images"
    )
    dataset = data.load_data()
    with tempfile.TemporaryDirectory(prefix="fmnist-sweep-bench-") as tmp:
        for workers in (1, 2):  # fills the compilation cache, for XLA's own threading and for one thread
            sw.run_sweep(base, grid, args.seeds, Path(tmp) / f"warm-up-{workers}", workers=workers)
        for executor, workers in WAYS:
            start = time.perf_counter()
            result = sw.run_sweep(
                base, grid, args.seeds, Path(tmp) / f"{executor}-{workers}", workers=workers, executor=executor,
                dataset=dataset if executor == "ray" else None,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            best = result.best.point.name if result.best else "none"
            print(
                f"  {executor:5} {workers} worker{'s' * (workers > 1):1}  {seconds:7.1f} s   best: {best}", flush=True
            )


if __name__ == "__main__":
    main()
