"""The evaluation figures: pure functions returning Figures with the expected axes, titles and colours."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from fmnist import metrics, plots

N, K = 60, 10
TITLE = re.compile(r"^(?P<pred>.+) (?P<pct>\d{1,3})% \((?P<true>.+)\)$")  # "predicted NN% (true)"


@pytest.fixture(scope="module")
def preds():
    """60 random images with labels and softmax outputs; about half the predictions are right."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(N, 28, 28), dtype=np.uint8)
    y = rng.integers(0, K, N)
    logits = rng.normal(size=(N, K)) * 2
    logits[np.arange(N)[: N // 2], y[: N // 2]] += 6  # the first half is confidently right
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return x, y, probs


def _image_and_bar_axes(fig: Figure):
    axes = fig.axes
    return axes[0::2], axes[1::2]


def _check_pair(img_ax, bar_ax, label: int, p: np.ndarray) -> None:
    pred = int(np.argmax(p))
    m = TITLE.match(img_ax.get_title())
    assert m, img_ax.get_title()
    assert m["pred"] == plots.CLASS_NAMES[pred] and m["true"] == plots.CLASS_NAMES[label]
    assert int(m["pct"]) == round(100 * p.max())
    expected = plots.CORRECT_COLOR if pred == label else plots.WRONG_COLOR
    assert to_rgba(img_ax.title.get_color()) == to_rgba(expected)
    bars = bar_ax.patches
    assert len(bars) == K
    assert [b.get_height() for b in bars] == pytest.approx(p.tolist())
    assert to_rgba(bars[label].get_facecolor()) == to_rgba(plots.CORRECT_COLOR)
    if pred != label:
        assert to_rgba(bars[pred].get_facecolor()) == to_rgba(plots.WRONG_COLOR)
    others = [b for c, b in enumerate(bars) if c not in (pred, label)]
    assert all(to_rgba(b.get_facecolor()) == to_rgba(plots.OTHER_BAR_COLOR) for b in others)
    assert bar_ax.get_ylim() == (0, 1)


def test_confusion_matrices(preds):
    _, y, probs = preds
    cm = np.array(metrics.summarize(probs, y)["confusion_matrix"])
    fig = plots.confusion_matrices(cm)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    counts, shares = fig.axes
    assert "counts" in counts.get_title() and "row-normalised" in shares.get_title()
    assert len(counts.texts) == K * K  # every count written in its cell
    assert sorted(int(t.get_text()) for t in counts.texts) == sorted(cm.ravel().tolist())
    assert [t.get_text() for t in counts.get_yticklabels()] == list(plots.CLASS_NAMES)
    assert counts.get_xlabel() == "predicted" and counts.get_ylabel() == "true"


def test_misclassified_grid_titles_colours_and_bars(preds):
    x, y, probs = preds
    fig = plots.misclassified(x, y, probs, n=7)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * 7  # an image and its bar chart per mistake
    images, bars = _image_and_bar_axes(fig)
    wrong = np.flatnonzero(probs.argmax(1) != y)
    assert f"of {len(wrong)} mistakes" in fig.get_suptitle()
    shown_conf = []
    for img_ax, bar_ax in zip(images, bars, strict=True):
        assert to_rgba(img_ax.title.get_color()) == to_rgba(plots.WRONG_COLOR)
        heights = np.array([b.get_height() for b in bar_ax.patches])
        i = int(np.flatnonzero(np.all(np.isclose(probs, heights), axis=1))[0])
        _check_pair(img_ax, bar_ax, int(y[i]), probs[i])
        shown_conf.append(probs[i].max())
    assert shown_conf == sorted(shown_conf, reverse=True)  # the most confident mistakes first
    assert min(shown_conf) >= np.sort(probs[wrong].max(1))[-7]


def test_prediction_grid_right_answer_is_blue(preds):
    x, y, probs = preds
    right = np.flatnonzero(probs.argmax(1) == y)[:2]
    fig = plots.prediction_grid(x[right], y[right], probs[right], title="two")
    assert len(fig.axes) == 4 and fig.get_suptitle() == "two"
    for (img_ax, bar_ax), i in zip(zip(*_image_and_bar_axes(fig), strict=True), right, strict=True):
        _check_pair(img_ax, bar_ax, int(y[i]), probs[i])
        assert to_rgba(img_ax.title.get_color()) == to_rgba(plots.CORRECT_COLOR)


def test_confidence_extremes(preds):
    x, y, probs = preds
    fig = plots.confidence_extremes(x, y, probs, n=4)
    assert len(fig.axes) == 2 * 2 * 4
    top, bottom = fig.subfigs
    assert "most confident correct" in top.get_suptitle() and "least confident" in bottom.get_suptitle()
    top_titles = top.axes[0::2]
    assert all(to_rgba(ax.title.get_color()) == to_rgba(plots.CORRECT_COLOR) for ax in top_titles)
    pcts = [int(TITLE.match(ax.get_title())["pct"]) for ax in bottom.axes[0::2]]
    assert max(pcts) == round(100 * np.sort(probs.max(1))[3])  # the four lowest top probabilities


def test_reliability_diagram(preds):
    _, y, probs = preds
    cal = metrics.calibration(probs, y)
    fig = plots.reliability_diagram(cal)
    assert len(fig.axes) == 2
    assert f"ECE {cal['ece']:.4f}" in fig.axes[0].get_title() and "15 bins" in fig.axes[0].get_title()
    assert sum(b.get_height() for b in fig.axes[1].patches) == pytest.approx(N)


def test_learning_curves():
    fig = plots.learning_curves({"loss": [0.5, 0.4], "accuracy": [0.8, 0.85], "val_loss": [0.45, 0.42]})
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    assert len(fig.axes[0].lines) == 2 and len(fig.axes[1].lines) == 1


def test_figures_render_to_png(preds):
    x, y, probs = preds
    for fig in (
        plots.prediction_grid(x[:2], y[:2], probs[:2]),
        plots.reliability_diagram(metrics.calibration(probs, y)),
    ):
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_display_inline_in_jupyter_without_pyplot():
    """IPython shows a returned figure as a PNG even where pyplot's inline backend never loaded."""
    from IPython.core.formatters import DisplayFormatter

    import fmnist

    fig = fmnist.plots.image_grid(np.zeros((3, 28, 28), np.uint8))  # the public helper, titles optional
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    data, _ = DisplayFormatter().format(fig)
    assert data["image/png"].startswith(b"\x89PNG")
    assert fmnist.plots.image(np.zeros((28, 28), np.uint8))._repr_png_().startswith(b"\x89PNG")
