"""For people: the page at ``/`` (``templates/serve.html``), its ``/favicon.ico``, and the ``/api/classify`` it
calls with a photo."""

from __future__ import annotations

from importlib import resources
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from fmnist.data import NUM_CLASSES
from fmnist.serve import protocols, schemas
from fmnist.serve.bodies import PHOTO_FIELD, photo_body, png_base64, prepare_photo
from fmnist.serve.routes.common import Config, Service
from fmnist.serve.schemas import errors

DEFAULT_TOP_K = 3
PAGE_TOP_K = 5  # bars the page shows

router = APIRouter(tags=["Photos"])
PHOTO = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "properties": {PHOTO_FIELD: {"type": "string", "format": "binary"}},
            "required": [PHOTO_FIELD],
        }
    },
    "image/*": {"schema": {"type": "string", "format": "binary"}},
}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page(service: Service, config: Config):
    from fmnist import pages

    return pages.render("serve.html", name=service.name, facts=service.facts, needs_key=bool(config.api_key),
                        max_upload_mb=config.max_upload_mb, top_k=PAGE_TOP_K, docs=config.docs)  # fmt: skip


@router.get("/favicon.ico", include_in_schema=False)
async def favicon():  # asked for by every browser on every page, /docs included
    data = (resources.files("fmnist") / "templates" / "favicon.svg").read_bytes()
    return Response(data, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


@router.post(
    "/api/classify",
    response_model=None,
    responses={200: {"model": schemas.Classification}, **errors(400, 401, 413, 415, 503)},
    openapi_extra=schemas.request_body(media=PHOTO),
)
async def classify(
    request: Request, service: Service, config: Config,
    top_k: Annotated[int, Query(ge=1, le=NUM_CLASSES)] = DEFAULT_TOP_K,
):  # fmt: skip
    """A photo of a garment, by `fmnist predict`'s preprocessing: the label, top-k, all ten probabilities."""
    data = await photo_body(request)
    image = await run_in_threadpool(prepare_photo, data, config.max_pixels)
    probs = await service.probabilities(image[None].astype(np.float32))
    answer = protocols.classification(probs[0], top_k)
    return {"model": service.name, **answer, "image_png": await run_in_threadpool(png_base64, image)}
