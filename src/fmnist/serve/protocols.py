"""The wire formats: KServe V2 (Open Inference Protocol) and TensorFlow Serving REST, JSON in and out.

Pure functions from parsed JSON to arrays and back; nothing here touches the model or HTTP.
Pixels (the server's rule, the same in every protocol): V2 ``UINT8`` tensors and TF Serving
``instances`` are raw 0–255 levels, as the model takes them (its Rescaling layer divides by
255); V2 ``FP32`` tensors are 0–1 and are multiplied by 255 here. Every batch leaves as
float32 (n, 28, 28) in 0–255. A bad request raises ``RequestError`` with the HTTP status.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass

import numpy as np

from fmnist.data import CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES
from fmnist.errors import FmnistError

PIXELS = math.prod(IMAGE_SHAPE)  # 784
V2_SHAPES = ((28, 28), (28, 28, 1), (PIXELS,))  # accepted tensor shapes after the batch axis
V2_DATATYPES = {"UINT8": 255.0, "FP32": 1.0}  # datatype -> its largest level (FP32 is scaled by 255)
OUTPUT_NAME = "probabilities"
CLASSIFICATION = "classification"  # the V2 classification extension's parameter
BINARY_HEADER = "Inference-Header-Content-Length"  # the V2 binary tensor extension: JSON bytes before the tensors
BINARY_HEADER_DIGITS = 10  # the longest Inference-Header-Content-Length taken (a body is far shorter than 10 GB)
BINARY_DTYPES = {"UINT8": np.dtype("u1"), "FP32": np.dtype("<f4")}  # how each datatype is laid out in binary


class RequestError(FmnistError):
    """A request the server refuses, with the HTTP status to answer (400 unless said)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- tensors
def check_batch_size(n: int, max_batch: int, what: str) -> None:
    if n < 1:
        raise RequestError(f"no {what} in the request: send at least one image.")
    if n > max_batch:
        raise RequestError(f"{n} {what} in one request, over the limit of {max_batch} (--max-batch): split it.", 413)


def to_pixels(data, shape: list[int] | None, datatype: str, max_batch: int) -> np.ndarray:
    """A V2 tensor (nested or flat ``data``, its ``shape`` and ``datatype``) -> float32 (n, 28, 28), 0–255."""
    if datatype not in V2_DATATYPES:
        raise RequestError(f"datatype {datatype!r} is not supported: send UINT8 (0–255) or FP32 (0–1).")
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and datatype == "UINT8":
        a = data  # binary UINT8: every value is a whole level 0–255 already, nothing to check or convert
    else:
        try:
            a = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as e:  # OverflowError: an integer too big for a float
            raise RequestError(f"the tensor data is not a regular array of numbers ({e}).") from e
    if shape is None:
        shape = list(a.shape)
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise RequestError(f"shape must be a list of integers, got {shape!r}.")
    if len(shape) < 2 or tuple(shape[1:]) not in V2_SHAPES:
        raise RequestError(f"shape {shape} is not one of [N,28,28], [N,28,28,1] or [N,784].")
    if shape[0] < 0:
        raise RequestError(f"shape {shape} has no batch size: -1 is for metadata; give the number of images.")
    check_batch_size(shape[0], max_batch, "images")
    if a.size != math.prod(shape):
        raise RequestError(f"the data holds {a.size} numbers but shape {shape} needs {math.prod(shape)}.")
    if a.dtype == np.uint8:
        return a.reshape(shape[0], *IMAGE_SHAPE).astype(np.float32)
    return _levels(a.reshape(shape[0], *IMAGE_SHAPE), V2_DATATYPES[datatype], datatype, whole=datatype == "UINT8")


def _levels(a: np.ndarray, top: float, what: str, whole: bool = False) -> np.ndarray:
    """Check values are finite, within [0, top] (and ``whole`` numbers if asked); return them as 0–255 float32."""
    if not np.isfinite(a).all():
        raise RequestError(f"the {what} data holds NaN or infinite values.")
    if a.size and (a.min() < 0 or a.max() > top):
        raise RequestError(f"{what} values must lie in 0–{top:g}; got {a.min():g}–{a.max():g}.")
    if whole and not np.array_equal(a, np.round(a)):
        raise RequestError(f"{what} values must be whole numbers 0–{top:g}.")
    return (a * (255.0 / top)).astype(np.float32)


# --------------------------------------------------------------------------- KServe V2
def v2_model_metadata(name: str, input_name: str, platform: str, version: str = "1") -> dict:
    return {
        "name": name,
        "versions": [version],
        "platform": platform,
        "inputs": [{"name": input_name, "datatype": "UINT8", "shape": [-1, *IMAGE_SHAPE]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, NUM_CLASSES]}],
        "parameters": {"labels": list(CLASS_NAMES), "input_datatypes": list(V2_DATATYPES)},
    }


@dataclass(frozen=True)
class V2Request:
    """What an infer request asks: the pixels, top-k labels or None, its id, and a binary answer or not."""

    pixels: np.ndarray
    k: int | None
    id: str | None
    binary_output: bool = False


def v2_parse_infer(body, input_name: str, max_batch: int, raw: bytes | None = None) -> V2Request:
    """An infer request (its JSON, and with the binary extension the bytes after it) -> a V2Request."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise RequestError('an infer request is a JSON object with "inputs": [{"name", "shape", "datatype", "data"}].')
    if len(body["inputs"]) != 1:
        raise RequestError(f"the model has one input ({input_name!r}); the request sent {len(body['inputs'])}.")
    tensor = body["inputs"][0]
    if not isinstance(tensor, dict) or ("data" not in tensor and raw is None):
        raise RequestError('the input tensor needs "name", "shape", "datatype" and "data".')
    if tensor.get("name") != input_name:
        raise RequestError(f"the model's input is named {input_name!r}, not {tensor.get('name')!r}.")
    datatype = str(tensor.get("datatype", "")).upper()
    data = tensor["data"] if "data" in tensor else _binary_tensor(tensor, datatype, raw)
    pixels = to_pixels(data, tensor.get("shape"), datatype, max_batch)
    request_id = body.get("id")
    outputs = body.get("outputs")
    binary = _parameters(body).get("binary_data_output") is True or (
        isinstance(outputs, list) and len(outputs) == 1 and _parameters(outputs[0]).get("binary_data") is True
    )
    return V2Request(pixels, _classification(outputs), None if request_id is None else str(request_id), binary)


def _parameters(obj) -> dict:
    params = obj.get("parameters") if isinstance(obj, dict) else None
    return params if isinstance(params, dict) else {}


def _binary_tensor(tensor: dict, datatype: str, raw: bytes) -> np.ndarray:
    """The input's values from the bytes after the JSON (the binary tensor data extension)."""
    size = _parameters(tensor).get("binary_data_size")
    if isinstance(size, bool) or not isinstance(size, int) or size != len(raw):
        raise RequestError(f"binary_data_size must be the {len(raw)} bytes after the JSON header, got {size!r}.")
    if datatype not in BINARY_DTYPES:
        raise RequestError(f"datatype {datatype!r} is not supported: send UINT8 (0–255) or FP32 (0–1).")
    dtype = BINARY_DTYPES[datatype]
    if size % dtype.itemsize:
        raise RequestError(f"{size} bytes is not a whole number of {datatype} values.")
    return np.frombuffer(raw, dtype)


def _classification(outputs) -> int | None:
    """The requested outputs: None for plain probabilities, k for the classification extension."""
    if outputs is None:
        return None
    if not isinstance(outputs, list) or len(outputs) != 1 or not isinstance(outputs[0], dict):
        raise RequestError(f'"outputs" must be [{{"name": "{OUTPUT_NAME}"}}] (the model has one output).')
    out = outputs[0]
    if out.get("name") != OUTPUT_NAME:
        raise RequestError(f"the model's output is named {OUTPUT_NAME!r}, not {out.get('name')!r}.")
    k = _parameters(out).get(CLASSIFICATION)
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= NUM_CLASSES:
        raise RequestError(f"classification must be a whole number 1–{NUM_CLASSES}, got {k!r}.")
    return k


def top_k_labels(probs: np.ndarray, k: int) -> list[str]:
    """The classification extension's strings, "score:index:label", best first, k per image."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [f"{probs[i, c]:.6f}:{c}:{CLASS_NAMES[c]}" for i, row in enumerate(top) for c in row]


def v2_infer_response(name: str, request_id: str | None, probs: np.ndarray, k: int | None, version: str = "1") -> dict:
    if k is None:
        output = {"name": OUTPUT_NAME, "datatype": "FP32", "shape": list(probs.shape),
                  "data": probs.astype(np.float32).ravel().tolist()}  # fmt: skip
    else:
        output = {"name": OUTPUT_NAME, "datatype": "BYTES", "shape": [len(probs), k], "data": top_k_labels(probs, k)}
    response = {"model_name": name, "model_version": version, "outputs": [output]}
    return response if request_id is None else {"id": request_id, **response}


def v2_binary_response(response: dict) -> tuple[bytes, int]:
    """A JSON infer response in the binary extension's form: (the JSON header then the tensor bytes,
    the header's length for ``Inference-Header-Content-Length``). BYTES elements carry a 4-byte length."""
    output = dict(response["outputs"][0])
    data = output.pop("data")
    raw = np.asarray(data, "<f4").tobytes() if output["datatype"] == "FP32" else bytes_tensor(data)
    output["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps({**response, "outputs": [output]}).encode()
    return header + raw, len(header)


def bytes_tensor(strings: list[str]) -> bytes:
    """A BYTES tensor's raw form (binary extension and gRPC alike): each element's 4-byte length, then its bytes."""
    return b"".join(struct.pack("<I", len(b)) + b for b in (s.encode() for s in strings))


# --------------------------------------------------------------------------- TensorFlow Serving REST
def tf_instances(body, input_name: str, max_batch: int) -> tuple[list, str]:
    """A predict request -> its instances (each a 0–255 (28, 28) array or photo bytes) and the
    response key ("predictions" for the row format, "outputs" for the columnar one)."""
    if isinstance(body, dict) and "instances" in body:
        instances, key = body["instances"], "predictions"
    elif isinstance(body, dict) and "inputs" in body:
        instances, key = body["inputs"], "outputs"
        if isinstance(instances, dict):
            instances = instances.get(input_name)
    else:
        raise RequestError('a predict request is a JSON object with "instances": [28×28 arrays or {"b64": ...}].')
    if not isinstance(instances, list):
        raise RequestError('"instances" must be a list (one entry per image).')
    check_batch_size(len(instances), max_batch, "instances")
    return [_instance(x, input_name, i) for i, x in enumerate(instances)], key


def _instance(x, input_name: str, i: int):
    if isinstance(x, dict) and input_name in x:
        x = x[input_name]
    if isinstance(x, dict):
        if set(x) != {"b64"} or not isinstance(x["b64"], str):
            raise RequestError(f'instance {i}: an object must be {{"b64": "<image bytes, base64>"}}.')
        try:
            return base64.b64decode(x["b64"], validate=True)
        except (binascii.Error, ValueError) as e:
            raise RequestError(f"instance {i}: b64 is not valid base64 ({e}).") from e
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        raise RequestError(f"instance {i} is not a regular array of numbers ({e}).") from e
    if a.shape not in V2_SHAPES:
        raise RequestError(f"instance {i} has shape {list(a.shape)}: send 28×28 (or 28×28×1, or 784) levels 0–255.")
    try:
        return _levels(a.reshape(IMAGE_SHAPE), 255.0, "instance")
    except RequestError as e:
        raise RequestError(f"instance {i}: {e}") from e


def tf_model_status(ready: bool, error: str | None, version: str = "1") -> dict:
    state = "AVAILABLE" if ready else ("END" if error else "LOADING")
    status = (
        {"error_code": "OK", "error_message": ""} if not error else {"error_code": "UNKNOWN", "error_message": error}
    )
    return {"model_version_status": [{"version": version, "state": state, "status": status}]}


# --------------------------------------------------------------------------- /api/classify
def classification(probs: np.ndarray, top_k: int) -> dict:
    """One image's probabilities -> the page's answer: the winner, top-k, all ten."""
    order = np.argsort(-probs, kind="stable")
    label = int(order[0])
    return {
        "label": label,
        "class_name": CLASS_NAMES[label],
        "probability": float(probs[label]),
        "top_k": [
            {"label": int(c), "class_name": CLASS_NAMES[c], "probability": float(probs[c])} for c in order[:top_k]
        ],
        "probabilities": [float(p) for p in probs],
    }
