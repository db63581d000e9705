"""The FastAPI app: the routers of ``routes`` (KServe V2, TensorFlow Serving REST, the page and
/api/classify, /metrics, the API's docs) behind the ASGI layers of ``middleware``, the error form
they share, and what runs beside them while the app is up: the gRPC server (``grpc_server``) and
the run's watcher (``lifecycle``).

    app = create_app("runs/default", ServeConfig(api_key="s3cret"))

Every refusal is ``{"error": "..."}`` with the status that says why: 400 bad tensor or image,
401 API key, 404 unknown model or route, 413 too large, 415 media type, 503 not ready or
overloaded. Photos are decoded on a worker thread and forward passes run on the inference
thread, so the event loop only moves bytes.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from fmnist import __version__
from fmnist.serve.config import ServeConfig
from fmnist.serve.middleware import LimitBody, RecordRequests, RequireApiKey
from fmnist.serve.model import ModelService
from fmnist.serve.protocols import RequestError
from fmnist.serve.routes import classify, docs, ops, tf_serving, v2
from fmnist.serve.telemetry import Telemetry

RETRY_AFTER_SECONDS = "1"  # told to clients answered 503
ROUTERS = (classify.router, ops.router, v2.router, tf_serving.router)


def create_app(run_or_model: str | Path, config: ServeConfig | None = None, on_loaded=None) -> FastAPI:
    """The app for one run. The model loads in the background once the app starts; then
    ``on_loaded(None)`` is called, or ``on_loaded(reason)`` if it could not be loaded."""
    config = config or ServeConfig()
    telemetry = Telemetry()
    service = ModelService(run_or_model, config, telemetry)

    @asynccontextmanager
    async def lifespan(app):
        from fmnist.serve import lifecycle

        await service.start()
        if on_loaded is not None:
            service.on_loaded(on_loaded)
        try:
            async with lifecycle.beside(app, service, config, on_loaded):
                yield
        finally:  # after gRPC has stopped: its calls in flight still need the inference thread
            service.close()

    app = FastAPI(title="fmnist", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    app.state.service, app.state.telemetry, app.state.config = service, telemetry, config
    app.state.grpc_port = None  # the gRPC server's port once it listens
    error_handlers(app)
    for router in (*ROUTERS, docs.router) if config.docs else ROUTERS:
        app.include_router(router)
    app.state.begin_shutdown = None  # set while gRPC runs: stops it taking new calls (server.uvicorn_server)
    # Outermost last: counts see every answer, CORS headers go on refusals too, the key is checked before the body.
    app.add_middleware(LimitBody, limit=config.max_upload_bytes)
    app.add_middleware(RequireApiKey, api_key=config.api_key)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])  # fmt: skip
    app.add_middleware(RecordRequests, telemetry=telemetry)
    return app


def error(status: int, message: str) -> JSONResponse:
    """The server's one error form: ``{"error": message}`` (503s say when to retry)."""
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def error_handlers(app: FastAPI) -> None:
    """Turn every exception a route raises into :func:`error`'s form."""

    @app.exception_handler(RequestError)
    async def refused(request, e: RequestError):
        return error(e.status, str(e))

    @app.exception_handler(HTTPException)
    async def http_error(request, e: HTTPException):
        if e.status_code == 404:
            return error(404, f"no route {request.url.path}: see /docs for the V2, TF Serving and /api routes.")
        if e.status_code == 405:
            allowed = (e.headers or {}).get("Allow", "")
            answer = error(405, f"{request.method} is not allowed on {request.url.path}: use {allowed or 'another'}.")
            answer.headers["Allow"] = allowed
            return answer
        return error(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def crashed(request, e: Exception):  # a bug: still the JSON form (uvicorn logs the traceback)
        return error(500, f"internal error ({type(e).__name__}): the server's log has the details.")

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        return error(400, "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()))
