"""Where a fit stands, so that it can continue exactly: ``FitState`` and the callbacks' state.

``engine.fit(checkpoint=...)`` hands one out at every chunk boundary and ``resume_from``
takes one back: variables, the batch-order generator as the epoch began, the position, the
History so far and what stateful callbacks remember (EarlyStopping's best and wait, and any
callback's ``state_dict()``). fmnist.runs stores it as a file; a resumed fit ends with the
weights and History of the fit never interrupted, bit for bit on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmnist._backend import keras
from fmnist.errors import ModelError


@dataclass
class FitState:
    """Everything ``fit`` needs to continue a training exactly where it stopped.

    Positions are at chunk boundaries: ``chunk`` compiled chunks of epoch ``epoch`` are done
    (at an epoch end: ``epoch`` is the next epoch and ``chunk`` 0). ``rng`` is the batch-order
    generator as it was when that epoch began, so a resumed epoch redraws the same permutation.
    """

    epoch: int  # the epoch in progress (0-based)
    chunk: int  # its compiled chunks already run
    steps: int  # optimizer steps run in all
    epoch_start_steps: int  # optimizer steps run before this epoch began
    running: tuple[float, float, float]  # this epoch so far: summed loss, correct images, images seen
    rng: dict  # numpy bit-generator state at the start of ``epoch``
    augment_seed: int  # augmentation key: step i draws with fold_in(PRNGKey(augment_seed), i)
    variables: tuple[list, list, list]  # trainable, non-trainable and optimizer variables (model_state)
    history: dict[str, list[float]]  # the History so far (finished epochs)
    callbacks: list[dict]  # callback_state() of each callback given to fit that has one, in order
    stopped: bool  # a callback ended training (early stopping, a stop threshold)
    at_epoch_end: bool  # taken after an epoch's callbacks ran (else after a chunk, inside an epoch)
    plan: dict  # images, batch size, chunk steps, shuffle, callbacks: a state continues only the same fit

    def to_tree(self) -> dict:
        """Plain dicts, lists, numbers and numpy arrays (what fmnist.runs stores)."""
        tree = {f: getattr(self, f) for f in self.__dataclass_fields__}
        tree["variables"] = {
            k: [np.asarray(v) for v in vs] for k, vs in zip(_VARIABLE_KINDS, self.variables, strict=True)
        }
        tree["running"] = list(self.running)
        return tree

    @classmethod
    def from_tree(cls, tree: dict) -> FitState:
        tree = dict(tree)
        tree["variables"] = tuple(list(tree["variables"][k]) for k in _VARIABLE_KINDS)
        tree["running"] = tuple(tree["running"])
        return cls(**tree)


# Plan entries that checkpoints written before fmnist recorded them lack: those resume as matching.
_RECORDED_LATER = ("dtype_policy",)
_VARIABLE_KINDS = ("trainable", "non_trainable", "optimizer")
# Keras' own callbacks whose state decides what happens later in a fit. Callbacks of fmnist's
# own (and a user's) carry theirs with state_dict() / load_state_dict(), as in PyTorch Lightning.
_KERAS_CALLBACK_STATE = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_weights", "best_epoch"),
}


def has_state(callback: keras.callbacks.Callback) -> bool:
    return hasattr(callback, "state_dict") or isinstance(callback, tuple(_KERAS_CALLBACK_STATE))


def callback_state(callback: keras.callbacks.Callback) -> dict | None:
    """What a callback must remember to behave the same in a resumed fit (None: nothing)."""
    if hasattr(callback, "state_dict"):
        return callback.state_dict()
    for cls, names in _KERAS_CALLBACK_STATE.items():
        if isinstance(callback, cls):
            return {name: getattr(callback, name) for name in names}
    return None


def restore(model, history, callbacks, state: FitState, plan: dict) -> None:
    """Put a FitState back: variables, History, callbacks' state; a state of another fit is a ModelError."""
    different = {
        k: (state.plan.get(k), v)
        for k, v in plan.items()
        if state.plan.get(k) != v and (k in state.plan or k not in _RECORDED_LATER)
    }
    if different:
        detail = ", ".join(f"{k} {old} then, {new} now" for k, (old, new) in different.items())
        raise ModelError(f"the checkpoint is of another fit ({detail}): resume with the same data and arguments.")
    try:
        shapes = [tuple(np.shape(v)) for v in (*state.variables[0], *state.variables[1], *state.variables[2])]
        expected = [tuple(v.shape) for v in (*model.trainable_variables, *model.non_trainable_variables)]
        expected += [tuple(v.shape) for v in model.optimizer.variables]
        if shapes != expected:
            raise ValueError
        write_back(model, state.variables)
    except ValueError as e:
        raise ModelError("the checkpoint holds another model's or optimizer's variables: resume the same model.") from e
    history.history = {k: list(v) for k, v in state.history.items()}
    history.epoch = list(range(len(next(iter(state.history.values()), []))))
    model.history = history
    for cb, cb_state in zip(callbacks, state.callbacks, strict=True):
        if cb_state is None:
            continue
        if hasattr(cb, "load_state_dict"):
            cb.load_state_dict(cb_state)
        else:
            for name, value in cb_state.items():
                setattr(cb, name, value)
    model.stop_training = state.stopped


def model_state(model: keras.Model, optimizer: bool = True) -> tuple[list, list, list]:
    """The arrays a compiled program takes: trainable, non-trainable and optimizer variables."""
    opt_vars = model.optimizer.variables if optimizer else []
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in opt_vars],
    )


def write_back(model: keras.Model, state) -> None:
    """Put ``model_state``-shaped arrays back into the model's variables."""
    trainable, non_trainable, optimizer_variables = state
    for var, value in zip(model.trainable_variables, trainable, strict=True):
        var.assign(value)
    for var, value in zip(model.non_trainable_variables, non_trainable, strict=True):
        var.assign(value)
    for var, value in zip(model.optimizer.variables, optimizer_variables, strict=True):
        var.assign(value)
