"""The API described: ``/openapi.json`` (OpenAPI 3.1, generated from ``schemas``' models), ``/docs``
(Swagger UI, its script and stylesheet served from this machine: the ``fastapi-offline`` package
ships them). Open like the page; ``--no-docs`` leaves the router out."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response

from fmnist import __version__
from fmnist.serve import schemas
from fmnist.serve.protocols import RequestError

ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}  # what /docs loads
DESCRIPTION = (
    "Fashion-MNIST classifier. KServe V2 (Open Inference Protocol, with the binary tensor data extension), "
    'TensorFlow Serving REST, and /api/classify for photos. Errors are always `{"error": "..."}`. '
    "With an API key, send `Authorization: Bearer KEY` (the page, health checks and these docs are open)."
)

router = APIRouter(include_in_schema=False)


def document(app: FastAPI) -> dict:
    """The OpenAPI document: FastAPI's, with the request models that routes read themselves, the 413
    that the body limit answers on every route (a GET with a body too), and without the 422 FastAPI
    adds for parameters (this server answers those with 400 and the error body)."""
    if getattr(app.state, "openapi", None) is None:
        doc = get_openapi(title="fmnist", version=__version__, description=DESCRIPTION, routes=app.routes)
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in schemas.BODY_MODELS:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        error_body = {"schema": {"$ref": f"#/components/schemas/{schemas.ErrorBody.__name__}"}}
        too_large = {"description": schemas.ERROR_WHY[413], "content": {"application/json": error_body}}
        for path in doc["paths"].values():
            for operation in path.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                responses.setdefault("413", too_large)  # the body limit (middleware) answers on every route
        app.state.openapi = doc
    return app.state.openapi


@router.get("/openapi.json")
async def openapi(request: Request):
    return JSONResponse(document(request.app))


@router.get("/docs")
async def docs():
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="fmnist · API",
        swagger_js_url="/docs/swagger-ui-bundle.js",
        swagger_css_url="/docs/swagger-ui.css",
        swagger_favicon_url="/favicon.ico",
    )


@router.get("/docs/{asset}")
async def docs_asset(asset: str):
    if asset not in ASSETS:
        raise RequestError(f"no docs asset {asset!r}: /docs loads {', '.join(ASSETS)}.", 404)
    data = (resources.files("fastapi_offline") / "static" / asset).read_bytes()
    return Response(data, media_type=ASSETS[asset], headers={"Cache-Control": "public, max-age=86400"})
