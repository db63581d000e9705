"""A run's model where neither Keras nor fmnist runs: an ONNX file, and a page that classifies in the browser.

    fmnist.export.to_onnx("runs/best", "best.onnx", views=True)   # the run's test-time views baked in
    fmnist.export.to_web("runs/best", "site/")                    # index.html + model.onnx + onnxruntime-web

The ONNX graph (written by fmnist.onnx_graph) takes what the Keras model takes, uint8 pixels
[N, 28, 28] 0–255, and gives ``probabilities`` [N, 10]; the normalisation is inside it. Its
metadata names the classes, the views baked in, and the run's test accuracy for those views.

The web folder is static: ``index.html`` (the serve page's look, one inlined stylesheet, the
28×28 preprocessing of fmnist.images written in JavaScript), ``model.onnx``, and the few files
of onnxruntime-web's WebAssembly build. Those come from a pinned release of its npm package,
downloaded once into fmnist's cache and verified by the tarball's SHA-256 (as the dataset is), or
from a local copy (``ort_web=DIR``). The page loads nothing from elsewhere.

Every file is written to a temporary name and renamed; the folder is filled under a hidden name
and renamed into place, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

from fmnist import runs
from fmnist.data import CLASS_NAMES, cache_dir
from fmnist.errors import FmnistError, RunError

EXPORT_EXTRA = "pip install 'fmnist[export]'"
ONNX_FILE = "model.onnx"  # a run's default export, and the model's name inside a web folder
PAGE_FILE = "index.html"
# onnxruntime-web, pinned: its npm tarball's address and SHA-256 (the registry's own integrity is SHA-512 of the same).
ORT_WEB_VERSION = "1.31.1"
ORT_WEB_URL = f"https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{ORT_WEB_VERSION}.tgz"
ORT_WEB_SHA256 = "bdccdb9fbb9ab537247c0c734e9b1d2b1b338b4f2a09faa58f0dc1cfa27c312c"
# The page needs only the WebAssembly build: its script, the runtime's loader and the .wasm (about 15 MB).
ORT_WEB_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ORT_WEB_TIMEOUT_S = 60.0  # per connection and read while downloading the tarball
TOP_K = 5  # classes the page shows


def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise FmnistError(f"exporting to ONNX needs the onnx package, which is not installed: {EXPORT_EXTRA}.") from e
    return onnx


# --------------------------------------------------------------------------- ONNX
def run_facts(run_or_model) -> dict:
    """What the metadata and the page say about a run: name, description, test accuracies, views (empty for a model)."""
    run_dir = runs.run_dir_of(run_or_model)
    if run_dir is None:
        return {"name": Path(run_or_model).stem, "views": ("identity",)}
    facts: dict = {"name": run_dir.name, "views": runs.eval_views(run_dir)}
    if (run_dir / runs.CONFIG_FILE).is_file():
        facts["description"] = runs.read_object(run_dir / runs.CONFIG_FILE).get("model_description")
    if (run_dir / runs.METRICS_FILE).is_file():
        metrics = runs.read_object(run_dir / runs.METRICS_FILE)
        facts["accuracy"] = metrics.get("accuracy")
        facts["accuracy_single_view"] = metrics.get("accuracy_single_view", metrics.get("accuracy"))
    return facts


def onnx_model(model, views=("identity",), facts: dict | None = None):
    """The ``onnx.ModelProto`` of a Keras ``model`` with ``views`` baked in, its metadata from ``facts`` (run_facts)."""
    from fmnist.augment import check_views
    from fmnist.onnx_graph import build_graph

    _onnx()
    views = check_views(views)
    proto = build_graph(model, views)
    facts = facts or {}
    single = tuple(views) == ("identity",)
    accuracy = facts.get("accuracy_single_view") if single else facts.get("accuracy")
    if not single and tuple(views) != tuple(facts.get("views", ())):
        accuracy = None  # views other than the run's: its recorded accuracy is not this graph's
    meta = {
        "class_names": json.dumps(list(CLASS_NAMES)),
        "views": json.dumps(list(views)),
        "test_accuracy": "" if accuracy is None else f"{accuracy:.6f}",
        "run": facts.get("name", model.name),
        "description": facts.get("description") or "",
        "input": "pixels: uint8 [N, 28, 28], 0-255, garment bright on black (Fashion-MNIST's form)",
        "output": "probabilities: float32 [N, 10], in class_names' order"
        + ("" if single else f", averaged over {len(views)} test-time views"),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"fmnist {meta['run']}: {meta['output']}"
    return proto


def to_onnx(model_or_run, path=None, views=("identity",)) -> Path:
    """Write a model (a run directory, a ``.keras`` file or a Keras model) as ONNX; returns the file's path.

    ``views``: test-time views to bake in (fmnist.augment.VIEWS); ``True`` takes the run's own
    (its config's ``eval_views``). ``path`` defaults to ``RUN/model.onnx`` for a run. A model
    that cannot be exported raises a ModelError naming the layer, and nothing is written.
    """
    _onnx()
    if isinstance(model_or_run, str | os.PathLike):
        facts = run_facts(model_or_run)
        model = runs.load_model(model_or_run)
        run_dir = runs.run_dir_of(model_or_run)
        if path is None:
            if run_dir is None:
                raise RunError(f"{model_or_run} is a bare model file: say where the .onnx goes (--out FILE).")
            path = run_dir / ONNX_FILE
    else:
        model, facts = model_or_run, {"name": model_or_run.name, "views": ("identity",)}
        if path is None:
            raise RunError("to_onnx(model, path): a Keras model needs a path to write to.")
    if views is True:
        views = facts["views"]
    proto = onnx_model(model, views, facts)
    written = runs.write_bytes(Path(path), proto.SerializeToString())
    written.chmod(0o644)  # a model file to hand on: readable by whichever user runs it, as the web folder's files
    return written


def metadata(path) -> dict:
    """An exported file's metadata as a dict (class_names and views decoded from JSON)."""
    onnx = _onnx()
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    for key in ("class_names", "views"):
        if key in props:
            props[key] = json.loads(props[key])
    return props


# --------------------------------------------------------------------------- onnxruntime-web
def ort_web_tarball(progressbar: object = False) -> Path:
    """The pinned onnxruntime-web tarball in fmnist's cache, downloaded from the npm registry the first time."""
    import logging

    import pooch

    directory = cache_dir() / "npm"
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        return Path(
            pooch.retrieve(
                url=ORT_WEB_URL,
                known_hash=f"sha256:{ORT_WEB_SHA256}",
                fname=Path(ORT_WEB_URL).name,
                path=directory,
                downloader=pooch.HTTPDownloader(progressbar=progressbar, timeout=ORT_WEB_TIMEOUT_S),
            )
        )
    except Exception as e:  # network errors, HTTP errors, a hash that does not match
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FmnistError(
            f"could not fetch onnxruntime-web {ORT_WEB_VERSION} from {ORT_WEB_URL} ({type(e).__name__}: {reason}); "
            "give a local copy of its dist/ folder with --ort-web DIR."
        ) from e
    finally:
        logger.setLevel(level)


def ort_web_files(ort_web: str | os.PathLike | None = None, progressbar: object = False) -> dict[str, bytes]:
    """The bytes of ORT_WEB_FILES: from a local folder (a package or its dist/), else the pinned, cached tarball."""
    if ort_web is not None:
        folder = Path(ort_web)
        folder = folder / "dist" if (folder / "dist").is_dir() else folder
        missing = [name for name in ORT_WEB_FILES if not (folder / name).is_file()]
        if missing:
            raise FmnistError(
                f"{ort_web} is not an onnxruntime-web folder: {', '.join(missing)} missing (give the package's "
                "dist/ folder, or leave --ort-web out to use the pinned download)."
            )
        return {name: (folder / name).read_bytes() for name in ORT_WEB_FILES}
    tarball = ort_web_tarball(progressbar)
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            return {name: tar.extractfile(f"package/dist/{name}").read() for name in ORT_WEB_FILES}
    except (OSError, KeyError, tarfile.TarError) as e:
        raise FmnistError(f"{tarball} is not a readable onnxruntime-web package ({e}): delete it to refetch.") from e


# --------------------------------------------------------------------------- the web folder
def page_html(facts: dict, proto) -> str:
    """The classifier page for the exported ``proto`` (its views and test accuracy read from its metadata,
    so the page says what the graph's metadata says) of a run with ``facts`` (run_facts)."""
    from fmnist import images, pages

    props = {p.key: p.value for p in proto.metadata_props}
    views = json.loads(props["views"])
    accuracy = float(props["test_accuracy"]) if props.get("test_accuracy") else None
    constants = {
        "size": images.SIZE,
        "borderFraction": images.BORDER_FRACTION,
        "blankContrast": images.BLANK_CONTRAST,
        "light": images.LIGHT,
        "trimThreshold": images.TRIM_THRESHOLD,
        "trimMinFraction": images.TRIM_MIN_FRACTION,
        "centreThreshold": images.CENTRE_THRESHOLD,
        "placeMinScale": images.PLACE_MIN_SCALE,
        "workSize": images.WORK_SIZE,
    }
    return pages.render(
        "export_page.html",
        name=facts.get("name", "model"),
        description=facts.get("description"),
        accuracy=accuracy,
        views=len(views),
        class_names=list(CLASS_NAMES),
        top_k=TOP_K,
        model_file=ONNX_FILE,
        ort_script=ORT_WEB_FILES[0],
        constants=constants,
    )


def to_web(run_or_model, out, views=("identity",), ort_web=None, progressbar: object = False) -> Path:
    """Write the static classifier folder ``out`` (index.html, model.onnx, onnxruntime-web's files); returns it.

    ``views`` as to_onnx's; ``ort_web``: a local onnxruntime-web folder instead of the pinned download.
    """
    _onnx()
    facts = run_facts(run_or_model)
    model = runs.load_model(run_or_model)
    views = facts["views"] if views is True else views
    proto = onnx_model(model, views, facts)  # before anything is fetched or written: an unexportable model says so
    files = ort_web_files(ort_web, progressbar)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FmnistError(f"{out} is a file: give a folder for the web export.")
    if out.is_dir() and not {p.name for p in out.iterdir()} <= {ONNX_FILE, PAGE_FILE, *ORT_WEB_FILES}:
        raise FmnistError(f"{out} holds other files than a web export's, which it would replace: give a new folder.")
    with runs.staged_dir(out) as stage:
        written = [runs.write_bytes(stage / ONNX_FILE, proto.SerializeToString())]
        written += [runs.write_bytes(stage / name, data) for name, data in files.items()]
        written.append(runs.write_text(stage / PAGE_FILE, page_html(facts, proto)))
        for path in written:
            path.chmod(0o644)  # a static site: readable by whichever user the web server runs as
    return out


__all__ = ["ONNX_FILE", "metadata", "onnx_model", "ort_web_files", "run_facts", "to_onnx", "to_web"]
