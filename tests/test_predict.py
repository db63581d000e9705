"""fmnist.predict and `fmnist predict`: one inference path, every input form, per-file errors,
and the must-show: "photos" of test images are classified as well as the originals.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fmnist import cli, engine, images
from fmnist.data import CLASS_NAMES
from fmnist.errors import ImageError, ModelError, RunError
from fmnist.predict import Prediction, Predictor, images_in, prepare, save_preprocessed

PHOTO_KINDS = ("png", "jpeg", "rgba", "webp")  # how the photo renditions are stored, in turn
N_PHOTOS = 300  # photo renditions in the must-show test (about 10 s to make and predict)
MAX_ACCURACY_GAP = 0.03  # the bound: photos within 3 percentage points of the originals


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An untrained seed model as a bare .keras file: the prediction path without the dataset."""
    from fmnist import runs
    from fmnist.models import ModelSpec, build_model

    path = tmp_path_factory.mktemp("model") / "seed.keras"
    runs.save_model(path, build_model(ModelSpec()))  # not compiled: predicting needs no optimizer
    return path


@pytest.fixture(scope="module")
def predictor(model_file) -> Predictor:
    return Predictor.load(model_file)


def shoe_photo(size=(160, 120), dark=30) -> Image.Image:
    """A dark blob on a light background, enough for a prediction."""
    a = np.full((size[1], size[0], 3), 240, np.uint8)
    a[size[1] // 3 : -10, 10 : size[0] // 2] = dark
    a[size[1] // 2 : -10, 10:-10] = dark
    return Image.fromarray(a)


# --------------------------------------------------------------------------- the library
def test_batch_goes_through_the_one_inference_path(predictor):
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    preds = predictor.predict(x)
    probs = engine.predict_proba(predictor.model, x)
    assert len(preds) == 5
    for p, row, image in zip(preds, probs, x, strict=True):
        assert isinstance(p, Prediction) and p.source is None
        np.testing.assert_allclose(p.probabilities, row, rtol=1e-5, atol=1e-7)
        assert len(p.probabilities) == 10 and abs(sum(p.probabilities) - 1) < 1e-4
        assert p.label == int(np.argmax(row)) and p.class_name == CLASS_NAMES[p.label]
        assert p.probability == max(p.probabilities)
        assert np.array_equal(p.image, image)  # a uint8 batch is used as it is


def test_every_input_form(predictor, tmp_path):
    photo = shoe_photo()
    path = tmp_path / "shoe.png"
    photo.save(path)
    expected = images.to_fashion_mnist(photo)
    single_forms = [photo, np.asarray(photo), str(path), path]
    for form in single_forms:
        (p,) = predictor.predict(form)
        assert np.array_equal(p.image, expected)
    assert predictor.predict(path)[0].source == str(path)
    mixed = predictor.predict([path, np.asarray(photo), images.to_fashion_mnist(photo)])
    assert [p.source for p in mixed] == [str(path), None, None]
    assert len({p.probabilities for p in mixed}) == 1  # the same image three ways, one answer
    assert predictor.predict([]) == []


def test_float_batch_is_refused_with_the_fix(predictor):
    x = np.zeros((3, 28, 28), np.float32)
    with pytest.raises(ImageError, match="uint8"):
        predictor.predict(x)


def test_top_and_to_dict(predictor):
    (p,) = predictor.predict(np.asarray(shoe_photo()))
    top = p.top(3)
    assert len(top) == 3 and top[0][0] == p.label
    assert [t[2] for t in top] == sorted((t[2] for t in top), reverse=True)
    assert sorted(t[0] for t in p.top(10)) == list(range(10))
    d = json.loads(json.dumps(p.to_dict(top_k=2)))
    assert d["label"] == p.label and d["class_name"] == p.class_name and len(d["top_k"]) == 2
    assert len(d["probabilities"]) == 10 and d["file"] is None


def test_models_that_are_not_classifiers_are_refused(tmp_path):
    from fmnist.models import ModelSpec, build_model

    with pytest.raises(ModelError, match="one score per class"):
        Predictor(build_model(ModelSpec(output_units=5)))
    with pytest.raises(RunError):
        Predictor.load(tmp_path / "missing")


def test_logits_model_gets_probabilities():
    from fmnist._backend import keras

    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10)])
    x = np.random.default_rng(1).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    preds = Predictor(model).predict(x)
    logits = engine.predict_proba(model, x).astype(np.float64)
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    np.testing.assert_allclose([p.probabilities for p in preds], softmax, rtol=1e-5)


def test_prepare_names_the_file_in_errors(tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (50, 50), (250, 250, 250)).save(blank)
    with pytest.raises(ImageError, match=r"blank\.png.*blank"):
        prepare(blank)


def test_folders_expand_to_their_images(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("b.JPG", "a.png", "c.webp", "notes.txt", ".hidden.png"):
        (folder / name).write_bytes(b"x")
    assert [f.name for f in images_in(folder)] == ["a.png", "b.JPG", "c.webp"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="empty is a folder with no images"):
        images_in(tmp_path / "empty")


def test_predict_files_keeps_going_past_bad_files(predictor, tmp_path):
    shoe_photo().save(tmp_path / "1-good.png")
    (tmp_path / "2-bad.png").write_bytes(b"not a png")
    shoe_photo((90, 200)).save(tmp_path / "3-good.jpg")
    preds, errors = predictor.predict_files([tmp_path, tmp_path / "missing.png"])
    assert [p.source for p in preds] == [str(tmp_path / "1-good.png"), str(tmp_path / "3-good.jpg")]
    assert len(errors) == 2 and "2-bad.png" in str(errors[0]) and "missing.png" in str(errors[1])


def test_save_preprocessed_writes_what_the_model_saw(predictor, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shoe_photo().save(tmp_path / "a" / "shoe.png")
    shoe_photo((200, 100)).save(tmp_path / "b" / "shoe.png")  # the same name twice
    preds = predictor.predict([tmp_path / "a" / "shoe.png", tmp_path / "b" / "shoe.png", np.asarray(shoe_photo())])
    written = save_preprocessed(preds, tmp_path / "out")
    assert [w.name for w in written] == ["shoe.png", "shoe-2.png", "image-00002.png"]
    for w, p in zip(written, preds, strict=True):
        assert np.array_equal(np.asarray(Image.open(w)), p.image)


# --------------------------------------------------------------------------- the command
def invoke(*args):
    return CliRunner().invoke(cli.app, ["predict", *map(str, args)])


def test_cli_table(model_file, tmp_path):
    shoe_photo().save(tmp_path / "shoe.png")
    result = invoke(model_file, tmp_path / "shoe.png", "--top-k", "2")
    assert result.exit_code == 0, result.output
    assert "shoe.png" in result.stdout
    ranks = [line.split()[0] for line in result.stdout.splitlines() if line.strip().endswith("%") or "█" in line]
    assert ranks == ["1", "2"]
    assert sum(name in result.stdout for name in CLASS_NAMES) >= 2
    assert "1 image predicted, 0 failed" in result.stdout


def test_cli_json_lines_and_saved_inputs(model_file, predictor, tmp_path):
    shoe_photo().save(tmp_path / "a.png")
    shoe_photo((100, 180)).save(tmp_path / "b.jpg")
    out = tmp_path / "seen"
    result = invoke(model_file, tmp_path, "--json", "--top-k", "4", "--save-preprocessed", out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    for r in rows:
        assert len(r["top_k"]) == 4 and len(r["probabilities"]) == 10 and abs(sum(r["probabilities"]) - 1) < 1e-4
        assert r["class_name"] == CLASS_NAMES[r["label"]]
        saved = np.asarray(Image.open(r["preprocessed"]))
        assert saved.shape == (28, 28) and np.array_equal(saved, predictor.predict(r["file"])[0].image)


def test_cli_bad_files_each_get_one_line_and_exit_1(model_file, tmp_path):
    good = tmp_path / "good.png"
    shoe_photo().save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.gif").write_text("GIF? no.\n")
    (tmp_path / "nothing-here").mkdir()
    bad = [truncated, tmp_path / "empty.jpg", tmp_path / "text.gif", tmp_path / "nothing-here", tmp_path / "gone.png"]
    result = invoke(model_file, good, *bad, "--json")
    assert result.exit_code == 1
    assert [json.loads(line)["file"] for line in result.stdout.splitlines()] == [str(good)]  # still predicted
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(bad)
    for path, line in zip(bad, lines, strict=True):
        assert line.startswith("error:") and str(path) in line


def test_cli_missing_model_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    shoe_photo().save(tmp_path / "shoe.png")
    monkeypatch.setattr(sys, "argv", ["fmnist", "predict", str(tmp_path / "no-run"), str(tmp_path / "shoe.png")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-run" in err


# --------------------------------------------------------------------------- must show: photos of test images
def render_photo(x: np.ndarray, rng: np.random.Generator, kind: str) -> Image.Image:
    """A "photo" of Fashion-MNIST image ``x`` as a person might take it.

    Negated onto a light, slightly tinted background (a dark garment on a white table),
    enlarged to 300–800 px, placed off-centre with unequal margins, RGB; ``kind`` "rgba"
    is a cut-out whose background is transparent (and black underneath).
    """
    size = int(rng.integers(300, 801))
    light, dark = rng.integers(225, 256, 3), rng.integers(0, 41, 3)
    colour = light - x[..., None].astype(np.float32) / 255.0 * (light - dark)  # negate, in colour
    big = Image.fromarray(colour.round().astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    left, top, right, bottom = (rng.uniform(0.03, 0.4, 4) * size).astype(int)
    canvas = Image.new("RGB", (left + size + right, top + size + bottom), tuple(int(v) for v in light))
    canvas.paste(big, (left, top))
    if kind != "rgba":
        return canvas
    alpha = np.zeros((canvas.height, canvas.width), np.uint8)
    garment = np.asarray(Image.fromarray(x).resize((size, size), Image.Resampling.BICUBIC)).astype(np.int32)
    alpha[top : top + size, left : left + size] = np.clip(garment * 4, 0, 255)  # opaque garment, soft edges
    rgba = np.dstack([np.asarray(canvas), alpha])
    rgba[alpha == 0, :3] = 0
    return Image.fromarray(rgba, "RGBA")


def write_photos(x: np.ndarray, y: np.ndarray, folder, seed: int = 0) -> None:
    """Photo renditions of ``x`` as ``<index>-<label>.<ext>`` in ``folder``, cycling through PHOTO_KINDS."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        kind = PHOTO_KINDS[i % len(PHOTO_KINDS)]
        photo = render_photo(image, rng, kind)
        stem = folder / f"{i:05d}-{label}"
        if kind == "jpeg":
            photo.save(f"{stem}.jpg", quality=int(rng.integers(70, 96)))
        elif kind == "webp":
            photo.save(f"{stem}.webp", quality=80, method=0)
        else:
            photo.save(f"{stem}.png", compress_level=1)


def test_photos_of_test_images_are_classified_as_well_as_the_originals(seed_run, dataset, tmp_path):
    """The issue's must-show, through the `fmnist predict` command on a folder of photos."""
    (_, _), (x_test, y_test) = dataset
    idx = np.random.default_rng(5).choice(len(x_test), N_PHOTOS, replace=False)
    x, y = x_test[idx], y_test[idx]
    write_photos(x, y, tmp_path / "photos")
    result = invoke(seed_run, tmp_path / "photos", "--json")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == N_PHOTOS
    truth = {f"{i:05d}": int(label) for i, label in enumerate(y)}
    photo_accuracy = np.mean([r["label"] == truth[r["file"].rsplit("/", 1)[-1][:5]] for r in rows])
    original_accuracy = np.mean([p.label == t for p, t in zip(Predictor.load(seed_run).predict(x), y, strict=True)])
    assert original_accuracy > 0.8  # the seed model really is trained
    assert abs(photo_accuracy - original_accuracy) <= MAX_ACCURACY_GAP, (photo_accuracy, original_accuracy)
