"""`fmnist serve`'s model lifecycle beyond a plain swap: a server whose first load failed is mended by
--watch, a first load that finishes after a reload does not undo it, the watcher reports what it
cannot load and goes on, a swap recompiles nothing the new model needs, and gRPC says why it cannot listen.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

from conftest import running_server
from fmnist import runs
from fmnist.serve import ServeConfig, create_app
from fmnist.serve.server import ServeError, uvicorn_server

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # jax.monitoring: one XLA compilation


def test_watch_mends_a_server_whose_first_load_failed(seed_run, tmp_path):
    """The run is damaged when the server starts (503 with the reason); a good run put in its place is loaded."""
    run = tmp_path / "seed"
    shutil.copytree(seed_run, run)
    (run / runs.MODEL_FILE).write_bytes((seed_run / runs.MODEL_FILE).read_bytes()[:2000])  # a truncated zip
    reasons = []
    app = create_app(run, ServeConfig(max_batch=2, watch=True), on_loaded=reasons.append)
    from fmnist.serve import bind, url

    sock = bind(ServeConfig(port=0))
    server = uvicorn_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = url(sock)
    try:
        deadline = time.monotonic() + 60
        while not reasons:
            assert time.monotonic() < deadline, "the first load did not report"
            time.sleep(0.1)
        assert reasons[0] and runs.MODEL_FILE in reasons[0]
        assert httpx.get(base + "v2/health/ready").status_code == 503
        good = tmp_path / ".seed.new"
        shutil.copytree(seed_run, good)
        os.replace(run, tmp_path / ".seed.damaged")
        os.replace(good, run)
        deadline = time.monotonic() + 120
        while httpx.get(base + "v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "--watch did not load the good run"
            time.sleep(0.2)
        assert reasons[-1] is None
        assert httpx.get(base + "v2/models/fmnist").json()["versions"] == ["1"]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_a_first_load_finishing_after_a_reload_does_not_undo_it(seed_run, monkeypatch):
    """The reload's model is the newer one: the first load's result, arriving later, is dropped."""
    from fmnist.serve.model import ModelService, ServedModel

    first_may_finish = threading.Event()
    made = []

    def load(self):  # the first load (on the inference thread) waits; the reload's (loader thread) does not
        if not made:
            made.append("first")
            first_may_finish.wait(10)
            return ServedModel(SimpleNamespace(name="first"), 1, "pixels")
        made.append("reload")
        return ServedModel(SimpleNamespace(name="reload"), 1, "pixels")

    monkeypatch.setattr(ModelService, "_load", load)

    async def main():
        service = ModelService(seed_run, ServeConfig())
        await service.start()
        await asyncio.sleep(0.05)
        assert await service.reload() == "1"
        first_may_finish.set()
        await service._loading
        await asyncio.sleep(0)  # the first load's done-callback runs
        service.close()
        return service.current.predictor.name, service.version

    assert asyncio.run(main()) == ("reload", "1")


def test_the_watcher_reports_any_failure_and_keeps_watching(tmp_path):
    from fmnist.serve import lifecycle

    run = tmp_path / "run"
    run.mkdir()
    (run / runs.MODEL_FILE).write_bytes(b"one")
    attempts, reasons = [], []

    class Service:
        path = run

        async def reload(self):
            attempts.append(1)
            raise RuntimeError("disk on fire")

    async def main():
        watcher = asyncio.create_task(lifecycle.watch(Service(), reasons.append, every=0.02))
        for tried, content in enumerate((b"two", b"three"), start=1):  # two new models, each renamed into place
            await asyncio.sleep(0.1)
            (tmp_path / "new").write_bytes(content)
            os.replace(tmp_path / "new", run / runs.MODEL_FILE)
            for _ in range(200):
                if len(reasons) >= tried:
                    break
                await asyncio.sleep(0.02)
        alive = not watcher.done()
        watcher.cancel()
        return alive

    assert asyncio.run(main()), "the watcher stopped"
    assert len(attempts) == 2 and len(reasons) == 2
    assert all("RuntimeError" in r and "disk on fire" in r for r in reasons), reasons


def test_a_swap_keeps_the_new_models_programs(seed_run, tmp_path, dataset, monkeypatch):
    """No jax.clear_caches on a swap (it would drop the new model's compiled programs too), and the first
    request after it compiles nothing."""
    import jax

    cleared = []
    real_clear = jax.clear_caches
    monkeypatch.setattr(jax, "clear_caches", lambda: (cleared.append(1), real_clear()))
    _, (x_test, _) = dataset
    body = {"inputs": [{"name": "pixels", "shape": [2, 28, 28], "datatype": "UINT8",
                        "data": x_test[:2].ravel().tolist()}]}  # fmt: skip
    compiles = []

    def compiled(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            compiles.append(duration)

    app = create_app(seed_run, ServeConfig(max_batch=2))
    with running_server(app) as base:
        assert httpx.post(base + "v2/models/fmnist/infer", json=body).status_code == 200
        loaded = httpx.post(base + "v2/repository/models/fmnist/load", timeout=120)  # answers once the old is released
        assert loaded.status_code == 200 and loaded.json()["model_version"] == "2"
        jax.monitoring.register_event_duration_secs_listener(compiled)
        try:
            for n in (1, 2):  # both batch sizes the warm-up compiled
                answer = httpx.post(base + "v2/models/fmnist/infer", json={"inputs": [{**body["inputs"][0],
                                    "shape": [n, 28, 28], "data": x_test[:n].ravel().tolist()}]})  # fmt: skip
                assert answer.status_code == 200 and answer.json()["model_version"] == "2"
        finally:
            jax.monitoring.unregister_event_duration_listener(compiled)
    assert cleared == [] and compiles == []


def test_grpc_start_up_error_keeps_the_reason():
    pytest.importorskip("grpc")
    from fmnist.serve import grpc_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = ServeConfig(grpc_port=taken.getsockname()[1])

        async def main():
            await grpc_server.start(SimpleNamespace(), config)

        with pytest.raises(ServeError) as refused:
            asyncio.run(main())
    message = str(refused.value)
    assert "Failed to bind" in message and "--grpc-port" in message and "\n" not in message, message
