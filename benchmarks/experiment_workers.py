"""Should `fmnist experiment` run its trials in 1 worker process or 2 on a 2-core machine?

XLA:CPU already spreads one training over the cores, so two processes could just fight
over them. This runs the same trials three ways and prints the wall-clock of each:
  1 worker,  XLA's own threading (uses both cores inside one training);
  2 workers, XLA single-threaded each (trial_workers.SINGLE_THREAD_XLA: one core per training);
  2 workers, XLA's own threading each (oversubscribed: 4 threads on 2 cores).
One warm-up pass first fills the persistent compilation cache, so every timed pass
measures training and evaluation, not compiling. Passes alternate between the three ways.

    python benchmarks/experiment_workers.py [--experiment hidden-units] [--seeds 2] [--epochs-scale 0.4] [--reps 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

from fmnist import experiments as ex
from fmnist import trials as tr

WAYS = (  # (label, workers, XLA flags per worker)
    ("1 worker, XLA threads", 1, ""),
    ("2 workers, 1 XLA thread each", 2, tr.SINGLE_THREAD_XLA),
    ("2 workers, XLA threads each", 2, ""),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="hidden-units")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs-scale", type=float, default=0.4)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    experiments = [ex.build_experiments(args.epochs_scale)[n] for n in ex.resolve_names(args.experiment)]
    trials, _ = ex.plan(experiments, list(range(args.seeds)))
    print(f"{len(trials)} trials of {args.experiment}, {args.seeds} seeds, epochs × {args.epochs_scale}")
    tr.run_trials(trials, 2, xla_flags=tr.SINGLE_THREAD_XLA)  # warm-up: fills the compilation cache
    seconds: dict[str, list[float]] = {label: [] for label, _, _ in WAYS}
    for rep in range(args.reps):
        for label, workers, flags in WAYS:
            start = time.perf_counter()
            tr.run_trials(trials, workers, xla_flags=flags)
            seconds[label].append(time.perf_counter() - start)
            print(f"rep {rep + 1}  {label:30} {seconds[label][-1]:7.1f} s", flush=True)
    print("\nmedian wall-clock per pass:")
    for label, values in seconds.items():
        print(f"  {label:30} {statistics.median(values):7.1f} s")


if __name__ == "__main__":
    main()
