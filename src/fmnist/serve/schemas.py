"""The API's bodies as pydantic models: the OpenAPI document at /openapi.json is generated from them.

Routes that parse their body themselves (``bodies``: the 415 check, large JSON parsed off the
event loop, photos) attach the request model's schema with ``request_body``; every route
declares the errors it can answer with ``errors``, all in the one ``{"error": "..."}`` form.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ERROR_WHY = {
    400: "A bad request: unreadable JSON, a tensor or image that cannot be used, a bad parameter.",
    401: "The server has an API key and the request lacks it: send 'Authorization: Bearer KEY'.",
    404: "No model (or route) by that name.",
    413: "Too large: the body (--max-upload-mb), the photo (--max-pixels) or the batch (--max-batch).",
    415: "A body of another media type than the route takes.",
    503: "The model is loading, could not be loaded, or the server is overloaded (see Retry-After).",
}


class ErrorBody(BaseModel):
    """Every refusal: one line saying what is wrong and what to do."""

    error: str = Field(examples=["no model named 'x': this server serves 'seed' (or 'fmnist')."])


def errors(*statuses: int) -> dict[int | str, dict]:
    """``responses=`` for a route: each status with its reason and the error body."""
    return {status: {"model": ErrorBody, "description": ERROR_WHY[status]} for status in statuses}


def request_body(model: type[BaseModel] | None = None, media: dict[str, dict] | None = None) -> dict:
    """``openapi_extra`` declaring a body the route reads itself: JSON of ``model``, or other ``media``."""
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}} if model else {}
    return {"requestBody": {"required": True, "content": {**content, **(media or {})}}}


# --------------------------------------------------------------------------- KServe V2
class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool
    error: str | None = Field(None, description="Why not, when not ready.")


class ModelReady(Ready):
    name: str


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any number of images.")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any]


Nested = list[Any]  # numbers, or lists of them, to any depth the shape says


class InferInput(BaseModel):
    name: str = Field(examples=["pixels"])
    shape: list[int] = Field(examples=[[1, 28, 28]], description="[N,28,28], [N,28,28,1] or [N,784].")
    datatype: str = Field(examples=["UINT8"], description="UINT8 (levels 0–255) or FP32 (0–1).")
    data: Nested | None = Field(None, description="The tensor, flat or nested (absent when sent as binary).")
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size: its bytes after the JSON.")


class RequestedOutput(BaseModel):
    name: str = Field(examples=["probabilities"])
    parameters: dict[str, Any] | None = Field(None, description="classification: k (top-k labels); binary_data.")


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] | None = Field(None, description="binary_data_output: answer in binary.")


class InferOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[float] | list[str] | None = None
    parameters: dict[str, Any] | None = None


class InferResponse(BaseModel):
    id: str | None = None
    model_name: str
    model_version: str
    outputs: list[InferOutput]


class Loaded(BaseModel):
    model_name: str
    model_version: str


# --------------------------------------------------------------------------- TensorFlow Serving
class VersionStatus(BaseModel):
    version: str
    state: str = Field(description="LOADING, AVAILABLE or END (could not be loaded).")
    status: dict[str, str]


class ModelStatus(BaseModel):
    model_version_status: list[VersionStatus]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    instances: list[Any] | None = Field(None, description='28×28 levels 0–255, or {"b64": photo bytes}.')
    inputs: list[Any] | dict[str, Any] | None = Field(None, description="The columnar form of instances.")


class PredictResponse(BaseModel):
    predictions: list[list[float]] | None = None
    outputs: list[list[float]] | None = None


# --------------------------------------------------------------------------- /api/classify
class ClassScore(BaseModel):
    label: int
    class_name: str
    probability: float


class Classification(BaseModel):
    model: str
    label: int
    class_name: str
    probability: float
    top_k: list[ClassScore]
    probabilities: list[float]
    image_png: str = Field(description="The 28×28 image the model saw, PNG, base64.")


BODY_MODELS = (InferRequest, PredictRequest)  # request models only routes' openapi_extra names
