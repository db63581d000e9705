"""`fmnist serve`'s contract and lifecycle against a real uvicorn on 127.0.0.1: the OpenAPI document
fuzzed by schemathesis, Triton's own clients (HTTP with binary tensors, and gRPC) equal to
predict_proba, /docs offline, a model swapped under load, SIGTERM answering what is in flight.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import SERVE_KEY, running_server
from fmnist import engine, runs
from fmnist.predict import Predictor
from fmnist.serve import ServeConfig, create_app

FUZZ_EXAMPLES = 12  # schemathesis cases per operation
LOAD_CLIENTS, LOAD_SECONDS = 4, 4.0  # the swap's concurrent load: threads, and the most it lasts
AUTH = {"Authorization": f"Bearer {SERVE_KEY}"}
GRPC_AUTH = {"authorization": f"Bearer {SERVE_KEY}"}  # gRPC metadata keys are lower case
SIGTERM_GRPC_CALLS, SIGTERM_GRPC_IMAGES = 16, 64  # gRPC work in flight when SIGTERM comes (1,024 images queued)


@pytest.fixture(scope="module")
def server(seed_run):
    """The seed run served with an API key, REST and gRPC."""
    pytest.importorskip("grpc")
    config = ServeConfig(api_key=SERVE_KEY, max_batch=16, grpc_port=0)
    app = create_app(seed_run, config)
    with running_server(app) as base:
        yield base, app.state.grpc_port


@pytest.fixture(scope="module")
def images(dataset):
    _, (x_test, _) = dataset
    return x_test[:5]


@pytest.fixture(scope="module")
def expected(seed_run, images):
    predictor = Predictor.load(seed_run)
    return engine.predict_proba(predictor.model, images, predictor.views)


# --------------------------------------------------------------------------- the OpenAPI contract
def test_openapi_describes_every_route_and_its_errors(server):
    base, _ = server
    doc = httpx.get(base + "openapi.json").json()  # open: no key
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for path in ("/v2", "/v2/models/{name}", "/v2/models/{name}/infer", "/v1/models/{name}:predict", "/api/classify",
                 "/v2/repository/models/{name}/load", "/metrics"):  # fmt: skip
        assert path in paths, path
    for path, operations in paths.items():  # the body limit answers 413 on every route, a GET with a body too
        for method, operation in operations.items():
            assert "413" in operation["responses"], (method, path)
    infer = paths["/v2/models/{name}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert {"400", "401", "404", "413", "415", "503"} <= set(infer["responses"]) and "422" not in infer["responses"]
    error = infer["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
    assert doc["components"]["schemas"][error.rsplit("/", 1)[1]]["required"] == ["error"]
    assert "multipart/form-data" in paths["/api/classify"]["post"]["requestBody"]["content"]


def test_schemathesis_finds_nothing(server):
    """Every operation, FUZZ_EXAMPLES generated requests each: no 5xx, every answer as the document says."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    base, _ = server
    schema = schemathesis.openapi.from_url(base + "openapi.json")
    before = _answered(base)
    failures, operations = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=operation.as_strategy())
        def check(case):
            case.call_and_validate(base_url=base.rstrip("/"), headers=AUTH,
                                   checks=[not_a_server_error, response_schema_conformance])  # fmt: skip

        try:
            check()
        except Exception as e:  # a failure names the operation and the request that broke it
            failures.append(f"{operation.label}: {e}")
    assert operations >= 10 and not failures, "\n".join(failures)
    assert _answered(base) - before >= operations * FUZZ_EXAMPLES // 2  # the cases were really sent


def _answered(base: str) -> int:
    """Requests the server has answered so far, by its own count."""
    text = httpx.get(base + "metrics", headers=AUTH).text
    return sum(
        int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith("fmnist_requests_total{")
    )


def test_docs_are_open_offline_and_can_be_turned_off(server, seed_run):
    base, _ = server
    page = httpx.get(base + "docs")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert not re.search(r"(src|href)=[\"']https?://", page.text), "the docs page loads something from elsewhere"
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert httpx.get(base + "docs/" + asset).status_code == 200, asset
    assert httpx.get(base + "favicon.ico").headers["content-type"] == "image/svg+xml"
    from fastapi.testclient import TestClient

    with TestClient(create_app(seed_run, ServeConfig(docs=False))) as client:
        assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404
        assert client.get("/favicon.ico").headers["content-type"] == "image/svg+xml"  # the page still has its icon


def test_refusals_found_by_trying_the_server(server):
    base, _ = server
    nested = b"[" * 1000 + b"]" * 1000  # 2 kB that json.loads cannot parse without recursing too deep
    for path in ("v2/models/fmnist/infer", "v1/models/fmnist:predict"):
        answer = httpx.post(base + path, content=nested, headers={**AUTH, "Content-Type": "application/json"})
        assert answer.status_code == 400 and "nested too deeply" in answer.json()["error"], path
    wrong = httpx.delete(base + "v2", headers=AUTH)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET" and "DELETE" in wrong.json()["error"]
    metadata_shape = {"inputs": [{"name": "pixels", "shape": [-1, 784], "datatype": "UINT8", "data": [0] * 784}]}
    answer = httpx.post(base + "v2/models/fmnist/infer", json=metadata_shape, headers=AUTH)
    assert answer.status_code == 400 and "-1" in answer.json()["error"]


# --------------------------------------------------------------------------- Triton's clients
def test_tritonclient_http_with_binary_tensors(server, images, expected):
    http = pytest.importorskip("tritonclient.http")
    base, _ = server
    client = http.InferenceServerClient(base.removeprefix("http://").rstrip("/"))
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_model_metadata("fmnist", headers=AUTH)
    assert meta["inputs"][0]["name"] == "pixels" and meta["outputs"][0]["shape"] == [-1, 10]
    tensor = http.InferInput("pixels", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)  # binary by default: Inference-Header-Content-Length
    # (headers are copied: the client adds that header to the dict it is given)
    result = client.infer("fmnist", [tensor], headers=dict(AUTH))  # no outputs named: binary_data_output
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)
    asked = http.InferRequestedOutput("probabilities", binary_data=True, class_count=2)
    labels = client.infer("fmnist", [tensor], outputs=[asked], headers=dict(AUTH)).as_numpy("probabilities")
    assert labels.shape == (5, 2) and [int(s.split(b":")[1]) for s in labels[:, 0]] == list(expected.argmax(1))
    fp32 = http.InferInput("pixels", [5, 784], "FP32")
    fp32.set_data_from_numpy((images / 255.0).reshape(5, 784).astype(np.float32), binary_data=False)  # JSON data
    json_out = http.InferRequestedOutput("probabilities", binary_data=False)
    got = client.infer("fmnist", [fp32], outputs=[json_out], headers=dict(AUTH)).as_numpy("probabilities")
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_tritonclient_grpc(server, images, expected):
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException

    _, port = server
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("fmnist", headers=GRPC_AUTH)
    meta = client.get_model_metadata("fmnist", headers=GRPC_AUTH)
    assert meta.inputs[0].name == "pixels" and list(meta.inputs[0].shape) == [-1, 28, 28]
    assert client.get_server_metadata(headers=GRPC_AUTH).name == "fmnist"
    tensor = grpcclient.InferInput("pixels", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)  # raw_input_contents
    result = client.infer("fmnist", [tensor], headers=GRPC_AUTH, request_id="r7")
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)
    assert result.get_response().id == "r7"
    top = grpcclient.InferRequestedOutput("probabilities", class_count=3)
    labels = client.infer("fmnist", [tensor], outputs=[top], headers=GRPC_AUTH).as_numpy("probabilities")
    assert labels.shape == (5, 3) and [int(s.split(b":")[1]) for s in labels[:, 0]] == list(expected.argmax(1))
    refusals = [
        (lambda: client.infer("fmnist", [tensor]), "StatusCode.UNAUTHENTICATED", "no API key"),
        (lambda: client.get_model_metadata("nope", headers=GRPC_AUTH), "StatusCode.NOT_FOUND", "'nope'"),
        (lambda: client.infer("fmnist", [_tensor(grpcclient, np.zeros((17, 28, 28), np.uint8))], headers=GRPC_AUTH),
         "StatusCode.RESOURCE_EXHAUSTED", "--max-batch"),
        (lambda: client.infer("fmnist", [_tensor(grpcclient, np.zeros((1, 27, 27), np.uint8))], headers=GRPC_AUTH),
         "StatusCode.INVALID_ARGUMENT", "[1, 27, 27]"),
    ]  # fmt: skip
    for call, code, words in refusals:
        with pytest.raises(InferenceServerException) as refused:
            call()
        assert refused.value.status() == code and words in refused.value.message(), refused.value


def test_grpc_takes_exactly_one_raw_tensor_per_input(server, images):
    grpc = pytest.importorskip("grpc")
    from fmnist.serve.v2_grpc import grpc_predict_v2_pb2 as pb
    from fmnist.serve.v2_grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    _, port = server
    tensor = pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="UINT8", shape=[1, 28, 28])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        one = pb.ModelInferRequest(model_name="fmnist", inputs=[tensor], raw_input_contents=[images[0].tobytes()])
        assert stub.ModelInfer(one, metadata=tuple(GRPC_AUTH.items())).raw_output_contents
        two = pb.ModelInferRequest(model_name="fmnist", inputs=[tensor],
                                   raw_input_contents=[images[0].tobytes(), images[1].tobytes()])  # fmt: skip
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(two, metadata=tuple(GRPC_AUTH.items()))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "exactly one" in refused.value.details()


def _tensor(grpcclient, x: np.ndarray):
    tensor = grpcclient.InferInput("pixels", list(x.shape), "UINT8")
    tensor.set_data_from_numpy(x)
    return tensor


# --------------------------------------------------------------------------- the model lifecycle
def _new_model(seed_run: Path, stage: Path) -> Path:
    """A complete new run in ``stage``: the seed run with its last layer's bias shifted towards class 8 (Bag)."""
    shutil.copytree(seed_run, stage)
    model = runs.load_model(seed_run)
    last = model.layers[-1]
    kernel, bias = last.get_weights()
    bias = bias.copy()
    bias[8] += 50.0  # every image becomes a bag: the swap shows in every answer
    last.set_weights([kernel, bias])
    runs.save_model(stage / runs.MODEL_FILE, model)
    return stage


def test_a_swap_under_load_loses_no_request(seed_run, tmp_path, images):
    """--watch: a new run renamed into place is loaded, warmed, swapped in; every request is answered
    (by the old model, then the new one), /v2/models reports version 2, the old model is released."""
    run = tmp_path / "seed"
    shutil.copytree(seed_run, run)
    app = create_app(run, ServeConfig(max_batch=8, watch=True))
    body = {
        "inputs": [{"name": "pixels", "shape": [2, 28, 28], "datatype": "UINT8", "data": images[:2].ravel().tolist()}]
    }
    with running_server(app) as base:
        old = weakref.ref(app.state.service.current.predictor.model)
        stop, answers = threading.Event(), []

        def load():
            with httpx.Client(base_url=base, timeout=30) as client:
                while not stop.is_set():
                    response = client.post("v2/models/fmnist/infer", json=body)
                    answers.append((response.status_code, response.json()))

        with ThreadPoolExecutor(LOAD_CLIENTS) as pool:
            workers = [pool.submit(load) for _ in range(LOAD_CLIENTS)]
            time.sleep(0.5)
            stage = _new_model(seed_run, tmp_path / ".seed.new")
            os.replace(run, tmp_path / ".seed.old")  # as runs.staged_dir replaces a run
            os.replace(stage, run)
            deadline = time.monotonic() + 60
            while httpx.get(base + "v2/models/fmnist").json()["versions"] != ["2"]:
                assert time.monotonic() < deadline, "the new run was not swapped in"
                time.sleep(0.1)
            time.sleep(min(1.0, LOAD_SECONDS))
            stop.set()
            for w in workers:
                w.result()
        statuses = {status for status, _ in answers}
        versions = [answer["model_version"] for _, answer in answers]
        assert statuses == {200}, statuses
        assert "1" in versions and versions[-1] == "2"
        for _, answer in answers:
            top = np.array(answer["outputs"][0]["data"]).reshape(2, 10).argmax(1)
            assert (top == 8).all() == (answer["model_version"] == "2")  # each answer from one model, whole
        after = httpx.post(base + "v2/models/fmnist/infer", json=body).json()
        assert after["model_version"] == "2"
        deadline = time.monotonic() + 30
        while old() is not None:  # released once its last request was answered
            assert time.monotonic() < deadline, "the old model is still held"
            gc.collect()
            time.sleep(0.1)
        loaded = httpx.post(base + "v2/repository/models/fmnist/load")
        assert loaded.status_code == 200 and loaded.json()["model_version"] == "3"


def test_a_run_that_cannot_load_is_refused_and_the_old_model_keeps_serving(seed_run, tmp_path, images):
    """A damaged model.keras renamed into place: the repository load answers 400 with the reason,
    --watch tries it and keeps the old model, infer answers with version 1; a good run after it is swapped in."""
    run = tmp_path / "seed"
    shutil.copytree(seed_run, run)
    reasons = []  # what the server reports after each load: None when it worked
    app = create_app(run, ServeConfig(max_batch=8, watch=True), on_loaded=reasons.append)
    tensor = {"name": "pixels", "shape": [1, 28, 28], "datatype": "UINT8", "data": images[0].ravel().tolist()}
    body = {"inputs": [tensor]}
    with running_server(app) as base:
        before = httpx.post(base + "v2/models/fmnist/infer", json=body).json()
        damaged = tmp_path / "model.keras.new"
        damaged.write_bytes((run / runs.MODEL_FILE).read_bytes()[:2000])  # a truncated zip
        os.replace(damaged, run / runs.MODEL_FILE)

        loaded = httpx.post(base + "v2/repository/models/fmnist/load", timeout=60)
        assert loaded.status_code == 400, loaded.text
        assert "could not be loaded" in loaded.json()["error"] and runs.MODEL_FILE in loaded.json()["error"]
        deadline = time.monotonic() + 30
        while not any(reasons):  # the watcher saw the new file, tried it, and said why it kept the old model
            assert time.monotonic() < deadline, "--watch did not try the new run"
            time.sleep(0.1)
        assert runs.MODEL_FILE in next(r for r in reasons if r)
        after = httpx.post(base + "v2/models/fmnist/infer", json=body)
        assert after.status_code == 200 and after.json()["model_version"] == "1"
        assert after.json()["outputs"] == before["outputs"]
        assert httpx.get(base + "v2/models/fmnist").json()["versions"] == ["1"]
        assert httpx.get(base + "v2/health/ready").status_code == 200

        stage = _new_model(seed_run, tmp_path / ".seed.new")  # then a good run: the watcher still swaps it in
        os.replace(run, tmp_path / ".seed.damaged")
        os.replace(stage, run)
        deadline = time.monotonic() + 60
        while httpx.get(base + "v2/models/fmnist").json()["versions"] != ["2"]:
            assert time.monotonic() < deadline, "the good run after a damaged one was not swapped in"
            time.sleep(0.1)
        top = np.array(httpx.post(base + "v2/models/fmnist/infer", json=body).json()["outputs"][0]["data"]).argmax()
        assert top == 8


def test_sigterm_answers_what_is_in_flight_and_exits_0(seed_run, images):
    """`fmnist serve` gets SIGTERM with a request half-sent, others running, and gRPC calls in flight:
    all answered, exit 0."""
    grpc = pytest.importorskip("grpc")
    from fmnist.serve.v2_grpc import grpc_predict_v2_pb2 as pb
    from fmnist.serve.v2_grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    command = [sys.executable, "-m", "fmnist.cli", "serve", str(seed_run), "--port", "0", "--max-batch",
               str(SIGTERM_GRPC_IMAGES), "--grpc-port", "0"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            url = url or (re.search(r"http://127\.0\.0\.1:\d+/", line) or [None])[0]
            if line.startswith("model ready"):
                grpc_port = int(re.search(r"gRPC: [\d.]+:(\d+)", line)[1])
                break
            assert time.monotonic() < deadline
        host, port = url[7:-1].split(":")
        many = np.resize(images, (SIGTERM_GRPC_IMAGES, 28, 28))
        tensor = pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="UINT8", shape=list(many.shape))
        call = pb.ModelInferRequest(model_name="fmnist", inputs=[tensor], raw_input_contents=[many.tobytes()])
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        body = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 28, 28], "datatype": "UINT8",
                                       "data": images[0].ravel().tolist()}]}).encode()  # fmt: skip
        half = socket.create_connection((host, int(port)), timeout=30)
        half.sendall(f"POST /v2/models/fmnist/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:100])  # fmt: skip
        with ThreadPoolExecutor(8) as pool:
            busy = [pool.submit(httpx.post, url + "v2/models/fmnist/infer", content=body, timeout=30) for _ in range(8)]
            calls = [stub.ModelInfer.future(call, timeout=60) for _ in range(SIGTERM_GRPC_CALLS)]
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            half.sendall(body[100:])  # the rest of a request that was in flight when the signal came
            reply = b""
            while chunk := half.recv(65536):
                reply += chunk
                if b"model_version" in reply:
                    break
            statuses = [f.result().status_code for f in busy]
        answered = []
        for f in calls:
            try:
                answered.append(len(f.result().raw_output_contents[0]) // 40)  # 10 float32 per image
            except grpc.RpcError as e:
                answered.append(f"{e.code()}: {e.details()}")
        channel.close()
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert statuses == [200] * 8
        assert answered == [SIGTERM_GRPC_IMAGES] * SIGTERM_GRPC_CALLS, answered
        assert proc.wait(timeout=30) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "v2/health/live", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
