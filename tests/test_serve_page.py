"""The server's page in headless Chromium (Playwright driving Debian's chromium, as the report test
does): upload a photo -> the right label; draw on the canvas -> a prediction; nothing is fetched
from anywhere but the server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import io
import re

import httpx
import numpy as np
from PIL import Image

from fmnist.data import CLASS_NAMES
from test_report import CHROMIUM, CHROMIUM_ARGS, _chromium_or_skip
from test_serve import photo

RESULT_SECONDS = 30  # a prediction must appear within this (the first one on a busy machine included)
URL = re.compile(r"\b(?:https?|ftp)://|//[a-z0-9.-]+\.[a-z]{2,}/", re.IGNORECASE)


def draw_a_stroke(page) -> None:
    """One stroke on the page's canvas, light on black (the page classifies a drawing when a stroke ends)."""
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + 90, box["y"] + 40)
    page.mouse.down()
    for x, y in ((100, 250), (140, 250), (140, 60), (180, 60), (180, 250), (200, 250)):
        page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
    page.mouse.up()


def test_page_is_self_contained_and_accessible(live_server):
    page = httpx.get(live_server.url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert not URL.search(html.split("<script>")[0]), "the page's markup links to another host"
    assert "<link" not in html and "@import" not in html and 'src="http' not in html
    assert live_server.run.name in html and "test accuracy" in html and "%" in html
    for control in ('for="file"', 'id="canvas"', 'aria-live="polite"', 'id="clear"', 'for="key"'):
        assert control in html, control


def test_upload_and_draw_in_chromium(live_server, dataset, tmp_path):
    sync_playwright = _chromium_or_skip()
    _, (x_test, y_test) = dataset
    trouser = int(np.flatnonzero(y_test == 1)[0])  # trousers: one of the surest classes
    shot = tmp_path / "trouser.png"
    shot.write_bytes(photo(x_test[trouser]))
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(live_server.url, wait_until="load")
            assert page.title() == f"fmnist · {live_server.run.name}"
            page.get_by_label("API key").fill(live_server.key)  # this server needs one; the page asks for it

            page.get_by_label("Choose a photo").set_input_files(str(shot))
            result = page.locator("#result")
            result.filter(has_text="sure").wait_for(timeout=RESULT_SECONDS * 1000)
            uploaded = result.inner_text()
            seen = page.locator("#seen").get_attribute("src")
            bars = page.locator("#bars li").count()
            top_bar = page.locator("#bars .fill").first.bounding_box()["width"]
            track = page.locator("#bars .track").first.bounding_box()["width"]

            page.get_by_role("button", name="Clear").click()
            draw_a_stroke(page)  # a stroke ends: the drawing is classified
            result.filter(has_text="sure").wait_for(timeout=RESULT_SECONDS * 1000)
            drawn = result.inner_text()
        finally:
            browser.close()
    assert uploaded.startswith(CLASS_NAMES[1] + ",") and "% sure" in uploaded, uploaded
    assert seen.startswith("data:image/png;base64,") and bars == 5
    assert 0.5 * track < top_bar <= track  # the winner's bar is drawn, as long as its probability
    assert any(drawn.startswith(name + ",") for name in CLASS_NAMES), drawn
    origin = live_server.url.rstrip("/")
    assert requests and all(u.startswith(origin) or u.startswith(("data:", "blob:")) for u in requests), requests
    assert sum(u == origin + "/api/classify?top_k=5" for u in requests) == 2  # the upload and the drawing


def test_image_seen_is_what_the_model_saw(live_server, dataset):
    """The page's 28×28 image for an upload is the dataset image itself for a Fashion-MNIST image."""
    _, (x_test, _) = dataset
    buf = io.BytesIO()
    Image.fromarray(x_test[0]).save(buf, "PNG")
    headers = {"Content-Type": "image/png", "Authorization": f"Bearer {live_server.key}"}
    answer = httpx.post(live_server.url + "api/classify", content=buf.getvalue(), headers=headers).json()
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["image_png"]))))
    np.testing.assert_array_equal(seen, x_test[0])


def test_phone_widths_do_not_scroll_sideways_and_a_non_image_is_worded_for_a_person(live_server, tmp_path):
    """At 390 and 320 CSS pixels the page fits its width; a text file chosen as the photo gets a sentence
    for a person, not the API's wording."""
    sync_playwright = _chromium_or_skip()
    note = tmp_path / "notes.txt"
    note.write_text("not a photo")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            widths = {}
            for width in (390, 320):
                page = browser.new_page(viewport={"width": width, "height": 800}, is_mobile=True, has_touch=True)
                page.goto(live_server.url, wait_until="load")
                widths[width] = page.evaluate("document.documentElement.scrollWidth")
                page.close()
            page = browser.new_page(viewport={"width": 390, "height": 800})
            page.goto(live_server.url, wait_until="load")
            page.get_by_label("Choose a photo").set_input_files(str(note))
            result = page.locator("#result")
            result.filter(has_text="not a picture").wait_for(timeout=RESULT_SECONDS * 1000)
            said = result.inner_text()
        finally:
            browser.close()
    assert widths == {390: 390, 320: 320}, widths
    assert "multipart" not in said and "choose a photo" in said, said
