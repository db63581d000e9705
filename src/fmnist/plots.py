"""Matplotlib figures: pure functions, data in and a ``Figure`` out (Agg, no display).

Figures are made with ``matplotlib.figure.Figure`` directly, not pyplot, so nothing is
kept in a global figure registry and nothing needs a screen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from fmnist.data import CLASS_NAMES


def image(img: np.ndarray, title: str = "") -> Figure:
    """One 28×28 image, the tutorial's ``plt.imshow(training_images[42])`` with a colour bar."""
    fig = Figure(figsize=(4, 4))
    ax = fig.add_subplot()
    shown = ax.imshow(img, cmap="gray_r", vmin=0, vmax=255)
    fig.colorbar(shown, ax=ax, fraction=0.046)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def image_grid(images: np.ndarray, titles: Sequence[str], cols: int | None = None) -> Figure:
    """A labelled grid (the TensorFlow tutorial's 5×5 'first 25 training images')."""
    n = len(images)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2 * cols, 2.2 * rows))
    for i, (img, title) in enumerate(zip(images, titles, strict=True)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(img, cmap="binary", vmin=0, vmax=255)
        ax.set_xlabel(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def labelled_grid(images: np.ndarray, labels: np.ndarray) -> Figure:
    return image_grid(images, [CLASS_NAMES[int(label)] for label in labels])


def learning_curves(history: dict[str, list[float]]) -> Figure:
    """Loss and accuracy per epoch, training and (if present) validation."""
    fig = Figure(figsize=(10, 4))
    for i, metric in enumerate(("loss", "accuracy")):
        ax = fig.add_subplot(1, 2, i + 1)
        for key, style in ((metric, "o-"), (f"val_{metric}", "s--")):
            if history.get(key):
                epochs = range(1, len(history[key]) + 1)
                ax.plot(epochs, history[key], style, label="validation" if key.startswith("val_") else "training")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig
