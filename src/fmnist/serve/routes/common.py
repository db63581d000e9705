"""What every router's routes depend on: the app's model service, its flags and its counters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fmnist.serve.config import MODEL_ALIAS, ServeConfig
from fmnist.serve.model import ModelService
from fmnist.serve.protocols import RequestError
from fmnist.serve.telemetry import Telemetry


def _service(request: Request) -> ModelService:
    return request.app.state.service


def _config(request: Request) -> ServeConfig:
    return request.app.state.config


def _telemetry(request: Request) -> Telemetry:
    return request.app.state.telemetry


Service = Annotated[ModelService, Depends(_service)]
Config = Annotated[ServeConfig, Depends(_config)]
Counters = Annotated[Telemetry, Depends(_telemetry)]


def model_named(service: ModelService, name: str) -> None:
    """404 unless ``name`` is the served model's name or the alias every server answers to."""
    if not service.knows(name):
        raise RequestError(f"no model named {name!r}: this server serves {service.name!r} (or {MODEL_ALIAS!r}).", 404)
