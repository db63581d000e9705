"""KServe V2 over gRPC (``--grpc-port``): the same model, queue, limits, API key and messages as REST.

    server, port = await grpc_server.start(service, config)    # on the app's event loop
    ...
    await server.stop(grace_seconds)

Runs on the event loop uvicorn runs (grpc.aio), so an RPC goes through the same inference queue
as an HTTP request and shares its forward passes. Requests are checked by ``protocols`` (the
message is turned into the JSON form's dict first), so every refusal has REST's words; its
HTTP status becomes the gRPC code in ``CODES``. The API key is metadata ``authorization: Bearer
KEY``; liveness and readiness stay open, as ``/v2/health/*`` do.
"""

from __future__ import annotations

import functools

import numpy as np

from fmnist import __version__
from fmnist.serve import protocols
from fmnist.serve.config import ServeConfig
from fmnist.serve.middleware import key_refusal
from fmnist.serve.model import PLATFORM
from fmnist.serve.protocols import RequestError
from fmnist.serve.routes.common import model_named
from fmnist.serve.server import ServeError

try:
    import grpc

    from fmnist.serve.v2_grpc import grpc_predict_v2_pb2 as pb
    from fmnist.serve.v2_grpc import grpc_predict_v2_pb2_grpc as pb_grpc
except ImportError as e:  # the optional extra
    raise ServeError("--grpc-port needs gRPC: pip install 'fmnist[grpc]' (grpcio, protobuf).") from e

CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
         404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
         503: grpc.StatusCode.UNAVAILABLE}  # fmt: skip


async def start(service, config: ServeConfig):
    """A started grpc.aio server for ``service`` on ``config.host:config.grpc_port``, and its port."""
    limit = config.max_upload_bytes
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit), ("grpc.so_reuseport", 0)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Inference(service, config), server)
    host = f"[{config.host}]" if ":" in config.host else config.host
    try:
        port, reason = server.add_insecure_port(f"{host}:{config.grpc_port}"), "the address is taken"
    except RuntimeError as e:  # grpc's own words (an unknown host, a port it cannot bind)
        port, reason = 0, str(e).split(";")[0] or type(e).__name__
    if not port:
        raise ServeError(f"cannot listen for gRPC on {config.host}:{config.grpc_port} ({reason}): "
                         "pick another --grpc-port.")  # fmt: skip
    await server.start()
    return server, port


def answering(open_: bool = False):
    """An RPC that checks the API key (unless ``open_``) and turns a ``RequestError`` into its gRPC code."""

    def wrap(method):
        @functools.wraps(method)
        async def rpc(self, request, context):
            try:
                if not open_:
                    refusal = key_refusal(dict(context.invocation_metadata()).get("authorization", ""), self.key)
                    if refusal is not None:
                        raise RequestError(refusal, 401)
                return await method(self, request, context)
            except RequestError as e:
                await context.abort(CODES.get(e.status, grpc.StatusCode.INTERNAL), str(e))

        return rpc

    return wrap


class Inference(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service, config: ServeConfig):
        self.service, self.config = service, config
        self.key = (config.api_key or "").encode()

    @answering(open_=True)
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @answering(open_=True)
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.service.ready)

    @answering()
    async def ModelReady(self, request, context):
        model_named(self.service, request.name)
        return pb.ModelReadyResponse(ready=self.service.ready)

    @answering()
    async def ServerMetadata(self, request, context):
        extensions = [protocols.CLASSIFICATION]
        return pb.ServerMetadataResponse(name="fmnist", version=__version__, extensions=extensions)

    @answering()
    async def ModelMetadata(self, request, context):
        model_named(self.service, request.name)
        meta = protocols.v2_model_metadata(self.service.name, self.service.input_name, PLATFORM, self.service.version)
        tensors = {
            key: [pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta[key]] for key in ("inputs", "outputs")
        }
        return pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=PLATFORM, **tensors)

    @answering()
    async def ModelInfer(self, request, context):
        model_named(self.service, request.model_name)
        body, raw = as_json(request)
        asked = protocols.v2_parse_infer(body, self.service.input_name, self.config.max_batch, raw=raw)
        probs, version = await self.service.infer(asked.pixels)
        return infer_response(self.service.name, asked, probs, version)


def _value(p) -> object:
    return getattr(p, p.WhichOneof("parameter_choice")) if p.WhichOneof("parameter_choice") else None


def as_json(request) -> tuple[dict, bytes | None]:
    """A ModelInferRequest as the REST request's dict (and its raw input bytes), for ``v2_parse_infer``."""
    sent = len(request.raw_input_contents)
    if sent and sent != len(request.inputs):  # KServe: one raw_input_contents entry per input, or none at all
        raise RequestError(f"raw_input_contents holds {sent} tensors for {len(request.inputs)} inputs: "
                           "send exactly one per input (or the values in contents).")  # fmt: skip
    raw = request.raw_input_contents[0] if sent else None
    inputs = []
    for tensor in request.inputs:
        entry = {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype}
        if raw is None:
            contents = tensor.contents
            entry["data"] = (
                list(contents.fp32_contents) if tensor.datatype.upper() == "FP32" else list(contents.uint_contents)
            )
        else:
            entry["parameters"] = {"binary_data_size": len(raw)}
        inputs.append(entry)
    outputs = [{"name": o.name, "parameters": {k: _value(v) for k, v in o.parameters.items()}} for o in request.outputs]
    body = {"inputs": inputs, **({"outputs": outputs} if outputs else {}), **({"id": request.id} if request.id else {})}
    return body, raw


def infer_response(name: str, asked, probs: np.ndarray, version: str):
    """The ModelInferResponse: probabilities as FP32 bytes, or top-k labels as BYTES (4-byte length each)."""
    if asked.k is None:
        output = pb.ModelInferResponse.InferOutputTensor(name=protocols.OUTPUT_NAME, datatype="FP32", shape=probs.shape)
        raw = np.ascontiguousarray(probs, "<f4").tobytes()
    else:
        output = pb.ModelInferResponse.InferOutputTensor(name=protocols.OUTPUT_NAME, datatype="BYTES",
                                                         shape=[len(probs), asked.k])  # fmt: skip
        raw = protocols.bytes_tensor(protocols.top_k_labels(probs, asked.k))
    return pb.ModelInferResponse(model_name=name, model_version=version, id=asked.id or "", outputs=[output],
                                 raw_output_contents=[raw])  # fmt: skip
