"""The run report: one self-contained HTML file, rendered by headless Chromium; runs listing and comparing.

The Chromium check needs Debian's chromium and the `playwright` package (its bundled
driver only: `playwright install` is never run). Without them it skips, except under CI,
where it fails.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fmnist import metrics, report, runs
from fmnist.cli import app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FIGURE_STEMS = {stem for stem, _, _ in report.FIGURES}
URL = re.compile(r"\b(?:https?|ftp)://|//[a-z0-9.-]+\.[a-z]{2,}/", re.IGNORECASE)
runner = CliRunner()


def _png(width: int = 3, height: int = 2) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), "navy").save(buf, format="PNG")
    return buf.getvalue()


def _assert_self_contained(page: str) -> None:
    assert not URL.search(page), URL.search(page)
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "href=" not in page  # nothing to follow either


# --------------------------------------------------------------------------- the page alone (no model)
def test_render_html_is_one_self_contained_page():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=200)
    probs[:, 9] = 0.0  # class 9 is never predicted
    probs /= probs.sum(axis=1, keepdims=True)
    m = {"loss": 0.5} | metrics.summarize(probs, rng.integers(0, 10, 200))
    config = {"model": {"hidden": [128]}, "model_description": "mlp 128", "epochs": 2, "epochs_run": 2,
              "created": "2026-01-02T03:04:05+00:00", "train_seconds": 1.5, "params": 101770}  # fmt: skip
    history = {"loss": [0.6, 0.5], "accuracy": [0.7, 0.8], "seconds": [1.0, 0.5]}
    figures = {stem: _png() for stem in FIGURE_STEMS}
    page = report.render_html("<run & co>", config, history, m, figures)
    _assert_self_contained(page)
    assert page.count("<img ") == len(FIGURE_STEMS)
    assert "&lt;run &amp; co&gt;" in page and "<run & co>" not in page  # names are escaped
    assert "0.000*" in page and "undefined" in page  # how a never-predicted class's precision is shown
    assert "2026-01-02 03:04 UTC" in page and "mlp 128" in page
    for heading in ("Per class", "Top confusions", "Confusion matrix", "Learning curves", "Config"):
        assert heading in page


# --------------------------------------------------------------------------- on the real seed model
@pytest.fixture(scope="module")
def reported_run(seed_run, tmp_path_factory, monkeypatch_module):
    """A copy of the seed run, its report written by `fmnist report RUN --open` with no display."""
    run = tmp_path_factory.mktemp("report") / "seed"
    shutil.copytree(seed_run, run)
    monkeypatch_module.delenv("DISPLAY", raising=False)
    monkeypatch_module.delenv("WAYLAND_DISPLAY", raising=False)
    result = runner.invoke(app, ["report", str(run), "--open"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "no browser" in result.output
    return run


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_report_files_and_metrics(reported_run):
    page = (reported_run / runs.REPORT_FILE).read_text("utf-8")
    _assert_self_contained(page)
    assert page.count("<img ") == len(FIGURE_STEMS)
    for stem in FIGURE_STEMS:
        png = (reported_run / runs.FIGURES_DIR / f"{stem}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    m = json.loads((reported_run / runs.METRICS_FILE).read_text())
    assert m["n"] == 10_000 and len(m["per_class"]) == 10 and len(m["confusion_matrix"]) == 10
    assert sum(map(sum, m["confusion_matrix"])) == 10_000
    assert 0.80 < m["accuracy"] < 0.95 and m["top2_accuracy"] > m["accuracy"]
    assert 0.0 <= m["expected_calibration_error"] < 0.1
    assert f"{100 * m['accuracy']:.2f}%" in page
    worst = min(m["per_class"], key=lambda c: c["f1"])["name"]
    assert worst in ("Shirt", "Pullover", "Coat", "T-shirt/top")  # the classes the tutorial's readers ask about


def test_evaluate_is_the_full_json_dict_from_one_pass(seed_run, dataset, monkeypatch):
    from fmnist import engine, inference

    calls = []
    real = inference.predict_views  # under predict_proba: one pass, every view inside it
    monkeypatch.setattr(inference, "predict_views", lambda *a: calls.append(1) or real(*a))
    model = runs.load_model(seed_run)
    _, (x_test, y_test) = dataset
    m = engine.evaluate(model, x_test, y_test)
    assert len(calls) == 1
    assert json.loads(json.dumps(m)) == m
    for key in ("loss", "accuracy", "per_class", "confusion_matrix", "top_confusions", "top2_accuracy",
                "expected_calibration_error"):  # fmt: skip
        assert key in m
    saved = json.loads((seed_run / runs.METRICS_FILE).read_text())  # written by train with the same model
    assert m["accuracy"] == saved["accuracy"] and m["loss"] == pytest.approx(saved["loss"], rel=1e-6)
    assert m["top_confusions"][0]["share"] == pytest.approx(
        m["top_confusions"][0]["count"] / m["per_class"][m["top_confusions"][0]["true"]]["support"]
    )


def _chromium_or_skip():
    """Playwright's sync API, or a skip (a failure under CI) if it or Debian's chromium is missing."""
    missing = []
    if not Path(CHROMIUM).is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright package (pip install -e '.[test]')")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the report's browser check needs {' and '.join(missing)}")
        pytest.skip(f"needs {' and '.join(missing)}")
    return sync_playwright


def test_report_renders_every_figure_in_headless_chromium(reported_run):
    sync_playwright = _chromium_or_skip()
    page_path = (reported_run / runs.REPORT_FILE).resolve()
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.images, i => ({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}))"
            )
            title = page.title()
        finally:
            browser.close()
    assert len(images) == len(FIGURE_STEMS)
    assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in images), images
    assert title == f"fmnist run {reported_run.name}"
    # The page itself is the only thing loaded (data: URIs are not requests to a server).
    assert [u for u in requests if not u.startswith("data:")] == [page_path.as_uri()]


# --------------------------------------------------------------------------- the commands
def test_evaluate_command_prints_the_table_and_saves_metrics(reported_run):
    (reported_run / runs.METRICS_FILE).unlink()
    result = runner.invoke(app, ["evaluate", str(reported_run)])
    assert result.exit_code == 0, result.output
    for text in ("test accuracy", "precision", "recall", "F1", "support", "Shirt", "macro average", "→"):
        assert text in result.output
    assert "per_class" in json.loads((reported_run / runs.METRICS_FILE).read_text())


def test_runs_and_compare(reported_run, tmp_path):
    other = tmp_path / "wide"
    shutil.copytree(reported_run, other)
    config = json.loads((other / runs.CONFIG_FILE).read_text())
    config |= {"created": "2999-01-01T00:00:00+00:00", "model_description": "mlp 512"}
    config["model"]["hidden"] = [512]
    runs.write_json(other / runs.CONFIG_FILE, config)
    shutil.copytree(reported_run, tmp_path / "seed")

    rows = report.list_runs(tmp_path)
    assert [r["name"] for r in rows] == ["wide", "seed"]  # newest first
    assert rows[1]["model"] == "mlp 128" and rows[1]["epochs"] == 3 and rows[1]["accuracy"] > 0.8
    result = runner.invoke(app, ["runs", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.index("wide") < result.output.index("seed") and "mlp 512" in result.output

    c = report.compare_runs([tmp_path / "seed", other])
    config_rows = [label for sec, label, _ in c["rows"] if sec == "config"]
    assert config_rows == ["model.hidden"]  # only what differs
    assert sum(sec == "F1" for sec, _, _ in c["rows"]) == 10
    result = runner.invoke(app, ["compare", str(tmp_path / "seed"), str(other)])
    assert result.exit_code == 0, result.output
    assert "model.hidden" in result.output and "F1 6 Shirt" in result.output and "test accuracy" in result.output


def test_compare_and_report_reject_a_folder_that_is_not_a_run(tmp_path):
    from fmnist.errors import RunError

    with pytest.raises(RunError, match="not a run directory"):
        report.compare_runs([tmp_path])
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert isinstance(result.exception, RunError)


def test_train_command_writes_the_report_from_the_model_in_memory(seed_run, tmp_path, monkeypatch):
    """`fmnist train` hands its trained model, loaded dataset and test-set evaluation to the report
    (no reload, no second training, no second pass over the test set)."""
    import numpy as np

    import fmnist.train
    from fmnist.train import TrainConfig, TrainResult

    model = runs.load_model(seed_run)
    calls = {}
    metrics, probs = {"accuracy": 0.86, "loss": 0.39}, np.full((3, 10), 0.1)

    def fake_train(config, out, callbacks=(), dataset=None, started=None, **resumable):
        calls["dataset"] = dataset
        return TrainResult(model, {"loss": [0.4]}, metrics, 1.0, out, TrainConfig(), probs, {"train": 1.0})

    def fake_report(run_dir, model=None, dataset=None, evaluation=None):
        calls["report"] = (Path(run_dir), model, dataset)
        assert evaluation[0] is metrics and evaluation[1] is probs
        return Path(run_dir) / runs.REPORT_FILE

    monkeypatch.setattr(fmnist.train, "train", fake_train)
    monkeypatch.setattr(report, "write_run_report", fake_report)
    result = runner.invoke(app, ["train", "--epochs", "1", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    run_dir, reported_model, reported_data = calls["report"]
    assert run_dir == tmp_path / "r" and reported_model is model and reported_data is calls["dataset"]
    assert "report.html" in result.output
