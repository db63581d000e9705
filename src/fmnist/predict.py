"""Predictor: a saved model -> label, class name and ten probabilities for any images.

    predictor = Predictor.load("runs/default")          # a run directory or a .keras file
    predictor.predict("my_shoe.jpg")[0].class_name      # 'Sneaker'
    predictor.predict(x_test[:100])                     # a batch already in Fashion-MNIST form

Files and photos go through ``images.to_fashion_mnist`` (the dataset's own recipe); a
uint8 batch of shape (n, 28, 28), like ``load_data``'s arrays, is used as it is. Every
prediction goes through ``engine.predict_proba``, the one compiled forward pass that
evaluation, the report and the server use, in one batch per call.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fmnist import engine, images, runs
from fmnist.data import CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES
from fmnist.errors import ImageError, ModelError

SUM_TOLERANCE = 1e-3  # outputs whose rows sum to 1 within this (and are >= 0) are already probabilities


@dataclass(frozen=True)
class Prediction:
    """What the model says about one image."""

    label: int  # the most probable class, 0–9
    class_name: str  # its name, e.g. 'Sneaker'
    probabilities: tuple[float, ...]  # one per class, in label order; they sum to 1
    image: np.ndarray = field(repr=False, compare=False)  # the 28×28 uint8 image the model saw
    source: str | None = None  # the file it came from, if any

    @property
    def probability(self) -> float:
        """The probability of the predicted class."""
        return self.probabilities[self.label]

    def top(self, k: int = 3) -> list[tuple[int, str, float]]:
        """The ``k`` most probable classes as (label, name, probability), most probable first."""
        order = np.argsort(self.probabilities, kind="stable")[::-1][:k]
        return [(int(c), CLASS_NAMES[c], self.probabilities[c]) for c in order]

    def to_dict(self, top_k: int = 3) -> dict:
        """A JSON-ready summary (no image)."""
        return {
            "file": self.source,
            "label": self.label,
            "class_name": self.class_name,
            "probability": self.probability,
            "top_k": [{"label": c, "class_name": n, "probability": p} for c, n, p in self.top(top_k)],
            "probabilities": list(self.probabilities),
        }


# --------------------------------------------------------------------------- inputs
def prepare(item) -> np.ndarray:
    """One input (file path, Pillow image or array) -> the uint8 28×28 image the model sees."""
    if isinstance(item, str | os.PathLike):
        image = images.load_image(item)
        try:
            return images.to_fashion_mnist(image)
        except ImageError as e:
            raise ImageError(f"{item}: {e}") from e
    return images.to_fashion_mnist(item)


def as_batch(inputs) -> tuple[np.ndarray, list[str | None]]:
    """Inputs -> a (n, 28, 28) uint8 batch and the file each image came from (None for arrays).

    ``inputs``: a uint8 array (n, 28, 28) used as it is; one path, Pillow image or (H, W[, C])
    array; or a sequence of those.
    """
    if isinstance(inputs, np.ndarray) and inputs.ndim == 3 and inputs.shape[1:] == IMAGE_SHAPE:
        if inputs.dtype != np.uint8:
            raise ImageError(
                f"a batch of 28×28 images must be uint8 0–255 like load_data's (got {inputs.dtype}, "
                f"max {inputs.max() if inputs.size else 0}): pass raw pixels, not x / 255."
            )
        return inputs, [None] * len(inputs)
    single = isinstance(inputs, str | os.PathLike | np.ndarray | Image.Image)
    items = [inputs] if single else list(inputs)
    batch = np.stack([prepare(item) for item in items]) if items else np.zeros((0, *IMAGE_SHAPE), np.uint8)
    sources = [os.fspath(item) if isinstance(item, str | os.PathLike) else None for item in items]
    return batch, sources


def images_in(folder: str | os.PathLike) -> list[Path]:
    """Every image file in ``folder`` (by suffix, not hidden, sorted); an ImageError if none."""
    folder = Path(folder)
    try:
        found = sorted(
            f for f in folder.iterdir() if f.suffix.lower() in images.IMAGE_SUFFIXES and not f.name.startswith(".")
        )
    except OSError as e:
        raise ImageError(f"{folder} cannot be listed ({e.strerror or e}).") from e
    if not found:
        raise ImageError(f"{folder} is a folder with no images ({', '.join(images.IMAGE_SUFFIXES)}).")
    return found


# --------------------------------------------------------------------------- the predictor
class Predictor:
    """A loaded model that classifies images of clothing."""

    def __init__(self, model, source: str | None = None, views: Sequence[str] = ("identity",)):
        from fmnist._backend import keras
        from fmnist.augment import check_views

        where = f" {source}" if source else ""
        try:
            spec = model.compute_output_spec(keras.KerasTensor((None, *IMAGE_SHAPE), dtype="float32"))
        except Exception as e:
            raise ModelError(f"the model{where} cannot take 28×28 images: {e}") from e
        if tuple(spec.shape) != (None, NUM_CLASSES):
            raise ModelError(
                f"the model{where} outputs shape {tuple(spec.shape)}, not one score per class "
                f"(None, {NUM_CLASSES}): it is not a Fashion-MNIST classifier."
            )
        self.model, self.source, self.views = model, source, check_views(views)

    @classmethod
    def load(cls, run_or_model: str | os.PathLike) -> Predictor:
        """From a run directory or a ``.keras`` file (a ``RunError`` if neither loads), with the
        run's test-time views (see TrainConfig.eval_views)."""
        path = str(runs.resolve_model_path(run_or_model))
        return cls(runs.load_model(run_or_model), path, runs.eval_views(run_or_model))

    def predict(self, inputs) -> list[Prediction]:
        """One ``Prediction`` per image, in order, from a single batched forward pass.

        ``inputs``: a path, a Pillow image, an (H, W[, C]) array, a uint8 (n, 28, 28) batch,
        or a sequence of paths / images / arrays. A bad file raises ``ImageError``.
        """
        batch, sources = as_batch(inputs)
        return self._predict_batch(batch, sources)

    def predict_files(self, paths: Sequence[str | os.PathLike]) -> tuple[list[Prediction], list[ImageError]]:
        """Every image in ``paths`` (a folder means its images): predictions for those that
        could be read and one error for each file (or empty folder) that could not, both in
        the order given."""
        good, sources, errors = [], [], []
        for path in map(Path, paths):
            try:
                files = images_in(path) if path.is_dir() else [path]
            except ImageError as e:
                errors.append(e)
                continue
            for f in files:
                try:
                    good.append(prepare(f))
                    sources.append(os.fspath(f))
                except ImageError as e:
                    errors.append(e)
        batch = np.stack(good) if good else np.zeros((0, *IMAGE_SHAPE), np.uint8)
        return self._predict_batch(batch, sources), errors

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities (n, 10) for a uint8 (n, 28, 28) batch: the forward pass with the
        run's views, no ``Prediction`` objects (the server's hot path)."""
        if len(batch) == 0:
            return np.zeros((0, NUM_CLASSES))
        return _as_probabilities(engine.predict_proba(self.model, batch, self.views))

    def _predict_batch(self, batch: np.ndarray, sources: list[str | None]) -> list[Prediction]:
        if len(batch) == 0:
            return []
        probs = self.probabilities(batch)
        labels = probs.argmax(axis=1)
        return [
            Prediction(int(c), CLASS_NAMES[c], tuple(float(p) for p in row), batch[i], sources[i])
            for i, (c, row) in enumerate(zip(labels, probs, strict=True))
        ]


def _as_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Softmax outputs as they are; logits (a model without a softmax layer) through a softmax."""
    outputs = np.asarray(outputs, np.float64)
    if (outputs >= 0).all() and np.allclose(outputs.sum(axis=1), 1.0, atol=SUM_TOLERANCE):
        return outputs
    z = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def save_preprocessed(predictions: Iterable[Prediction], directory: str | os.PathLike) -> list[Path]:
    """Write each prediction's 28×28 input as ``<name>.png`` in ``directory`` (atomically); the paths."""
    directory, written, taken = Path(directory), [], set()
    for i, p in enumerate(predictions):
        stem = Path(p.source).stem if p.source else f"image-{i:05d}"
        name, n = f"{stem}.png", 2
        while name in taken:  # two inputs with one name (a.jpg and a.png, or two folders)
            name, n = f"{stem}-{n}.png", n + 1
        taken.add(name)
        written.append(runs.write_bytes(directory / name, images.png_bytes(p.image)))
    return written


__all__ = ["Prediction", "Predictor", "as_batch", "images_in", "prepare", "save_preprocessed"]
