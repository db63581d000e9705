"""How should fmnist.fit group training steps into compiled programs? Measure it.

For a dense model ("mlp", the tutorial's seed MLP) and a convolutional one (ModelSpec(arch="cnn")),
time the same training steps run as:
  - step loop:   one jitted step per batch, dispatched from Python (what Model.fit does);
  - scan K/u:    K steps in one ``lax.scan`` program, unrolled u times.
Prints compile seconds and milliseconds per training step (median of --reps timed passes
over the same batches, after one warm-up pass). Results and the chosen schedules:
BENCHMARKS.md; engine.DENSE_SCHEDULE / engine.CONV_SCHEDULE use them.

    python benchmarks/engine_schedule.py [--steps 400] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from fmnist import data, engine, models


def make_model(arch: str):
    model = models.compile_model(models.build_model(models.ModelSpec(arch=arch)))
    model.optimizer.build(model.trainable_variables)
    return model


def state_of(model):
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
    )


def time_variant(model, x_dev, y_dev, idx, w, chunk_steps, unroll, reps):
    """(compile seconds, median ms per step) for one grouping of the same steps."""
    step = engine._make_train_step(model, engine._loss_fn(model))
    if chunk_steps == 1:  # the plain step loop
        run = jax.jit(lambda s, xa, ya, i, ww: step(s, jnp.take(xa, i, axis=0), jnp.take(ya, i, axis=0), ww))
        flat_idx, flat_w = idx.reshape(-1, idx.shape[-1]), w.reshape(-1, w.shape[-1])
        t = time.perf_counter()
        jax.block_until_ready(run.lower(state_of(model), x_dev, y_dev, flat_idx[0], flat_w[0]).compile())
        compile_s = time.perf_counter() - t

        def one_pass():
            s = state_of(model)
            for i in range(len(flat_idx)):
                s, _, _ = run(s, x_dev, y_dev, flat_idx[i], flat_w[i])
            jax.block_until_ready(s)
    else:
        chunk = engine._make_chunk(step, unroll)
        t = time.perf_counter()
        jax.block_until_ready(chunk.lower(state_of(model), x_dev, y_dev, idx[0], w[0]).compile())
        compile_s = time.perf_counter() - t

        def one_pass():
            s = state_of(model)
            for c in range(len(idx)):
                s, _, _ = chunk(s, x_dev, y_dev, idx[c], w[c])
            jax.block_until_ready(s)

    one_pass()  # warm-up (also pays the jit cache lookup)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - t)
    return compile_s, 1000 * statistics.median(times) / (idx.shape[0] * idx.shape[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="mlp: training steps per timed pass (multiple of 200)")
    parser.add_argument("--cnn-steps", type=int, default=48, help="cnn: training steps per timed pass (multiple of 16)")
    parser.add_argument("--reps", type=int, default=3, help="timed passes per variant")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    (x, y), _ = data.load_data()
    x_dev, y_dev = jax.device_put(x), jax.device_put(y)
    order = np.random.default_rng(0).permutation(len(x))
    variants = {
        "mlp": (args.steps, [(1, 1), (200, 1), (200, 4), (args.steps, 1)]),
        "cnn": (args.cnn_steps, [(1, 1), (8, 1), (8, 8), (16, 16), (args.cnn_steps, 1)]),
    }
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, batch {args.batch_size}")
    for arch, (steps, grid) in variants.items():
        model = make_model(arch)
        for chunk_steps, unroll in grid:
            k = max(chunk_steps, 1)
            idx, w = engine._epoch_plan(order[: steps * args.batch_size], args.batch_size, k)
            compile_s, ms = time_variant(model, x_dev, y_dev, idx, w, chunk_steps, unroll, args.reps)
            name = "step loop" if chunk_steps == 1 else f"scan {chunk_steps}/unroll {unroll}"
            print(f"{arch:4} {steps} steps  {name:22} compile {compile_s:6.2f} s   {ms:7.3f} ms/step", flush=True)


if __name__ == "__main__":
    main()
