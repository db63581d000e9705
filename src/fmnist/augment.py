"""On-device augmentation and test-time views: pure JAX functions on raw (n, 28, 28) images.

Fashion-MNIST centres each article and scales its long edge to 28 pixels on a black
background, so a shifted image is padded with the background value 0 (not reflected),
and shifts stay small (±2 px). Random erasing (Zhong et al., 2017) blanks a random
rectangle of some images to that same background, as if part of the article were hidden.

Training augmentation runs inside the compiled training program, keyed by the run's seed
and the step number: deterministic for a seed, different at every step, no Python loop
over images.

Test-time views are deterministic transforms; ``engine.predict_proba(..., views=...)``
averages the model's probabilities over them.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from fmnist.errors import ModelError

# Test-time shifts of 1 px, (dy, dx): the four axis shifts, then the four diagonal ones.
SHIFTS = {
    "left": (0, -1),
    "right": (0, 1),
    "up": (-1, 0),
    "down": (1, 0),
    "up-left": (-1, -1),
    "up-right": (-1, 1),
    "down-left": (1, -1),
    "down-right": (1, 1),
}
FLIPPED = "flip-"  # "flip-left": mirrored left-right, then shifted 1 px left
VIEWS = {
    "identity": "the image as it is",
    "flip": "mirrored left-right",
    **{name: f"shifted 1 px {name.replace('-', ' and ')}" for name in SHIFTS},
    **{FLIPPED + name: f"mirrored, then shifted 1 px {name.replace('-', ' and ')}" for name in SHIFTS},
}
# The image and its eight 1 px shifts, each plain and mirrored: the best recipe's test-time views.
SHIFTED_AND_MIRRORED = ("identity", "flip", *SHIFTS, *(FLIPPED + name for name in SHIFTS))


# Random erasing's rectangle, as in Zhong et al.: its area a uniform fraction of the image's, its
# aspect ratio (height / width) log-uniform, so tall and wide rectangles are equally likely.
ERASE_AREA = (0.02, 0.4)
ERASE_ASPECT = (0.3, 3.3)


@dataclass(frozen=True)
class Augment:
    """Random translation (zero padding), horizontal flip and erasing, one draw per image per step."""

    shift: int = 2  # largest translation in pixels, each axis (0 = none)
    flip: bool = True  # mirror half the images left-right
    erase: float = 0.0  # probability of blanking a random rectangle of an image (0 = never)

    def __call__(self, x: jax.Array, key: jax.Array) -> jax.Array:
        k_shift, k_flip, k_erase = jax.random.split(key, 3)
        if self.shift:
            x = translate(x, jax.random.randint(k_shift, (x.shape[0], 2), -self.shift, self.shift + 1), self.shift)
        if self.flip:
            mirror = jax.random.bernoulli(k_flip, 0.5, (x.shape[0],))
            x = jnp.where(mirror[:, None, None], x[:, :, ::-1], x)
        if self.erase:
            x = erase(x, k_erase, self.erase)
        return x

    @property
    def active(self) -> bool:
        return bool(self.shift or self.flip or self.erase)


def erase(x: jax.Array, key: jax.Array, p: float) -> jax.Array:
    """Blank one random rectangle (see ERASE_AREA, ERASE_ASPECT) to 0 in a fraction ``p`` of the images."""
    n, h, w = x.shape[:3]
    k_on, k_area, k_aspect, k_y, k_x = jax.random.split(key, 5)
    area = jax.random.uniform(k_area, (n,), minval=ERASE_AREA[0], maxval=ERASE_AREA[1]) * h * w
    log_aspect = jax.random.uniform(k_aspect, (n,), minval=jnp.log(ERASE_ASPECT[0]), maxval=jnp.log(ERASE_ASPECT[1]))
    eh = jnp.clip(jnp.round(jnp.sqrt(area * jnp.exp(log_aspect))), 1, h).astype(jnp.int32)
    ew = jnp.clip(jnp.round(jnp.sqrt(area / jnp.exp(log_aspect))), 1, w).astype(jnp.int32)
    y0 = jax.random.randint(k_y, (n,), 0, h - eh + 1)  # the rectangle lies inside the image
    x0 = jax.random.randint(k_x, (n,), 0, w - ew + 1)
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    inside = (
        (rows >= y0[:, None, None]) & (rows < (y0 + eh)[:, None, None])
        & (cols >= x0[:, None, None]) & (cols < (x0 + ew)[:, None, None])
    )  # fmt: skip
    on = jax.random.bernoulli(k_on, p, (n,))[:, None, None]
    return jnp.where(on & inside, jnp.zeros_like(x), x)


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
    if name.startswith(FLIPPED):
        return view(x[:, :, ::-1], name.removeprefix(FLIPPED))
    return translate(x, jnp.broadcast_to(jnp.array(SHIFTS[name]), (x.shape[0], 2)), 1)


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
