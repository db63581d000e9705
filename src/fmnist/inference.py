"""The one inference path: the batched, compiled forward pass and what is built on it.

``predict_proba`` (over ``predict_views``) is the only forward pass: ``evaluate``, ``fit``'s
validation, ``Predictor``, the report and the experiments all call it; test-time views are
averaged inside one compiled program. Images go through in buckets of powers of two up to
``INFER_BATCH``, so a single image and 10,000 images reuse a handful of compiled programs.

The forward pass runs with XLA's own convolution and pooling, not fmnist.kernels' patch
products: for a forward pass alone XLA's are the faster ones (benchmarks/infer_speed.py,
BENCHMARKS.md), while inside a compiled loop of training steps the patch products win.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from fmnist import augment as augment_lib
from fmnist import metrics
from fmnist._backend import keras
from fmnist.fit_state import model_state
from fmnist.programs import _loss_fn

INFER_BATCH = 1024  # the largest bucket of images one forward program takes
# Each model's own compiled forward, held only as long as the model is: a model that is dropped (a served
# model after a swap) takes its compiled programs with it, and no other model's are touched.
_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PROGRAMS_LOCK = threading.Lock()  # the server warms a new model on one thread while another infers
_DEFAULT_LOSS = keras.losses.sparse_categorical_crossentropy  # for models saved without compile()


def _forward(model, trainable, non_trainable, x, training=False):
    y_pred, non_trainable = model.stateless_call(trainable, non_trainable, x.astype("float32"), training=training)
    return y_pred, non_trainable


def _forward_program(model):
    """``program(views, trainable, non_trainable, x)``: outputs for each test-time view, stacked
    (views, n, outputs), one compiled program for all views. The program is the model's own and
    refers to it weakly, so it lives exactly as long as the model (a jit with the model as a
    static argument would keep every model it ever saw, and their programs, until JAX's caches are cleared)."""
    with _PROGRAMS_LOCK:
        program = _PROGRAMS.get(model)
        if program is None:
            held = weakref.ref(model)

            @partial(jax.jit, static_argnums=(0,))
            def program(views, trainable, non_trainable, x):
                return jnp.stack([_forward(held(), trainable, non_trainable, augment_lib.view(x, v))[0] for v in views])

            _PROGRAMS[model] = program
    return program


def _buckets(n: int, batch: int = INFER_BATCH):
    """(start, stop, padded size) slices covering n rows; sizes are powers of two <= batch."""
    start = 0
    while start < n:
        size = min(batch, n - start)
        padded = min(batch, 1 << (size - 1).bit_length())
        yield start, start + size, padded
        start += size


def _predict_with(model, trainable, non_trainable, x: np.ndarray, views=("identity",)) -> np.ndarray:
    """(views, n, outputs) for raw images ``x``, in power-of-two buckets."""
    out = []
    views = augment_lib.check_views(views)
    program = _forward_program(model)
    for start, stop, padded in _buckets(len(x)):
        xb = x[start:stop]
        if padded != len(xb):
            xb = np.concatenate([xb, np.zeros((padded - len(xb), *xb.shape[1:]), xb.dtype)])
        outputs = program(views, trainable, non_trainable, jnp.asarray(xb))
        out.append(np.asarray(outputs)[:, : stop - start])
    return np.concatenate(out, axis=1) if out else np.zeros((len(views), 0, 0), np.float32)


def predict_views(model: keras.Model, x: np.ndarray, views: Sequence[str]) -> np.ndarray:
    """The model's outputs for each of the test-time ``views`` of raw images ``x``: (views, n, outputs)."""
    trainable, non_trainable, _ = model_state(model, optimizer=False)
    return _predict_with(model, trainable, non_trainable, np.asarray(x), tuple(views))


def predict_proba(model: keras.Model, x: np.ndarray, views: Sequence[str] = ("identity",)) -> np.ndarray:
    """The model's outputs (class probabilities for a softmax model) for raw images ``x``.

    Batched through one compiled forward pass; shapes are padded to powers of two so a
    single image and 10,000 images reuse a handful of compiled programs. ``views`` (see
    fmnist.augment.VIEWS) are test-time views whose outputs are averaged; the default is
    the image itself, as Keras' ``Model.predict`` sees it.
    """
    return predict_views(model, x, views).mean(axis=0)


@partial(jax.jit, static_argnums=(0,))
def _mean_loss(loss_fn, y, probs):
    return jnp.mean(loss_fn(y, probs))


@partial(jax.jit, static_argnums=(0,))
def _weighted_mean_loss(loss_fn, y, probs, w):
    return jnp.sum(loss_fn(y, probs) * w) / len(w)  # Keras' sum_over_batch_size: divided by images, not weights


def loss_and_accuracy(
    model: keras.Model, probs: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
) -> dict[str, float]:
    """The compiled loss and the accuracy of outputs ``probs`` against labels ``y``.

    With ``sample_weight`` the loss is weighted as ``Model.evaluate`` weighs it (the weighted
    sum over the images divided by their number); accuracy, a ``metrics=`` metric, is not.
    """
    loss_fn = _loss_fn(model) if getattr(model, "loss", None) is not None else _DEFAULT_LOSS
    labels = y if y.ndim == 1 else np.argmax(y, axis=-1)
    if sample_weight is None:
        loss = _mean_loss(loss_fn, y, probs)
    else:
        loss = _weighted_mean_loss(loss_fn, y, probs, np.asarray(sample_weight, np.float32))
    return {"loss": float(loss), "accuracy": float(np.mean(np.argmax(probs, axis=-1) == labels))}


def evaluate(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    views: Sequence[str] = ("identity",),
    probs: np.ndarray | None = None,
    return_probs: bool = False,
):
    """Everything about ``model`` on ``(x, y)`` from one ``predict_proba`` pass, as a JSON-ready dict.

    loss and accuracy (the compiled loss), then ``metrics.summarize``: top-2 accuracy, expected
    calibration error, per-class precision / recall / F1 / support, the confusion matrix and
    the top confusions. With test-time ``views`` the figures are those of the averaged
    probabilities, and ``accuracy_single_view`` (the plain image's, as a plain Keras
    ``predict`` gives) is recorded beside them. ``probs`` passes outputs already computed
    by ``predict_proba``; ``return_probs`` returns ``(metrics, probs)`` (the report draws
    its figures from the same pass instead of running the model twice).
    """
    x, y = np.asarray(x), np.asarray(y)
    views = augment_lib.check_views(views)
    single = None
    if probs is None:
        computed = augment_lib.with_identity(views)
        per_view = predict_views(model, x, computed)
        probs, single = per_view[[computed.index(v) for v in views]].mean(axis=0), per_view[0]
    result = loss_and_accuracy(model, np.asarray(probs), y) | metrics.summarize(np.asarray(probs), y)
    if views != ("identity",):
        result["views"] = list(views)
        if single is not None:
            result["accuracy_single_view"] = loss_and_accuracy(model, single, y)["accuracy"]
    return (result, probs) if return_probs else result
