"""Shared fixtures: the real dataset (installed by `make test`) and one trained seed run.

Unit tests use tiny generated data; integration tests use the real files. Under CI the
real data must be present (a missing dataset fails instead of skipping).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Under CI, property tests draw the same examples every run: a red CI is then a real regression.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

os.environ.setdefault("KERAS_BACKEND", "jax")
# fmnist's array cache lives in a temporary folder for the whole session, never in ~/.cache.
_SESSION_CACHE = tempfile.mkdtemp(prefix="fmnist-test-cache-")
os.environ["FMNIST_CACHE_DIR"] = _SESSION_CACHE


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch):
    monkeypatch.setenv("FMNIST_CACHE_DIR", _SESSION_CACHE)


@pytest.fixture(scope="session")
def dataset():
    """The real Fashion-MNIST arrays, or a skip (a failure under CI) when not installed."""
    from fmnist import data
    from fmnist.errors import DatasetError

    try:
        return data.load_data(download_missing=False)
    except DatasetError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"real dataset not installed: {e}")


@pytest.fixture(scope="session")
def seed_run(dataset, tmp_path_factory) -> Path:
    """A run directory holding the tutorial's seed model trained for 3 epochs on the full set."""
    from fmnist.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "seed"
    train(TrainConfig(epochs=3, validation_split=0.1, seed=0), out, dataset=dataset)
    return out


@pytest.fixture
def tiny_data():
    """200 random 28×28 uint8 images with labels 0–9: fast unit tests of the training path."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(200, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=200).astype(np.uint8)
    return x, y
