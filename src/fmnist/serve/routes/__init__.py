"""The HTTP routes, one ``APIRouter`` per protocol, each usable alone:

    app = FastAPI(lifespan=...)               # starts the ModelService (see app.create_app)
    app.state.service, app.state.config, app.state.telemetry = service, config, Telemetry()
    app.include_router(v2.router)

``v2`` KServe V2 over REST; ``tf_serving`` TensorFlow Serving REST; ``classify`` the page and
``/api/classify``; ``ops`` ``/metrics``. Routes reach the model, the flags and the counters
through the dependencies in ``common`` (read from ``app.state``), never through globals.
"""
