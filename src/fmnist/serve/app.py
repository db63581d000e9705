"""The FastAPI app: KServe V2, TensorFlow Serving REST, /api/classify for the page, /metrics, the page.

    app = create_app("runs/default", ServeConfig(api_key="s3cret"))

Routes parse their JSON themselves (no pydantic models), so every refusal is the issue's
``{"error": "..."}`` with the status that says why: 400 bad tensor or image, 401 API key,
404 unknown model or route, 413 too large, 415 media type, 503 not ready or overloaded.
Photos are decoded on a worker thread and forward passes run on the inference thread, so
the event loop only moves bytes.
"""

from __future__ import annotations

import base64
import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from fmnist import __version__
from fmnist.data import NUM_CLASSES
from fmnist.errors import ImageError, ImageTooLargeError
from fmnist.serve import protocols
from fmnist.serve.config import MODEL_ALIAS, ServeConfig
from fmnist.serve.metrics import CONTENT_TYPE, Metrics
from fmnist.serve.middleware import LimitBody, RecordRequests, RequireApiKey
from fmnist.serve.model import PLATFORM, ModelService
from fmnist.serve.protocols import RequestError

DEFAULT_TOP_K = 3
PAGE_TOP_K = 5  # bars the page shows
RETRY_AFTER_SECONDS = "1"  # told to clients answered 503
PHOTO_FIELD = "file"  # the multipart field /api/classify reads
INLINE_JSON_BYTES = 64 * 1024  # larger JSON bodies are parsed on a worker thread (one image is ~3 kB)


def create_app(run_or_model: str | Path, config: ServeConfig | None = None, on_loaded=None) -> FastAPI:
    """The app for one run. The model loads in the background once the app starts; then
    ``on_loaded(None)`` is called, or ``on_loaded(reason)`` if it could not be loaded."""
    config = config or ServeConfig()
    metrics = Metrics()
    service = ModelService(run_or_model, config, metrics)

    @asynccontextmanager
    async def lifespan(app):
        await service.start()
        if on_loaded is not None:
            service.on_loaded(on_loaded)
        try:
            yield
        finally:
            service.close()

    app = FastAPI(title="fmnist", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    app.state.service, app.state.metrics, app.state.config = service, metrics, config
    _error_handlers(app)
    _routes(app, service, metrics, config)
    # Outermost last: metrics see every answer, CORS headers go on refusals too, the key is checked before the body.
    app.add_middleware(LimitBody, limit=config.max_upload_bytes)
    app.add_middleware(RequireApiKey, api_key=config.api_key)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])  # fmt: skip
    app.add_middleware(RecordRequests, metrics=metrics)
    return app


# --------------------------------------------------------------------------- errors
def error(status: int, message: str) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def refused(request, e: RequestError):
        return error(e.status, str(e))

    @app.exception_handler(HTTPException)
    async def http_error(request, e: HTTPException):
        if e.status_code == 404:
            return error(404, f"no route {request.url.path}: see the README for the V2, TF Serving and /api routes.")
        return error(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def crashed(request, e: Exception):  # a bug: still the JSON form (uvicorn logs the traceback)
        return error(500, f"internal error ({type(e).__name__}): the server's log has the details.")

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        return error(400, "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()))


# --------------------------------------------------------------------------- request bodies
async def parsed_json(request: Request, parse, *args):
    """``parse(json, *args)`` of the request's JSON body: inline when the body is small, on a worker
    thread when it is large (a big tensor takes milliseconds to parse that other requests would
    wait for). 415 for another declared media type, 400 for text that is not JSON."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise RequestError(f"the body must be JSON (Content-Type: application/json), not {media}.", 415)
    raw = await request.body()

    def work():
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise RequestError(f"the body is not valid JSON ({e}).") from e
        return parse(body, *args)

    return work() if len(raw) <= INLINE_JSON_BYTES else await run_in_threadpool(work)


async def photo_body(request: Request) -> bytes:
    """An uploaded photo: the multipart field ``file``, or a raw ``image/*`` body."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get(PHOTO_FIELD)
            if upload is None or isinstance(upload, str):
                raise RequestError(f"the form has no file field {PHOTO_FIELD!r}: upload the photo as {PHOTO_FIELD}.")
            return await upload.read()
    if media.startswith("image/"):
        return await request.body()
    raise RequestError(f"send a photo as multipart/form-data (field {PHOTO_FIELD!r}) or an image/* body, not "
                       f"{media or 'a body without Content-Type'}.", 415)  # fmt: skip


def prepare_photo(data: bytes, max_pixels: int, name: str = "the uploaded image") -> np.ndarray:
    """Photo bytes -> the uint8 28×28 image, by ``fmnist predict``'s preprocessing under ``--max-pixels``
    (400 if it cannot be decoded, 413 if it has more pixels)."""
    from fmnist import images

    try:
        return images.to_fashion_mnist(images.decode_image(data, max_pixels, name))
    except ImageTooLargeError as e:
        raise RequestError(f"{e} (--max-pixels)", 413) from e
    except ImageError as e:
        raise RequestError(str(e)) from e


def png_base64(image: np.ndarray) -> str:
    from fmnist import images

    return base64.b64encode(images.png_bytes(image)).decode("ascii")


# --------------------------------------------------------------------------- routes
def _routes(app: FastAPI, service: ModelService, metrics: Metrics, config: ServeConfig) -> None:
    def model_named(name: str) -> None:
        if not service.knows(name):
            raise RequestError(
                f"no model named {name!r}: this server serves {service.name!r} (or {MODEL_ALIAS!r}).", 404
            )

    @app.get("/", response_class=HTMLResponse)
    async def page():
        from fmnist import pages

        return pages.render("serve.html", name=service.name, facts=service.facts, needs_key=bool(config.api_key),
                            max_upload_mb=config.max_upload_mb, top_k=PAGE_TOP_K)  # fmt: skip

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    # ---- KServe V2 / Open Inference Protocol
    @app.get("/v2")
    async def v2_server():
        return {"name": "fmnist", "version": __version__, "extensions": [protocols.CLASSIFICATION]}

    @app.get("/v2/health/live")
    async def v2_live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def v2_ready():
        if not service.ready:
            return JSONResponse({"ready": False, "error": service.not_ready_message()}, 503)
        return {"ready": True}

    @app.get("/v2/models/{name}")
    async def v2_model(name: str):
        model_named(name)
        return protocols.v2_model_metadata(service.name, service.input_name, PLATFORM)

    @app.get("/v2/models/{name}/ready")
    async def v2_model_ready(name: str):
        model_named(name)
        if not service.ready:
            return JSONResponse({"name": service.name, "ready": False, "error": service.not_ready_message()}, 503)
        return {"name": service.name, "ready": True}

    @app.post("/v2/models/{name}/infer")
    async def v2_infer(name: str, request: Request):
        model_named(name)
        pixels, k, request_id = await parsed_json(
            request, protocols.v2_parse_infer, service.input_name, config.max_batch
        )
        probs = await service.probabilities(pixels)
        return protocols.v2_infer_response(service.name, request_id, probs, k)

    # ---- TensorFlow Serving REST
    @app.get("/v1/models/{name}")
    async def tf_status(name: str):
        model_named(name)
        return protocols.tf_model_status(service.ready, service.error)

    @app.post("/v1/models/{name}:predict")
    async def tf_predict(name: str, request: Request):
        model_named(name)
        instances, key = await parsed_json(request, protocols.tf_instances, service.input_name, config.max_batch)
        if any(isinstance(x, bytes) for x in instances):
            instances = await run_in_threadpool(_photos_to_pixels, instances, config.max_pixels)
        probs = await service.probabilities(np.stack(instances))
        return {key: probs.astype(np.float32).tolist()}

    # ---- for people and pages
    @app.post("/api/classify")
    async def classify(request: Request, top_k: Annotated[int, Query(ge=1, le=NUM_CLASSES)] = DEFAULT_TOP_K):
        data = await photo_body(request)
        image = await run_in_threadpool(prepare_photo, data, config.max_pixels)
        probs = await service.probabilities(image[None].astype(np.float32))
        answer = protocols.classification(probs[0], top_k)
        return {"model": service.name, **answer, "image_png": await run_in_threadpool(png_base64, image)}


def _photos_to_pixels(instances: list, max_pixels: int) -> list[np.ndarray]:
    return [
        prepare_photo(x, max_pixels, f"instance {i}").astype(np.float32) if isinstance(x, bytes) else x
        for i, x in enumerate(instances)
    ]
