"""Import Keras on the JAX backend. Every module that needs Keras imports it from here.

Keras reads ``KERAS_BACKEND`` once, at its first import, so this has to run before
anything else imports ``keras``; a process that already loaded another backend gets
a clear error instead of silently slow or wrong training.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras

from fmnist.errors import ModelError

if keras.backend.backend() != "jax":
    raise ModelError(
        f"Keras is running on the {keras.backend.backend()!r} backend, but fmnist needs 'jax': "
        "set KERAS_BACKEND=jax before Keras is first imported (or import fmnist first)."
    )

__all__ = ["keras"]
