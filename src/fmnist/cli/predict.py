"""`fmnist predict` and `fmnist serve`: a trained model classifying new images, from files or over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from fmnist.cli import _use_compilation_cache, app, err, out
from fmnist.serve import config as serve_config


# ---- predict
@app.command()
def predict(
    run: Annotated[Path, typer.Argument(metavar="RUN_OR_MODEL", help="Run directory or .keras model file.")],
    inputs: Annotated[
        list[Path],
        typer.Argument(metavar="IMAGE", help="Image files (PNG, JPEG, WebP, GIF, BMP, TIFF) or folders of them."),
    ],
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=10, help="Classes shown per image.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of tables.")] = False,
    save_preprocessed: Annotated[
        Path | None, typer.Option(help="Folder to write the 28×28 image the model saw for each input.")
    ] = None,
) -> None:
    """Classify your own images: each is converted by Fashion-MNIST's recipe, then predicted.

    A folder means every image in it. A file that cannot be read gets one error line on stderr, the others are still predicted, and the exit code is 1.
    """  # noqa: E501 (one paragraph: Typer keeps line breaks)
    import json

    from rich.markup import escape

    from fmnist.predict import Predictor
    from fmnist.predict import save_preprocessed as save_inputs

    predictor = Predictor.load(run)
    predictions, errors = predictor.predict_files(inputs)
    for e in errors:
        err.print(f"[bold red]error:[/] {escape(str(e))}")
    saved = save_inputs(predictions, save_preprocessed) if save_preprocessed else [None] * len(predictions)
    for p, path in zip(predictions, saved, strict=True):
        if as_json:  # plain print: exactly one object per line, never wrapped, for pipes and `jq`
            print(json.dumps({**p.to_dict(top_k), "preprocessed": str(path) if path else None}), flush=True)
            continue
        table = Table(
            Column("#", justify="right"), "class", Column("probability", justify="right"), "",
            title=f"{escape(p.source or '')}: [bold]{p.class_name}[/] ({p.probability:.1%})",
            title_justify="left", box=None, pad_edge=False,
        )  # fmt: skip
        for rank, (label, name, prob) in enumerate(p.top(top_k), 1):
            table.add_row(str(rank), f"{name} ({label})", f"{prob:.1%}", "█" * round(prob * 20))
        out.print(table)
        if path:
            out.print(f"  model input saved as {escape(str(path))}")
    if not as_json:
        out.print(f"{len(predictions)} image{'s' * (len(predictions) != 1)} predicted, {len(errors)} failed")
    if errors:
        raise typer.Exit(1)


# ---- serve
@app.command()
def serve(
    run: Annotated[Path, typer.Argument(metavar="RUN_OR_MODEL", help="Run directory or .keras model file.")],
    host: Annotated[
        str, typer.Option(help="Address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 every network.")
    ] = serve_config.DEFAULT_HOST,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="TCP port (0: any free one).")
    ] = serve_config.DEFAULT_PORT,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="FMNIST_API_KEY", help="Require 'Authorization: Bearer KEY' on the API (not the page or health)."
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(help="A browser origin allowed to call the API, e.g. https://shop.example (repeatable)."),
    ] = None,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.001, help="Refuse request bodies larger than this (413), unread.")
    ] = serve_config.DEFAULT_MAX_UPLOAD_MB,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Refuse photos with more pixels (413), undecoded.")
    ] = serve_config.DEFAULT_MAX_PIXELS,
    max_batch: Annotated[
        int, typer.Option(min=1, help="Most images in one request (413 above it).")
    ] = serve_config.DEFAULT_MAX_BATCH,
    max_queue: Annotated[
        int, typer.Option(min=1, help="Images waiting for the model before 503 (overloaded).")
    ] = serve_config.DEFAULT_MAX_QUEUE,
    batch_requests: Annotated[
        bool, typer.Option(help="Let concurrent requests share one forward pass (up to --max-batch images).")
    ] = True,
    grpc_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Also serve KServe V2 over gRPC on this port (needs fmnist[grpc])."),
    ] = None,
    watch: Annotated[
        bool, typer.Option(help="Load the run again, without a restart, when a new one is put in its place.")
    ] = False,
    docs: Annotated[bool, typer.Option(help="Serve the API's description at /docs and /openapi.json.")] = True,
) -> None:
    """Serve a model over HTTP: KServe V2, TensorFlow Serving REST, /api/classify, /metrics, and a page at /.

    The model loads and compiles in the background: /v2/health/ready answers 503 until it is ready. Ctrl-C or SIGTERM stops, after the requests in flight are answered.
    """  # noqa: E501 (one paragraph: Typer keeps line breaks)
    from rich.markup import escape

    from fmnist import runs
    from fmnist import serve as serving

    runs.resolve_model_path(run)  # a missing or wrong path is one line now, not an error page later
    _use_compilation_cache()
    config = serving.ServeConfig(
        host=host, port=port, api_key=api_key or None, cors_origins=tuple(cors_origin or ()),
        max_upload_mb=max_upload_mb, max_pixels=max_pixels, max_batch=max_batch, max_queue=max_queue,
        batch_requests=batch_requests, grpc_port=grpc_port, watch=watch, docs=docs,
    )  # fmt: skip
    if grpc_port is not None:  # a missing extra or a taken port is one line now, not a failed startup later
        from fmnist.serve import grpc_server  # noqa: F401

        try:
            serving.bind(serving.ServeConfig(host=host, port=grpc_port)).close()
        except serving.ServeError as e:
            raise serving.ServeError(str(e).replace("--port", "--grpc-port")) from e
    sock = serving.bind(config)
    url = serving.url(sock)

    def loaded(error: str | None) -> None:
        if error is None:
            grpc = application.state.grpc_port
            out.print(f"model ready: open {url}" + (f" (gRPC: {host}:{grpc})" if grpc else ""))
        else:
            err.print(f"[bold red]error:[/] {escape(error)}; /v2/health/ready answers 503 until it is fixed.")

    application = serving.create_app(run, config, on_loaded=loaded)
    described = ", described at /docs" if docs else ""
    out.print(f"serving {run} at {url} (the page; API: /v2, /v1/models, /api/classify, /metrics{described}). "
              "Ctrl-C stops.")  # fmt: skip
    if watch:
        out.print(f"watching {run}: a new run put in its place is loaded and swapped in.")
    if api_key:
        out.print("the API needs 'Authorization: Bearer <key>'; the page and /v2/health/* do not.")
    serving.run(application, sock)
