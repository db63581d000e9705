"""fmnist: train, evaluate, explain and serve a Fashion-MNIST clothing classifier.

    import fmnist
    (x_train, y_train), (x_test, y_test) = fmnist.load_data()
    model = fmnist.compile_model(fmnist.build_model())
    fmnist.fit(model, x_train, y_train, epochs=5)
    fmnist.evaluate(model, x_test, y_test)
    fmnist.plots.image(x_train[42])           # figures display inline in Jupyter

Names that need Keras/JAX (or matplotlib) are imported on first use, so ``import fmnist``
(and ``fmnist --help``) stays fast.
"""

from importlib import import_module

from fmnist.data import CLASS_NAMES, load_data
from fmnist.errors import DatasetError, DeviceError, DistributionError, FmnistError, ImageError, ModelError, RunError

__version__ = "0.1.0"

_LAZY = {
    "fit": "fmnist.engine",
    "evaluate": "fmnist.engine",
    "predict_proba": "fmnist.engine",
    "ModelSpec": "fmnist.models",
    "build_model": "fmnist.models",
    "compile_model": "fmnist.models",
    "TrainConfig": "fmnist.train",
    "train": "fmnist.train",
    "load_model": "fmnist.runs",
    "Predictor": "fmnist.predict",
    "to_fashion_mnist": "fmnist.images",
    "load_image": "fmnist.images",
}
_MODULES = ("plots",)  # public modules, imported on first use: fmnist.plots.image(...)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    if name in _MODULES:
        return import_module(f"fmnist.{name}")
    raise AttributeError(f"module 'fmnist' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY, *_MODULES])


__all__ = [
    "CLASS_NAMES",
    "DatasetError",
    "DeviceError",
    "DistributionError",
    "FmnistError",
    "ImageError",
    "ModelError",
    "RunError",
    "load_data",
    *_LAZY,
    *_MODULES,
]
