"""The server's ASGI layers around the routes: request counts, the API key, the body-size limit.

Plain ASGI (no BaseHTTPMiddleware), so a refused request is answered before its body is read
and streaming stays streaming. Errors leave as ``{"error": "..."}`` with the right status.
"""

from __future__ import annotations

import hmac
import json

from fmnist.serve.protocols import RequestError

OPEN_PATHS = frozenset({"/", "/favicon.ico", "/v2/health/live", "/v2/health/ready", "/openapi.json", "/docs"})
OPEN_PREFIXES = ("/docs/",)  # no API key needed: the page, health checks, the API's description


def key_refusal(authorization: str | bytes, key: bytes) -> str | None:
    """Why a request's ``Authorization`` value (HTTP header or gRPC metadata) does not carry ``key``
    as ``Bearer <key>``: the 401's message, the same over REST and gRPC; None when it does or no key is set."""
    if not key:
        return None
    header = authorization.encode("latin-1", "replace") if isinstance(authorization, str) else authorization
    scheme, _, token = header.partition(b" ")
    if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), key):
        return None
    reason = "a wrong API key" if header else "no API key"
    return (f"this server needs an API key and the request has {reason}: send 'Authorization: Bearer KEY' "
            "(gRPC: metadata 'authorization: Bearer KEY').")  # fmt: skip


async def send_error(send, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """A complete ``{"error": message}`` JSON response, straight onto the ASGI ``send``."""
    body = json.dumps({"error": message}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class RecordRequests:
    """Count every HTTP response by method, route template (not the raw path) and status."""

    def __init__(self, app, telemetry):
        self.app, self.telemetry = app, telemetry

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500  # an exception that escapes becomes a 500

        async def record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = scope.get("route")
            self.telemetry.request(scope["method"], getattr(route, "path", None) or "unmatched", status)


class RequireApiKey:
    """``Authorization: Bearer <key>`` on everything but the page and the health checks."""

    def __init__(self, app, api_key: str | None):
        self.app, self.key = app, (api_key or "").encode()

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if not self.key or scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        message = key_refusal(dict(scope["headers"]).get(b"authorization", b""), self.key)
        if message is not None:
            challenge = ((b"www-authenticate", b'Bearer realm="fmnist"'),)
            return await send_error(send, 401, message, challenge)
        return await self.app(scope, receive, send)


class LimitBody:
    """Refuse bodies over ``limit`` bytes with 413: by Content-Length before reading anything,
    and while reading for a body that does not declare its length (chunked)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    def _message(self, size: str) -> str:
        return f"the request body is {size}, over the limit of {self.limit:,} bytes (--max-upload-mb)."

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            close = ((b"connection", b"close"),)  # the unread body must not be taken for the next request
            return await send_error(send, 413, self._message(f"{int(length):,} bytes"), close)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise RequestError(self._message(f"more than {self.limit:,} bytes"), 413)
            return message

        return await self.app(scope, receive, send) if length is not None else await self.app(scope, counted, send)
