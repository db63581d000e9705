"""For people: the page at ``/`` (``templates/serve.html``) and the ``/api/classify`` it calls with a photo."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from fmnist.data import NUM_CLASSES
from fmnist.serve import protocols
from fmnist.serve.bodies import photo_body, png_base64, prepare_photo
from fmnist.serve.routes.common import Config, Service

DEFAULT_TOP_K = 3
PAGE_TOP_K = 5  # bars the page shows

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def page(service: Service, config: Config):
    from fmnist import pages

    return pages.render("serve.html", name=service.name, facts=service.facts, needs_key=bool(config.api_key),
                        max_upload_mb=config.max_upload_mb, top_k=PAGE_TOP_K)  # fmt: skip


@router.post("/api/classify")
async def classify(
    request: Request, service: Service, config: Config,
    top_k: Annotated[int, Query(ge=1, le=NUM_CLASSES)] = DEFAULT_TOP_K,
):  # fmt: skip
    data = await photo_body(request)
    image = await run_in_threadpool(prepare_photo, data, config.max_pixels)
    probs = await service.probabilities(image[None].astype(np.float32))
    answer = protocols.classification(probs[0], top_k)
    return {"model": service.name, **answer, "image_png": await run_in_threadpool(png_base64, image)}
