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
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fmnist._backend import keras
from fmnist.data import IMAGE_SHAPE, NUM_CLASSES
from fmnist.errors import ModelError

ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "elu", "selu", "swish", "linear")
# standardize: the smallest per-pixel std divided by (on the 0-1 scale). Border pixels are ~0 in
# nearly every training image; dividing by their tiny std would turn one stray bright pixel of a
# user's photo into a huge input. On validation (mlp recipe, 2 seeds) floors 0.02-0.2 all scored
# 0.894-0.897, against 0.889 without standardising (one-off script, 2026-12-01).
STD_FLOOR = 0.05
STANDARDIZE_LAYER = "standardize"  # the Normalization layer's name in a standardizing model
# whiten: the first conv's fixed filters are the principal directions of 3x3 patches of this many
# training images, each scaled by 1 / sqrt(its variance + WHITEN_EPS) and paired with its negative
# (so the relu keeps both signs), as in KellerJordan/airbench's whitening layer.
WHITEN_IMAGES = 5_000
WHITEN_EPS = 5e-4
WHITEN_MAX_FILTERS = 2 * 9  # each direction of a 3x3, 1-channel patch and its negative


@dataclass(frozen=True)
class ModelSpec:
    """What to build. Defaults are the tutorial's seed model."""

    arch: Literal["mlp", "cnn", "vgg"] = "mlp"  # mlp: Dense layers on the flat image; cnn, vgg: see build_model
    hidden: tuple[int, ...] = (128,)  # widths of the hidden Dense layers, in order
    activation: str = "relu"  # activation of every hidden layer
    normalize: bool = True  # start with Rescaling(1/255), so the model takes raw 0–255 pixels
    standardize: bool = False  # then per-pixel (x - mean) / std of the training images (build_model's x_train)
    dropout: float = 0.0  # dropout rate after each hidden layer (0 = none, as in the tutorial)
    conv_filters: tuple[int, ...] = (32, 64)  # cnn, vgg: filters of each block of 3×3 convs
    pool_first: bool = False  # cnn: max-pool each conv's output before BatchNorm and relu (4x less work after it)
    conv_strides: tuple[int, ...] = ()  # cnn: each block's conv stride (empty: all 1); a strided block is not pooled
    conv_repeats: tuple[int, ...] = ()  # cnn: convs in each block (empty: 1 each); the others follow at its output size
    whiten: bool = False  # cnn: the first conv is fixed, not trained: patch-whitening filters of the training images
    members: int = 1  # an ensemble of this many such nets, each with its own weights; the output is their mean
    flatten: bool = True  # False reproduces the tutorial's missing-Flatten mistake
    output_units: int = NUM_CLASSES  # != 10 reproduces the tutorial's wrong-output-width mistake

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "conv_filters", tuple(int(f) for f in self.conv_filters))
        object.__setattr__(self, "conv_strides", tuple(int(s) for s in self.conv_strides))
        object.__setattr__(self, "conv_repeats", tuple(int(r) for r in self.conv_repeats))
        if self.arch not in ("mlp", "cnn", "vgg"):
            raise ModelError(f"unknown architecture {self.arch!r}: use 'mlp', 'cnn' or 'vgg'.")
        if self.arch != "mlp" and (not self.conv_filters or min(self.conv_filters) < 1):
            raise ModelError(f"conv filters must be positive, got {list(self.conv_filters)}.")
        if self.conv_strides and (len(self.conv_strides) != len(self.conv_filters) or min(self.conv_strides) < 1):
            raise ModelError(
                f"conv strides {list(self.conv_strides)} need one positive stride per conv block "
                f"({len(self.conv_filters)} blocks: {list(self.conv_filters)})."
            )
        if self.conv_repeats and (len(self.conv_repeats) != len(self.conv_filters) or min(self.conv_repeats) < 1):
            raise ModelError(
                f"conv repeats {list(self.conv_repeats)} need one count of at least 1 per conv block "
                f"({len(self.conv_filters)} blocks: {list(self.conv_filters)})."
            )
        first = self.conv_filters[0] if self.conv_filters else 0
        if self.whiten and (self.arch != "cnn" or first % 2 or first > WHITEN_MAX_FILTERS):
            raise ModelError(
                f"whiten needs arch 'cnn' with an even first conv width of at most {WHITEN_MAX_FILTERS} (each of the 9 "
                f"directions of a 3x3 patch and its negative), got arch {self.arch!r} with {list(self.conv_filters)}."
            )
        if any(h < 1 for h in self.hidden):
            raise ModelError(f"hidden layer widths must be positive, got {list(self.hidden)}.")
        if self.activation not in ACTIVATIONS:
            raise ModelError(f"unknown activation {self.activation!r}: use one of {', '.join(ACTIVATIONS)}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.output_units < 1:
            raise ModelError(f"output_units must be positive, got {self.output_units}.")
        if self.members < 1:
            raise ModelError(f"an ensemble needs at least 1 member, got {self.members}.")

    def describe(self) -> str:
        """A short human name, e.g. 'mlp 128' or 'cnn 32-64 / 128'."""
        widths = "-".join(map(str, self.hidden)) or "none"
        filters = "-".join(map(str, self.conv_filters))
        body = {"mlp": f"mlp {widths}", "cnn": f"cnn {filters} / {widths}", "vgg": f"vgg {filters}"}[self.arch]
        flags = (
            ("pool first", self.pool_first and self.arch == "cnn"),
            ("strides " + "-".join(map(str, self.conv_strides)), any(s > 1 for s in self.conv_strides)),
            ("repeats " + "-".join(map(str, self.conv_repeats)), any(r > 1 for r in self.conv_repeats)),
            ("raw pixels", not self.normalize),
            ("whitened", self.whiten),
            ("standardized", self.standardize),
            (f"dropout {self.dropout}", self.dropout),
            (f"ensemble of {self.members}", self.members > 1),
        )
        extras = [e for e, on in flags if on]
        return body + (f" ({', '.join(extras)})" if extras else "")


def build_model(spec: ModelSpec = ModelSpec(), name: str = "fmnist", x_train: np.ndarray | None = None) -> keras.Model:
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
    layers.append(keras.layers.Dense(spec.output_units, activation="softmax", name="probabilities"))
    model = keras.Sequential(layers, name=name)
    if spec.whiten:
        _whiten(model, x_train)
    return model


def _ensemble(spec: ModelSpec, name: str, x_train: np.ndarray | None) -> keras.Model:
    single = dataclasses.replace(spec, members=1)
    pixels = keras.Input(IMAGE_SHAPE, name="pixels")
    members = [build_model(single, f"member{i}", x_train) for i in range(spec.members)]  # successive weight draws
    return keras.Model(pixels, keras.layers.Average(name="probabilities")([m(pixels) for m in members]), name=name)


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


def spec_from_dict(d: dict) -> ModelSpec:
    """Inverse of ``dataclasses.asdict`` for a spec read from JSON."""
    known = {f for f in ModelSpec.__dataclass_fields__}
    unknown = set(d) - known
    if unknown:
        raise ModelError(f"unknown model spec fields {sorted(unknown)}; known: {sorted(known)}.")
    return ModelSpec(**d)
