"""ServeConfig: everything `fmnist serve` can be told, with the defaults its --help states."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_HOST = "127.0.0.1"  # loopback only: serving to the network is a deliberate --host 0.0.0.0
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 10.0  # a phone photo is 2–6 MB
DEFAULT_MAX_PIXELS = 25_000_000  # a 24-megapixel camera photo fits; a decompression bomb does not
DEFAULT_MAX_BATCH = 256  # images in one request (V2 tensor rows, TF Serving instances)
DEFAULT_MAX_QUEUE = 2048  # images waiting for the model before new requests get 503 (overloaded)
WATCH_SECONDS = 1.0  # how often --watch looks at the run
MODEL_ALIAS = "fmnist"  # every model route answers to this name as well as the run's own


@dataclass(frozen=True)
class ServeConfig:
    """How the server listens, what it accepts, and who may call it."""

    host: str = DEFAULT_HOST  # interface to listen on
    port: int = DEFAULT_PORT  # TCP port (0: any free one)
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB  # request bodies above this are refused (413) unread
    max_pixels: int = DEFAULT_MAX_PIXELS  # photos with more pixels are refused (413) before decoding
    max_batch: int = DEFAULT_MAX_BATCH  # images per request, and per forward pass when requests are batched
    max_queue: int = DEFAULT_MAX_QUEUE  # images queued for the model before answering 503
    api_key: str | None = None  # Bearer token the API requires (the page and health checks stay open)
    cors_origins: tuple[str, ...] = field(default_factory=tuple)  # browser origins allowed to call the API
    batch_requests: bool = True  # concurrent requests share forward passes (see model.InferenceQueue)
    docs: bool = True  # serve /openapi.json and /docs (open, like the page)
    grpc_port: int | None = None  # KServe V2 over gRPC on this port too (0: any free one; None: off)
    watch: bool = False  # load the run again when a complete new one is put in its place

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
