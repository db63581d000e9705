"""The compiled-epoch trainer: ``fit``, a drop-in for ``Model.fit`` on arrays.

``fit`` trains a compiled Keras model the way ``Model.fit`` does (same optimizer, loss,
batches, callbacks and History), but instead of dispatching one small XLA program per batch
it runs a *chunk* of training steps as one compiled program (fmnist.programs), with the
whole training set resident on the device; how much faster, at the same accuracy: see
BENCHMARKS.md (benchmarks/train_speed.py). fmnist.batching says how an epoch is cut into
batches and chunks; fmnist.inference holds the one forward pass (``predict_proba``,
``evaluate``), which validation uses too.

Callbacks are honoured at epoch granularity (on_train_begin / on_epoch_begin /
on_epoch_end / on_train_end, ``model.stop_training``) and ``on_train_batch_end`` is
called at the end of each compiled chunk with the running loss and accuracy, which is
what progress bars and TerminateOnNaN need.

A fit can be continued exactly: ``checkpoint`` receives a ``FitState`` (fmnist.fit_state) (variables, the
batch-order generator, position, history, callback state) at every chunk boundary, and
``resume_from`` continues from one; fmnist.runs writes and reads them as files.

With a ``keras.distribution.DataParallel`` (passed as ``distribution=`` or set globally with
``keras.distribution.set_distribution``) the same programs run data-parallel
(fmnist.parallel.Placement): weights and optimizer state replicated over the device mesh, each
step's global batch split over the devices, the result the one-device result to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import jax
import numpy as np

from fmnist import batching, fit_inputs, fit_state, parallel
from fmnist._backend import keras

# What fit uses, and (noqa) the names fmnist.engine has always offered, re-exported from the modules now holding them.
from fmnist.batching import CONV_CHUNK_STEPS, DENSE_CHUNK_STEPS, ceil_div, default_chunk_steps  # noqa: F401
from fmnist.batching import epoch_plan as _epoch_plan
from fmnist.errors import ModelError  # noqa: F401
from fmnist.fit_state import FitState, model_state
from fmnist.inference import (  # noqa: F401
    INFER_BATCH,
    _buckets,
    _forward,
    _predict_with,
    evaluate,
    loss_and_accuracy,
    predict_proba,
    predict_views,
)
from fmnist.programs import (  # noqa: F401
    _PROGRAMS,
    ACCURACY_NAMES,
    PROGRAMS_KEPT,
    _compiled,
    _loss_fn,
    _make_chunk,
    _make_train_step,
    check_model,
    enable_compilation_cache,
)

_NOTHING_YET = (0.0, 0.0, 0.0)  # an epoch's running sums before its first chunk


@dataclass(frozen=True)
class Position:
    """Where a fit stands, at an epoch start or a chunk boundary: what a FitState holds beyond the model."""

    epoch: int  # the epoch in progress (0-based)
    rng: dict  # batch-order generator state as ``epoch`` began: a resumed epoch redraws the same permutation
    chunk: int = 0  # compiled chunks of ``epoch`` already run
    steps: int = 0  # optimizer steps run in all
    epoch_start_steps: int = 0  # optimizer steps run before ``epoch`` began
    running: tuple[float, float, float] = _NOTHING_YET  # this epoch so far: summed loss, correct images, images seen

    @classmethod
    def from_state(cls, state: FitState) -> Position:
        return cls(state.epoch, state.rng, state.chunk, state.steps, state.epoch_start_steps, tuple(state.running))

    def after_chunk(self, n_steps: int, images: float, loss_sum: float, correct: float) -> Position:
        total_loss, total_correct, seen = self.running
        running = (total_loss + loss_sum, total_correct + correct, seen + images)
        return replace(self, chunk=self.chunk + 1, steps=self.steps + n_steps, running=running)

    def next_epoch(self, rng: dict) -> Position:
        return Position(self.epoch + 1, rng, steps=self.steps, epoch_start_steps=self.steps)

    def to_state(self, run: _Fit, variables, at_epoch_end: bool) -> FitState:
        return FitState(
            epoch=self.epoch, chunk=self.chunk, steps=self.steps, epoch_start_steps=self.epoch_start_steps,
            running=self.running, rng=self.rng, augment_seed=run.augment_seed, variables=variables,
            history={k: list(v) for k, v in run.history.history.items()},
            callbacks=[fit_state.callback_state(cb) for cb in run.stateful], stopped=bool(run.model.stop_training),
            at_epoch_end=at_epoch_end, plan=run.plan,
        )  # fmt: skip


@dataclass
class _Fit:
    """What ``_setup`` prepares once and every epoch reads: the data, the program, the callbacks."""

    model: keras.Model
    epochs: int
    max_steps: int | None
    chunks: batching.Chunking
    batch_size: int
    shuffle: bool
    x: object  # the training images: resident on the device, or host arrays laid out per chunk (placement)
    y: object
    sample_weights: np.ndarray | None  # per training image; None: every image weighs 1
    held_out: tuple | None  # (x, y, sample_weights) to validate on
    validation_freq: int | Sequence[int]
    placement: parallel.Placement | None  # data-parallel placement, or None on one device
    chunk_fn: Callable  # the jitted chunk program; ``program`` is it compiled, at the first epoch
    key: jax.Array  # augmentation draws: fold_in(key, step number)
    augment_seed: int
    rng: np.random.Generator  # the batch order
    callbacks: keras.callbacks.CallbackList
    history: keras.callbacks.History
    stateful: list  # the callbacks given whose state a resumed fit restores
    plan: dict  # what a FitState must match to continue this fit
    checkpoint: Callable[[FitState], None] | None
    program: Callable | None = None
    logs: dict = field(default_factory=dict)


def fit(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
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
    seed: int | None = None,  # fmnist's own from here on: keyword-only, so more join without moving the above
    augment: Callable | None = None,
    max_steps: int | None = None,
    chunk_steps: int | None = None,
    checkpoint: Callable[[FitState], None] | None = None,
    resume_from: FitState | None = None,
    distribution: keras.distribution.Distribution | None = None,
    **unsupported,
) -> keras.callbacks.History:
    """Train a compiled Keras model as ``model.fit(x, y, ...)`` would; returns the same History.

    Model.fit's arguments keep its defaults and meaning (batches, weighting, validation, callbacks,
    History; its dataset and generator arguments are an error saying what to pass). ``x``: raw images
    (uint8 stays uint8 on the device), ``y``: integer labels (or one-hot rows). ``seed`` fixes the batch
    order and augmentation draws (same seed and initial weights, same history on the CPU). ``augment(x,
    key)`` transforms each raw batch in the program (``fmnist.augment.Augment()``). ``max_steps`` ends
    training after that many steps in all; ``chunk_steps`` sets the steps per compiled program.

    ``checkpoint(state)`` is called after every compiled chunk and at every epoch end with a
    ``FitState``; it may save it (``runs.save_checkpoint``) or raise to stop there. ``resume_from``
    continues a fit of the same model, data and arguments from one: bit for bit on the CPU.
    ``distribution``, a ``keras.distribution.DataParallel`` (default: the one set globally), trains
    data-parallel: ``batch_size`` stays the global batch (a multiple of the device count); under
    ``jax.distributed`` every process calls ``fit`` with the same arrays and seed, and each keeps a local
    copy of the trained weights, so evaluation, prediction and saving work as usual.
    """
    run, position = _setup(
        model, x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=callbacks,
        validation_split=validation_split, validation_data=validation_data, shuffle=shuffle,
        class_weight=class_weight, sample_weight=sample_weight, initial_epoch=initial_epoch,
        validation_freq=validation_freq, seed=seed, augment=augment, max_steps=max_steps, chunk_steps=chunk_steps,
        checkpoint=checkpoint, resume_from=resume_from, distribution=distribution, unsupported=unsupported,
    )  # fmt: skip
    run.callbacks.on_train_begin()
    if resume_from is not None:  # after on_train_begin, which resets callbacks' state
        fit_state.restore(model, run.history, run.stateful, resume_from, run.plan)
        position = Position.from_state(resume_from)
    while position.epoch < epochs and not model.stop_training and (max_steps is None or position.steps < max_steps):
        position = _epoch(run, position)
    model.optimizer.finalize_variable_values(model.trainable_variables)
    run.callbacks.on_train_end(run.logs)
    model.history = run.history
    return run.history


def _setup(model, x, y, *, batch_size, epochs, verbose, callbacks, validation_split, validation_data, shuffle,
           class_weight, sample_weight, initial_epoch, validation_freq, seed, augment, max_steps, chunk_steps,
           checkpoint, resume_from, distribution, unsupported) -> tuple[_Fit, Position]:  # fmt: skip
    """Check fit's arguments, arrays and model; build the optimizer, the chunk program and the callbacks."""
    batch_size = fit_inputs.DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    fit_inputs.check_arguments(batch_size, epochs, verbose, initial_epoch, validation_freq, max_steps, unsupported)
    (x, y, sample_weights), held_out = fit_inputs.training_arrays(
        x, y, class_weight, sample_weight, validation_data, validation_split
    )
    check_model(model, x, y)
    if class_weight is not None:
        sample_weights = fit_inputs.class_weights(y, class_weight)
    optimizer, loss_fn = model.optimizer, _loss_fn(model)
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    if chunk_steps is None and resume_from is not None:
        chunk_steps = resume_from.plan.get("chunk_steps")  # the chunking it was trained with
    chunks = batching.chunking(model, len(x), batch_size, chunk_steps)
    placement = parallel.placement(distribution, batch_size)
    step = _make_train_step(model, loss_fn, augment)
    chunk_fn = _make_chunk(step, chunks.chunk_steps, placement.replicated if placement else None)
    rng = np.random.default_rng(parallel.shared_seed(seed))
    augment_seed = int(rng.integers(2**31)) if resume_from is None else resume_from.augment_seed
    key = jax.random.PRNGKey(augment_seed)
    plan = {"n": len(x), "batch_size": batch_size, "chunk_steps": chunks.chunk_steps, "shuffle": bool(shuffle)}
    plan["dtype_policy"] = model.dtype_policy.name  # a precision's weights continue in that precision only
    if placement is None:
        x, y = jax.device_put(x), jax.device_put(y)  # resident for the whole fit
    else:
        key = placement.replicate(key)  # each chunk's batches are laid out as it runs
    callback_list = keras.callbacks.CallbackList(
        list(callbacks or ()), add_history=True, add_progbar=verbose != 0, model=model, verbose=verbose,
        epochs=epochs, steps=chunks.steps_per_epoch,
    )  # fmt: skip
    history = next(cb for cb in callback_list.callbacks if isinstance(cb, keras.callbacks.History))
    # Callbacks whose state a resumed fit restores (progress bars and the like may differ on resume).
    stateful = [cb for cb in callbacks or () if fit_state.has_state(cb)]
    plan["callbacks"] = [type(cb).__name__ for cb in stateful]
    model.stop_training = False
    run = _Fit(
        model, epochs, max_steps, chunks, batch_size, bool(shuffle), x, y, sample_weights, held_out, validation_freq,
        placement, chunk_fn, key, augment_seed, rng, callback_list, history, stateful, plan, checkpoint,
    )  # fmt: skip
    return run, Position(initial_epoch, rng.bit_generator.state)


def _epoch(run: _Fit, position: Position) -> Position:
    """Epoch ``position.epoch``, from ``position`` (its start, or a chunk boundary inside it) to its end."""
    model, chunk_steps = run.model, run.chunks.chunk_steps
    run.callbacks.on_epoch_begin(position.epoch)
    # Read the state at every epoch start: callbacks may have changed weights or the learning rate.
    state = model_state(model) if run.placement is None else run.placement.replicate(model_state(model))
    run.rng.bit_generator.state = position.rng  # a resumed epoch draws the same permutation
    n = run.plan["n"]
    order = run.rng.permutation(n) if run.shuffle else np.arange(n)
    batches = _epoch_plan(order, run.batch_size, chunk_steps, run.sample_weights)
    epoch_steps = run.chunks.steps_per_epoch
    if run.max_steps is not None:
        epoch_steps = min(epoch_steps, run.max_steps - position.epoch_start_steps)
    run.program = run.program or _compiled(run.chunk_fn, state, *_chunk_args(run, batches, 0, chunk_steps, 0), run.key)
    if position.running[2]:  # resumed inside the epoch
        run.logs = _running(*position.running)
    for c in range(position.chunk, ceil_div(epoch_steps, chunk_steps)):
        n_steps = min(chunk_steps, epoch_steps - c * chunk_steps)
        args = _chunk_args(run, batches, c, n_steps, position.steps)
        state, chunk_loss, chunk_correct = run.program(state, *args, run.key)
        images = float(batches[2][c, :n_steps].sum())
        position = position.after_chunk(n_steps, images, float(chunk_loss), float(chunk_correct))
        run.logs = _running(*position.running)
        run.callbacks.on_train_batch_end(c * chunk_steps + n_steps - 1, run.logs)
        if model.stop_training:  # set by a batch-level callback (TerminateOnNaN): end the epoch here
            break
        if run.checkpoint is not None:
            local = state if run.placement is None else run.placement.local(state)
            run.checkpoint(position.to_state(run, local, at_epoch_end=False))
    if run.placement is not None:
        state = run.placement.local(state)  # validation and the model's variables: this process's copy
    fit_state.write_back(model, state)
    if run.held_out is not None and fit_inputs.validates(position.epoch, run.validation_freq):
        val_x, val_y, val_weights = run.held_out
        val_probs = _predict_with(model, state[0], state[1], val_x)[0]
        run.logs |= {f"val_{k}": v for k, v in loss_and_accuracy(model, val_probs, val_y, val_weights).items()}
    run.callbacks.on_epoch_end(position.epoch, run.logs)
    position = position.next_epoch(run.rng.bit_generator.state)
    if run.checkpoint is not None:  # callbacks may have changed the weights: read them again
        run.checkpoint(position.to_state(run, model_state(model), at_epoch_end=True))
    return position


def _chunk_args(run: _Fit, batches, c: int, n_steps: int, start: int) -> tuple:
    """Chunk ``c``'s arguments after the state: the resident data and its rows, or its batches laid out."""
    idx, w, count = batches
    if run.placement is None:
        return run.x, run.y, idx[c], w[c], count[c], n_steps, start
    return run.placement.chunk(run.x, run.y, idx[c], w[c], count[c], n_steps, start)


def _running(loss_sum, correct, seen) -> dict[str, float]:
    return {"loss": float(loss_sum) / seen, "accuracy": float(correct) / seen}
