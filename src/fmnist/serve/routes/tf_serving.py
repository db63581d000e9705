"""TensorFlow Serving REST: model status and ``:predict`` (row ``instances`` or columnar ``inputs``)."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from fmnist.serve import protocols, schemas
from fmnist.serve.bodies import parsed_json, photos_to_pixels
from fmnist.serve.routes.common import Config, Service, model_named
from fmnist.serve.schemas import errors

router = APIRouter(tags=["TensorFlow Serving"])


@router.get("/v1/models/{name}", response_model=schemas.ModelStatus, responses=errors(401, 404))
async def tf_status(name: str, service: Service):
    model_named(service, name)
    return protocols.tf_model_status(service.ready, service.error, service.version)


@router.post(
    "/v1/models/{name}:predict",
    response_model=None,
    responses={200: {"model": schemas.PredictResponse}, **errors(400, 401, 404, 413, 415, 503)},
    openapi_extra=schemas.request_body(schemas.PredictRequest),
)
async def tf_predict(name: str, request: Request, service: Service, config: Config):
    model_named(service, name)
    instances, key = await parsed_json(request, protocols.tf_instances, service.input_name, config.max_batch)
    if any(isinstance(x, bytes) for x in instances):
        instances = await run_in_threadpool(photos_to_pixels, instances, config.max_pixels)
    probs = await service.probabilities(np.stack(instances))
    return {key: probs.astype(np.float32).tolist()}
