"""fmnist.kernels: the CPU forms of conv and max pooling compute what Keras' own ops compute
(values and gradients), conv models trained by fmnist.fit match Model.fit, and saved conv
models stay plain Keras."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmnist import engine, kernels, models
from fmnist._backend import keras


def lax_conv(x, k, padding, strides=(1, 1)):
    return jax.lax.conv_general_dilated(x, k, strides, padding.upper(), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def lax_max_pool(x, k):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, k, k, 1), "VALID")


@pytest.mark.parametrize(
    ("shape", "kernel", "padding", "strides"),
    [
        ((2, 28, 28, 1), (3, 3, 1, 4), "same", (1, 1)),
        ((3, 7, 9, 5), (3, 3, 5, 6), "valid", (1, 1)),
        ((2, 6, 6, 3), (2, 2, 3, 2), "same", (1, 1)),
        ((2, 14, 14, 3), (3, 3, 3, 4), "same", (2, 2)),  # even size: SAME pads 0 before, 1 after
        ((2, 7, 9, 2), (3, 3, 2, 3), "same", (2, 2)),  # odd sizes: ceil(7 / 2) = 4 rows out
        ((1, 9, 8, 2), (3, 2, 2, 3), "valid", (2, 3)),
    ],
)
def test_patch_conv_equals_xla_conv_with_gradients(shape, kernel, padding, strides):
    rng = np.random.default_rng(0)
    x, k = jnp.asarray(rng.normal(size=shape), jnp.float32), jnp.asarray(rng.normal(size=kernel), jnp.float32)
    ours, theirs = kernels.conv2d_patches(x, k, padding, strides), lax_conv(x, k, padding, strides)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)

    def loss(conv):
        return lambda x, k: jnp.sum(jnp.sin(conv(x, k, padding, strides)))

    ours, theirs = jax.grad(loss(kernels.conv2d_patches), (0, 1))(x, k), jax.grad(loss(lax_conv), (0, 1))(x, k)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 28, 28, 3), (1, 7, 7, 2), (2, 14, 15, 1)])  # odd sizes drop the last row/col
def test_block_max_pool_equals_reduce_window_including_ties(shape):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.integers(0, 3, size=shape), jnp.float32)  # values 0-2: many ties in every window
    np.testing.assert_array_equal(kernels.max_pool_blocks(x, 2), lax_max_pool(x, 2))
    g = jnp.asarray(rng.normal(size=lax_max_pool(x, 2).shape), jnp.float32)
    ours = jax.vjp(lambda x: kernels.max_pool_blocks(x, 2), x)[1](g)[0]
    theirs = jax.vjp(lambda x: lax_max_pool(x, 2), x)[1](g)[0]
    np.testing.assert_array_equal(ours, theirs)  # each window's gradient goes to its first maximum


def test_keras_ops_are_routed_only_inside_the_block_and_fall_back_when_unsupported():
    from keras.src.backend.jax import nn as keras_jax_nn

    before = keras_jax_nn.conv
    x = np.random.default_rng(2).normal(size=(1, 8, 8, 2)).astype(np.float32)
    dilated = keras.layers.Conv2D(3, 3, dilation_rate=2)  # not a form kernels.py has: Keras' own op
    plain = np.asarray(dilated(x))
    with kernels.cpu_kernels():
        assert keras_jax_nn.conv is not before
        np.testing.assert_allclose(np.asarray(dilated(x)), plain, rtol=1e-6)
    assert keras_jax_nn.conv is before


def cnn(seed=0, **spec):
    keras.utils.set_random_seed(seed)
    spec = {"arch": "cnn", "conv_filters": (4, 8), "hidden": (16,)} | spec
    return models.compile_model(models.build_model(models.ModelSpec(**spec)))


@pytest.mark.parametrize("spec", [{}, {"pool_first": True}, {"pool_first": True, "conv_strides": (1, 2)}])
def test_conv_model_trained_by_fit_matches_model_fit(tiny_data, spec):
    """Same batches, same initial weights: the patch conv and block pool train as Keras' ops do."""
    x, y = tiny_data[0][:96], tiny_data[1][:96]
    ours, theirs = cnn(**spec), cnn(**spec)
    engine.fit(ours, x, y, epochs=2, batch_size=32, shuffle=False)
    theirs.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)


def kinds(**spec):
    """The layer types of ``cnn(**spec)`` after its Rescaling."""
    return [type(layer).__name__ for layer in cnn(**spec).layers if type(layer).__name__ != "Rescaling"]


def test_pool_first_pools_each_conv_before_its_normalisation():
    block = ["Conv2D", "BatchNormalization", "Activation", "MaxPooling2D"]
    assert kinds()[1:9] == block * 2
    assert kinds(pool_first=True)[1:9] == ["Conv2D", "MaxPooling2D", "BatchNormalization", "Activation"] * 2


def test_a_strided_block_downsamples_by_its_stride_instead_of_pooling():
    model, layers = cnn(pool_first=True, conv_strides=(1, 2)), kinds(pool_first=True, conv_strides=(1, 2))
    pooled, strided = ["Conv2D", "MaxPooling2D", "BatchNormalization", "Activation"], layers[5:9]
    assert layers[1:5] == pooled and strided == ["Conv2D", "BatchNormalization", "Activation", "Flatten"]
    assert model.get_layer("conv1").strides == (2, 2) and model.get_layer("flatten").output.shape == (None, 7 * 7 * 8)
    assert "strides 1-2" in models.ModelSpec(arch="cnn", conv_strides=(1, 2)).describe()
    with pytest.raises(models.ModelError, match=r"one positive stride per conv block \(2 blocks"):
        models.ModelSpec(arch="cnn", conv_filters=(32, 64), conv_strides=(2,))


def test_saved_conv_model_is_plain_keras_and_predicts_identically(tiny_data, tmp_path):
    from fmnist import runs

    x, y = tiny_data
    model = cnn()
    engine.fit(model, x, y, epochs=1)
    path = runs.save_model(tmp_path / "model.keras", model)
    loaded = keras.saving.load_model(path)
    assert {type(layer).__module__.split(".")[0] for layer in loaded.layers} == {"keras"}
    np.testing.assert_array_equal(engine.predict_proba(loaded, x), engine.predict_proba(model, x))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), engine.predict_proba(model, x), rtol=1e-4, atol=1e-6)
