"""How should fmnist.fit group training steps into compiled programs? Measure it.

For a dense model (the tutorial's seed MLP) and a convolutional one (ModelSpec(arch="cnn")),
time the same training steps (batch 32) run as:
  step loop       one jitted step per batch, dispatched from Python (what Model.fit does);
  fori K          engine's chunk: K steps in a lax.fori_loop with a traced trip count;
  scan K +cond    K steps in lax.scan, each wrapped in lax.cond (to skip padding steps);
  scan K +where   K steps in lax.scan, the state kept with jnp.where on padding steps;
  scan K unroll   K steps in lax.scan fully unrolled, no masking.
Prints compile seconds and milliseconds per training step (median of --reps timed passes
over the same batches, interleaved, after one warm-up pass). Results: BENCHMARKS.md; they set
engine.DENSE_CHUNK_STEPS and engine.CONV_CHUNK_STEPS.

    python benchmarks/engine_schedule.py [--steps 512] [--cnn-steps 32] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from fmnist import data, engine, kernels, models


def scan_chunk(step, mask: str, unroll: int):
    """A lax.scan chunk; ``mask`` is how padding steps are neutralised: cond, where or none."""

    @jax.jit
    def chunk(state, x_all, y_all, idx, w, count, n, start, key):
        def body(carry, batch):
            state, loss_sum, correct = carry
            bi, bw, bc = batch

            def run(s):
                return step(s, jnp.take(x_all, bi, axis=0), jnp.take(y_all, bi, axis=0), bw, bc, key)

            valid = bc > 0
            if mask == "cond":
                zero = jnp.zeros((), jnp.float32)
                new, loss, c = jax.lax.cond(valid, run, lambda s: (s, zero, zero), state)
            else:
                new, loss, c = run(state)
                if mask == "where":
                    new = jax.tree.map(lambda a, b: jnp.where(valid, a, b), new, state)
            return (new, loss_sum + loss, correct + c), None

        zero = jnp.zeros((), jnp.float32)
        return jax.lax.scan(body, (state, zero, zero), (idx, w, count), unroll=unroll)[0]

    return chunk


def compile_variant(model, chunk, x_dev, y_dev, idx, w, count):
    """(compiled program, compile seconds, a function running it over all of ``idx``)."""

    def state():
        return engine.model_state(model)

    k = idx.shape[1]
    t = time.perf_counter()
    key = jax.random.PRNGKey(0)
    with kernels.cpu_kernels():
        compiled = chunk.lower(state(), x_dev, y_dev, idx[0], w[0], count[0], k, 0, key).compile()
    compile_s = time.perf_counter() - t

    def one_pass():
        s = state()
        for c in range(len(idx)):
            s, _, _ = compiled(s, x_dev, y_dev, idx[c], w[c], count[c], k, 0, key)
        jax.block_until_ready(s)

    one_pass()  # warm-up
    return compile_s, one_pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=512, help="mlp: steps per timed pass (multiple of 256)")
    parser.add_argument("--cnn-steps", type=int, default=64, help="cnn: steps per timed pass (multiple of 16)")
    parser.add_argument("--reps", type=int, default=3, help="timed passes per variant")
    args = parser.parse_args()

    (x, y), _ = data.load_data()
    x_dev, y_dev = jax.device_put(x), jax.device_put(y)
    order = np.random.default_rng(0).permutation(len(x))
    grids = {
        "mlp": (args.steps, 256, 8),  # steps per pass, chunk length, unroll factor
        "cnn": (args.cnn_steps, 16, 8),
    }
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, batch 32, median of {args.reps} passes")
    for arch, (steps, k, unroll) in grids.items():
        model = models.compile_model(models.build_model(models.ModelSpec(arch=arch)))
        model.optimizer.build(model.trainable_variables)
        step = engine._make_train_step(model, engine._loss_fn(model))
        variants = {
            "step loop": (engine._make_chunk(step, 1), 1),
            f"fori {k}": (engine._make_chunk(step, k), k),
            f"scan {k} +cond": (scan_chunk(step, "cond", 1), k),
            f"scan {k} +where": (scan_chunk(step, "where", 1), k),
            f"scan {k} unroll {unroll}": (scan_chunk(step, "none", unroll), k),
        }
        runs = {}
        for name, (chunk, chunk_steps) in variants.items():
            idx, w, count = engine._epoch_plan(order[: steps * 32], 32, chunk_steps)
            runs[name] = compile_variant(model, chunk, x_dev, y_dev, idx, w, count)
        times = {name: [] for name in variants}
        for _ in range(args.reps):  # interleaved, so load changes on a noisy machine hit every variant
            for name, (_, one_pass) in runs.items():
                t = time.perf_counter()
                one_pass()
                times[name].append(1000 * (time.perf_counter() - t) / steps)
        base = statistics.median(times["step loop"])
        for name, (compile_s, _) in runs.items():
            ms = statistics.median(times[name])
            print(f"{arch:4} {name:18} compile {compile_s:6.2f} s  {ms:8.3f} ms/step  "
                  f"({base / ms:.2f}x the step loop)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
