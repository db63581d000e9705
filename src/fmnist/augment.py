"""On-device augmentation and test-time views: pure JAX functions on raw (n, 28, 28) images.

Fashion-MNIST centres each article and scales its long edge to 28 pixels on a black
background, so a shifted image is padded with the background value 0 (not reflected),
and shifts stay small (±2 px). Training augmentation runs inside the compiled training
program, keyed by the run's seed and the step number: deterministic for a seed, different
at every step, no Python loop over images.

Test-time views are deterministic transforms; ``engine.predict_proba(..., views=...)``
averages the model's probabilities over them.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from fmnist.errors import ModelError

VIEWS = {
    "identity": "the image as it is",
    "flip": "mirrored left-right",
    "left": "shifted 1 px left",
    "right": "shifted 1 px right",
    "up": "shifted 1 px up",
    "down": "shifted 1 px down",
}


@dataclass(frozen=True)
class Augment:
    """Random translation (zero padding) and horizontal flip, one draw per image per step."""

    shift: int = 2  # largest translation in pixels, each axis (0 = none)
    flip: bool = True  # mirror half the images left-right

    def __call__(self, x: jax.Array, key: jax.Array) -> jax.Array:
        k_shift, k_flip = jax.random.split(key)
        if self.shift:
            x = translate(x, jax.random.randint(k_shift, (x.shape[0], 2), -self.shift, self.shift + 1), self.shift)
        if self.flip:
            mirror = jax.random.bernoulli(k_flip, 0.5, (x.shape[0],))
            x = jnp.where(mirror[:, None, None], x[:, :, ::-1], x)
        return x

    @property
    def active(self) -> bool:
        return bool(self.shift or self.flip)


def translate(x: jax.Array, offsets: jax.Array, pad: int) -> jax.Array:
    """Shift each image ``x[i]`` by ``offsets[i] = (dy, dx)`` pixels (|d| <= pad), filling with 0."""
    h, w = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad)))

    def one(image, offset):
        return jax.lax.dynamic_slice(image, (pad - offset[0], pad - offset[1]), (h, w))

    return jax.vmap(one)(padded, offsets)


def view(x: jax.Array, name: str) -> jax.Array:
    """One named test-time view of a batch (see VIEWS)."""
    if name == "identity":
        return x
    if name == "flip":
        return x[:, :, ::-1]
    dy, dx = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[name]
    return translate(x, jnp.broadcast_to(jnp.array([dy, dx]), (x.shape[0], 2)), 1)


def with_identity(views) -> tuple[str, ...]:
    """``views`` with the plain image first, so its single-view figure comes from the same pass."""
    return ("identity", *[v for v in views if v != "identity"])


def check_views(views) -> tuple[str, ...]:
    """``views`` as a tuple of known names, or a ModelError naming the known ones."""
    views = tuple(views)
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ModelError(f"unknown test-time views {unknown or '(none given)'}: use some of {', '.join(VIEWS)}.")
    return views
