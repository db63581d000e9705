"""`fmnist export --format web`: the static folder, served on 127.0.0.1, classifies in Chromium.

The page (Playwright driving Debian's chromium, as the other page tests) gives a test photo the
label `fmnist predict` gives, computes the same 28×28 input as fmnist.images, classifies a
drawing, and fetches nothing from anywhere but the folder's own server. onnxruntime-web comes
from the pinned npm tarball (downloaded once per test session into its cache).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from fmnist.data import CLASS_NAMES
from test_report import CHROMIUM, CHROMIUM_ARGS, _chromium_or_skip
from test_serve import photo
from test_serve_page import draw_a_stroke

if not os.environ.get("CI"):  # installed by the test extra: missing is a failure there
    pytest.importorskip("onnx")
RESULT_SECONDS = 60  # the model loads (15 MB of WebAssembly compiled) and answers within this on a busy machine


@pytest.fixture(scope="module")
def web_folder(seed_run, tmp_path_factory):
    from fmnist.export import ORT_WEB_FILES, to_web

    folder = to_web(seed_run, tmp_path_factory.mktemp("web") / "site")
    assert sorted(p.name for p in folder.iterdir()) == sorted(["index.html", "model.onnx", *ORT_WEB_FILES])
    return folder


@pytest.fixture(scope="module")
def site(web_folder):
    """The folder served as `python -m http.server` serves it, on 127.0.0.1 and a free port."""
    handler = functools.partial(_QuietHandler, directory=str(web_folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no access log on the test's output
        pass


def test_page_is_self_contained(web_folder):
    html = (web_folder / "index.html").read_text()
    assert "<link" not in html and "@import" not in html and 'src="http' not in html and "//cdn" not in html
    assert '<script src="ort.wasm.min.js">' in html and "model.onnx" in html
    assert web_folder.parent.name and "test accuracy" in html and all(name in html for name in CLASS_NAMES)
    for control in ('for="file"', 'id="canvas"', 'aria-live="polite"', 'id="clear"'):
        assert control in html, control


def test_photo_and_drawing_classified_in_chromium(site, seed_run, dataset, tmp_path, capsys):
    from fmnist.errors import ImageError
    from fmnist.images import load_image, to_fashion_mnist

    sync_playwright = _chromium_or_skip()
    _, (x_test, _) = dataset
    shot = tmp_path / "shot.png"
    shot.write_bytes(photo(x_test[0]))  # an ankle boot as a product photo: dark garment on white, 168×168
    code, out, err = run_cli(["predict", str(seed_run), str(shot), "--json"], capsys)
    assert code == 0, err
    expected = json.loads(out.splitlines()[0])["class_name"]
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(site + "/", wait_until="load")
            result = page.locator("#result")
            result.filter(has_text="Choose").wait_for(timeout=RESULT_SECONDS * 1000)  # the model is loaded

            page.get_by_label("Choose a photo").set_input_files(str(shot))
            result.filter(has_text="sure").wait_for(timeout=RESULT_SECONDS * 1000)
            uploaded = result.inner_text()
            seen = np.array(page.evaluate("Array.from(window.fmnistInput)"), np.uint8).reshape(28, 28)
            bars = page.locator("#bars li").count()

            blank = tmp_path / "blank.png"
            blank.write_bytes(photo(np.zeros((28, 28), np.uint8)))  # all white: fmnist refuses it as blank
            page.get_by_label("Choose a photo").set_input_files(str(blank))
            result.filter(has_text="blank").wait_for(timeout=RESULT_SECONDS * 1000)
            refused = result.inner_text()

            page.get_by_role("button", name="Clear").click()
            draw_a_stroke(page)  # a stroke ends: the drawing is classified
            result.filter(has_text="sure").wait_for(timeout=RESULT_SECONDS * 1000)
            drawn = result.inner_text()

            black = tmp_path / "black.png"  # 28×28 and dark, as Fashion-MNIST's images are, but blank
            Image.fromarray(np.zeros((28, 28), np.uint8)).save(black)
            page.get_by_label("Choose a photo").set_input_files(str(black))
            result.filter(has_text="blank").wait_for(timeout=RESULT_SECONDS * 1000)
            refused_black = result.inner_text()
        finally:
            browser.close()
    assert uploaded.startswith(expected + ","), (uploaded, expected)
    want = to_fashion_mnist(load_image(shot)).astype(int)
    assert np.abs(seen.astype(int) - want).max() <= 1 and (seen == want).mean() >= 0.99  # float32 vs double rounding
    assert bars == 5
    with pytest.raises(ImageError) as info:
        to_fashion_mnist(load_image(blank))
    assert refused == f"Not classified: {info.value}", refused
    with pytest.raises(ImageError) as info:
        to_fashion_mnist(load_image(black))
    assert refused_black == f"Not classified: {info.value}", refused_black
    assert any(drawn.startswith(name + ",") for name in CLASS_NAMES), drawn
    assert requests and all(u.startswith(site + "/") or u.startswith(("data:", "blob:")) for u in requests), requests


def test_local_ort_web_copy_and_a_folder_it_would_clobber(seed_run, web_folder, tmp_path, capsys):
    from fmnist.export import ORT_WEB_FILES

    dist = tmp_path / "onnxruntime-web" / "dist"
    dist.mkdir(parents=True)
    for name in ORT_WEB_FILES:
        (dist / name).write_bytes((web_folder / name).read_bytes())
    code, out, err = run_cli(["export", str(seed_run), "--format", "web", "--out", str(tmp_path / "site"),
                              "--ort-web", str(dist.parent)], capsys)  # fmt: skip
    assert code == 0 and "wrote" in out, err
    assert (tmp_path / "site" / "index.html").read_text() == (web_folder / "index.html").read_text()
    (dist / ORT_WEB_FILES[-1]).unlink()
    code, _, err = run_cli(["export", str(seed_run), "--format", "web", "--out", str(tmp_path / "other"),
                            "--ort-web", str(dist)], capsys)  # fmt: skip
    assert code == 2 and ORT_WEB_FILES[-1] in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "other").exists()
    code, _, err = run_cli(["export", str(seed_run), "--format", "web", "--out", str(dist.parent)], capsys)
    assert code == 2 and "new folder" in err and (dist / ORT_WEB_FILES[0]).is_file(), err
