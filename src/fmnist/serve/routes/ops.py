"""For operators: the server's counters as Prometheus text at ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from fmnist.serve.routes.common import Counters
from fmnist.serve.schemas import errors
from fmnist.serve.telemetry import CONTENT_TYPE

router = APIRouter(tags=["Operations"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {}}},
            **errors(401)})  # fmt: skip
async def prometheus(telemetry: Counters):
    return Response(telemetry.render(), media_type=CONTENT_TYPE)
