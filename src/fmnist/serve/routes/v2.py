"""KServe V2 (Open Inference Protocol) over REST: server and model metadata, health, infer (JSON or
the binary tensor data extension), and the model repository's load (the run again, swapped in)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from fmnist import __version__
from fmnist.serve import protocols, schemas
from fmnist.serve.bodies import parsed_json
from fmnist.serve.model import PLATFORM
from fmnist.serve.routes.common import Config, Service, model_named
from fmnist.serve.schemas import errors

router = APIRouter(tags=["KServe V2"])
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


@router.get("/v2", response_model=schemas.ServerMetadata, responses=errors(401))
async def v2_server():
    return {"name": "fmnist", "version": __version__, "extensions": [protocols.CLASSIFICATION, "binary_tensor_data"]}


@router.get("/v2/health/live", response_model=schemas.Live)
async def v2_live():
    return {"live": True}


@router.get("/v2/health/ready", response_model=schemas.Ready, response_model_exclude_none=True,
            responses={503: {"model": schemas.Ready, "description": "Not ready, and why."}})  # fmt: skip
async def v2_ready(service: Service):
    if not service.ready:
        return JSONResponse({"ready": False, "error": service.not_ready_message()}, 503)
    return {"ready": True}


@router.get("/v2/models/{name}", response_model=schemas.ModelMetadata, responses=errors(401, 404))
async def v2_model(name: str, service: Service):
    model_named(service, name)
    return protocols.v2_model_metadata(service.name, service.input_name, PLATFORM, service.version)


NOT_READY = {503: {"model": schemas.ModelReady, "description": "Not ready, and why."}}


@router.get("/v2/models/{name}/ready", response_model=schemas.ModelReady, response_model_exclude_none=True,
            responses={**errors(401, 404), **NOT_READY})  # fmt: skip
async def v2_model_ready(name: str, service: Service):
    model_named(service, name)
    if not service.ready:
        return JSONResponse({"name": service.name, "ready": False, "error": service.not_ready_message()}, 503)
    return {"name": service.name, "ready": True}


@router.post(
    "/v2/models/{name}/infer",
    response_model=None,
    responses={200: {"model": schemas.InferResponse, "content": BINARY}, **errors(400, 401, 404, 413, 415, 503)},
    openapi_extra=schemas.request_body(schemas.InferRequest, BINARY),
)
async def v2_infer(name: str, request: Request, service: Service, config: Config):
    """Probabilities (or, with the classification parameter, top-k labels) for 28×28 images.
    UINT8 tensors are levels 0–255, FP32 tensors 0–1."""
    model_named(service, name)
    asked = await parsed_json(request, protocols.v2_parse_infer, service.input_name, config.max_batch, binary=True)
    probs, version = await service.infer(asked.pixels)
    response = protocols.v2_infer_response(service.name, asked.id, probs, asked.k, version)
    if not asked.binary_output:
        return response
    body, header_length = protocols.v2_binary_response(response)
    headers = {protocols.BINARY_HEADER: str(header_length)}
    return Response(body, media_type="application/octet-stream", headers=headers)


@router.post("/v2/repository/models/{name}/load", response_model=schemas.Loaded, responses=errors(400, 401, 404))
async def v2_load(name: str, service: Service):
    """Load the run again from disk, warm it up and swap it in; requests in flight finish on the old model."""
    model_named(service, name)
    version = await service.reload()
    return {"model_name": service.name, "model_version": version}
