"""How ``fit`` cuts an epoch into batches and compiled chunks of steps.

An epoch is ``ceil(n / batch_size)`` optimizer steps (the last batch may be partial) and a
compiled program runs a *chunk* of up to ``chunk_steps`` of them. ``chunking`` is that
arithmetic, the one ``engine.fit`` uses and the time-budget planner asks for;
``epoch_plan`` lays out one epoch's batch indices and per-image weights for the programs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmnist import accelerator
from fmnist._backend import keras

# Steps per compiled program: per device kind, in fmnist.accelerator.CHOICES (the CPU's chosen by
# benchmarks/engine_schedule.py on the 2-core machine: figures there and in BENCHMARKS.md). The CPU's, by
# their earlier names:
DENSE_CHUNK_STEPS = accelerator.CHOICES["cpu"].dense_chunk_steps
CONV_CHUNK_STEPS = accelerator.CHOICES["cpu"].conv_chunk_steps


def ceil_div(a: int, b: int) -> int:
    """``a / b`` rounded up: the batches that hold ``a`` images, the chunks that hold ``a`` steps."""
    return -(-a // b)


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """The optimizer steps of one epoch: one per batch, the last of them perhaps partial."""
    return ceil_div(n_images, batch_size)


def default_chunk_steps(model: keras.Model, kind: str | None = None) -> int:
    """The steps per compiled program on device ``kind`` (default: the one this process trains on), from
    fmnist.accelerator's table: on the CPU, 256 for dense models and 16 for models with convolutions."""
    has_conv = any(isinstance(layer, keras.layers.Conv2D | keras.layers.Conv1D) for layer in _all_layers(model))
    return accelerator.choices(kind or accelerator.current_kind()).chunk_steps(has_conv)


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


@dataclass(frozen=True)
class Chunking:
    """An epoch's optimizer steps and how many of them one compiled program runs."""

    steps_per_epoch: int  # batches in one pass over the images (the last may be partial)
    chunk_steps: int  # steps per compiled program (the epoch's last chunk may run fewer)

    @property
    def chunks_per_epoch(self) -> int:
        return ceil_div(self.steps_per_epoch, self.chunk_steps)


def chunking(model, n_images: int, batch_size: int, chunk_steps: int | None = None) -> Chunking:
    """How ``fit`` chunks an epoch of ``n_images`` in batches of ``batch_size``.

    ``chunk_steps`` None (or 0) takes ``default_chunk_steps(model)``; a chunk is never longer
    than the epoch.
    """
    steps = steps_per_epoch(n_images, batch_size)
    return Chunking(steps_per_epoch=steps, chunk_steps=min(chunk_steps or default_chunk_steps(model), steps))


def epoch_plan(
    order: np.ndarray, batch_size: int, chunk_steps: int, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch indices and weights, shape (chunks, chunk_steps, batch_size), and real images per step.

    Each image carries its weight from ``weights`` (1 when None). The last batch is padded with
    weight-0 images (so it trains on exactly its real ones), and the last chunk with steps that
    are never run, so every chunk has the same shape.
    """
    n = len(order)
    chunks = ceil_div(ceil_div(n, batch_size), chunk_steps)
    size = chunks * chunk_steps * batch_size
    idx = np.zeros(size, np.int32)
    idx[:n] = order
    w = np.zeros(size, np.float32)
    w[:n] = 1.0 if weights is None else weights[order]
    count = np.clip(n - batch_size * np.arange(chunks * chunk_steps), 0, batch_size).astype(np.float32)
    shape = (chunks, chunk_steps, batch_size)
    return idx.reshape(shape), w.reshape(shape), count.reshape(shape[:2])
