"""`fmnist serve` against a real uvicorn server on 127.0.0.1: every endpoint, every error status,
V2 / TF Serving results equal to the one inference path, the API key, CORS, metrics; readiness
in-process; the command line. The body limit and the inference queue: test_serve_limits.py.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fmnist import engine, images, runs
from fmnist.data import CLASS_NAMES
from fmnist.predict import Predictor
from fmnist.serve import ServeConfig, create_app

N_IMAGES = 6  # test images sent per protocol check


# --------------------------------------------------------------------------- helpers and fixtures
def photo(image: np.ndarray, scale: int = 6, fmt: str = "PNG") -> bytes:
    """A Fashion-MNIST image as a product photo would be: enlarged, dark garment on white."""
    big = Image.fromarray(255 - image).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.convert("RGB").save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def api(live_server):
    """An HTTP client for the live server, sending its API key."""
    with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {live_server.key}"}) as client:
        yield client


@pytest.fixture(scope="module")
def predictor(seed_run) -> Predictor:
    return Predictor.load(seed_run)


@pytest.fixture(scope="module")
def sample(dataset, predictor):
    """N_IMAGES test images the seed model classifies right and surely (photos of them too)."""
    _, (x_test, y_test) = dataset
    probs = predictor.probabilities(x_test[:400])
    sure = [i for i in range(400) if probs[i].argmax() == y_test[i] and probs[i].max() > 0.9]
    picked = []
    for i in sure:  # each of a different class, and its photo still classified right by `fmnist predict`'s path
        new_class = y_test[i] not in {y_test[j] for j in picked}
        if new_class and predictor.predict(Image.open(io.BytesIO(photo(x_test[i]))))[0].label == y_test[i]:
            picked.append(i)
        if len(picked) == N_IMAGES:
            break
    assert len(picked) == N_IMAGES
    return x_test[picked], y_test[picked]


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    """The issue's error form: the status, a JSON body that is exactly {"error": "..."} naming ``words``."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    for word in words:
        assert word in body["error"], body["error"]


def v2_tensor(x: np.ndarray, datatype: str = "UINT8", shape: list[int] | None = None, name: str = "pixels") -> dict:
    data = x.ravel().tolist() if datatype == "UINT8" else (x / 255.0).ravel().tolist()
    return {"inputs": [{"name": name, "shape": shape or [len(x), 28, 28], "datatype": datatype, "data": data}]}


# --------------------------------------------------------------------------- health and metadata
def test_health_and_metadata(live_server, api):
    open_client = httpx.Client(base_url=live_server.url)  # health needs no key
    assert open_client.get("/v2/health/live").json() == {"live": True}
    assert open_client.get("/v2/health/ready").json() == {"ready": True}
    server = api.get("/v2").json()
    assert server["name"] == "fmnist" and "classification" in server["extensions"]
    name = live_server.run.name
    for alias in (name, "fmnist"):
        meta = api.get(f"/v2/models/{alias}").json()
        assert meta["name"] == name
        assert meta["inputs"] == [{"name": "pixels", "datatype": "UINT8", "shape": [-1, 28, 28]}]
        assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
        assert api.get(f"/v2/models/{alias}/ready").json() == {"name": name, "ready": True}
        status = api.get(f"/v1/models/{alias}").json()["model_version_status"][0]
        assert status["state"] == "AVAILABLE" and status["status"]["error_code"] == "OK"
    assert_error(api.get("/v2/models/nope"), 404, "nope", name)
    assert_error(api.get("/v2/models/nope/ready"), 404, "nope")
    assert_error(api.post("/v2/models/nope/infer", json=v2_tensor(np.zeros((1, 28, 28), np.uint8))), 404, "nope")
    assert_error(api.get("/v1/models/nope"), 404, "nope")
    assert_error(api.post("/v1/models/nope:predict", json={"instances": []}), 404, "nope")
    assert_error(api.get("/no/such/route"), 404, "/no/such/route")
    assert_error(api.get("/v2/models/fmnist/infer"), 405)


# --------------------------------------------------------------------------- KServe V2
@pytest.mark.parametrize(
    ("datatype", "shape"), [("UINT8", [N_IMAGES, 28, 28]), ("UINT8", [N_IMAGES, 784]), ("FP32", [N_IMAGES, 28, 28, 1])]
)
def test_v2_infer_equals_predict_proba(api, live_server, sample, predictor, datatype, shape):
    x, y = sample
    response = api.post("/v2/models/fmnist/infer", json={"id": "r1", **v2_tensor(x, datatype, shape)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "r1" and body["model_name"] == live_server.run.name
    (out,) = body["outputs"]
    assert out["name"] == "probabilities" and out["datatype"] == "FP32" and out["shape"] == [N_IMAGES, 10]
    got = np.array(out["data"]).reshape(N_IMAGES, 10)
    want = engine.predict_proba(predictor.model, x, predictor.views)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert (got.argmax(axis=1) == y).all()


def test_a_full_batch_of_fp32_is_parsed_off_the_loop_and_answered(api, dataset, predictor):
    from fmnist.serve import bodies

    _, (x_test, _) = dataset
    x = x_test[100:116]  # --max-batch images, as FP32 0–1: a body far over the inline-parsing size
    body = json.dumps(v2_tensor(x, "FP32", [16, 784])).encode()
    assert len(body) > 2 * bodies.INLINE_JSON_BYTES
    response = api.post("/v2/models/fmnist/infer", content=body, headers={"Content-Type": "application/json"})
    got = np.array(response.json()["outputs"][0]["data"]).reshape(16, 10)
    np.testing.assert_allclose(got, predictor.probabilities(x), rtol=1e-4, atol=1e-6)


def test_v2_classification_extension(api, sample):
    x, y = sample
    request = v2_tensor(x) | {"outputs": [{"name": "probabilities", "parameters": {"classification": 3}}]}
    (out,) = api.post("/v2/models/fmnist/infer", json=request).json()["outputs"]
    assert out["datatype"] == "BYTES" and out["shape"] == [N_IMAGES, 3]
    rows = np.array(out["data"]).reshape(N_IMAGES, 3)
    for row, label in zip(rows, y, strict=True):
        scores = [float(s.split(":")[0]) for s in row]
        assert row[0].split(":", 2)[1:] == [str(label), CLASS_NAMES[label]]  # score:index:label, best first
        assert scores == sorted(scores, reverse=True) and scores[0] > 0.9


ZEROS = np.zeros((1, 28, 28), np.uint8)


@pytest.mark.parametrize(
    ("request_body", "status", "words"),
    [
        ({"inputs": []}, 400, ["inputs"]),
        (v2_tensor(ZEROS, name="image"), 400, ["pixels", "image"]),
        (v2_tensor(ZEROS) | {"outputs": [{"name": "logits"}]}, 400, ["probabilities", "logits"]),
        (v2_tensor(ZEROS) | {"outputs": [{"name": "probabilities", "parameters": {"classification": 11}}]}, 400,
         ["classification"]),
        ({"inputs": [{"name": "pixels", "shape": [1, 28, 28], "datatype": "INT64", "data": [0] * 784}]}, 400,
         ["INT64"]),
        ({"inputs": [{"name": "pixels", "shape": [1, 27, 27], "datatype": "UINT8", "data": [0] * 729}]}, 400,
         ["[1, 27, 27]"]),
        ({"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "UINT8", "data": [0] * 700}]}, 400, ["700"]),
        ({"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "UINT8", "data": [256] * 784}]}, 400,
         ["0–255"]),
        ({"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "UINT8", "data": [0.5] * 784}]}, 400,
         ["whole"]),
        ({"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "FP32", "data": [3.0] * 784}]}, 400, ["0–1"]),
        ({"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "UINT8", "data": ["a"] * 784}]}, 400,
         ["numbers"]),
        (v2_tensor(np.zeros((17, 28, 28), np.uint8)), 413, ["17", "--max-batch"]),
    ],
)  # fmt: skip
def test_v2_refuses_bad_tensors(api, request_body, status, words):
    assert_error(api.post("/v2/models/fmnist/infer", json=request_body), status, *words)


def test_v2_refuses_what_is_not_json(api):
    assert_error(api.post("/v2/models/fmnist/infer", content=b"{nope", headers={"Content-Type": "application/json"}),
                 400, "JSON")  # fmt: skip
    assert_error(api.post("/v2/models/fmnist/infer", content=b"x", headers={"Content-Type": "text/csv"}), 415, "JSON")


# --------------------------------------------------------------------------- TensorFlow Serving
def test_tf_serving_predict_arrays_and_photos(api, sample, predictor):
    x, y = sample
    body = api.post("/v1/models/fmnist:predict", json={"instances": x.tolist()}).json()
    np.testing.assert_allclose(body["predictions"], predictor.probabilities(x), rtol=1e-5, atol=1e-6)
    photos = [{"b64": base64.b64encode(photo(image)).decode()} for image in x]
    got = np.array(api.post("/v1/models/fmnist:predict", json={"instances": photos}).json()["predictions"])
    want = [p.probabilities for p in predictor.predict([Image.open(io.BytesIO(photo(image))) for image in x])]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # the same preprocessing as `fmnist predict`
    assert (got.argmax(axis=1) == y).all()
    columnar = api.post("/v1/models/fmnist:predict", json={"inputs": {"pixels": x[:2].tolist()}}).json()
    np.testing.assert_allclose(columnar["outputs"], body["predictions"][:2], rtol=1e-6)


@pytest.mark.parametrize(
    ("request_body", "status", "words"),
    [
        ({"signature_name": "x"}, 400, ["instances"]),
        ({"instances": []}, 400, ["no instances"]),
        ({"instances": [[[0] * 27] * 28]}, 400, ["instance 0", "[28, 27]"]),
        ({"instances": [{"b64": "%%%"}]}, 400, ["base64"]),
        ({"instances": [{"b64": base64.b64encode(b"not an image").decode()}]}, 400, ["not an image"]),
        ({"instances": [[[0] * 28] * 28] * 17}, 413, ["17", "--max-batch"]),
    ],
)
def test_tf_serving_refuses_bad_instances(api, request_body, status, words):
    assert_error(api.post("/v1/models/fmnist:predict", json=request_body), status, *words)


# --------------------------------------------------------------------------- /api/classify
def test_classify_a_photo_as_fmnist_predict_would(api, sample, predictor):
    x, y = sample
    data = photo(x[0], fmt="JPEG")
    by_form = api.post("/api/classify?top_k=4", files={"file": ("shoe.jpg", data, "image/jpeg")}).json()
    by_body = api.post("/api/classify", content=data, headers={"Content-Type": "image/jpeg"}).json()
    expected = predictor.predict(Image.open(io.BytesIO(data)))[0]
    assert by_form["class_name"] == expected.class_name == CLASS_NAMES[y[0]]
    np.testing.assert_allclose(by_form["probabilities"], expected.probabilities, rtol=1e-5, atol=1e-6)
    assert len(by_form["top_k"]) == 4 and len(by_body["top_k"]) == 3  # the default
    assert by_form["top_k"][0] == {"label": expected.label, "class_name": expected.class_name,
                                   "probability": by_form["probability"]}  # fmt: skip
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(by_form["image_png"]))))
    np.testing.assert_array_equal(seen, images.to_fashion_mnist(Image.open(io.BytesIO(data))))
    assert by_body["probabilities"] == by_form["probabilities"]


def test_classify_refusals(api):
    png = photo(np.full((28, 28), 200, np.uint8))
    assert_error(api.post("/api/classify", content=b"hello", headers={"Content-Type": "text/plain"}), 415, "text/plain")
    assert_error(api.post("/api/classify", content=b"\x89PNG broken", headers={"Content-Type": "image/png"}), 400,
                 "not an image")  # fmt: skip
    assert_error(api.post("/api/classify", files={"photo": ("a.png", png, "image/png")}), 400, "'file'")
    assert_error(api.post("/api/classify?top_k=0", content=png, headers={"Content-Type": "image/png"}), 400, "top_k")
    assert_error(api.post("/api/classify?top_k=x", content=png, headers={"Content-Type": "image/png"}), 400, "top_k")
    buf = io.BytesIO()
    Image.new("L", (2000, 1500), 255).save(buf, "PNG")  # 3 MP of white: a few kB, over the 2 MP limit
    assert_error(api.post("/api/classify", content=buf.getvalue(), headers={"Content-Type": "image/png"}), 413,
                 "3,000,000", "--max-pixels")  # fmt: skip
    blank = photo(np.zeros((28, 28), np.uint8))
    assert_error(api.post("/api/classify", content=blank, headers={"Content-Type": "image/png"}), 400, "blank")


# --------------------------------------------------------------------------- the API key, CORS, metrics
def test_api_key_guards_the_api_not_the_page_or_health(live_server):
    with httpx.Client(base_url=live_server.url) as anyone:
        for path in ("/", "/v2/health/live", "/v2/health/ready"):
            assert anyone.get(path).status_code == 200, path
        for method, path in (("GET", "/v2"), ("GET", "/v2/models/fmnist"), ("GET", "/metrics"),
                             ("POST", "/v2/models/fmnist/infer"), ("POST", "/v1/models/fmnist:predict"),
                             ("POST", "/api/classify")):  # fmt: skip
            response = anyone.request(method, path)
            assert_error(response, 401, "no API key")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert_error(anyone.get("/v2", headers={"Authorization": "Bearer wrong"}), 401, "wrong API key")
        assert anyone.get("/v2", headers={"Authorization": f"bearer {live_server.key}"}).status_code == 200
    page = httpx.get(live_server.url).text
    assert 'id="key"' in page  # the page asks for the key this server needs


def test_cors_allows_only_the_configured_origin(api, live_server):
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    ok = api.options("/v2/models/fmnist/infer", headers={"Origin": live_server.origin, **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == live_server.origin
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    other = api.options("/v2/models/fmnist/infer", headers={"Origin": "https://evil.example", **preflight})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    simple = api.get("/v2", headers={"Origin": live_server.origin})
    assert simple.headers["access-control-allow-origin"] == live_server.origin
    assert "access-control-allow-origin" not in api.get("/v2", headers={"Origin": "https://evil.example"}).headers
    refused = httpx.get(live_server.url + "v2", headers={"Origin": live_server.origin})  # a 401 carries CORS too
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == live_server.origin


def _sample_value(text: str, sample: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(sample + " "))
    return float(line.rsplit(" ", 1)[1])


def test_metrics_count_requests_latency_and_batches(api):
    zeros = v2_tensor(np.zeros((2, 28, 28), np.uint8))
    before = api.get("/metrics").text
    infer_ok = 'fmnist_requests_total{method="POST",route="/v2/models/{name}/infer",status="200"}'
    start = _sample_value(before, infer_ok) if infer_ok in before else 0
    passes = _sample_value(before, "fmnist_inference_seconds_count")
    for _ in range(3):
        assert api.post("/v2/models/fmnist/infer", json=zeros).status_code == 200
    api.get("/v2/models/nope")
    response = api.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert _sample_value(text, infer_ok) == start + 3
    assert _sample_value(text, 'fmnist_requests_total{method="GET",route="/v2/models/{name}",status="404"}') >= 1
    assert _sample_value(text, "fmnist_inference_seconds_count") >= passes + 3
    assert _sample_value(text, 'fmnist_batch_size_bucket{le="+Inf"}') == _sample_value(text, "fmnist_batch_size_count")
    assert "# TYPE fmnist_inference_seconds histogram" in text and 'fmnist_batch_size_bucket{le="2"}' in text


# --------------------------------------------------------------------------- readiness and the queue (in process)
def test_ready_is_503_until_the_model_is_loaded_and_warm(seed_run, monkeypatch):
    from fastapi.testclient import TestClient

    from fmnist.serve.model import ModelService

    release, real_load = threading.Event(), ModelService._load
    monkeypatch.setattr(ModelService, "_load", lambda self: release.wait(60) and real_load(self))
    with TestClient(create_app(seed_run, ServeConfig(max_batch=4))) as client:
        assert client.get("/v2/health/live").status_code == 200
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False and "loading" in ready.json()["error"]
        assert client.get("/v2/models/fmnist/ready").status_code == 503
        assert client.get("/v1/models/fmnist").json()["model_version_status"][0]["state"] == "LOADING"
        infer = client.post("/v2/models/fmnist/infer", json=v2_tensor(ZEROS))
        assert_error(infer, 503, "loading")
        assert infer.headers["Retry-After"] == "1"
        release.set()
        deadline = time.monotonic() + 60
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.post("/v2/models/fmnist/infer", json=v2_tensor(ZEROS)).status_code == 200


def test_a_model_that_cannot_load_is_reported_and_never_ready(seed_run, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    run = tmp_path / "broken"
    shutil.copytree(seed_run, run)
    (run / runs.MODEL_FILE).write_bytes(b"not a zip file")
    reasons = []
    with TestClient(create_app(run, on_loaded=reasons.append)) as client:
        deadline = time.monotonic() + 60
        while not reasons:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503 and "could not be loaded" in ready.json()["error"]
        assert_error(client.post("/v2/models/broken/infer", json=v2_tensor(ZEROS)), 503, "could not be loaded")
        assert client.get("/v1/models/broken").json()["model_version_status"][0]["state"] == "END"
    assert "model.keras" in reasons[0]


def test_a_protocol_router_serves_alone(seed_run, sample, predictor):
    """One protocol's router mounted on a bare app with a model: it answers, and nothing else is there."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from fmnist.serve.model import ModelService
    from fmnist.serve.routes import tf_serving

    config = ServeConfig(max_batch=8)
    service = ModelService(seed_run, config)

    @asynccontextmanager
    async def lifespan(app):
        await service.start()
        yield
        service.close()

    app = FastAPI(lifespan=lifespan)
    app.state.service, app.state.config = service, config
    app.include_router(tf_serving.router)
    x, _ = sample
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/v1/models/fmnist").json()["model_version_status"][0]["state"] != "AVAILABLE":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        got = client.post("/v1/models/fmnist:predict", json={"instances": x.tolist()}).json()["predictions"]
        np.testing.assert_allclose(got, predictor.probabilities(x), rtol=1e-5, atol=1e-6)
        assert client.get("/v2/health/ready").status_code == 404 and client.get("/").status_code == 404


# --------------------------------------------------------------------------- the command line
def test_serve_command_prints_the_url_and_maps_its_flags(seed_run, monkeypatch):
    from fmnist import cli, serve

    calls = {}
    monkeypatch.setattr(
        serve, "run", lambda app, sock: calls.update(app=app, port=sock.getsockname()[1]) or sock.close()
    )
    result = CliRunner().invoke(cli.app, ["serve", str(seed_run), "--port", "0", "--api-key", "k", "--cors-origin",
                                          "https://a.example", "--max-batch", "32", "--no-batch-requests"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"http://127.0.0.1:{calls['port']}/" in result.output and "Bearer" in result.output
    config = calls["app"].state.config
    assert config.api_key == "k" and config.cors_origins == ("https://a.example",) and config.max_batch == 32
    assert config.host == "127.0.0.1" and not config.batch_requests and config.max_upload_mb == 10


def test_serve_command_refusals_are_one_line(tmp_path):
    from fmnist import cli

    result = CliRunner().invoke(cli.app, ["serve", str(tmp_path / "missing")])
    assert result.exit_code != 0 and "does not exist" in str(result.exception)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        from fmnist.serve import ServeConfig as Config
        from fmnist.serve import ServeError, bind

        with pytest.raises(ServeError, match="--port"):
            bind(Config(port=taken.getsockname()[1]))


def test_serve_help_states_defaults_and_imports_no_jax(tmp_path):
    code = (
        "import json, sys\nfrom fmnist.cli import app\n"
        "try:\n    app(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'keras', 'fastapi', 'uvicorn'})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    for default in ("127.0.0.1", "8000", "10.0", "25000000", "256"):
        assert default in proc.stdout, default


def test_run_name_is_the_model_name(seed_run, tmp_path):
    bare = tmp_path / "shirt.keras"
    bare.write_bytes((seed_run / runs.MODEL_FILE).read_bytes())
    assert create_app(bare).state.service.name == "shirt" and create_app(seed_run).state.service.name == seed_run.name
