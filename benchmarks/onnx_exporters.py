"""The two ways to write a fmnist model as ONNX, side by side: fmnist.onnx_graph (the ``onnx`` package's
helpers) against Keras' own ``model.export(format="onnx")`` (through jax2onnx).

For an mlp and a cnn briefly fitted (1 epoch on 3,000 training images), on 1,000 test images:
export seconds, file size, max |p - predict_proba|, and ONNX Runtime's median ms per call at
batch 1 and 1,000. jax2onnx is not one of fmnist's extras (it pulls in flax, optax, orbax,
tensorstore...): install it beside fmnist to run this, e.g. in a throwaway virtual environment
that sees fmnist's packages, with jax, jaxlib, keras and numpy held at fmnist's versions.
Results: BENCHMARKS.md.

    python benchmarks/onnx_exporters.py
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np
import onnxruntime as ort

import fmnist
from fmnist import data, engine, models
from fmnist.export import onnx_model

SPECS = {"mlp": models.ModelSpec(), "cnn": models.ModelSpec(arch="cnn", conv_filters=(32, 64), hidden=(128,))}


def ms_per_call(session, name, x, reps=5) -> float:
    session.run(None, {name: x})
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main():
    (x_train, y_train), (x_test, _) = data.load_data()
    x = x_test[:1000]
    print("net | exporter | export s | bytes | max abs diff | ORT ms batch 1 | ORT ms batch 1000")
    for label, spec in SPECS.items():
        model = models.compile_model(models.build_model(spec, x_train=x_train[:3000]))
        fmnist.fit(model, x_train[:3000], y_train[:3000], epochs=1, verbose=0)
        expected = engine.predict_proba(model, x)
        model(x[:2].astype("float32"))  # Keras' exporter needs a model that has been called
        t = time.perf_counter()
        ours = onnx_model(model).SerializeToString()
        seconds = time.perf_counter() - t
        session = ort.InferenceSession(ours, providers=["CPUExecutionProvider"])
        diff = np.abs(session.run(None, {"pixels": x})[0] - expected).max()
        row = f"{seconds:.2f} | {len(ours)} | {diff:.1e} | {ms_per_call(session, 'pixels', x[:1]):.3f}"
        print(f"{label} | onnx helpers | {row} | {ms_per_call(session, 'pixels', x):.1f}", flush=True)
        path = os.path.join(tempfile.mkdtemp(), f"{label}.onnx")
        try:
            t = time.perf_counter()
            model.export(path, format="onnx", verbose=False)
            seconds = time.perf_counter() - t
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            name, xf = session.get_inputs()[0].name, x.astype(np.float32)  # its input is float32
            diff = np.abs(session.run(None, {name: xf})[0] - expected).max()
            row = f"{seconds:.2f} | {os.path.getsize(path)} | {diff:.1e} | {ms_per_call(session, name, xf[:1]):.3f}"
            print(f"{label} | keras export | {row} | {ms_per_call(session, name, xf):.1f}", flush=True)
        except Exception as e:  # report the failure as the result
            print(f"{label} | keras export | failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)


if __name__ == "__main__":
    main()
