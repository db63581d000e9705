"""The model behind the routes: loaded and warmed up in the background, then fed through one queue.

    service = ModelService("runs/default", ServeConfig())
    await service.start()                  # returns at once; service.ready turns True when warm
    probs = await service.probabilities(pixels)      # float32 (n, 28, 28), 0–255 -> (n, 10)
    await service.reload()                 # the run again, as it is on disk now: swapped in when warm

Every forward pass runs on one inference thread through ``Predictor.probabilities`` (the one
inference path, with the run's test-time views), so CPU-bound work never blocks the event
loop. ``InferenceQueue`` hands that thread whatever requests are waiting when it becomes
free, as one batch: no waiting window, so a lone request is never delayed, and under load
requests share passes. A queue over ``max_queue`` images answers 503 (overloaded).

A reload loads and warms the new model on a loader thread while the old one keeps answering,
then swaps it in at once. Each queued request keeps the model it arrived under, so requests in
flight finish on the old model; when the last has, the server lets go of the old model, and its
compiled programs go with it (each model has its own: ``fmnist.inference``), while the new
model's, compiled by the warm-up, stay: the first request after a swap compiles nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from fmnist import runs
from fmnist.data import IMAGE_SHAPE
from fmnist.errors import FmnistError
from fmnist.serve.config import MODEL_ALIAS, ServeConfig
from fmnist.serve.protocols import RequestError

PLATFORM = "keras_jax"  # V2 metadata's "platform"


@dataclass(eq=False)
class ServedModel:
    """One loaded, warm model and the version the server calls it (1, then one more per reload)."""

    predictor: object  # fmnist.predict.Predictor
    version: int
    input_name: str
    forward: Callable | None = None  # its forward pass, as the queue takes it (one object: batches group by it)
    in_flight: int = 0  # requests queued or computing on it
    idle: asyncio.Event | None = None  # set when in_flight drops to 0 (made when a reload waits for it)

    def done(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self.idle is not None:
            self.idle.set()


class InferenceQueue:
    """Pixels from many requests -> forward passes on one thread, batched when requests overlap."""

    def __init__(self, executor: ThreadPoolExecutor, config: ServeConfig):
        self._executor = executor
        self._max_batch = config.max_batch if config.batch_requests else 1
        self._max_queue = config.max_queue
        self._pending: deque[tuple[np.ndarray, Callable, asyncio.Future]] = deque()
        self._queued = 0  # images waiting
        self._worker: asyncio.Task | None = None

    async def submit(self, pixels: np.ndarray, forward: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Probabilities for ``pixels`` once a pass of ``forward`` has computed them; 503 when too much
        is waiting. Requests share a pass only with requests for the same forward."""
        if self._queued and self._queued + len(pixels) > self._max_queue:
            raise RequestError(f"overloaded: {self._queued} images are waiting for the model; retry shortly.", 503)
        future = asyncio.get_running_loop().create_future()
        self._pending.append((pixels, forward, future))
        self._queued += len(pixels)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[np.ndarray, Callable, asyncio.Future]]:
        """The next pass's requests: the first waiting one, then as many more for its forward as fit in max_batch."""
        items = [self._pending.popleft()]
        size, forward = len(items[0][0]), items[0][1]
        while self._pending and self._pending[0][1] is forward and size + len(self._pending[0][0]) <= self._max_batch:
            items.append(self._pending.popleft())
            size += len(items[-1][0])
        self._queued -= size
        return items

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            items = self._take()
            live = [(x, f) for x, _, f in items if not f.done()]  # a client that went away is not computed for
            if not live:
                continue
            batch = live[0][0] if len(live) == 1 else np.concatenate([x for x, _ in live])
            try:
                probs = await loop.run_in_executor(self._executor, items[0][1], batch)
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
    """A run's model, its name and facts, whether it is ready to answer, and its reloads."""

    def __init__(self, run_or_model: str | Path, config: ServeConfig, telemetry=None):
        self.path = Path(run_or_model)
        self.config, self.telemetry = config, telemetry
        run_dir = runs.run_dir_of(self.path)
        self.name = run_dir.name if run_dir is not None else runs.resolve_model_path(self.path).stem
        self.facts = _facts(run_dir)
        self.current: ServedModel | None = None
        self.error: str | None = None  # why loading failed, if it did
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fmnist-inference")
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="fmnist-loader")  # reloads, beside inference
        self.queue = InferenceQueue(self._executor, config)
        self._loading: asyncio.Future | None = None
        self._reloading: asyncio.Lock | None = None

    @property
    def ready(self) -> bool:
        return self.current is not None

    @property
    def input_name(self) -> str:
        return "pixels" if self.current is None else self.current.input_name  # "pixels" until loaded

    @property
    def version(self) -> str:
        return str(self.current.version if self.current is not None else 1)

    async def start(self) -> None:
        """Begin loading on the inference thread; returns at once."""
        self._loading = asyncio.get_running_loop().run_in_executor(self._executor, self._load)
        self._loading.add_done_callback(self._loaded)

    def _loaded(self, future: asyncio.Future) -> None:
        if future.cancelled() or self.current is not None:  # a reload finished first: its model is the newer
            return
        if future.exception() is not None:
            self.error = str(future.exception())
        else:
            self.current = future.result()

    def on_loaded(self, callback: Callable[[str | None], object]) -> None:
        """Call ``callback(None)`` on the event loop once the model is loaded and warm, or
        ``callback(reason)`` if loading failed (the server then answers 503 with the reason)."""

        def done(future: asyncio.Future) -> None:
            if not future.cancelled():
                callback(None if future.exception() is None else str(future.exception()))

        self._loading.add_done_callback(done)

    def _load(self) -> ServedModel:
        """Load the model and warm it up (see _warm)."""
        from fmnist.predict import Predictor

        predictor = Predictor.load(self.path)
        self._warm(predictor)
        name = predictor.model.inputs[0].name if predictor.model.inputs else "pixels"
        loaded = ServedModel(predictor, 1, name)
        loaded.forward = partial(self._forward, loaded)
        return loaded

    def _warm(self, predictor) -> None:
        """Compile every batch size a pass can have, so no request waits for XLA."""
        size = 1
        while True:  # engine pads to powers of two: one compiled program per size
            predictor.probabilities(np.zeros((size, *IMAGE_SHAPE), np.float32))
            if size >= self.config.max_batch:
                break
            size *= 2

    def _forward(self, model: ServedModel, pixels: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        probs = model.predictor.probabilities(pixels)
        if self.telemetry is not None:
            self.telemetry.forward_pass(len(pixels), time.perf_counter() - started)
        return probs

    def knows(self, name: str) -> bool:
        """Whether ``name`` is this model: the run's name or the alias every server answers to."""
        return name in (self.name, MODEL_ALIAS)

    async def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 10) probabilities for float32 (n, 28, 28) pixels 0–255; 503 until the model is ready."""
        return (await self.infer(pixels))[0]

    async def infer(self, pixels: np.ndarray) -> tuple[np.ndarray, str]:
        """(probabilities, the version of the model that computed them)."""
        model = self.current
        if model is None:
            raise RequestError(self.not_ready_message(), 503)
        model.in_flight += 1
        try:
            return await self.queue.submit(pixels, model.forward), str(model.version)
        finally:
            model.done()

    async def reload(self) -> str:
        """Load the run again as it is on disk now, warm it up beside the serving model, swap it in,
        and release the old model once its requests are answered. Returns the new version; raises
        ``RequestError`` (400) if the new model cannot be loaded (the old one keeps serving)."""
        self._reloading = self._reloading or asyncio.Lock()
        async with self._reloading:
            try:
                new = await asyncio.get_running_loop().run_in_executor(self._loader, self._load)
            except FmnistError as e:
                raise RequestError(f"the model could not be loaded again: {e}") from e
            old = self.current  # read after the load: the first load may have finished meanwhile
            version = (old.version if old is not None else 0) + 1
            new.version = version
            self.current, self.error = new, None  # the swap: requests from now on queue for the new model
            self.facts = _facts(runs.run_dir_of(self.path))
            if old is not None:
                await self._release(old)
            return str(version)

    @staticmethod
    async def _release(old: ServedModel) -> None:
        """Wait for ``old``'s last request, then let go of it: nothing else holds its model, so the model
        and its compiled programs are freed (no other model's programs are touched)."""
        if old.in_flight:
            old.idle = asyncio.Event()
            await old.idle.wait()
        old.predictor = old.forward = None

    def not_ready_message(self) -> str:
        if self.error:
            return f"the model could not be loaded: {self.error}"
        return "the model is still loading and warming up; retry in a few seconds."

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._loader.shutdown(wait=False, cancel_futures=True)


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
