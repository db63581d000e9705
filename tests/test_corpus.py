"""Every hostile file of tests/corpus through every entry point that takes it.

Each (file, entry point) pair must give the project's error (one line, exit 1 or 2 from the
CLI, no traceback) or a correct result, as tests/corpus/MANIFEST.json says, and must leave
every file it was given as it was. The corpus is made by tests/corpus/make_corpus.py.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_cli, running_server
from fmnist import data, images, runs
from fmnist.errors import DatasetError, FmnistError, ImageError, RunError
from fmnist.predict import Predictor

CORPUS = Path(__file__).parent / "corpus"
MANIFEST = json.loads((CORPUS / "MANIFEST.json").read_text())


def corpus(kind: str) -> list[str]:
    return sorted(name for name, entry in MANIFEST.items() if entry["kind"] == kind)


def assert_one_line_error(code: int, err: str, codes=(2,)) -> None:
    assert code in codes, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture
def file(request, tmp_path) -> Path:
    """A private copy of the corpus file (the entry point must not change it)."""
    target = tmp_path / "input" / request.param
    target.parent.mkdir()
    shutil.copyfile(CORPUS / "files" / request.param, target)
    return target


@pytest.fixture(scope="module")
def run(tiny_run) -> Path:
    return tiny_run


# --------------------------------------------------------------------------- request bodies: 2 routes
REQUEST_ENTRY_POINTS = ("/v2/models/fmnist/infer", "/v1/models/fmnist:predict")


@pytest.mark.parametrize("entry", REQUEST_ENTRY_POINTS)
@pytest.mark.parametrize("name", corpus("request"))
def test_request_corpus(name, entry, server):
    import httpx

    body = (CORPUS / "files" / name).read_bytes()
    headers = {"Content-Type": "application/json"}  # and the entry's own, as the bytes a client sends (Latin-1)
    headers |= {k: v.encode("latin-1") for k, v in MANIFEST[name].get("headers", {}).items()}
    response = httpx.post(server + entry.lstrip("/"), content=body, headers=headers)
    assert_one_line_refusal(response, (400,))


# --------------------------------------------------------------------------- images: 5 entry points
IMAGE_ENTRY_POINTS = (
    "images.to_fashion_mnist", "Predictor.predict", "Predictor.predict_files", "fmnist predict", "serve /api/classify"
)  # fmt: skip


@pytest.fixture(scope="module")
def server(run):
    """The corpus run served for real (uvicorn on 127.0.0.1, a free port). Module-scoped, so it starts
    before any test's capsys: uvicorn's log handlers must not hold a captured stream."""
    from fmnist.serve import ServeConfig, create_app

    with running_server(create_app(run, ServeConfig())) as base:
        yield base


def assert_one_line_refusal(response, statuses) -> None:
    """An HTTP refusal in the server's form: the status, and ``{"error": "one line"}``."""
    assert response.status_code in statuses, response.text
    message = response.json()["error"]
    assert message and "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize("entry", IMAGE_ENTRY_POINTS)
@pytest.mark.parametrize("file", corpus("image"), indirect=True)
def test_image_corpus(file, entry, run, server, capsys):
    expect = MANIFEST[file.name]["expect"]
    before = snapshot(file.parent)
    if entry == "serve /api/classify":
        import httpx

        response = httpx.post(server + "api/classify", content=file.read_bytes(), headers={"Content-Type": "image/png"})
        if expect == "error":
            assert_one_line_refusal(response, (400, 413))
        else:
            assert response.status_code == 200, response.text
            assert 0 <= response.json()["label"] < 10
    elif entry == "images.to_fashion_mnist":
        if expect == "error":
            with pytest.raises(ImageError):
                images.to_fashion_mnist(images.load_image(file))
        else:
            pixels = images.to_fashion_mnist(images.load_image(file))
            assert pixels.shape == (28, 28) and pixels.dtype == np.uint8 and pixels.max() > 100
    elif entry == "Predictor.predict":
        predictor = Predictor.load(run)
        if expect == "error":
            with pytest.raises(ImageError, match=file.name):
                predictor.predict(file)
        else:
            (p,) = predictor.predict(file)
            assert 0 <= p.label < 10 and abs(sum(p.probabilities) - 1) < 1e-4
    elif entry == "Predictor.predict_files":
        predictions, errors = Predictor.load(run).predict_files([file])
        assert (len(errors), len(predictions)) == ((1, 0) if expect == "error" else (0, 1))
        assert all(isinstance(e, ImageError) and "\n" not in str(e) for e in errors)
    else:
        code, out, err = run_cli(["predict", str(run), str(file), "--json"], capsys)
        if expect == "error":
            assert_one_line_error(code, err, codes=(1,))
            assert file.name in err and out == ""
        else:
            assert code == 0, err
            assert json.loads(out)["class_name"]
    assert snapshot(file.parent) == before


def test_exif_rotated_photo_is_turned_upright():
    upright = images.to_fashion_mnist(images.load_image(CORPUS / "files" / "upright.png")).astype(float)
    rotated = images.to_fashion_mnist(images.load_image(CORPUS / "files" / "exif-rotated.jpg")).astype(float)
    turned_wrong = np.rot90(upright)
    assert np.abs(rotated - upright).mean() < np.abs(rotated - turned_wrong).mean() / 3


# --------------------------------------------------------------------------- dataset files: 5 entry points
DATASET_ENTRY_POINTS = ("data.parse_idx", "data.load_data", "fmnist data", "fmnist show", "fmnist evaluate")


@pytest.fixture
def data_dir(file, dataset, tmp_path) -> Path:
    """A --data-dir holding the real files, but ``file`` standing in for one of the test-set files."""
    real = data.locate(download_missing=False).files
    folder = tmp_path / "data"
    folder.mkdir()
    replaced = "t10k-labels-idx1-ubyte" if file.name.startswith("labels") else "t10k-images-idx3-ubyte"
    for name, path in real.items():
        target = folder / f"{name}.gz"
        if name == replaced:
            shutil.copyfile(file, target)
        else:
            target.symlink_to(path.resolve())
    return folder


@pytest.mark.parametrize("entry", DATASET_ENTRY_POINTS)
@pytest.mark.parametrize("file", corpus("dataset"), indirect=True)
def test_dataset_corpus(file, entry, data_dir, run, capsys):
    before = snapshot(data_dir), snapshot(file.parent)
    if entry == "data.parse_idx":
        if MANIFEST[file.name]["expect"] == "error":
            with pytest.raises(DatasetError, match=file.name):
                data.parse_idx(data.read_bytes(file), str(file))
        else:
            assert data.parse_idx(data.read_bytes(file), str(file)).dtype == np.uint8
    elif entry == "data.load_data":  # nothing but the real files passes verification
        with pytest.raises(DatasetError, match="t10k"):
            data.load_data(data_dir, download_missing=False)
    else:
        args = {"fmnist data": ["data"], "fmnist show": ["show", "--out", str(data_dir.parent / "show.png")],
                "fmnist evaluate": ["evaluate", str(run)]}[entry]  # fmt: skip
        code, _, err = run_cli([*args, "--data-dir", str(data_dir)], capsys)
        assert_one_line_error(code, err)
        assert "t10k" in err
        assert not (data_dir.parent / "show.png").exists()
    assert (snapshot(data_dir), snapshot(file.parent)) == before


# --------------------------------------------------------------------------- model files: 6 entry points
MODEL_ENTRY_POINTS = (
    "runs.load_model", "Predictor.load", "fmnist predict", "fmnist evaluate", "fmnist report", "serve"
)  # fmt: skip
SERVE_LOAD_SECONDS = 60  # a bad model file fails to load within this


@pytest.mark.parametrize("entry", MODEL_ENTRY_POINTS)
@pytest.mark.parametrize("file", corpus("model"), indirect=True)
def test_model_corpus(file, entry, run, tmp_path, capsys):
    before = snapshot(file.parent)
    if entry == "runs.load_model":
        with pytest.raises(RunError, match=file.name):
            runs.load_model(file)
    elif entry == "Predictor.load":
        with pytest.raises(FmnistError):
            Predictor.load(file)
    elif entry == "serve":  # the server starts, says it is not ready and why, in one line, and serves nothing
        from fastapi.testclient import TestClient

        from fmnist.serve import ServeConfig, create_app

        with TestClient(create_app(file, ServeConfig())) as client:
            deadline = time.monotonic() + SERVE_LOAD_SECONDS
            while (ready := client.get("/v2/health/ready")).status_code == 503 and "still loading" in ready.text:
                assert time.monotonic() < deadline, "the server kept loading a bad model"
                time.sleep(0.1)
            assert_one_line_refusal(ready, (503,))
            assert "could not be loaded" in ready.json()["error"]
            one_image = {"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "UINT8", "data": [0] * 784}]}
            assert_one_line_refusal(client.post("/v2/models/fmnist/infer", json=one_image), (503,))
    elif entry == "fmnist report":  # the file as a run's model.keras
        run_copy = tmp_path / "run"
        shutil.copytree(run, run_copy)
        shutil.copyfile(file, run_copy / runs.MODEL_FILE)
        before_run = snapshot(run_copy)
        code, _, err = run_cli(["report", str(run_copy)], capsys)
        assert_one_line_error(code, err)
        assert snapshot(run_copy) == before_run
    else:
        image = CORPUS / "files" / "upright.png"
        args = ["predict", str(file), str(image)] if entry == "fmnist predict" else ["evaluate", str(file)]
        code, out, err = run_cli(args, capsys)
        assert_one_line_error(code, err)
        assert file.name in err and out == ""
    assert snapshot(file.parent) == before


def test_corpus_covers_the_issue_and_counts(capsys):
    """The corpus holds each kind the issue names; the count of (file, entry point) cases is printed."""
    names = set(MANIFEST)
    for wanted in ("labels-truncated.gz", "labels-bitflip.gz", "images-wrong-magic.idx", "images-wrong-count.idx",
                   "zero-bytes.png", "text-as.png", "truncated.jpg", "truncated.png", "truncated.webp",
                   "decompression-bomb.png", "animated.gif", "cmyk.jpg", "gray16.png", "palette.png", "la.png",
                   "one-pixel.png", "blank.png", "exif-rotated.jpg", "truncated.keras", "wrong-input-shape.keras",
                   "five-outputs.keras", "black-28x28.png", "nested-arrays-1000.json", "huge-integer.json",
                   "binary-header-superscript.bin", "binary-header-5000-digits.bin"):  # fmt: skip
        assert wanted in names
    cases = (
        len(corpus("image")) * len(IMAGE_ENTRY_POINTS)
        + len(corpus("dataset")) * len(DATASET_ENTRY_POINTS)
        + len(corpus("model")) * len(MODEL_ENTRY_POINTS)
    )
    cases += len(corpus("request")) * len(REQUEST_ENTRY_POINTS)
    assert len(names) == len(list((CORPUS / "files").iterdir()))
    assert cases == 179, cases  # 17 images x 5 + 10 dataset files x 5 + 5 models x 6 + 7 bodies x 2


# --------------------------------------------------------------------------- any image at all
MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F")


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 160),
    height=st.integers(1, 160),
    mode=st.sampled_from(MODES),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(("noise", "flat", "blob")),
)
def test_to_fashion_mnist_gives_a_28x28_image_or_an_image_error(width, height, mode, seed, kind):
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    if kind == "flat":
        pixels[:] = pixels[0, 0]
    elif kind == "blob":
        pixels[: height // 2, : width // 3] = 0
    image = Image.fromarray(pixels, "RGBA").convert(mode) if mode not in ("I;16", "I", "F") else None
    if image is None:
        image = Image.fromarray(
            (pixels[..., 0].astype(np.int32) * 257).astype(np.uint16 if mode == "I;16" else np.int32)
        )
        image = image.convert("F") if mode == "F" else image
    try:
        out = images.to_fashion_mnist(image)
    except ImageError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert out.shape == (28, 28) and out.dtype == np.uint8
