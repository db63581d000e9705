"""`fmnist serve`: a run as an HTTP service (KServe V2, TensorFlow Serving REST, a page for people).

    from fmnist.serve import ServeConfig, bind, create_app, run
    config = ServeConfig(port=8000)
    sock = bind(config)
    run(create_app("runs/default", config), sock)

``config`` holds the flags; ``protocols`` the wire formats; ``model`` the loaded model and
its inference queue; ``bodies`` the request bodies routes parse themselves; ``routes`` one
router per protocol (V2, TF Serving, the page and /api/classify, /metrics); ``middleware``
the API key, body limit and request counts; ``telemetry`` the counters as Prometheus text;
``app`` puts them together; ``server`` the socket and uvicorn. FastAPI is imported on first
use of a name below, so the CLI can read ``fmnist.serve.config``'s defaults without it.
"""

from importlib import import_module

_LAZY = {
    "create_app": "fmnist.serve.app",
    "ServeConfig": "fmnist.serve.config",
    "ServeError": "fmnist.serve.server",
    "bind": "fmnist.serve.server",
    "run": "fmnist.serve.server",
    "url": "fmnist.serve.server",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fmnist.serve' has no attribute {name!r}")


__all__ = list(_LAZY)
