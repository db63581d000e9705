"""How fast does `fmnist serve` answer? Bounded load over loopback, measured from outside.

Starts `fmnist serve RUN --port 0` as its own process (with and without request batching,
or as --batching says), waits until it is ready, then for each workload sends a fixed number
of requests from N concurrent keep-alive clients and stops:
  v2 infer   POST /v2/models/fmnist/infer, one 28×28 UINT8 test image per request, as JSON and
             as the binary tensor extension (a JSON header, then the 784 bytes; tritonclient's default);
  gRPC infer KServe V2 ModelInfer on --grpc-port, the same image as raw_input_contents, N channels;
  photo      POST /api/classify, one 168×168 PNG "photo" of a test image per request.
Prints requests/s, p50 / p99 latency, 5xx and other non-200 answers, the server process's CPU
time per request (what the server costs, apart from the clients sharing the machine), and its
resident memory (RSS) before and after each workload. The clients are a few lines of raw
HTTP/1.1 on asyncio streams, so they take as little of the shared CPU as possible.
Results: BENCHMARKS.md. The issue's target (2-core machine, seed model, one view): at least
300 single-image infer requests/s with p99 <= 50 ms at 8 clients, 0 errors, memory flat; gRPC at
least the REST figure (the ratios to REST JSON and REST binary are printed).

    python benchmarks/serve_load.py [--run runs/default] [--clients 8] [--requests 10000] [--photos 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

READY_SECONDS = 180  # the server loads and compiles the model before it answers
REQUEST_SECONDS = 30  # one request taking longer than this is counted as failed
PHOTO_SCALE = 6  # a 28×28 test image enlarged to 168×168, dark on white, like a product shot


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used, in seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(run: str, batching: bool) -> tuple[subprocess.Popen, str, str | None]:
    """`fmnist serve` (HTTP and gRPC) on free loopback ports; (process, base URL, gRPC target) once ready."""
    cmd = [sys.executable, "-m", "fmnist.cli", "serve", run, "--port", "0", "--max-queue", "100000", "--grpc-port", "0",
           "--batch-requests" if batching else "--no-batch-requests"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(READY_SECONDS, proc.kill)  # a server that never gets ready is stopped
    timer.start()
    try:
        for line in proc.stdout:
            if m := re.search(r"model ready: open (http://\S+/)(?: \(gRPC: (\S+)\))?", line):
                threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its output from filling the pipe
                return proc, m.group(1), m.group(2)
    finally:
        timer.cancel()
    proc.kill()
    raise SystemExit(f"the server did not become ready: {' '.join(cmd)}")


async def client(host: str, port: int, requests: list[bytes], latencies: list[float], statuses: list[int]) -> None:
    """One keep-alive connection sending ``requests`` in turn; records each answer's latency and status."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for request in requests:
            started = time.perf_counter()
            writer.write(request)
            try:
                status = await asyncio.wait_for(read_response(reader), REQUEST_SECONDS)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                statuses.append(599)
                return
            latencies.append(time.perf_counter() - started)
            statuses.append(status)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    await reader.readexactly(int(length.group(1)) if length else 0)
    return status


def http_post(path: str, host: str, body: bytes, content_type: str, headers: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip


async def load(url: str, bodies: list[bytes], clients: int) -> dict:
    """Send every request in ``bodies`` over ``clients`` connections (round robin); the figures."""
    parts = urlsplit(url)
    latencies, statuses = [], []
    started = time.perf_counter()
    await asyncio.gather(
        *(client(parts.hostname, parts.port, bodies[i::clients], latencies, statuses) for i in range(clients))
    )
    return summary(latencies, statuses, time.perf_counter() - started)


async def grpc_load(target: str, image: np.ndarray, n: int, clients: int) -> dict:
    """``n`` single-image ModelInfer calls from ``clients`` channels (each its own connection), in turn."""
    import grpc

    from fmnist.serve.v2_grpc import grpc_predict_v2_pb2 as pb
    from fmnist.serve.v2_grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    tensor = pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="UINT8", shape=[1, 28, 28])
    request = pb.ModelInferRequest(model_name="fmnist", inputs=[tensor], raw_input_contents=[image.tobytes()])
    latencies, statuses = [], []

    async def one(calls: int) -> None:
        async with grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(calls):
                started = time.perf_counter()
                try:
                    await stub.ModelInfer(request, timeout=REQUEST_SECONDS)
                    statuses.append(200)
                except grpc.aio.AioRpcError as e:
                    statuses.append(599 if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL) else 400)
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(len(range(i, n, clients))) for i in range(clients)))
    return summary(latencies, statuses, time.perf_counter() - started)


def summary(latencies: list[float], statuses: list[int], seconds: float) -> dict:
    ms = sorted(x * 1000 for x in latencies)
    return {
        "requests": len(statuses),
        "per_second": len(statuses) / seconds,
        "p50_ms": statistics.median(ms) if ms else float("nan"),
        "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))] if ms else float("nan"),
        "errors_5xx": sum(s >= 500 for s in statuses),
        "other_non_200": sum(s != 200 and s < 500 for s in statuses),
    }


def workloads(host: str, images: np.ndarray, n_infer: int, n_photos: int) -> dict[str, list[bytes]]:
    """The requests of each workload, made before the clock starts."""
    infer, binary = [], []
    head = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 28, 28], "datatype": "UINT8",
                                   "parameters": {"binary_data_size": 784}}]}).encode()  # fmt: skip
    split = f"Inference-Header-Content-Length: {len(head)}\r\n"  # where the JSON header ends
    for i in range(n_infer):
        pixels = images[i % len(images)].ravel().tolist()
        body = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "UINT8", "data": pixels}]})
        infer.append(http_post("/v2/models/fmnist/infer", host, body.encode(), "application/json"))
        raw = head + images[i % len(images)].tobytes()
        binary.append(http_post("/v2/models/fmnist/infer", host, raw, "application/octet-stream", split))
    encoded = []
    for image in images[:50]:
        buf = io.BytesIO()
        Image.fromarray(255 - image).resize((28 * PHOTO_SCALE,) * 2, Image.Resampling.BICUBIC).save(buf, "PNG")
        encoded.append(buf.getvalue())
    photos = [http_post("/api/classify", host, encoded[i % len(encoded)], "image/png") for i in range(n_photos)]
    return {"v2 infer (1 image)": infer, "v2 infer (1 image, binary)": binary, "photo upload": photos}  # fmt: skip


def seed_model(folder: Path) -> str:
    """An untrained seed model (the tutorial's MLP, one view): the same work per request as a trained one."""
    from fmnist import runs
    from fmnist.models import ModelSpec, build_model

    path = folder / "seed.keras"
    runs.save_model(path, build_model(ModelSpec()))
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="Run directory or .keras file to serve (default: an untrained seed model).")
    parser.add_argument("--clients", type=int, default=8, help="Concurrent keep-alive connections.")
    parser.add_argument("--requests", type=int, default=10_000, help="Single-image V2 infer requests.")
    parser.add_argument("--photos", type=int, default=1_000, help="Photo uploads to /api/classify.")
    parser.add_argument("--batching", choices=("both", "on", "off"), default="both", help="Request batching to test.")
    args = parser.parse_args()

    from fmnist import data

    (_, _), (x_test, _) = data.load_data()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or seed_model(Path(tmp))
        print(f"{os.cpu_count()} CPUs; serving {args.run or 'an untrained seed model'}; {args.clients} clients")
        head = ("batching", "workload", "requests", "req/s", "p50 ms", "p99 ms", "5xx", "other non-200",
                "server CPU ms/req", "RSS MB")  # fmt: skip
        print("\n| " + " | ".join(head) + " before → after |")
        print("|---" * len(head) + "|")
        for batching in {"both": (True, False), "on": (True,), "off": (False,)}[args.batching]:
            proc, url, target = start_server(run, batching)
            try:
                host = urlsplit(url).netloc
                asyncio.run(load(url, workloads(host, x_test, 200, 20)["v2 infer (1 image)"], args.clients))  # warm-up
                asyncio.run(grpc_load(target, x_test[0], 200, args.clients))
                figures = {}
                sends = {name: partial(load, url, bodies, args.clients)
                         for name, bodies in workloads(host, x_test, args.requests, args.photos).items()}  # fmt: skip
                sends["gRPC infer (1 image)"] = partial(grpc_load, target, x_test[0], args.requests, args.clients)
                for name in ("v2 infer (1 image)", "v2 infer (1 image, binary)", "gRPC infer (1 image)",
                             "photo upload"):  # fmt: skip
                    before, cpu = rss_mb(proc.pid), cpu_seconds(proc.pid)
                    figures[name] = r = asyncio.run(sends[name]())
                    r["server_cpu_ms"] = (cpu_seconds(proc.pid) - cpu) * 1000 / r["requests"]
                    row(batching, name, r, before, rss_mb(proc.pid))
                grpc = figures["gRPC infer (1 image)"]
                for rest in ("v2 infer (1 image)", "v2 infer (1 image, binary)"):
                    kind, on = "binary" if "binary" in rest else "JSON", "on" if batching else "off"
                    speed = grpc["per_second"] / figures[rest]["per_second"]
                    cost = grpc["server_cpu_ms"] / figures[rest]["server_cpu_ms"]
                    print(f"gRPC / REST {kind} (batching {on}): requests/s {speed:.2f}, server CPU/request {cost:.2f}")
            finally:
                proc.terminate()
                proc.wait(timeout=30)


def row(batching: bool, name: str, r: dict, before: float, after: float) -> None:
    print(f"| {'on' if batching else 'off'} | {name} | {r['requests']:,} | {r['per_second']:.0f} | "
          f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors_5xx']} | {r['other_non_200']} | "
          f"{r['server_cpu_ms']:.2f} | {before:.0f} → {after:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
