"""What runs beside the routes while the app is up: the gRPC server and the run's watcher.

    async with beside(app, service, config, on_loaded):   # in the app's lifespan
        ...                                               # serving

``--watch`` looks at the run every ``WATCH_SECONDS``: fmnist writes a run into a hidden stage
and renames it into place when it is complete (``runs.staged_dir``), so a run directory (or a
``.keras`` file, also renamed into place) whose identity changed is a complete new model, and a
missing one is a rename half-done: the model being served stays until the new one is there.
The new model is loaded and swapped in by ``ModelService.reload``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from fmnist import runs
from fmnist.errors import FmnistError
from fmnist.serve.config import WATCH_SECONDS, ServeConfig

GRPC_GRACE_SECONDS = 5.0  # on shutdown, RPCs in flight get this long to finish


def signature(path: Path) -> tuple | None:
    """What identifies the model file on disk now (None while it is missing)."""
    try:
        model = runs.resolve_model_path(path)
        folder, file = os.stat(path), os.stat(model)
    except (FmnistError, OSError):
        return None
    return folder.st_ino, file.st_ino, file.st_mtime_ns, file.st_size


async def watch(service, on_loaded=None, every: float = WATCH_SECONDS) -> None:
    """Reload ``service`` whenever its run is replaced by a complete new one (until cancelled)."""
    seen = signature(service.path)
    while True:
        await asyncio.sleep(every)
        now = signature(service.path)
        if now is None or now == seen:  # a server whose first load failed is mended by a good run too
            continue
        seen = now
        try:
            await service.reload()
            reason = None
        except FmnistError as e:  # a damaged new run: the old model keeps serving
            reason = str(e)
        except Exception as e:  # anything else is said too, and the watch goes on
            reason = f"the model could not be loaded again ({type(e).__name__}: {e})"
        if on_loaded is not None:
            on_loaded(reason)


@contextlib.asynccontextmanager
async def beside(app, service, config: ServeConfig, on_loaded=None) -> AsyncIterator[None]:
    """Start the gRPC server (``config.grpc_port``) and the watcher (``config.watch``); stop both on exit,
    letting RPCs in flight finish. ``app.state.begin_shutdown()`` stops gRPC taking new calls as soon as
    shutdown begins (while HTTP drains); exiting waits until the calls in flight are answered."""
    stopping: asyncio.Task | None = None
    if config.grpc_port is not None:
        from fmnist.serve import grpc_server

        grpc, app.state.grpc_port = await grpc_server.start(service, config)

        def begin_shutdown() -> asyncio.Task:
            nonlocal stopping
            stopping = stopping or asyncio.ensure_future(grpc.stop(GRPC_GRACE_SECONDS))
            return stopping

        app.state.begin_shutdown = begin_shutdown
    watcher = asyncio.create_task(watch(service, on_loaded)) if config.watch else None
    try:
        yield
    finally:
        if watcher is not None:
            watcher.cancel()
        if config.grpc_port is not None:
            await app.state.begin_shutdown()
