"""Shared fixtures: the real dataset (installed by `make test`), one trained seed run, and that run served.

Unit tests use tiny generated data; integration tests use the real files. Under CI the
real data must be present (a missing dataset fails instead of skipping).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

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


@pytest.fixture(scope="module")
def tiny_run(dataset, tmp_path_factory) -> Path:
    """A run directory written by `fmnist train` in seconds (8 hidden units, 300 images, 1 epoch); one per module."""
    from typer.testing import CliRunner

    from fmnist import cli

    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = CliRunner().invoke(
        cli.app, ["train", "--limit", "300", "--epochs", "1", "--hidden", "8", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def tiny_data():
    """200 random 28×28 uint8 images with labels 0–9: fast unit tests of the training path."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(200, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=200).astype(np.uint8)
    return x, y


# --------------------------------------------------------------------------- a real server
SERVE_KEY = "test-key-0123"  # the API key the shared test server requires
SERVE_ORIGIN = "https://shop.example"  # the one browser origin it allows (CORS)
SERVER_READY_SECONDS = 120  # loading and compiling the model, on a busy 2-core machine


@contextmanager
def running_server(app):
    """``app`` served by uvicorn on 127.0.0.1, a free port, in a thread; yields its URL once the
    model is ready, stops the server when the block ends."""
    import httpx

    from fmnist.serve import ServeConfig, bind, url
    from fmnist.serve.server import uvicorn_server

    sock = bind(ServeConfig(host="127.0.0.1", port=0))
    server = uvicorn_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = url(sock)
    try:
        deadline = time.monotonic() + SERVER_READY_SECONDS
        while True:
            try:
                if httpx.get(base + "v2/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and thread.is_alive(), "the test server did not become ready"
            time.sleep(0.2)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="session")
def live_server(seed_run):
    """The seed run served for real (uvicorn on 127.0.0.1) with an API key, one CORS origin and small limits."""
    from fmnist.serve import ServeConfig, create_app

    config = ServeConfig(api_key=SERVE_KEY, cors_origins=(SERVE_ORIGIN,), max_batch=16, max_upload_mb=1.0,
                         max_pixels=2_000_000)  # fmt: skip
    with running_server(create_app(seed_run, config)) as base:
        yield SimpleNamespace(url=base, key=SERVE_KEY, origin=SERVE_ORIGIN, config=config, run=seed_run)


# --------------------------------------------------------------------------- a local Ray
RAY_TEST_CPUS = 2  # the local Ray the executor tests share: two one-CPU tasks at a time


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray for the session's executor tests (joined, not started, by fmnist), shut down at the end."""
    import logging

    if os.environ.get("CI"):  # installed by the test extra: missing is a failure there
        import ray
    else:
        ray = pytest.importorskip("ray")

    ray.init(num_cpus=RAY_TEST_CPUS, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        yield ray
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------- the CLI, in-process or not
def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """`fmnist ARGS` through cli.main() in this process: (exit code, stdout, stderr)."""
    from fmnist import cli

    capsys.readouterr()
    argv, sys.argv = sys.argv, ["fmnist", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    """Wait for ``proc`` (killed if it outlives ``timeout``): (exit code, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(), err.decode()
