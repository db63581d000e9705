"""The compiled-epoch trainer and the one inference path.

``fit`` trains a compiled Keras model the way ``Model.fit`` does (same optimizer, loss,
batches, callbacks and History), but instead of dispatching one small XLA program per
batch it compiles a *chunk* of training steps into one program: a ``jax.lax.fori_loop``
over ``stateless_call`` + ``optimizer.stateless_apply``, with the whole training set
resident on the device and each batch gathered inside the program. On the 2-core CPU
machine the seed program (5 epochs, batch 32) trains in a median 2.42 s against 6.83 s for
``Model.fit`` on the same backend (2.84x; 1.75x for a process's first, cold fit), at the
same test accuracy (benchmarks/train_speed.py, BENCHMARKS.md).

Every training program is traced under ``kernels.cpu_kernels()``: on the CPU, Keras' Conv2D
and MaxPooling2D run as a patch matrix product and a reshape-max (same maths, faster XLA:CPU
programs; the saved model keeps Keras' layers). The forward pass alone is not: there XLA's
own convolution is the faster one (see INFER_BATCH). ``augment`` transforms each batch inside
the program, keyed by the seed and the step number. An ensemble (``ModelSpec(members=N)``) trains
each member on its own loss, in the same program.

``predict_proba`` (over ``predict_views``) is the only forward pass: ``evaluate``,
``Predictor``, the report and the experiments all call it; test-time views are averaged
inside one compiled program.

With a ``keras.distribution.DataParallel`` (passed as ``distribution=`` or set globally with
``keras.distribution.set_distribution``) the same programs run data-parallel: weights and
optimizer state replicated over the device mesh, each step's global batch split over the
devices on its batch axis, and XLA all-reducing the gradients (and BatchNorm's batch
statistics) inside the compiled chunk. The maths is the one-device maths: the same seed gives
the same weights on any number of devices, to float rounding (sums are reduced in another
order). A conv net's max-pooling and ReLUs amplify rounding-size differences within tens of
steps, as a nudge of one part in 10^7 to the initial weights does on one device
(benchmarks/scaling.py), so long runs agree in accuracy rather than bit for bit.

Callbacks are honoured at epoch granularity (on_train_begin / on_epoch_begin /
on_epoch_end / on_train_end, ``model.stop_training``) and ``on_train_batch_end`` is
called at the end of each compiled chunk with the running loss and accuracy, which is
what progress bars and TerminateOnNaN need.

A fit can be continued exactly: ``checkpoint`` receives a ``FitState`` (fmnist.fit_state) (variables, the
batch-order generator, position, history, callback state) at every chunk boundary, and
``resume_from`` continues from one; fmnist.runs writes and reads them as files.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Mapping, Sequence
from functools import partial, reduce

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from fmnist import augment as augment_lib
from fmnist import fit_inputs, fit_state, kernels, metrics, models
from fmnist._backend import keras
from fmnist.errors import ModelError
from fmnist.fit_state import FitState

ACCURACY_NAMES = {"accuracy", "acc", "sparse_categorical_accuracy"}
# The forward pass runs in buckets of powers of two up to this many images, with XLA's own
# convolution and pooling: for a forward pass alone they beat kernels.py's patch products
# 2.0-3.0x on the 2-core CPU (the best recipe's net, 10,000 images; benchmarks/infer_speed.py).
INFER_BATCH = 1024
_DEFAULT_LOSS = keras.losses.sparse_categorical_crossentropy  # for models saved without compile()


# --------------------------------------------------------------------------- how to compile
# Steps per compiled program, chosen by benchmarks/engine_schedule.py on the 2-core CPU
# machine (BENCHMARKS.md, batch 32). Dense models: a 256-step loop runs a seed-model step
# in 0.16 ms against 0.26 ms for one jitted call per step (1.7x) and compiles in ~0.5 s.
# Convolutional models: 16-step loops. With XLA's own convolution a conv step ran ~6x
# slower inside any rolled loop than as one call per step; with fmnist.kernels' patch
# products it runs as fast or faster inside one (batch 128: 0.34 against 0.52 ms per
# image), and 16 steps keep progress callbacks frequent (a chunk is ~1-2 s).
DENSE_CHUNK_STEPS = 256
CONV_CHUNK_STEPS = 16


def default_chunk_steps(model: keras.Model) -> int:
    """Dense models run 256-step compiled loops, models with convolutions 16-step loops."""
    has_conv = any(isinstance(layer, keras.layers.Conv2D | keras.layers.Conv1D) for layer in _all_layers(model))
    return CONV_CHUNK_STEPS if has_conv else DENSE_CHUNK_STEPS


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def enable_compilation_cache(directory) -> None:
    """Keep compiled XLA programs on disk, so the next process skips compilation.

    Process-wide JAX setting: applications (the CLI, experiment workers) call it, the
    library never does. Measured on the 2-core CPU machine: a second ``fmnist train``
    builds the seed model in 0.3 s instead of 5.7 s and its first epoch takes 1.2 s
    instead of 3.5 s.
    """
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)  # the seed step compiles in ~0.5 s


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


# --------------------------------------------------------------------------- compiled programs
def _forward(model, tv, ntv, x, training=False):
    y_pred, ntv = model.stateless_call(tv, ntv, x.astype("float32"), training=training)
    return y_pred, ntv


def _training_forward(model):
    """``((tv, ntv, x) -> (outputs, ntv, losses), len(outputs))``: the model's output in training
    mode, as a list of one.

    For an ensemble (models.ensemble_members) the list holds each member's output, from its own
    share of the variables: the step then differentiates the sum of their losses, so each member gets
    the gradient it would get trained alone on the same batches, rather than the gradient of the loss
    of their mean (which trains them as one wide net, each correcting the others' errors).
    """
    members = models.ensemble_members(model)
    if members is None:

        def whole(tv, ntv, x):
            y_pred, ntv, losses = model.stateless_call(tv, ntv, x, training=True, return_losses=True)
            return [y_pred], ntv, losses

        return whole, 1
    shares = [(len(m.trainable_variables), len(m.non_trainable_variables)) for m in members]

    def each(tv, ntv, x):
        outputs, new_ntv, losses, i, j = [], [], [], 0, 0
        for member, (n_tv, n_ntv) in zip(members, shares, strict=True):
            y_pred, member_ntv, member_losses = member.stateless_call(
                tv[i : i + n_tv], ntv[j : j + n_ntv], x, training=True, return_losses=True
            )
            outputs.append(y_pred)
            new_ntv += member_ntv
            losses += member_losses
            i, j = i + n_tv, j + n_ntv
        return outputs, new_ntv, losses

    return each, len(members)


def _total(values):
    """Their sum, without sum()'s leading 0: a plain model's step stays the program it always was."""
    return reduce(operator.add, values)


def _make_train_step(model, loss_fn, augment=None):
    """One optimizer step on a batch of ``count`` real images whose images carry weights ``w``.

    ``w`` is each image's sample weight (1 without sample or class weights) and 0 for the
    padding of a partial last batch, which comes last. As Model.fit does, the loss is the
    weighted sum over the batch divided by its number of real images, and the accuracy (a
    ``metrics=`` metric, not a ``weighted_metrics=`` one) counts every real image once.
    ``augment(x, key)`` (see fmnist.augment) transforms the raw batch first, with a key
    that depends only on the seed and the step number. An ensemble's reported loss is its members'
    mean loss (see _training_forward).
    """
    optimizer, (forward, n_members) = model.optimizer, _training_forward(model)

    def step(state, x, y, w, count, key):
        tv, ntv, ov = state
        if augment is not None:
            x = augment(x, key)

        def compute_loss(tv, ntv):  # an ensemble's: its members' sum, which gives each its own gradient
            outputs, ntv, losses = forward(tv, ntv, x.astype("float32"))
            loss = _total([jnp.sum(loss_fn(y, p) * w) for p in outputs]) / count
            if losses:
                loss = loss + sum(losses)
            return loss, (_total(outputs) / n_members if n_members > 1 else outputs[0], ntv)

        (loss, (y_pred, ntv)), grads = jax.value_and_grad(compute_loss, has_aux=True)(tv, ntv)
        if n_members > 1:
            loss = loss / n_members  # reported: the members' mean loss
        tv, ov = optimizer.stateless_apply(ov, grads, tv)
        labels = y if y.ndim == 1 else jnp.argmax(y, axis=-1)
        real = jnp.arange(x.shape[0]) < count
        correct = jnp.sum((jnp.argmax(y_pred, axis=-1) == labels) & real, dtype=jnp.float32)
        return (tv, ntv, ov), loss * count, correct

    return step


def _make_chunk(step, chunk_steps: int, out_sharding: NamedSharding | None = None):
    """One program: up to ``chunk_steps`` steps, step i on images ``x_all[idx[i]]`` weighted ``w[i]``,
    ``count[i]`` of them real. With ``idx`` None, ``x_all`` and ``y_all`` are the chunk's batches
    already laid out ``[step, batch, ...]`` (data-parallel: see _DataParallel) and step i takes row i.

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


_PROGRAMS: dict[str, object] = {}  # digest of a lowered program's text -> its compiled executable
PROGRAMS_KEPT = 16  # compiled training programs kept per process (oldest dropped first)


def _compiled(jitted, *example_args):
    """``jitted`` compiled for these argument shapes, reusing an identical program from earlier.

    Weights and optimizer state are arguments, not constants, so two models of the same
    architecture and optimizer settings lower to the same program text: a second ``fit``
    (another seed, a notebook cell run again, the next experiment trial) skips XLA's
    compilation, ~1 s for the seed model on the 2-core CPU machine. The key holds the
    arguments' devices too: the same text compiled for one device mesh does not run on another.
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
    """Which devices, in which order and layout, hold each argument (uncommitted ones: the default device)."""
    where = []
    for leaf in jax.tree.leaves(args):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding):
            where.append((sharding.mesh.device_ids.tolist(), str(sharding.spec)))
        elif sharding is not None:
            where.append(sorted(d.id for d in sharding.device_set))
    return repr(where)


def _epoch_plan(
    order: np.ndarray, batch_size: int, chunk_steps: int, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch indices and weights, shape (chunks, chunk_steps, batch_size), and real images per step.

    Each image carries its weight from ``weights`` (1 when None). The last batch is padded with
    weight-0 images (so it trains on exactly its real ones), and the last chunk with steps that
    are never run, so every chunk has the same shape.
    """
    n = len(order)
    steps = -(-n // batch_size)
    chunks = -(-steps // chunk_steps)
    size = chunks * chunk_steps * batch_size
    idx = np.zeros(size, np.int32)
    idx[:n] = order
    w = np.zeros(size, np.float32)
    w[:n] = 1.0 if weights is None else weights[order]
    count = np.clip(n - batch_size * np.arange(chunks * chunk_steps), 0, batch_size).astype(np.float32)
    shape = (chunks, chunk_steps, batch_size)
    return idx.reshape(shape), w.reshape(shape), count.reshape(shape[:2])


# --------------------------------------------------------------------------- inference
@partial(jax.jit, static_argnums=(0, 1))
def _forward_jit(model, views, tv, ntv, x):
    """Outputs for each test-time view, stacked: (views, n, outputs). One program for all views."""
    return jnp.stack([_forward(model, tv, ntv, augment_lib.view(x, v))[0] for v in views])


def _buckets(n: int, batch: int = INFER_BATCH):
    """(start, stop, padded size) slices covering n rows; sizes are powers of two <= batch."""
    start = 0
    while start < n:
        size = min(batch, n - start)
        padded = min(batch, 1 << (size - 1).bit_length())
        yield start, start + size, padded
        start += size


def _predict_with(model, tv, ntv, x: np.ndarray, views=("identity",)) -> np.ndarray:
    """(views, n, outputs) for raw images ``x``, in power-of-two buckets."""
    out = []
    views = augment_lib.check_views(views)
    for start, stop, padded in _buckets(len(x)):
        xb = x[start:stop]
        if padded != len(xb):
            xb = np.concatenate([xb, np.zeros((padded - len(xb), *xb.shape[1:]), xb.dtype)])
        outputs = _forward_jit(model, views, tv, ntv, jnp.asarray(xb))  # XLA's own convolution: see INFER_BATCH
        out.append(np.asarray(outputs)[:, : stop - start])
    return np.concatenate(out, axis=1) if out else np.zeros((len(views), 0, 0), np.float32)


def predict_views(model: keras.Model, x: np.ndarray, views: Sequence[str]) -> np.ndarray:
    """The model's outputs for each of the test-time ``views`` of raw images ``x``: (views, n, outputs)."""
    tv, ntv, _ = model_state(model, optimizer=False)
    return _predict_with(model, tv, ntv, np.asarray(x), tuple(views))


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


# --------------------------------------------------------------------------- data parallelism
class _DataParallel:
    """Where a data-parallel fit keeps its arrays: state replicated over the mesh, batches split.

    Every process holds the same training arrays and draws the same batch order (same seed), so
    each epoch's permuted batches are laid out ``[step, global_batch, ...]`` and every device
    builds only its own share of every batch (``make_array_from_callback``: no process gathers
    rows for another's devices, and no step gathers rows across devices inside the program).
    A chunk's batches are placed just before it runs, so the devices hold one chunk at a time.
    Arrays are global ``jax.Array``s, so the same code runs one process with N devices and N
    processes over the network (``jax.distributed``).
    """

    def __init__(self, distribution, batch_size: int):
        if not isinstance(distribution, keras.distribution.DataParallel):
            raise ModelError(
                f"fmnist.fit trains data-parallel only; got a {type(distribution).__name__}: pass "
                "keras.distribution.DataParallel(devices=...) (weights replicated, each batch split over the devices)."
            )
        mesh = distribution.device_mesh.backend_mesh
        self.devices = int(mesh.devices.size)
        if batch_size % self.devices:
            raise ModelError(
                f"a batch of {batch_size} images does not split evenly over {self.devices} devices: "
                f"use a batch size that is a multiple of {self.devices}."
            )
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.split = NamedSharding(mesh, PartitionSpec(None, distribution.batch_dim_name))  # [step, batch, ...]

    def replicate(self, tree):
        """Every leaf of ``tree`` (the same on every process) as a global array replicated over the mesh."""

        def place(value):
            value = np.asarray(value)
            return jax.make_array_from_callback(value.shape, self.replicated, lambda index: value[index])

        return jax.tree.map(place, tree)

    def batches(self, a: np.ndarray, rows: np.ndarray) -> jax.Array:
        """``a[rows]`` for ``rows`` of shape (steps, batch), split on the batch axis; each device gathers its share."""
        shape = (*rows.shape, *a.shape[1:])
        return jax.make_array_from_callback(shape, self.split, lambda index: a[rows[index[:2]]])

    def rows(self, w: np.ndarray) -> jax.Array:
        """Per-image values of shape (steps, batch), split as the batches are."""
        return jax.make_array_from_callback(w.shape, self.split, lambda index: w[index])

    def chunk(self, x, y, idx, w, count, n_steps: int, start: int) -> tuple:
        """A chunk's arguments after the state: its batches laid out and split, its scalars replicated."""
        scalars = self.replicate((count, np.int32(n_steps), np.int32(start)))
        return self.batches(x, idx), self.batches(y, idx), None, self.rows(w), *scalars

    @staticmethod
    def local(tree):
        """This process's copy of replicated global arrays (one local device): what the model keeps between fits."""
        return jax.tree.map(lambda a: a.addressable_data(0), tree)


def _data_parallel(distribution, batch_size: int) -> _DataParallel | None:
    """The explicit ``distribution``, else the one set with keras.distribution.set_distribution (as Model.fit)."""
    distribution = distribution if distribution is not None else keras.distribution.distribution()
    return None if distribution is None else _DataParallel(distribution, batch_size)


def _shared_seed(seed: int | None) -> int | None:
    """Processes of one job must draw the same batches: without a seed, process 0's random one for all."""
    if seed is not None or jax.process_count() == 1:
        return seed
    from fmnist import parallel

    return parallel.agree(int(np.random.default_rng().integers(2**31)))


# --------------------------------------------------------------------------- fit
def fit(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    # Model.fit's arguments, with its defaults and meaning:
    batch_size: int | None = fit_inputs.DEFAULT_BATCH_SIZE,
    epochs: int = 1,
    verbose: int | str = "auto",
    callbacks: Sequence[keras.callbacks.Callback] | None = (),
    validation_split: float = 0.0,
    validation_data: tuple | None = None,
    shuffle: bool = True,
    class_weight: Mapping[int, float] | None = None,
    sample_weight: np.ndarray | None = None,
    initial_epoch: int = 0,
    validation_freq: int | Sequence[int] = 1,
    # fmnist's own (keyword-only, so more of them join here without moving the ones above):
    seed: int | None = None,
    augment: Callable | None = None,
    max_steps: int | None = None,
    chunk_steps: int | None = None,
    checkpoint: Callable[[FitState], None] | None = None,
    resume_from: FitState | None = None,
    distribution: keras.distribution.Distribution | None = None,
    **unsupported,
) -> keras.callbacks.History:
    """Train a compiled Keras model as ``model.fit(x, y, ...)`` would; returns the same History.

    A drop-in for ``Model.fit`` on arrays: the same batches, optimizer steps, losses, callbacks
    and History. ``verbose`` prints Keras' own per-epoch progress bar (``ProgbarLogger``) as
    Model.fit does; fmnist's jobs pass ``verbose=0`` and report progress their own way.
    ``initial_epoch`` numbers the epochs as Model.fit does (epochs ``initial_epoch`` to
    ``epochs - 1`` run); it does not restore any state. ``class_weight`` or ``sample_weight``
    weigh each image in the loss (validation by the validation sample weights only, and
    accuracy not at all, as in Model.fit). ``validation_freq`` validates after every that many
    epochs, or after the listed (1-based) epochs. Model.fit arguments for datasets and
    generators (``steps_per_epoch``, ``validation_steps``, …) are an error that says what to pass.

    ``x`` holds raw images (any dtype; uint8 stays uint8 on the device and is cast inside
    the program), ``y`` integer labels (or one-hot rows, for a categorical loss). ``seed``
    fixes the batch order and the augmentation draws; the same seed and the same initial
    weights give the same history on the CPU. ``augment(x, key)`` transforms each raw
    batch inside the compiled program (e.g. ``fmnist.augment.Augment()``). ``max_steps``
    ends training after that many optimizer steps in all (the last epoch may be partial).
    ``chunk_steps`` overrides how many steps one compiled program runs (default:
    ``default_chunk_steps``).

    ``checkpoint(state)`` is called after every compiled chunk and at every epoch end
    (``state.at_epoch_end``) with a ``FitState``; it may save it (``runs.save_checkpoint``)
    or raise to stop training there. ``resume_from`` (a ``FitState``) continues a fit of
    the same model, data and arguments from that point: the final weights and history are
    those of the fit never interrupted, bit for bit on the CPU.

    ``distribution``, a ``keras.distribution.DataParallel`` (default: the one set with
    ``keras.distribution.set_distribution``, if any), trains data-parallel over its devices:
    ``batch_size`` stays the global batch (a multiple of the device count) and the result is
    the one-device result to float rounding. Under ``jax.distributed`` every process calls
    ``fit`` with the same arrays and seed; each device takes its share of every batch. The
    model keeps a local (one-device) copy of the trained weights, so evaluation, prediction
    and saving work as usual in each process.
    """
    batch_size = fit_inputs.DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    fit_inputs.check_arguments(batch_size, epochs, verbose, initial_epoch, validation_freq, max_steps, unsupported)
    x = fit_inputs.as_array(x, "x")
    if y is None:
        raise ModelError("fmnist.fit needs the labels: pass y, an array of one integer label per image in x.")
    y = fit_inputs.as_array(y, "y")
    if class_weight is not None and sample_weight is not None:
        raise ModelError(
            "pass class_weight or sample_weight, not both (as Model.fit): multiply the class weights into the "
            "sample weights, e.g. sample_weight * np.array([class_weight.get(c, 1.0) for c in range(10)])[y]."
        )
    sw = None if sample_weight is None else fit_inputs.weights_array(sample_weight, len(x), "sample_weight")
    (x, y, sw), held_out = fit_inputs.split_validation(x, y, sw, validation_data, validation_split)
    check_model(model, x, y)
    if class_weight is not None:
        sw = fit_inputs.class_weights(y, class_weight)
    optimizer, loss_fn = model.optimizer, _loss_fn(model)
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    n = len(x)
    steps = -(-n // batch_size)
    if chunk_steps is None and resume_from is not None:
        chunk_steps = resume_from.plan.get("chunk_steps")  # the chunking it was trained with
    chunk_steps = min(chunk_steps or default_chunk_steps(model), steps)
    parallel = _data_parallel(distribution, batch_size)
    out_sharding = parallel.replicated if parallel else None
    chunk, program = _make_chunk(_make_train_step(model, loss_fn, augment), chunk_steps, out_sharding), None
    rng = np.random.default_rng(_shared_seed(seed))
    augment_seed = int(rng.integers(2**31)) if resume_from is None else resume_from.augment_seed
    key = jax.random.PRNGKey(augment_seed)  # augmentation draws: fold_in(key, step number)
    if parallel is None:
        x_src, y_src = jax.device_put(x), jax.device_put(y)  # resident for the whole fit
    else:
        x_src, y_src, key = x, y, parallel.replicate(key)  # each chunk's batches are laid out as it runs
    cbs = keras.callbacks.CallbackList(
        list(callbacks or ()), add_history=True, add_progbar=verbose != 0, model=model, verbose=verbose,
        epochs=epochs, steps=steps,
    )  # fmt: skip
    history = next(cb for cb in cbs.callbacks if isinstance(cb, keras.callbacks.History))
    # Callbacks whose state a resumed fit restores (progress bars and the like may differ on resume).
    stateful = [cb for cb in callbacks or () if fit_state.has_state(cb)]
    plan = {"n": n, "batch_size": batch_size, "chunk_steps": chunk_steps, "shuffle": bool(shuffle),
            "callbacks": [type(cb).__name__ for cb in stateful]}  # fmt: skip
    model.stop_training = False
    logs: dict[str, float] = {}
    start_epoch, start_chunk, done_steps, epoch_base, running = initial_epoch, 0, 0, 0, (0.0, 0.0, 0.0)
    cbs.on_train_begin()
    if resume_from is not None:  # after on_train_begin, which resets callbacks' state
        fit_state.restore(model, history, stateful, resume_from, plan)
        rng.bit_generator.state = resume_from.rng
        start_epoch, start_chunk, done_steps = resume_from.epoch, resume_from.chunk, resume_from.steps
        epoch_base, running = resume_from.epoch_start_steps, resume_from.running

    def snapshot(epoch, c, base, sums, epoch_rng, variables, at_epoch_end):
        return FitState(
            epoch=epoch, chunk=c, steps=done_steps, epoch_start_steps=base, running=sums, rng=epoch_rng,
            augment_seed=augment_seed, variables=variables, history={k: list(v) for k, v in history.history.items()},
            callbacks=[fit_state.callback_state(cb) for cb in stateful], stopped=bool(model.stop_training),
            at_epoch_end=at_epoch_end, plan=plan,
        )  # fmt: skip

    for epoch in range(start_epoch, epochs):
        if model.stop_training or (max_steps is not None and done_steps >= max_steps):
            break
        cbs.on_epoch_begin(epoch)
        # Read the state at every epoch start: callbacks may have changed weights or the learning rate.
        state = model_state(model) if parallel is None else parallel.replicate(model_state(model))
        epoch_rng = rng.bit_generator.state  # before the permutation: a resumed epoch draws the same one
        batches = _epoch_plan(rng.permutation(n) if shuffle else np.arange(n), batch_size, chunk_steps, sw)
        count = batches[2]
        base = epoch_base if epoch == start_epoch else done_steps  # steps run before this epoch
        epoch_steps = steps if max_steps is None else min(steps, max_steps - base)
        program = program or _compiled(
            chunk, state, *_chunk_args(parallel, x_src, y_src, batches, 0, chunk_steps, 0), key
        )
        first = start_chunk if epoch == start_epoch else 0
        loss_sum, correct, seen = running if epoch == start_epoch else (0.0, 0.0, 0.0)
        if seen:
            logs = _running(loss_sum, correct, seen)
        for c in range(first, -(-epoch_steps // chunk_steps)):
            n_steps = min(chunk_steps, epoch_steps - c * chunk_steps)
            args = _chunk_args(parallel, x_src, y_src, batches, c, n_steps, done_steps)
            state, chunk_loss, chunk_correct = program(state, *args, key)
            done_steps += n_steps
            seen += float(count[c, :n_steps].sum())
            loss_sum, correct = loss_sum + float(chunk_loss), correct + float(chunk_correct)
            logs = _running(loss_sum, correct, seen)
            cbs.on_train_batch_end(c * chunk_steps + n_steps - 1, logs)
            if model.stop_training:  # set by a batch-level callback (TerminateOnNaN): end the epoch here
                break
            if checkpoint is not None:
                local = state if parallel is None else parallel.local(state)
                checkpoint(snapshot(epoch, c + 1, base, (loss_sum, correct, seen), epoch_rng, local, False))
        if parallel is not None:
            state = parallel.local(state)  # validation and the model's variables: this process's copy
        fit_state.write_back(model, state)
        if held_out is not None and fit_inputs.validates(epoch, validation_freq):
            vx, vy, vw = held_out
            vprobs = _predict_with(model, state[0], state[1], vx)[0]
            logs |= {f"val_{k}": v for k, v in loss_and_accuracy(model, vprobs, vy, vw).items()}
        cbs.on_epoch_end(epoch, logs)
        if checkpoint is not None:  # callbacks may have changed the weights: read them again
            variables, next_rng = model_state(model), rng.bit_generator.state
            checkpoint(snapshot(epoch + 1, 0, done_steps, (0.0, 0.0, 0.0), next_rng, variables, True))
    optimizer.finalize_variable_values(model.trainable_variables)
    cbs.on_train_end(logs)
    model.history = history
    return history


def _chunk_args(parallel: _DataParallel | None, x, y, batches, c: int, n_steps: int, start: int) -> tuple:
    """Chunk ``c``'s arguments after the state: the resident data and its rows, or its batches laid out."""
    idx, w, count = batches
    if parallel is None:
        return x, y, idx[c], w[c], count[c], n_steps, start
    return parallel.chunk(x, y, idx[c], w[c], count[c], n_steps, start)


def _running(loss_sum, correct, seen) -> dict[str, float]:
    return {"loss": float(loss_sum) / seen, "accuracy": float(correct) / seen}


def model_state(model: keras.Model, optimizer: bool = True) -> tuple[list, list, list]:
    """The arrays a compiled program takes: trainable, non-trainable and optimizer variables."""
    opt_vars = model.optimizer.variables if optimizer else []
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in opt_vars],
    )


# --------------------------------------------------------------------------- evaluate
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
