"""The model behind the routes: loaded and warmed up in the background, then fed through one queue.

    service = ModelService("runs/default", ServeConfig())
    await service.start()                  # returns at once; service.ready turns True when warm
    probs = await service.probabilities(pixels)      # float32 (n, 28, 28), 0–255 -> (n, 10)

Every forward pass runs on one inference thread through ``Predictor.probabilities`` (the one
inference path, with the run's test-time views), so CPU-bound work never blocks the event
loop. ``InferenceQueue`` hands that thread whatever requests are waiting when it becomes
free, as one batch: no waiting window, so a lone request is never delayed, and under load
requests share passes. A queue over ``max_queue`` images answers 503 (overloaded).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fmnist import runs
from fmnist.data import IMAGE_SHAPE
from fmnist.errors import FmnistError
from fmnist.serve.config import MODEL_ALIAS, ServeConfig
from fmnist.serve.protocols import RequestError

PLATFORM = "keras_jax"  # V2 metadata's "platform"


class InferenceQueue:
    """Pixels from many requests -> forward passes on one thread, batched when requests overlap."""

    def __init__(self, forward: Callable[[np.ndarray], np.ndarray], executor: ThreadPoolExecutor, config: ServeConfig):
        self._forward, self._executor = forward, executor
        self._max_batch = config.max_batch if config.batch_requests else 1
        self._max_queue = config.max_queue
        self._pending: deque[tuple[np.ndarray, asyncio.Future]] = deque()
        self._queued = 0  # images waiting
        self._worker: asyncio.Task | None = None

    async def submit(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for ``pixels`` once a pass has computed them; 503 when too much is waiting."""
        if self._queued and self._queued + len(pixels) > self._max_queue:
            raise RequestError(f"overloaded: {self._queued} images are waiting for the model; retry shortly.", 503)
        future = asyncio.get_running_loop().create_future()
        self._pending.append((pixels, future))
        self._queued += len(pixels)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        """The next pass's requests: the first waiting one, then as many more as fit in max_batch."""
        items = [self._pending.popleft()]
        size = len(items[0][0])
        while self._pending and size + len(self._pending[0][0]) <= self._max_batch:
            items.append(self._pending.popleft())
            size += len(items[-1][0])
        self._queued -= size
        return items

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            items = self._take()
            live = [(x, f) for x, f in items if not f.done()]  # a client that went away is not computed for
            if not live:
                continue
            batch = live[0][0] if len(live) == 1 else np.concatenate([x for x, _ in live])
            try:
                probs = await loop.run_in_executor(self._executor, self._forward, batch)
            except Exception as e:
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
                continue
            start = 0
            for x, f in live:
                if not f.done():
                    f.set_result(probs[start : start + len(x)])
                start += len(x)


class ModelService:
    """A run's model, its name and facts, and whether it is ready to answer."""

    def __init__(self, run_or_model: str | Path, config: ServeConfig, telemetry=None):
        self.path = Path(run_or_model)
        self.config, self.telemetry = config, telemetry
        run_dir = runs.run_dir_of(self.path)
        self.name = run_dir.name if run_dir is not None else runs.resolve_model_path(self.path).stem
        self.facts = _facts(run_dir)
        self.predictor = None
        self.input_name = "pixels"  # replaced by the model's own input name once loaded
        self.error: str | None = None  # why loading failed, if it did
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fmnist-inference")
        self.queue = InferenceQueue(self._forward, self._executor, config)
        self._loading: asyncio.Future | None = None

    @property
    def ready(self) -> bool:
        return self.predictor is not None

    async def start(self) -> None:
        """Begin loading on the inference thread; returns at once."""
        self._loading = asyncio.get_running_loop().run_in_executor(self._executor, self._load)
        self._loading.add_done_callback(self._loaded)

    def _loaded(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            self.error = str(future.exception())

    def on_loaded(self, callback: Callable[[str | None], object]) -> None:
        """Call ``callback(None)`` on the event loop once the model is loaded and warm, or
        ``callback(reason)`` if loading failed (the server then answers 503 with the reason)."""

        def done(future: asyncio.Future) -> None:
            if not future.cancelled():
                callback(None if future.exception() is None else str(future.exception()))

        self._loading.add_done_callback(done)

    def _load(self) -> None:
        """Load the model and compile every batch size a pass can have, so no request waits for XLA."""
        from fmnist.predict import Predictor

        predictor = Predictor.load(self.path)
        size = 1
        while True:  # engine pads to powers of two: one compiled program per size
            predictor.probabilities(np.zeros((size, *IMAGE_SHAPE), np.float32))
            if size >= self.config.max_batch:
                break
            size *= 2
        self.input_name = predictor.model.inputs[0].name if predictor.model.inputs else self.input_name
        self.predictor = predictor

    def _forward(self, pixels: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        probs = self.predictor.probabilities(pixels)
        if self.telemetry is not None:
            self.telemetry.forward_pass(len(pixels), time.perf_counter() - started)
        return probs

    def knows(self, name: str) -> bool:
        """Whether ``name`` is this model: the run's name or the alias every server answers to."""
        return name in (self.name, MODEL_ALIAS)

    async def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 10) probabilities for float32 (n, 28, 28) pixels 0–255; 503 until the model is ready."""
        if not self.ready:
            raise RequestError(self.not_ready_message(), 503)
        return await self.queue.submit(pixels)

    def not_ready_message(self) -> str:
        if self.error:
            return f"the model could not be loaded: {self.error}"
        return "the model is still loading and warming up; retry in a few seconds."

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _facts(run_dir: Path | None) -> dict:
    """What the page shows about the model: its description and test accuracy, when the run has them."""
    if run_dir is None:
        return {"description": None, "accuracy": None}

    def optional(name: str) -> dict:  # page text only: a missing or damaged file leaves it out
        try:
            return runs.read_object(run_dir / name)
        except FmnistError:
            return {}

    config, metrics = optional(runs.CONFIG_FILE), optional(runs.METRICS_FILE)
    return {"description": config.get("model_description"), "accuracy": metrics.get("accuracy")}
