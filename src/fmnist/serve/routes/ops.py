"""For operators: the server's counters as Prometheus text at ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from fmnist.serve.routes.common import Counters
from fmnist.serve.telemetry import CONTENT_TYPE

router = APIRouter()


@router.get("/metrics")
async def prometheus(telemetry: Counters):
    return Response(telemetry.render(), media_type=CONTENT_TYPE)
