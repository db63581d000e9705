"""Model builders: a small spec in, an uncompiled ``keras.Model`` out.

The seed model is the tutorial's: Flatten → Dense(128, relu) → Dense(10, softmax), with
``x / 255`` done by a ``Rescaling(1/255)`` layer at the input, so a saved model takes raw
0–255 pixels and nothing downstream can forget to normalise. ``normalize=False`` leaves
that layer out (the tutorial's "what if you don't normalise?"). ``standardize=True`` adds a
per-pixel ``(x - mean) / std`` after it, with the statistics of the training images given to
``build_model``: a stock Keras ``Normalization`` layer, so a saved model still takes raw pixels
and opens with plain ``keras.saving.load_model``.

The spec is plain data (it round-trips through ``config.json``); ``flatten=False`` and
``output_units=5`` exist to reproduce the tutorial's two mistakes, which ``engine.fit``
explains before training.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fmnist._backend import keras
from fmnist.config import ACTIVATIONS, WHITEN_MAX_FILTERS, ModelSpec, spec_from_dict
from fmnist.data import IMAGE_SHAPE
from fmnist.errors import ModelError

# standardize: the smallest per-pixel std divided by (on the 0-1 scale). Border pixels are ~0 in
# nearly every training image; dividing by their tiny std would turn one stray bright pixel of a
# user's photo into a huge input. On validation (mlp recipe, 2 seeds) floors 0.02-0.2 all scored
# 0.894-0.897, against 0.889 without standardising (BENCHMARKS.md, "How `mlp` was chosen").
STD_FLOOR = 0.05
STANDARDIZE_LAYER = "standardize"  # the Normalization layer's name in a standardizing model
# whiten: the first conv's fixed filters are the principal directions of 3x3 patches of this many
# training images, each scaled by 1 / sqrt(its variance + WHITEN_EPS) and paired with its negative
# (so the relu keeps both signs), as in KellerJordan/airbench's whitening layer.
WHITEN_IMAGES = 5_000
WHITEN_EPS = 5e-4
# The spec is plain data, kept with the other settings in fmnist.config; these names stay importable from here.
__all__ = ["ACTIVATIONS", "OPTIMIZERS", "WHITEN_MAX_FILTERS", "ModelSpec", "build_model", "compile_model",
           "ensemble_members", "spec_from_dict"]  # fmt: skip


def build_model(
    spec: ModelSpec = ModelSpec(),  # noqa: B008 (a frozen dataclass)
    name: str = "fmnist",
    x_train: np.ndarray | None = None,
) -> keras.Model:
    """An uncompiled Keras model for raw (28, 28) images with values 0–255.

    ``x_train``: the images it will train on (not a validation split's), which a ``standardize``
    spec needs for its per-pixel mean and std and a ``whiten`` spec for its patches; others ignore it.

    - mlp: [Rescaling] → [Normalization] → Flatten → Dense(hidden, activation)… → Dense(10, softmax):
      the tutorial's, with ``standardize``'s per-pixel Normalization after the Rescaling.
    - cnn: per width in ``conv_filters`` a block conv3×3 → BatchNorm → relu → 2×2 max pool
      (``pool_first``: conv3×3 → 2×2 max pool → BatchNorm → relu, which normalises a quarter
      of the values), then Flatten → Dense(hidden)… → Dense(10, softmax). A block whose
      ``conv_strides`` entry is s > 1 is conv3×3 with stride s → BatchNorm → relu: the stride
      downsamples instead of the pool, and the conv computes a quarter of the outputs (s = 2).
      ``whiten``: the first conv's filters are fixed to whitening filters of ``x_train``'s 3×3
      patches (see WHITEN_IMAGES) and never trained, so a step computes no gradient for that conv
      or its pool. ``conv_repeats``: a block's further convs, conv3×3 → BatchNorm → relu with
      stride 1 and no pool, each at the block's output size.
    - ``members`` > 1: that many of the net above (``member0``, ``member1``… each a Sequential with
      weights of its own) read the same input, and the output is the mean of their probabilities.
      engine.fit trains each member on its own loss (see ensemble_members).
    - vgg: per width two conv3×3 → BatchNorm → relu (one in the last block), 2×2 max pool
      between blocks, then a global max pool → Dense(10, softmax); ``hidden`` is not used.
      (32, 64, 128) is the 5-conv reference net of benchmarks/time_to_accuracy.py.
    """
    if spec.members > 1:
        return _ensemble(spec, name, x_train)
    layers: list = [keras.Input(IMAGE_SHAPE, name="pixels")]
    if spec.normalize:
        layers.append(keras.layers.Rescaling(1.0 / 255, name="normalize"))
    if spec.standardize:
        layers.append(_standardizer(spec, x_train))
    if spec.arch != "mlp":
        layers.append(keras.layers.Reshape((*IMAGE_SHAPE, 1)))
    if spec.arch == "cnn":
        for i, filters in enumerate(spec.conv_filters):
            stride = spec.conv_strides[i] if spec.conv_strides else 1
            conv, *norm_relu = _conv_bn_relu(filters, f"{i}", stride)
            pool = keras.layers.MaxPooling2D(2)
            if stride > 1:
                layers += [conv, *norm_relu]
            else:
                layers += [conv, pool, *norm_relu] if spec.pool_first else [conv, *norm_relu, pool]
            for j in range(1, spec.conv_repeats[i] if spec.conv_repeats else 1):
                layers += _conv_bn_relu(filters, f"{i}_{j}")
    if spec.arch == "vgg":
        last = len(spec.conv_filters) - 1
        for i, filters in enumerate(spec.conv_filters):
            for j in range(1 if i == last else 2):
                layers += _conv_bn_relu(filters, f"{i}{'ab'[j]}")
            if i < last:
                layers.append(keras.layers.MaxPooling2D(2))
        layers.append(keras.layers.GlobalMaxPooling2D(name="global_max"))
    elif spec.flatten:
        layers.append(keras.layers.Flatten(name="flatten"))
    for i, width in enumerate(spec.hidden if spec.arch != "vgg" else ()):
        layers.append(keras.layers.Dense(width, activation=spec.activation, name=f"hidden{i}"))
        if spec.dropout:
            layers.append(keras.layers.Dropout(spec.dropout))
    layers.append(
        keras.layers.Dense(spec.output_units, activation="softmax", name="probabilities", dtype=_output_dtype())
    )
    model = keras.Sequential(layers, name=name)
    if spec.whiten:
        _whiten(model, x_train)
    return model


def _ensemble(spec: ModelSpec, name: str, x_train: np.ndarray | None) -> keras.Model:
    single = dataclasses.replace(spec, members=1)
    pixels = keras.Input(IMAGE_SHAPE, name="pixels")
    members = [build_model(single, f"member{i}", x_train) for i in range(spec.members)]  # successive weight draws
    average = keras.layers.Average(name="probabilities", dtype=_output_dtype())
    return keras.Model(pixels, average([m(pixels) for m in members]), name=name)


def _output_dtype() -> str | None:
    """The output layer's dtype: float32 under a mixed policy (fmnist.accelerator.precision_scope), so
    probabilities, the loss and the metrics stay float32; else the policy's own (None)."""
    return "float32" if keras.config.dtype_policy().name.startswith("mixed") else None


def ensemble_members(model: keras.Model) -> list[keras.Model] | None:
    """The member nets of an ensemble ``build_model`` made (their outputs' mean is the model's), else None.

    Their variables, in order, are the model's: a training step can call each member on its share
    of them (engine.fit does, so that each member learns from its own loss, as if trained alone).
    """
    if not model.layers or not isinstance(model.layers[-1], keras.layers.Average):
        return None
    members = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if not members or len(model.layers) != len(members) + 2:  # the input, the members, their mean
        return None
    for kind in ("trainable_variables", "non_trainable_variables"):
        if [id(v) for v in getattr(model, kind)] != [id(v) for m in members for v in getattr(m, kind)]:
            return None
    return members


def _whiten(model: keras.Model, x_train: np.ndarray | None) -> None:
    """Fix the model's first conv to patch-whitening filters (see WHITEN_IMAGES) and freeze it.

    The patches are of the images as the conv sees them: ``x_train`` passed through the layers
    before it (Rescaling, a standardizing Normalization, the Reshape to one channel).
    """
    if x_train is None or len(x_train) == 0:
        raise ModelError("a whiten spec needs the training images: build_model(spec, x_train=...).")
    conv = model.get_layer("conv0")
    h = np.asarray(x_train[:WHITEN_IMAGES], np.float32)
    for layer in model.layers[: model.layers.index(conv)]:
        h = layer(h)
    h = keras.ops.convert_to_numpy(h)[..., 0]
    patches = np.lib.stride_tricks.sliding_window_view(h, (3, 3), axis=(1, 2)).reshape(-1, 9).astype(np.float64)
    variances, directions = np.linalg.eigh(patches.T @ patches / len(patches))  # ascending variance
    top = np.argsort(variances)[::-1][: conv.filters // 2]
    w = directions[:, top] / np.sqrt(variances[top] + WHITEN_EPS)
    conv.set_weights([np.concatenate([w, -w], axis=1).reshape(3, 3, 1, conv.filters).astype(np.float32)])
    conv.trainable = False


def _standardizer(spec: ModelSpec, x_train: np.ndarray | None) -> keras.layers.Layer:
    """A Normalization layer holding raw ``x_train``'s per-pixel mean and variance (std floored at
    STD_FLOOR), scaled as the model's Rescaling scales them, so they are of what the layer sees."""
    if x_train is None or len(x_train) == 0:
        raise ModelError("a standardize spec needs the training images: build_model(spec, x_train=...).")
    scale = 1 / 255 if spec.normalize else 1.0
    x = np.asarray(x_train, np.float32) * scale
    mean = x.mean(axis=0, dtype=np.float64)
    variance = np.maximum(x.var(axis=0, dtype=np.float64), (STD_FLOOR * 255 * scale) ** 2)
    return keras.layers.Normalization(axis=(1, 2), mean=mean, variance=variance, name=STANDARDIZE_LAYER)


def _conv_bn_relu(filters: int, suffix: str, stride: int = 1) -> list:
    return [
        keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"conv{suffix}"),
        keras.layers.BatchNormalization(name=f"bn{suffix}"),
        keras.layers.Activation("relu"),
    ]


OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam")


def compile_model(model: keras.Model, optimizer: str = "adam", learning_rate: float | None = None) -> keras.Model:
    """Compile as the tutorial does; ``learning_rate=None`` keeps the optimizer's default."""
    if optimizer not in OPTIMIZERS:
        raise ModelError(f"unknown optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}.")
    opt = keras.optimizers.get(optimizer)
    if learning_rate is not None:
        opt.learning_rate = learning_rate
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
