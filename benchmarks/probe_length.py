"""How long must a time budget's probe be? The best recipe's pace, traced, and probes of each length scored.

A time budget becomes steps once, from the pace of the run's first steps (fmnist.budget.run_probe,
plan_steps). This trains the best recipe's first ``--seconds`` of steps (the probe's own code,
schedule held at its starting rate: a step costs the same at any rate) and records the clock after
every compiled chunk. Then every chunk boundary is taken as a probe's start: a probe of W seconds
predicts the mean step of the H seconds after it, and the script prints, per W, how far the
prediction missed (median, 90th percentile and worst of |predicted / actual - 1|, and the mean
signed miss: negative means the run went slower than its probe). The windows overlap, so the
figures describe this one trace, not independent runs. Results: BENCHMARKS.md ("probe length").

    python benchmarks/probe_length.py --seconds 720 --horizons 285,600
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np

from fmnist import data, recipes
from fmnist.train import run_probe

PROBES_S = (10, 15, 30, 45, 60)  # probe lengths scored: today's 15 s probe (a 5-minute budget's first epoch) and longer
STEP_MS_GUESS = 15.0  # the best recipe's step on the 2-core machine, to turn --seconds into steps


def misses(times: np.ndarray, steps: np.ndarray, probe_s: float, horizon_s: float) -> np.ndarray:
    """predicted / actual - 1 for a probe of ``probe_s`` at each chunk boundary, over the next ``horizon_s``."""
    out = []
    for i in range(len(times)):
        j = np.searchsorted(times, times[i] + probe_s)
        k = np.searchsorted(times, times[i] + probe_s + horizon_s)
        if k >= len(times):
            break
        predicted = (times[j] - times[i]) / (steps[j] - steps[i])
        actual = (times[k] - times[j]) / (steps[k] - steps[j])
        out.append(predicted / actual - 1)
    return np.array(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=720.0, help="how long to trace (about)")
    p.add_argument("--horizons", default="285,600", help="comma-separated seconds a probe must predict")
    p.add_argument("--save", help="write the trace (clock and steps after each chunk) to this JSON file")
    args = p.parse_args()
    (x, y), _ = data.load_data(download_missing=False)
    config = recipes.get("best").config
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    probe = run_probe(config, x, y, steps=int(1000 * args.seconds / STEP_MS_GUESS))
    times, steps = np.array(probe.times[1:]), np.array(probe.steps_at[1:])  # the first chunk compiled
    times, steps = times - times[0], steps - steps[0]
    if args.save:
        with open(args.save, "w") as f:
            json.dump({"times": times.tolist(), "steps": steps.tolist()}, f)
    edges = np.searchsorted(times, np.arange(0.0, times[-1], 60.0))  # the chunk at each minute's start
    per_minute = [1000 * (times[b] - times[a]) / (steps[b] - steps[a]) for a, b in itertools.pairwise(edges)]
    pace = ", ".join(f"{m:.1f}" for m in per_minute)
    print(f"best recipe, started {started}: {times[-1]:.0f} s traced, {steps[-1]} steps, "
          f"{1000 * times[-1] / steps[-1]:.2f} ms a step; ms a step in each minute: {pace}")  # fmt: skip
    print("| probe s | horizon s | probes | median miss | 90th percentile | worst | mean signed |")
    print("|---|---|---|---|---|---|---|")
    for horizon in (float(h) for h in args.horizons.split(",")):
        for probe_s in PROBES_S:
            e = misses(times, steps, probe_s, horizon)
            if len(e):
                print(f"| {probe_s} | {horizon:.0f} | {len(e)} | {100 * np.median(np.abs(e)):.1f}% "
                      f"| {100 * np.percentile(np.abs(e), 90):.1f}% | {100 * np.abs(e).max():.1f}% "
                      f"| {100 * e.mean():+.1f}% |")  # fmt: skip


if __name__ == "__main__":
    main()
