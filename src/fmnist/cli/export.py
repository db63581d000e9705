"""`fmnist export`: a run's model as an ONNX file, or as a static page that classifies in the browser."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fmnist.cli import _DownloadBar, app, out


class Format(StrEnum):
    onnx = "onnx"
    web = "web"


@app.command()
def export(
    run: Annotated[Path, typer.Argument(metavar="RUN_OR_MODEL", help="Run directory or .keras model file.")],
    format: Annotated[
        Format, typer.Option("--format", help="onnx: one .onnx file; web: a static folder with a classifier page.")
    ] = Format.onnx,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="The .onnx file (default RUN/model.onnx), or the web folder (required for web)."),
    ] = None,
    views: Annotated[
        bool,
        typer.Option(
            "--views/--single-view",
            help="Bake the run's test-time views (config eval_views) into the graph: its headline accuracy, "
            "at that many forward passes per image. Default: the image alone (the single-view accuracy).",
        ),
    ] = False,
    ort_web: Annotated[
        Path | None,
        typer.Option(
            "--ort-web",
            help="web: a local onnxruntime-web dist/ folder, instead of downloading the pinned release once.",
        ),
    ] = None,
) -> None:
    """Export a model to ONNX (uint8 pixels [N,28,28] in, probabilities [N,10] out), or a page that runs it in the browser.

    The graph holds the normalisation, and with --views the run's test-time views; its metadata names the classes, the views and the run's test accuracy. The web folder (index.html, model.onnx, onnxruntime-web's WebAssembly files) works offline from any static server, e.g. `python -m http.server -d DIR`. Needs `pip install 'fmnist[export]'`.
    """  # noqa: E501 (one paragraph: Typer keeps line breaks)
    from rich.markup import escape

    from fmnist import export as exporting

    chosen = True if views else ("identity",)
    if format is Format.onnx:
        path = exporting.to_onnx(run, out_path, views=chosen)
        meta = exporting.metadata(path)
        accuracy = f", test accuracy {float(meta['test_accuracy']):.4f}" if meta.get("test_accuracy") else ""
        out.print(f"wrote {escape(str(path))} ({len(meta['views'])} view{'s' * (len(meta['views']) > 1)}{accuracy})")
        return
    if out_path is None:
        raise typer.BadParameter("--format web needs --out DIR: the folder to write.", param_hint="--out")
    folder = exporting.to_web(run, out_path, views=chosen, ort_web=ort_web, progressbar=_DownloadBar())
    out.print(f"wrote {escape(str(folder))}/: open it from a static server, e.g. `python -m http.server -d {folder}`")
