"""The compiled-epoch trainer and the one inference path.

``fit`` trains a compiled Keras model the way ``Model.fit`` does (same optimizer, loss,
batches, callbacks and History), but instead of dispatching one small XLA program per
batch it compiles a *chunk* of training steps into one program: ``jax.lax.scan`` over
``stateless_call`` + ``optimizer.stateless_apply``, with the whole training set resident
on the device and each batch gathered inside the program. The seed model trains ~3x
faster than ``Model.fit`` on the same backend (benchmarks/train_speed.py, BENCHMARKS.md).

``predict_proba`` is the only forward pass: ``evaluate``, ``Predictor``, the report and
the server all call it.

Callbacks are honoured at epoch granularity (on_train_begin / on_epoch_begin /
on_epoch_end / on_train_end, ``model.stop_training``) and ``on_train_batch_end`` is
called at the end of each compiled chunk with the running loss and accuracy, which is
what progress bars and TerminateOnNaN need.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from fmnist._backend import keras
from fmnist.errors import ModelError

ACCURACY_NAMES = {"accuracy", "acc", "sparse_categorical_accuracy"}
INFER_BATCH = 1024  # the forward pass runs in buckets of powers of two up to this many images


# --------------------------------------------------------------------------- how to compile
@dataclass(frozen=True)
class Schedule:
    """How training steps are grouped into compiled programs.

    chunk_steps: training steps per compiled program (and per progress update).
    unroll: ``lax.scan`` unroll factor. XLA:CPU runs convolutions inside a *rolled* loop
        about 10x slower than the same step jitted alone; unrolling the loop body removes
        the penalty, at the price of compile time that grows with the unroll factor.
    """

    chunk_steps: int
    unroll: int


# Chosen by benchmarks/engine_schedule.py on the 2-core CPU machine (BENCHMARKS.md):
DENSE_SCHEDULE = Schedule(chunk_steps=200, unroll=1)  # rolled: compiles in <1 s, no per-step dispatch
CONV_SCHEDULE = Schedule(chunk_steps=8, unroll=8)  # fully unrolled short chunks: no rolled-loop penalty


def default_schedule(model: keras.Model) -> Schedule:
    """Dense models run long rolled chunks; models with convolutions short unrolled ones."""
    has_conv = any(isinstance(layer, keras.layers.Conv2D | keras.layers.Conv1D) for layer in _all_layers(model))
    return CONV_SCHEDULE if has_conv else DENSE_SCHEDULE


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


# --------------------------------------------------------------------------- checks before training
def check_model(model: keras.Model, x: np.ndarray, y: np.ndarray) -> None:
    """Explain the classic mistakes before any training starts, instead of a backend traceback."""
    if getattr(model, "optimizer", None) is None or getattr(model, "loss", None) is None:
        raise ModelError(
            "the model is not compiled: call model.compile(optimizer='adam', "
            "loss='sparse_categorical_crossentropy', metrics=['accuracy']) before fmnist.fit."
        )
    for metric in _metric_names(model):
        if metric not in ACCURACY_NAMES:
            raise ModelError(f"fmnist.fit reports loss and accuracy; metric {metric!r} is not supported: drop it.")
    if len(x) != len(y):
        raise ModelError(f"{len(x)} images but {len(y)} labels: they must be the same length.")
    if len(x) == 0:
        raise ModelError("no training images: x is empty.")
    try:
        spec = model.compute_output_spec(keras.KerasTensor((None, *x.shape[1:]), dtype="float32"))
    except Exception as e:
        raise ModelError(f"the model cannot take images of shape {x.shape[1:]}: {e}") from e
    out = tuple(spec.shape)
    n_labels = int(np.max(y)) + 1 if y.ndim == 1 else y.shape[-1]
    if len(out) != 2:
        raise ModelError(
            f"the model's output has shape {out}, but the loss needs one row of class scores per image, "
            f"shape (None, {n_labels}). Dense layers act on the last axis only, so a {x.shape[1:]} image that "
            "is not flattened keeps its rows all the way to the loss: add keras.layers.Flatten() as the first layer."
        )
    if out[-1] < n_labels:
        raise ModelError(
            f"labels go up to {n_labels - 1} but the output layer has {out[-1]} units, so classes "
            f"{out[-1]}–{n_labels - 1} have no score and the loss is undefined for them: "
            f"make the last layer Dense({n_labels}, activation='softmax')."
        )


def _metric_names(model: keras.Model) -> list[str]:
    metrics = getattr(model, "_compile_config", None)
    metrics = (metrics.config.get("metrics") if metrics is not None else None) or []
    if isinstance(metrics, dict):
        raise ModelError("fmnist.fit takes a single-output model with metrics=['accuracy'].")
    names = []
    for m in metrics:
        names.append(m if isinstance(m, str) else getattr(m, "name", type(m).__name__))
    return names


def _loss_fn(model: keras.Model):
    loss = model.loss
    if isinstance(loss, list | tuple | dict):
        raise ModelError("fmnist.fit takes a single-output model with one loss.")
    return keras.losses.get(loss) if isinstance(loss, str) else loss


# --------------------------------------------------------------------------- compiled programs
def _forward(model, tv, ntv, x, training=False):
    y_pred, ntv = model.stateless_call(tv, ntv, x.astype("float32"), training=training)
    return y_pred, ntv


def _batch_stats(y_pred, y):
    labels = y if y.ndim == 1 else jnp.argmax(y, axis=-1)
    return jnp.sum(jnp.argmax(y_pred, axis=-1) == labels)


def _make_train_step(model, loss_fn):
    optimizer = model.optimizer

    def step(state, x, y):
        tv, ntv, ov = state

        def compute_loss(tv, ntv):
            y_pred, ntv, losses = model.stateless_call(
                tv, ntv, x.astype("float32"), training=True, return_losses=True
            )
            loss = jnp.mean(loss_fn(y, y_pred))  # a loss function gives per-image values, a Loss their mean
            if losses:
                loss = loss + sum(losses)
            return loss, (y_pred, ntv)

        (loss, (y_pred, ntv)), grads = jax.value_and_grad(compute_loss, has_aux=True)(tv, ntv)
        tv, ov = optimizer.stateless_apply(ov, grads, tv)
        return (tv, ntv, ov), loss, _batch_stats(y_pred, y)

    return step


def _make_chunk(step, unroll):
    """One program: ``len(idx)`` training steps, each on the images ``x_all[idx[i]]``."""

    @jax.jit
    def chunk(state, x_all, y_all, idx):
        def body(carry, batch_idx):
            state, loss_sum, correct = carry
            xb, yb = jnp.take(x_all, batch_idx, axis=0), jnp.take(y_all, batch_idx, axis=0)
            state, loss, n_correct = step(state, xb, yb)
            return (state, loss_sum + loss * batch_idx.shape[0], correct + n_correct), None

        zero = jnp.zeros((), jnp.float32)
        (state, loss_sum, correct), _ = jax.lax.scan(body, (state, zero, zero), idx, unroll=unroll)
        return state, loss_sum, correct

    return chunk


@dataclass
class _Programs:
    """The compiled programs of one ``fit`` call, keyed by their static shapes."""

    model: keras.Model
    loss_fn: object
    schedule: Schedule

    def __post_init__(self):
        self.step = _make_train_step(self.model, self.loss_fn)
        self.chunk = _make_chunk(self.step, self.schedule.unroll)
        self.single = jax.jit(
            lambda state, x_all, y_all, idx: _single(self.step, state, x_all, y_all, idx)
        )


def _single(step, state, x_all, y_all, idx):
    state, loss, correct = step(state, jnp.take(x_all, idx, axis=0), jnp.take(y_all, idx, axis=0))
    return state, loss * idx.shape[0], correct.astype(jnp.float32)


# --------------------------------------------------------------------------- inference
@partial(jax.jit, static_argnums=(0,))
def _forward_jit(model, tv, ntv, x):
    return _forward(model, tv, ntv, x)[0]


def _buckets(n: int, batch: int = INFER_BATCH):
    """(start, stop, padded size) slices covering n rows; sizes are powers of two <= batch."""
    start = 0
    while start < n:
        size = min(batch, n - start)
        padded = min(batch, 1 << (size - 1).bit_length())
        yield start, start + size, padded
        start += size


def _predict_with(model, tv, ntv, x: np.ndarray) -> np.ndarray:
    out = []
    for start, stop, padded in _buckets(len(x)):
        xb = x[start:stop]
        if padded != len(xb):
            xb = np.concatenate([xb, np.zeros((padded - len(xb), *xb.shape[1:]), xb.dtype)])
        out.append(np.asarray(_forward_jit(model, tv, ntv, jnp.asarray(xb)))[: stop - start])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def predict_proba(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The model's outputs (class probabilities for a softmax model) for raw images ``x``.

    Batched through one compiled forward pass; shapes are padded to powers of two so a
    single image and 10,000 images reuse a handful of compiled programs.
    """
    x = np.asarray(x)
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    return _predict_with(model, tv, ntv, x)


def loss_and_accuracy(model: keras.Model, probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The compiled loss and the accuracy of outputs ``probs`` against labels ``y``."""
    loss_fn = _loss_fn(model) if getattr(model, "loss", None) is not None else keras.losses.get(
        "sparse_categorical_crossentropy"
    )
    loss = float(jnp.mean(loss_fn(jnp.asarray(y), jnp.asarray(probs))))
    labels = y if y.ndim == 1 else np.argmax(y, axis=-1)
    return {"loss": loss, "accuracy": float(np.mean(np.argmax(probs, axis=-1) == labels))}


# --------------------------------------------------------------------------- fit
def _split_validation(x, y, validation_data, validation_split):
    if validation_data is not None:
        vx, vy = validation_data
        return x, y, np.asarray(vx), np.asarray(vy)
    if not 0.0 <= validation_split < 1.0:
        raise ModelError(f"validation_split must be in [0, 1), got {validation_split}.")
    if validation_split == 0.0:
        return x, y, None, None
    # As Model.fit: the last fraction of the data, taken before any shuffling.
    cut = int(math.floor(len(x) * (1.0 - validation_split)))
    if cut == 0 or cut == len(x):
        raise ModelError(f"validation_split={validation_split} leaves an empty training or validation set.")
    return x[:cut], y[:cut], x[cut:], y[cut:]


def fit(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    validation_split: float = 0.0,
    shuffle: bool = True,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    seed: int | None = None,
    schedule: Schedule | None = None,
) -> keras.callbacks.History:
    """Train a compiled Keras model; returns the History that ``Model.fit`` would.

    ``x`` holds raw images (any dtype; uint8 stays uint8 on the device and is cast inside
    the program), ``y`` integer labels. ``seed`` fixes the batch order; the same seed and
    the same initial weights give the same history on the CPU.
    """
    x, y = np.asarray(x), np.asarray(y)
    if batch_size < 1 or epochs < 0:
        raise ModelError(f"batch_size must be >= 1 and epochs >= 0 (got {batch_size}, {epochs}).")
    x, y, vx, vy = _split_validation(x, y, validation_data, validation_split)
    check_model(model, x, y)
    optimizer, loss_fn = model.optimizer, _loss_fn(model)
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    schedule = schedule or default_schedule(model)
    programs = _Programs(model, loss_fn, schedule)
    rng = np.random.default_rng(seed)

    n = len(x)
    full, rest = divmod(n, batch_size)
    steps = full + (rest > 0)
    x_dev, y_dev = jax.device_put(x), jax.device_put(y)
    cbs = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, model=model, verbose=0, epochs=epochs, steps=steps
    )
    model.stop_training = False
    logs: dict[str, float] = {}
    cbs.on_train_begin()
    for epoch in range(epochs):
        cbs.on_epoch_begin(epoch)
        # Read the state at every epoch start: callbacks may have changed weights or the learning rate.
        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables],
        )
        order = rng.permutation(n) if shuffle else np.arange(n)
        batches = order[: full * batch_size].reshape(full, batch_size).astype(np.int32)
        loss_sum, correct, done = 0.0, 0.0, 0
        for start in range(0, full, schedule.chunk_steps):
            idx = batches[start : start + schedule.chunk_steps]
            state, chunk_loss, chunk_correct = programs.chunk(state, x_dev, y_dev, jnp.asarray(idx))
            loss_sum, correct, done = loss_sum + chunk_loss, correct + chunk_correct, done + idx.size
            step_end = start + len(idx) - 1
            if step_end < steps - 1:  # the epoch's last report comes after the partial batch
                cbs.on_train_batch_end(step_end, _running(loss_sum, correct, done))
        if rest:  # the last, partial batch is trained, as Model.fit does
            tail = jnp.asarray(order[full * batch_size :].astype(np.int32))
            state, tail_loss, tail_correct = programs.single(state, x_dev, y_dev, tail)
            loss_sum, correct, done = loss_sum + tail_loss, correct + tail_correct, done + rest
        logs = _running(loss_sum, correct, done)
        cbs.on_train_batch_end(steps - 1, logs)
        _write_back(model, state)
        if vx is not None:
            vprobs = _predict_with(model, state[0], state[1], vx)
            logs |= {f"val_{k}": v for k, v in loss_and_accuracy(model, vprobs, vy).items()}
        cbs.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    optimizer.finalize_variable_values(model.trainable_variables)
    cbs.on_train_end(logs)
    return model.history


def _running(loss_sum, correct, done) -> dict[str, float]:
    return {"loss": float(loss_sum) / done, "accuracy": float(correct) / done}


def _write_back(model: keras.Model, state) -> None:
    tv, ntv, ov = state
    for var, value in zip(model.trainable_variables, tv, strict=True):
        var.assign(value)
    for var, value in zip(model.non_trainable_variables, ntv, strict=True):
        var.assign(value)
    for var, value in zip(model.optimizer.variables, ov, strict=True):
        var.assign(value)


# --------------------------------------------------------------------------- evaluate
def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict:
    """Test loss and accuracy of ``model`` on ``(x, y)``, through ``predict_proba``."""
    x, y = np.asarray(x), np.asarray(y)
    probs = predict_proba(model, x)
    return loss_and_accuracy(model, probs, y)
