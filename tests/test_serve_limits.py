"""`fmnist serve`'s limits: the body limit against a real uvicorn server on 127.0.0.1 (a declared length
refused unread, a chunked body cut off), and the inference queue in-process (requests batched, 503 when
overloaded).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from fmnist.serve import ServeConfig
from fmnist.serve.model import InferenceQueue
from fmnist.serve.protocols import RequestError
from test_serve import assert_error


@pytest.fixture(scope="module")
def api(live_server):
    """An HTTP client for the live server, sending its API key."""
    with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {live_server.key}"}) as client:
        yield client


# --------------------------------------------------------------------------- the body limit
def _raw_request(url: str, head: str, body: bytes = b"") -> tuple[str, float]:
    """Send ``head`` (and ``body``) on a raw socket; the response's status line and how long it took."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        started = time.monotonic()
        s.sendall(head.encode() + body)
        response = b""
        while chunk := s.recv(65536):  # the server closes the connection after refusing
            response += chunk
        return response.decode("latin-1"), time.monotonic() - started


def test_oversized_body_is_refused_without_reading_it(live_server):
    """Content-Length says 500 MB; 1 kB is sent: the 413 comes at once, without waiting for the rest."""
    head = (f"POST /api/classify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {live_server.key}\r\n"
            "Content-Type: image/png\r\nContent-Length: 500000000\r\n\r\n")  # fmt: skip
    response, seconds = _raw_request(live_server.url, head, b"\0" * 1024)
    assert response.startswith("HTTP/1.1 413"), response[:200]
    assert json.loads(response.split("\r\n\r\n", 1)[1])["error"].startswith("the request body is 500,000,000 bytes")
    assert seconds < 5


def test_chunked_body_over_the_limit_is_cut_off(api, live_server):
    def chunks():
        for _ in range(17):  # 17 × 64 kB, just over the 1 MB limit; no Content-Length
            yield b"\0" * 65536

    response = api.post("/api/classify", content=chunks(), headers={"Content-Type": "image/png"})
    assert_error(response, 413, "--max-upload-mb")


# --------------------------------------------------------------------------- the inference queue
def _queue(**config) -> InferenceQueue:
    from concurrent.futures import ThreadPoolExecutor

    return InferenceQueue(ThreadPoolExecutor(1), ServeConfig(**config))


def test_queue_batches_concurrent_requests_and_splits_the_answers():
    sizes, gate = [], threading.Event()

    def forward(x):  # each row's "probabilities" carry its first pixel, so a mix-up would show
        gate.wait(10)
        sizes.append(len(x))
        return np.repeat(x[:, :1, 0], 10, axis=1)

    async def main():
        queue = _queue(max_batch=8)
        first = asyncio.create_task(queue.submit(np.full((1, 28, 28), 100.0, np.float32), forward))
        await asyncio.sleep(0.05)  # the first pass is running (held at the gate); the rest wait together
        rest = [asyncio.create_task(queue.submit(np.full((n, 28, 28), float(i), np.float32), forward))
                for i, n in enumerate((1, 2, 3, 4))]  # fmt: skip
        await asyncio.sleep(0.05)
        gate.set()
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(main())
    assert sizes == [1, 6, 4]  # 1 alone, then 1+2+3 fill a pass of up to 8, then 4
    assert first.shape == (1, 10) and (first == 100).all()
    for i, (n, probs) in enumerate(zip((1, 2, 3, 4), rest, strict=True)):
        assert probs.shape == (n, 10) and (probs == i).all()


def test_queue_answers_503_when_overloaded_and_one_pass_per_request_without_batching():
    sizes, gate = [], threading.Event()

    def forward(x):
        gate.wait(10)
        sizes.append(len(x))
        return np.zeros((len(x), 10))

    async def main():
        queue = _queue(max_batch=8, max_queue=4, batch_requests=False)
        tasks = [asyncio.create_task(queue.submit(np.zeros((2, 28, 28), np.float32), forward))]
        await asyncio.sleep(0.05)  # its pass is held at the gate
        tasks += [asyncio.create_task(queue.submit(np.zeros((2, 28, 28), np.float32), forward)) for _ in range(2)]
        await asyncio.sleep(0.05)  # two requests (4 images, the most allowed) waiting
        with pytest.raises(RequestError, match="overloaded") as refused:
            await queue.submit(np.zeros((1, 28, 28), np.float32), forward)
        gate.set()
        await asyncio.gather(*tasks)
        return refused.value.status

    assert asyncio.run(main()) == 503
    assert sizes == [2, 2, 2]
