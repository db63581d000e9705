"""CPU forms of Keras' 2-D convolution and max pooling, used inside fmnist's compiled programs.

A saved model keeps Keras' own ``Conv2D`` and ``MaxPooling2D`` layers (it opens anywhere
with ``keras.saving.load_model``); only while fmnist traces a training step or its forward
pass on the CPU does ``cpu_kernels()`` route those two ops here. Same maths, different
XLA:CPU programs (benchmarks/conv_speed.py, BENCHMARKS.md):

- a convolution (any stride) as one matrix product over its image patches ("im2col"):
  in a whole conv training step it beat XLA's own convolution, and unlike it stays fast
  inside a compiled loop of steps (XLA's convolution made a looped step several times slower);
- non-overlapping max pooling as a reshape and a max, with a gradient that routes each
  window's gradient to its first maximum, as XLA's ``select_and_scatter`` does, but in
  elementwise code: the gradient of ``lax.reduce_window`` max took most of a conv step.

Anything else (dilation, groups, channels_first, overlapping pools, other backends than
the CPU) goes to Keras' own implementation unchanged.
"""

from __future__ import annotations

import contextlib
import threading
from functools import partial

import jax
import jax.numpy as jnp

from fmnist import accelerator

MAX_PATCH = 9  # kernels up to 3x3 are unrolled into patches; larger ones keep XLA's convolution


# --------------------------------------------------------------------------- convolution
def conv2d_patches(x, kernel, padding: str, strides: tuple[int, int] = (1, 1)):
    """NHWC ``x`` (n, h, w, cin) * HWIO ``kernel`` (kh, kw, cin, cout) with ``strides``, as one matmul."""
    kh, kw, cin, cout = kernel.shape
    sh, sw = strides
    if padding == "same":  # as XLA's SAME: output ceil(size / stride), the odd padding pixel goes last
        ph = max((-(-x.shape[1] // sh) - 1) * sh + kh - x.shape[1], 0)
        pw = max((-(-x.shape[2] // sw) - 1) * sw + kw - x.shape[2], 0)
        x = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    n, h, w, _ = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    # Patches in (row, column, channel) order: the order of kernel.reshape(kh * kw * cin, cout).
    patches = jnp.concatenate(
        [x[:, i : i + (oh - 1) * sh + 1 : sh, j : j + (ow - 1) * sw + 1 : sw] for i in range(kh) for j in range(kw)],
        axis=-1,
    )
    out = _matmul(patches.reshape(n * oh * ow, kh * kw * cin), kernel.reshape(kh * kw * cin, cout))
    return out.reshape(n, oh, ow, cout)


@jax.custom_vjp
def _matmul(a, b):
    return a @ b


def _matmul_fwd(a, b):
    return a @ b, (a, b)


def _matmul_bwd(residuals, g):
    a, b = residuals
    # The input gradient g @ b.T with b transposed in memory first: XLA:CPU's product with a
    # transposed right-hand side ran 2.5x slower than the same product laid out plainly.
    b_t = jax.lax.optimization_barrier(b.T)
    return g @ b_t, a.T @ g


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _conv(keras_conv, inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    ok = (
        inputs.ndim == 4
        and _channels_last(data_format)
        and min(_pair(strides)) >= 1
        and _all_one(dilation_rate)
        and str(padding).lower() in ("same", "valid")
        and kernel.shape[-2] == inputs.shape[-1]  # no grouped convolutions
        and kernel.shape[0] * kernel.shape[1] <= MAX_PATCH
    )
    if not ok:
        return keras_conv(inputs, kernel, strides, padding, data_format, dilation_rate)
    x = jnp.asarray(inputs, kernel.dtype)
    return conv2d_patches(x, jnp.asarray(kernel), str(padding).lower(), _pair(strides))


# --------------------------------------------------------------------------- max pooling
@partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool_blocks(x, k: int):
    """Max over non-overlapping k×k blocks of NHWC ``x`` (rows/columns past a whole block dropped)."""
    return _blocks(x, k).max(axis=(2, 4))


def _blocks(x, k):
    n, h, w, c = x.shape
    return x[:, : h // k * k, : w // k * k].reshape(n, h // k, k, w // k, k, c)


def _max_pool_fwd(x, k):
    out = max_pool_blocks(x, k)
    return out, (x, out)


def _max_pool_bwd(k, residuals, g):
    x, out = residuals
    blocks = _blocks(x, k)
    # Each window's gradient goes to its first maximum in row-major order, as select_and_scatter does.
    taken = jnp.zeros(out.shape, bool)
    rows = []
    for i in range(k):
        cols = []
        for j in range(k):
            first = (blocks[:, :, i, :, j] == out) & ~taken
            taken = taken | first
            cols.append(jnp.where(first, g, 0))
        rows.append(jnp.stack(cols, axis=3))  # (n, oh, ow, k, c)
    dx = jnp.stack(rows, axis=2)  # (n, oh, k, ow, k, c)
    n, h, w, c = x.shape
    dx = dx.reshape(n, h // k * k, w // k * k, c)
    return (jnp.pad(dx, ((0, 0), (0, h - dx.shape[1]), (0, w - dx.shape[2]), (0, 0))),)


max_pool_blocks.defvjp(_max_pool_fwd, _max_pool_bwd)


def _max_pool(keras_max_pool, inputs, pool_size, strides=None, padding="valid", data_format=None):
    size = _pair(pool_size)
    ok = (
        inputs.ndim == 4
        and _channels_last(data_format)
        and size[0] == size[1]
        and (strides is None or _pair(strides) == size)
        and str(padding).lower() == "valid"
    )
    if not ok:
        return keras_max_pool(inputs, pool_size, strides, padding, data_format)
    return max_pool_blocks(jnp.asarray(inputs), size[0])


# --------------------------------------------------------------------------- switching them in
_LOCK = threading.RLock()


@contextlib.contextmanager
def cpu_kernels():
    """While tracing inside this block, Keras' conv and max_pool (JAX backend) use the forms above.

    Only where the device kind this process trains on says so (fmnist.accelerator.CHOICES: the CPU's
    row, also under ``--platform cpu`` on a GPU machine); elsewhere XLA's own kernels (cuDNN, ...) are
    the fast ones. The switch is process-wide for the duration of the block, so it holds a lock: two
    threads tracing at once take turns.
    """
    if not accelerator.choices(accelerator.current_kind()).cpu_kernels:
        yield
        return
    from keras.src.backend.jax import nn as keras_jax_nn

    with _LOCK:
        saved = keras_jax_nn.conv, keras_jax_nn.max_pool
        keras_jax_nn.conv = partial(_conv, saved[0])
        keras_jax_nn.max_pool = partial(_max_pool, saved[1])
        try:
            yield
        finally:
            keras_jax_nn.conv, keras_jax_nn.max_pool = saved


def _channels_last(data_format) -> bool:
    from keras import config

    return (data_format or config.image_data_format()) == "channels_last"


def _pair(v) -> tuple[int, int]:
    v = (v, v) if isinstance(v, int) else tuple(v)
    return (int(v[0]), int(v[-1])) if len(v) in (1, 2) else (-1, -2)


def _all_one(v) -> bool:
    return all(int(s) == 1 for s in ((v,) if isinstance(v, int) else v))
