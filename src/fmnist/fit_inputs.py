"""Model.fit's arguments as ``fmnist.fit`` takes them: checks, per-image weights, the validation split.

``engine.fit`` is a drop-in for ``Model.fit`` on arrays; this module holds what that promise
needs before any program runs: the same defaults, the same weighting (``class_weight`` or
``sample_weight`` in the loss, never in accuracy), the same validation split (the last
fraction, taken before shuffling) and ``validation_freq`` rule, and for each Model.fit
argument fmnist cannot honour (datasets, generators, steps per epoch) an error saying what
to pass instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fmnist.errors import ModelError

DEFAULT_BATCH_SIZE = 32  # Model.fit's default
VERBOSE = (0, 1, 2, "auto")  # Model.fit's: silent, a progress bar per epoch, one line per epoch, "auto" (= 1)
# Model.fit arguments that fmnist.fit does not take, and what to pass instead.
UNSUPPORTED = {
    "steps_per_epoch": "an epoch is one pass over x; slice x and y to train on fewer images per epoch, "
    "or pass max_steps=N to stop after N optimizer steps in all",
    "validation_steps": "validation uses all of validation_data; slice it to validate on fewer images",
    "validation_batch_size": "validation runs through fmnist's batched forward pass, whose result does not "
    "depend on a batch size; drop it",
}


def as_array(value, name: str) -> np.ndarray:
    """``value`` as a NumPy array, or an error saying what to pass instead of a dataset or generator."""
    if isinstance(value, np.ndarray | list) or hasattr(value, "__array__"):
        return np.asarray(value)
    raise ModelError(
        f"fmnist.fit trains on arrays held in memory, and {name} is a {type(value).__name__}: pass the images as "
        "an array x of shape (n, 28, 28) and the labels as an array y of n integers, e.g. "
        "fmnist.fit(model, x_train, y_train) with fmnist.load_data()'s arrays. A tf.data.Dataset, a PyDataset "
        "or a generator can be gathered into such arrays first (np.concatenate over its batches)."
    )


def weights_array(value, n: int, name: str) -> np.ndarray:
    w = as_array(value, name).astype(np.float32)
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.shape != (n,):
        raise ModelError(f"{name} needs one weight per image, shape ({n},); got shape {w.shape}.")
    return w


def class_weights(y: np.ndarray, class_weight) -> np.ndarray:
    """Model.fit's class_weight as per-image weights: each image weighs its class's weight (1 if absent)."""
    if not isinstance(class_weight, Mapping):
        raise ModelError(
            f"class_weight maps class labels to weights, e.g. {{0: 1.0, 6: 2.0}}; got a {type(class_weight).__name__}."
        )
    labels = y if y.ndim == 1 else np.argmax(y, axis=-1)
    classes, inverse = np.unique(labels, return_inverse=True)
    return np.array([class_weight.get(int(c), 1.0) for c in classes], np.float32)[inverse.reshape(-1)]


def train_size(n: int, validation_split: float) -> int:
    """How many of ``n`` images train under ``validation_split`` (Model.fit's cut: the rest validate)."""
    return math.floor(n * (1.0 - validation_split)) if validation_split else n


def training_arrays(x, y, class_weight, sample_weight, validation_data, validation_split):
    """``((x, y, sample_weights), held_out)``: fit's arrays checked, and its validation set split off.

    ``sample_weights`` is None when every image weighs 1; ``class_weight`` is left for the caller to
    apply to the training labels once the model has been checked against them.
    """
    x = as_array(x, "x")
    if y is None:
        raise ModelError("fmnist.fit needs the labels: pass y, an array of one integer label per image in x.")
    y = as_array(y, "y")
    if class_weight is not None and sample_weight is not None:
        raise ModelError(
            "pass class_weight or sample_weight, not both (as Model.fit): multiply the class weights into the "
            "sample weights, e.g. sample_weight * np.array([class_weight.get(c, 1.0) for c in range(10)])[y]."
        )
    sample_weights = None if sample_weight is None else weights_array(sample_weight, len(x), "sample_weight")
    return split_validation(x, y, sample_weights, validation_data, validation_split)


def split_validation(x, y, sample_weights, validation_data, validation_split):
    """(x, y, weights) to train on and (x, y, weights) to validate on, as Model.fit splits them."""
    if validation_data is not None:
        if not isinstance(validation_data, tuple | list) or len(validation_data) not in (2, 3):
            raise ModelError(
                "validation_data is a tuple (x_val, y_val) or (x_val, y_val, sample_weight_val) of arrays, "
                f"as Model.fit takes it; got a {type(validation_data).__name__}."
            )
        vx, vy = as_array(validation_data[0], "validation_data's x"), as_array(validation_data[1], "its y")
        if len(vx) != len(vy):
            raise ModelError(
                f"validation_data has {len(vx)} images but {len(vy)} labels: they must be the same length."
            )
        vw = validation_data[2] if len(validation_data) == 3 else None
        vw = None if vw is None else weights_array(vw, len(vx), "validation sample_weight")
        return (x, y, sample_weights), (vx, vy, vw)
    if not 0.0 <= validation_split < 1.0:
        raise ModelError(f"validation_split must be in [0, 1), got {validation_split}.")
    if validation_split == 0.0:
        return (x, y, sample_weights), None
    # As Model.fit: the last fraction of the data (and of the sample weights), taken before any shuffling.
    cut = train_size(len(x), validation_split)
    if cut == 0 or cut == len(x):
        raise ModelError(f"validation_split={validation_split} leaves an empty training or validation set.")
    head, tail = (None, None) if sample_weights is None else (sample_weights[:cut], sample_weights[cut:])
    return (x[:cut], y[:cut], head), (x[cut:], y[cut:], tail)


def check_arguments(batch_size, epochs, verbose, initial_epoch, validation_freq, max_steps, unsupported):
    for name, value in unsupported.items():
        if name not in UNSUPPORTED:
            raise TypeError(f"fmnist.fit() got an unexpected keyword argument {name!r}")
        if value is not None:
            raise ModelError(f"fmnist.fit does not take {name}: {UNSUPPORTED[name]}.")
    if batch_size < 1 or epochs < 0 or (max_steps is not None and max_steps < 0):
        raise ModelError(
            f"batch_size must be >= 1, epochs and max_steps >= 0 (got {batch_size}, {epochs}, {max_steps})."
        )
    if verbose not in VERBOSE:
        raise ModelError(
            f"verbose is 0 (silent), 1 (a progress bar), 2 (one line per epoch) or 'auto'; got {verbose!r}."
        )
    if not isinstance(initial_epoch, int) or initial_epoch < 0:
        raise ModelError(f"initial_epoch is the index of the first epoch to run (0 or more); got {initial_epoch!r}.")
    every = isinstance(validation_freq, int) and validation_freq >= 1
    listed = isinstance(validation_freq, list | tuple | set | frozenset | range)
    if not (every or listed):
        raise ModelError(
            "validation_freq is a number of epochs (validate after every that many) or a list of epochs "
            f"(1-based) to validate after, as in Model.fit; got {validation_freq!r}."
        )


def validates(epoch: int, validation_freq) -> bool:
    """Model.fit's rule: validate after epoch ``epoch`` (0-based)?"""
    if isinstance(validation_freq, int):
        return (epoch + 1) % validation_freq == 0
    return epoch + 1 in validation_freq
