"""KServe V2 (Open Inference Protocol) over REST: server and model metadata, health, infer."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from fmnist import __version__
from fmnist.serve import protocols
from fmnist.serve.bodies import parsed_json
from fmnist.serve.model import PLATFORM
from fmnist.serve.routes.common import Config, Service, model_named

router = APIRouter()


@router.get("/v2")
async def v2_server():
    return {"name": "fmnist", "version": __version__, "extensions": [protocols.CLASSIFICATION]}


@router.get("/v2/health/live")
async def v2_live():
    return {"live": True}


@router.get("/v2/health/ready")
async def v2_ready(service: Service):
    if not service.ready:
        return JSONResponse({"ready": False, "error": service.not_ready_message()}, 503)
    return {"ready": True}


@router.get("/v2/models/{name}")
async def v2_model(name: str, service: Service):
    model_named(service, name)
    return protocols.v2_model_metadata(service.name, service.input_name, PLATFORM)


@router.get("/v2/models/{name}/ready")
async def v2_model_ready(name: str, service: Service):
    model_named(service, name)
    if not service.ready:
        return JSONResponse({"name": service.name, "ready": False, "error": service.not_ready_message()}, 503)
    return {"name": service.name, "ready": True}


@router.post("/v2/models/{name}/infer")
async def v2_infer(name: str, request: Request, service: Service, config: Config):
    model_named(service, name)
    pixels, k, request_id = await parsed_json(request, protocols.v2_parse_infer, service.input_name, config.max_batch)
    probs = await service.probabilities(pixels)
    return protocols.v2_infer_response(service.name, request_id, probs, k)
