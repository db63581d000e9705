"""The compiled training programs: what a model must be, its loss, one step, a chunk of steps, the cache.

``fit`` (fmnist.engine) runs a *chunk* of training steps as one XLA program: a
``jax.lax.fori_loop`` over ``stateless_call`` + ``optimizer.stateless_apply``, with the
whole training set resident on the device and each batch gathered inside the program,
instead of dispatching one small program per batch as ``Model.fit`` does (how much faster:
see BENCHMARKS.md, benchmarks/train_speed.py).

Every training program is traced under ``kernels.cpu_kernels()``: on the CPU, Keras' Conv2D
and MaxPooling2D run as a patch matrix product and a reshape-max (same maths, faster XLA:CPU
programs; the saved model keeps Keras' layers). ``augment`` transforms each batch inside the
program, keyed by the seed and the step number. An ensemble (``ModelSpec(members=N)``) trains
each member on its own loss, in the same program. Compiled programs are kept by the digest of
their text, so a second fit of the same architecture skips XLA's compilation.
"""

from __future__ import annotations

import hashlib
import operator
from functools import reduce

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from fmnist import kernels, models
from fmnist._backend import keras
from fmnist.errors import ModelError

ACCURACY_NAMES = {"accuracy", "acc", "sparse_categorical_accuracy"}
PROGRAMS_KEPT = 16  # compiled training programs kept per process (oldest dropped first)
_PROGRAMS: dict[str, object] = {}  # digest of a lowered program's text -> its compiled executable


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
    config = getattr(model, "_compile_config", None)
    config = config.config if config is not None else {}
    if config.get("weighted_metrics"):
        raise ModelError("fmnist.fit reports loss and accuracy (metrics=['accuracy']); drop weighted_metrics.")
    metrics = config.get("metrics") or []
    if isinstance(metrics, dict):
        raise ModelError("fmnist.fit takes a single-output model with metrics=['accuracy'].")
    names = []
    for m in metrics:
        names.append(m if isinstance(m, str) else getattr(m, "name", type(m).__name__))
    return names


def _loss_fn(model: keras.Model):
    """The compiled loss as a per-image function ``(y_true, y_pred) -> (batch,)``.

    Reducing it ourselves with per-image weights lets a padded last batch count exactly
    its real images, which is how one compiled program trains the partial batch too.
    """
    loss = model.loss
    if isinstance(loss, list | tuple | dict):
        raise ModelError("fmnist.fit takes a single-output model with one loss.")
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        if loss.reduction not in (None, "sum_over_batch_size", "mean", "mean_with_sample_weight"):
            raise ModelError(
                f"fmnist.fit averages the loss over each batch; reduction {loss.reduction!r} is not supported."
            )
        return loss.call  # unreduced: one value per image
    if callable(loss):
        return loss
    raise ModelError(f"the model's loss {loss!r} is not a Keras loss.")


# --------------------------------------------------------------------------- one step, a chunk of steps
def _training_forward(model):
    """``((trainable, non_trainable, x) -> (outputs, non_trainable, losses), len(outputs))``: the
    model's output in training mode, as a list of one.

    For an ensemble (models.ensemble_members) the list holds each member's output, from its own
    share of the variables: the step then differentiates the sum of their losses, so each member gets
    the gradient it would get trained alone on the same batches, rather than the gradient of the loss
    of their mean (which trains them as one wide net, each correcting the others' errors).
    """
    members = models.ensemble_members(model)
    if members is None:

        def whole(trainable, non_trainable, x):
            y_pred, non_trainable, losses = model.stateless_call(
                trainable, non_trainable, x, training=True, return_losses=True
            )
            return [y_pred], non_trainable, losses

        return whole, 1
    shares = [(len(m.trainable_variables), len(m.non_trainable_variables)) for m in members]

    def each(trainable, non_trainable, x):
        outputs, new_non_trainable, losses, i, j = [], [], [], 0, 0
        for member, (n_trainable, n_non_trainable) in zip(members, shares, strict=True):
            y_pred, member_non_trainable, member_losses = member.stateless_call(
                trainable[i : i + n_trainable],
                non_trainable[j : j + n_non_trainable],
                x,
                training=True,
                return_losses=True,
            )
            outputs.append(y_pred)
            new_non_trainable += member_non_trainable
            losses += member_losses
            i, j = i + n_trainable, j + n_non_trainable
        return outputs, new_non_trainable, losses

    return each, len(members)


def _total(values):
    """Their sum, without sum()'s leading 0: a plain model's step stays the program it always was."""
    return reduce(operator.add, values)


def _make_train_step(model, loss_fn, augment=None):
    """One optimizer step on a batch of ``count`` real images whose images carry ``weights``.

    ``weights`` holds each image's sample weight (1 without sample or class weights) and 0 for the
    padding of a partial last batch, which comes last. As Model.fit does, the loss is the
    weighted sum over the batch divided by its number of real images, and the accuracy (a
    ``metrics=`` metric, not a ``weighted_metrics=`` one) counts every real image once.
    ``augment(x, key)`` (see fmnist.augment) transforms the raw batch first, with a key
    that depends only on the seed and the step number. An ensemble's reported loss is its members'
    mean loss (see _training_forward).
    """
    optimizer, (forward, n_members) = model.optimizer, _training_forward(model)

    def step(state, x, y, weights, count, key):
        trainable, non_trainable, optimizer_variables = state
        if augment is not None:
            x = augment(x, key)

        def compute_loss(trainable, non_trainable):  # an ensemble's: its members' sum, each its own gradient
            outputs, non_trainable, losses = forward(trainable, non_trainable, x.astype("float32"))
            loss = _total([jnp.sum(loss_fn(y, p) * weights) for p in outputs]) / count
            if losses:
                loss = loss + sum(losses)
            return loss, (_total(outputs) / n_members if n_members > 1 else outputs[0], non_trainable)

        (loss, (y_pred, non_trainable)), grads = jax.value_and_grad(compute_loss, has_aux=True)(
            trainable, non_trainable
        )
        if n_members > 1:
            loss = loss / n_members  # reported: the members' mean loss
        trainable, optimizer_variables = optimizer.stateless_apply(optimizer_variables, grads, trainable)
        labels = y if y.ndim == 1 else jnp.argmax(y, axis=-1)
        real = jnp.arange(x.shape[0]) < count
        correct = jnp.sum((jnp.argmax(y_pred, axis=-1) == labels) & real, dtype=jnp.float32)
        return (trainable, non_trainable, optimizer_variables), loss * count, correct

    return step


def _make_chunk(step, chunk_steps: int, out_sharding: NamedSharding | None = None):
    """One program: up to ``chunk_steps`` steps, step i on images ``x_all[idx[i]]`` weighted ``w[i]``,
    ``count[i]`` of them real. With ``idx`` None, ``x_all`` and ``y_all`` are the chunk's batches
    already laid out ``[step, batch, ...]`` (data-parallel: see parallel.Placement) and step i takes row i.

    ``n`` (traced, so one compiled program serves every chunk) is how many steps to run:
    the epoch's last chunk runs fewer. A traced trip count needs no masking of padding
    steps, which would otherwise need ``lax.cond`` or ``jnp.where`` around every step (an
    optimizer update on zero gradients still moves Adam's weights); it measured as fast
    as the best of those (benchmarks/engine_schedule.py). ``start`` numbers the first step
    of the chunk: step ``start + i`` augments with ``fold_in(key, start + i)``. ``out_sharding``
    (data-parallel) keeps the returned state and sums replicated over the mesh.
    """

    def chunk(state, x_all, y_all, idx, w, count, n, start, key):
        def body(i, carry):
            state, loss_sum, correct = carry
            if idx is None:  # laid out by the caller: each device already holds its part of batch i
                xb, yb = x_all[i], y_all[i]
            else:
                xb, yb = jnp.take(x_all, idx[i], axis=0), jnp.take(y_all, idx[i], axis=0)
            state, loss, n_correct = step(state, xb, yb, w[i], count[i], jax.random.fold_in(key, start + i))
            return state, loss_sum + loss, correct + n_correct

        zero = jnp.zeros((), jnp.float32)
        if chunk_steps == 1:  # no loop at all
            return body(0, (state, zero, zero))
        return jax.lax.fori_loop(0, n, body, (state, zero, zero))

    return jax.jit(chunk) if out_sharding is None else jax.jit(chunk, out_shardings=out_sharding)


# --------------------------------------------------------------------------- compiled programs, kept
def _compiled(jitted, *example_args):
    """``jitted`` compiled for these argument shapes, reusing an identical program from earlier.

    Weights and optimizer state are arguments, not constants, so two models of the same
    architecture and optimizer settings lower to the same program text: a second ``fit``
    (another seed, a notebook cell run again, the next experiment trial) skips XLA's
    compilation. The key holds the arguments' devices too: the same text compiled for one
    device mesh does not run on another.
    """
    with kernels.cpu_kernels():
        lowered = jitted.lower(*example_args)
    key = hashlib.sha256((lowered.as_text() + _placement(example_args)).encode()).hexdigest()
    if key not in _PROGRAMS:
        if len(_PROGRAMS) >= PROGRAMS_KEPT:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))
        _PROGRAMS[key] = lowered.compile()
    return _PROGRAMS[key]


def _placement(args) -> str:
    """Which devices, in which order and layout, hold each argument (uncommitted ones: the default device).

    A device is named by its platform and id: CPU device 0 and GPU device 0 both have id 0.
    """
    where = []
    for leaf in jax.tree.leaves(args):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding):
            devices = sharding.mesh.devices
            where.append((devices.shape, [(d.platform, d.id) for d in devices.flat], str(sharding.spec)))
        elif sharding is not None:
            where.append(sorted((d.platform, d.id) for d in sharding.device_set))
    return repr(where)


def enable_compilation_cache(directory) -> None:
    """Keep compiled XLA programs on disk, so the next process skips compilation.

    Process-wide JAX setting: applications (the CLI, experiment workers) call it, the
    library never does. A second ``fmnist train`` then builds its model and runs its first
    epoch several times faster (see BENCHMARKS.md).
    """
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)  # the seed step compiles in ~0.5 s
