"""Forward-pass speed: the best recipe's net on the 10,000 test images, XLA's convolution against fmnist.kernels'.

``fmnist.kernels`` forms a convolution as one matrix product over its patches, which wins
inside a training step; this script times the forward pass alone both ways, for 1, 6 and
18 test-time views, in buckets of engine.INFER_BATCH images (as engine.predict_views runs
it). Weights are the freshly built net's: the cost does not depend on their values. Each
case is compiled once, then timed ``--reps`` times, alternating the two forms; prints the
median seconds and their ratio.

``--part onnx`` (also part of ``all``) times the same net exported by ``fmnist export`` in ONNX
Runtime (CPU, its default threads) against fmnist's own path, ``engine.predict_proba``, at
batch 1 (the median of ``--calls`` single-image calls) and batch 1,000 (the median of
``--reps`` calls), with 1 and 18 test-time views baked in. Needs ``fmnist[export]``. Results:
BENCHMARKS.md.

    python benchmarks/infer_speed.py [--reps 3] [--part kernels|onnx|all] [--calls 200]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import time

import jax
import numpy as np

from fmnist import augment, data, engine, kernels, recipes, train

VIEW_SETS = {1: ("identity",), 6: ("identity", "flip", "left", "right", "up", "down"), 18: augment.SHIFTED_AND_MIRRORED}


def forward_pass(model, x, views, patch_kernels: bool):
    """A function running the views' forward pass on all of ``x``, compiled here for every bucket's shape."""
    tv, ntv, _ = engine.model_state(model, optimizer=False)

    def outputs(tv, ntv, xb):
        return jax.numpy.stack([engine._forward(model, tv, ntv, augment.view(xb, v))[0] for v in views])

    program = jax.jit(outputs)

    def once():
        out = []
        for start, stop, _ in engine._buckets(len(x)):
            with kernels.cpu_kernels() if patch_kernels else contextlib.nullcontext():  # applies when traced
                out.append(program(tv, ntv, jax.numpy.asarray(x[start:stop])))
        jax.block_until_ready(out)

    once()
    return once


def seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def onnx_against_fmnist(model, x_test, reps: int, calls: int) -> None:
    """ONNX Runtime on the exported graph against engine.predict_proba: batch 1 and 1,000, 1 and 18 views."""
    import onnxruntime as ort

    from fmnist.export import onnx_model

    print(f"\nONNX Runtime {ort.__version__} (CPU) against fmnist.predict_proba; ms per call, median")
    print("views | batch | fmnist ms | ONNX Runtime ms | fmnist / ONNX Runtime")
    for views in (("identity",), augment.SHIFTED_AND_MIRRORED):
        session = ort.InferenceSession(onnx_model(model, views).SerializeToString(), providers=["CPUExecutionProvider"])
        for batch, n in ((1, calls), (1000, reps)):
            x = x_test[:batch]
            ours = functools.partial(engine.predict_proba, model, x, views=views)
            theirs = functools.partial(session.run, None, {"pixels": x})
            ours(), theirs()  # compiled / warmed up
            a, b = [], []
            for _ in range(n):  # alternated, so a change in the machine's pace hits both
                a.append(seconds(ours))
                b.append(seconds(theirs))
            fa, fb = statistics.median(a) * 1e3, statistics.median(b) * 1e3
            print(f"{len(views)} | {batch} | {fa:.2f} | {fb:.2f} | {fa / fb:.2f}x", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="timed passes per case (median)")
    parser.add_argument("--part", choices=("kernels", "onnx", "all"), default="all", help="which comparison to run")
    parser.add_argument("--calls", type=int, default=200, help="onnx part: timed single-image calls (median)")
    args = parser.parse_args()
    (x_train, _), (x_test, _) = data.load_data()
    x_test = np.asarray(x_test)
    model = train.build(recipes.get("best").config, total_steps=1, x_train=x_train)  # its whitened conv needs them
    if args.part in ("onnx", "all"):
        onnx_against_fmnist(model, x_test, args.reps, args.calls)
    if args.part == "onnx":
        return
    print(f"{len(x_test)} images, batches of up to {engine.INFER_BATCH}; median of {args.reps}")
    print("views | XLA's convolution s | fmnist.kernels s | kernels / XLA")
    for n, views in VIEW_SETS.items():
        xla_pass = forward_pass(model, x_test, views, patch_kernels=False)
        patch_pass = forward_pass(model, x_test, views, patch_kernels=True)
        xla, patches = [], []
        for _ in range(args.reps):  # alternated, so a change in the machine's pace hits both
            xla.append(seconds(xla_pass))
            patches.append(seconds(patch_pass))
        a, b = statistics.median(xla), statistics.median(patches)
        print(f"{n} | {a:.2f} | {b:.2f} | {b / a:.2f}x", flush=True)


if __name__ == "__main__":
    main()
