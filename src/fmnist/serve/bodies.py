"""Request bodies the routes read themselves: JSON parsed off the event loop when large, photos.

Routes parse their bodies here rather than through pydantic, so every refusal is the server's
``{"error": "..."}`` with the status that says why (400 bad JSON or image, 413 too many pixels,
415 another media type), and a large tensor is parsed on a worker thread, not on the event loop.
"""

from __future__ import annotations

import base64
import json
import re

import numpy as np
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from fmnist.errors import ImageError, ImageTooLargeError
from fmnist.serve import protocols
from fmnist.serve.protocols import RequestError

PHOTO_FIELD = "file"  # the multipart field /api/classify reads
INLINE_JSON_BYTES = 64 * 1024  # larger JSON bodies are parsed on a worker thread (one image is ~3 kB)


async def parsed_json(request: Request, parse, *args, binary: bool = False):
    """``parse(json, *args)`` of the request's JSON body: inline when the body is small, on a worker
    thread when it is large (a big tensor takes milliseconds to parse that other requests would
    wait for). 415 for another declared media type, 400 for text that is not JSON. With ``binary``,
    a body carrying ``Inference-Header-Content-Length`` (V2's binary tensor data extension) is that
    many bytes of JSON and then raw tensor bytes: ``parse(json, *args, raw=the bytes)``."""
    header = request.headers.get(protocols.BINARY_HEADER) if binary else None
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if header is None and media != "application/json" and not media.endswith("+json"):
        raise RequestError(f"the body must be JSON (Content-Type: application/json), not {media}.", 415)
    raw = await request.body()
    split = None
    if header is not None:
        digits = re.fullmatch(rf"[0-9]{{1,{protocols.BINARY_HEADER_DIGITS}}}", header.strip())
        split = int(digits[0]) if digits else -1  # ASCII digits only: str.isdigit() also takes "²"
        if not 0 < split <= len(raw):
            raise RequestError(f"{protocols.BINARY_HEADER} must be the JSON header's length in bytes, got {header!r}.")

    def work():
        try:
            body = json.loads(raw if split is None else raw[:split])
        except (ValueError, RecursionError) as e:  # RecursionError: arrays nested too deep to parse
            reason = e if isinstance(e, ValueError) else "nested too deeply"
            raise RequestError(f"the body is not valid JSON ({reason}).") from e
        return parse(body, *args) if split is None else parse(body, *args, raw=raw[split:])

    return work() if len(raw) <= INLINE_JSON_BYTES else await run_in_threadpool(work)


async def photo_body(request: Request) -> bytes:
    """An uploaded photo: the multipart field ``file``, or a raw ``image/*`` body."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get(PHOTO_FIELD)
            if upload is None or isinstance(upload, str):
                raise RequestError(f"the form has no file field {PHOTO_FIELD!r}: upload the photo as {PHOTO_FIELD}.")
            return await upload.read()
    if media.startswith("image/"):
        return await request.body()
    raise RequestError(
        f"send a photo as multipart/form-data (field {PHOTO_FIELD!r}) or an image/* body, not "
        f"{media or 'a body without Content-Type'}.",
        415,
    )  # fmt: skip (the page words it for people)


def prepare_photo(data: bytes, max_pixels: int, name: str = "the uploaded image") -> np.ndarray:
    """Photo bytes -> the uint8 28×28 image, by ``fmnist predict``'s preprocessing under ``--max-pixels``
    (400 if it cannot be decoded, 413 if it has more pixels)."""
    from fmnist import images

    try:
        return images.to_fashion_mnist(images.decode_image(data, max_pixels, name))
    except ImageTooLargeError as e:
        raise RequestError(f"{e} (--max-pixels)", 413) from e
    except ImageError as e:
        raise RequestError(str(e)) from e


def photos_to_pixels(instances: list, max_pixels: int) -> list[np.ndarray]:
    """TF Serving instances with photo bytes among them -> every instance as float32 0–255 pixels."""
    return [
        prepare_photo(x, max_pixels, f"instance {i}").astype(np.float32) if isinstance(x, bytes) else x
        for i, x in enumerate(instances)
    ]


def png_base64(image: np.ndarray) -> str:
    from fmnist import images

    return base64.b64encode(images.png_bytes(image)).decode("ascii")
