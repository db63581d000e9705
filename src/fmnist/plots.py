"""Matplotlib figures: pure functions, data in and a ``Figure`` out (Agg, no display).

Figures are made with ``matplotlib.figure.Figure`` directly, not pyplot, so nothing is
kept in a global figure registry and nothing needs a screen. In Jupyter a returned figure
shows itself inline (as a PNG), with or without pyplot:

    fmnist.plots.image(x_train[42])                  # the lesson's plt.imshow(training_images[42])
    fmnist.plots.labelled_grid(x_train[:25], y_train[:25])
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib.figure
import numpy as np
from matplotlib.ticker import MaxNLocator

from fmnist.data import CLASS_NAMES


class Figure(matplotlib.figure.Figure):
    """A matplotlib Figure that Jupyter displays inline.

    IPython draws a plain Figure inline only once pyplot's inline backend has registered
    itself; a Figure made without pyplot (as here) would show as its text repr. Where that
    backend is active, its own formatter draws the figure and this method is not called.
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


def png_bytes(figure, dpi: int = 100) -> bytes:
    """A figure as PNG bytes, trimmed to its contents: what run directories and reports embed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def image(img: np.ndarray, title: str = "") -> Figure:
    """One 28×28 image, the tutorial's ``plt.imshow(training_images[42])`` with a colour bar."""
    fig = Figure(figsize=(4, 4))
    ax = fig.add_subplot()
    shown = ax.imshow(img, cmap="gray_r", vmin=0, vmax=255)
    fig.colorbar(shown, ax=ax, fraction=0.046)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def image_grid(images: np.ndarray, titles: Sequence[str] | None = None, cols: int | None = None) -> Figure:
    """A grid of images, each with its title below (the TensorFlow tutorial's 5×5 'first 25 training images')."""
    n = len(images)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2 * cols, 2.2 * rows))
    for i, (img, title) in enumerate(zip(images, titles if titles is not None else [""] * n, strict=True)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(img, cmap="binary", vmin=0, vmax=255)
        ax.set_xlabel(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def labelled_grid(images: np.ndarray, labels: np.ndarray, cols: int | None = None) -> Figure:
    """``image_grid`` titled with each image's class name."""
    return image_grid(images, [CLASS_NAMES[int(label)] for label in labels], cols)


def learning_curves(history: dict[str, list[float]]) -> Figure:
    """Loss and accuracy per epoch, training and (if present) validation."""
    fig = Figure(figsize=(10, 4))
    for i, metric in enumerate(("loss", "accuracy")):
        ax = fig.add_subplot(1, 2, i + 1)
        for key, style in ((metric, "o-"), (f"val_{metric}", "s--")):
            if history.get(key):
                epochs = range(1, len(history[key]) + 1)
                ax.plot(epochs, history[key], style, label="validation" if key.startswith("val_") else "training")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- experiment figures (mean ± std over seeds)
def mean_std_vs_x(x: Sequence[float], panels: Sequence[tuple], xlabel: str, logx: bool = False) -> Figure:
    """One panel per ``(ylabel, means, stds)``: the mean against ``x`` with ±std error bars."""
    fig = Figure(figsize=(5 * len(panels), 3.8))
    for i, (ylabel, means, stds) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.errorbar(x, means, yerr=stds, fmt="o-", capsize=4)
        if logx:
            ax.set_xscale("log", base=2)
        ax.set_xticks(list(x), [str(v) for v in x])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def mean_std_bars(labels: Sequence[str], panels: Sequence[tuple]) -> Figure:
    """One panel per ``(ylabel, means, stds)``: a bar per label with ±std error bars."""
    fig = Figure(figsize=(4.5 * len(panels), 4))
    for i, (ylabel, means, stds) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.bar(range(len(labels)), means, yerr=stds, capsize=4, color="#4c72b0")
        lo = min(m - s for m, s in zip(means, stds, strict=True))
        hi = max(m + s for m, s in zip(means, stds, strict=True))
        if 0 < lo < hi and (hi - lo) < 0.2 * hi:  # zoom in on close values (accuracy), or the bars all look equal
            ax.set_ylim(lo - (hi - lo), hi + 0.5 * (hi - lo))
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def mean_std_curves(panels: Sequence[tuple], marks: Sequence[int] = ()) -> Figure:
    """One panel per ``(ylabel, {series: (mean per epoch, std per epoch)})``: lines with ±std bands.

    ``marks`` draws dashed vertical lines at those epochs (1-based).
    """
    fig = Figure(figsize=(5.5 * len(panels), 4))
    for i, (ylabel, series) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for name, (mean, std) in series.items():
            mean, std = np.asarray(mean), np.asarray(std)
            epochs = np.arange(1, len(mean) + 1)
            ax.plot(epochs, mean, "o-", ms=3, label=name)
            ax.fill_between(epochs, mean - std, mean + std, alpha=0.25)
        for m in marks:
            ax.axvline(m, color="gray", ls="--", lw=1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def metric_vs_fields(panels: Sequence[tuple], ylabel: str) -> Figure:
    """A sweep's figure: one panel per swept field ``(name, labels, positions, log, {series: (means, stds)})``.

    Each series is the metric (mean ± std error bars) against that field's values, one line per
    setting of the other fields. ``positions`` are numeric x values (log-scaled when ``log``), or
    None for categories (e.g. layer widths 128, 512x256) placed evenly; a NaN mean (a failed point)
    leaves a gap.
    """
    fig = Figure(figsize=(5.2 * len(panels), 4))
    for i, (name, labels, positions, log, series) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        x = list(positions) if positions is not None else list(range(len(labels)))
        for label, (means, stds) in series.items():
            ax.errorbar(x, means, yerr=stds, fmt="o-", capsize=4, label=label)
        if log:
            ax.set_xscale("log")
        if positions is None:
            ax.margins(x=0.15)
        ax.set_xticks(x, labels, rotation=20 if max(map(len, labels)) > 6 else 0)
        ax.minorticks_off()
        ax.set_xlabel(name)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- evaluation figures
# The evaluation figures place their axes by hand (subplots_adjust): matplotlib's layout
# engines measure every tick label again on each draw, which tripled the report's drawing time.
CORRECT_COLOR = "blue"  # the TensorFlow tutorial's plot_image / plot_value_array colours
WRONG_COLOR = "red"
OTHER_BAR_COLOR = "#777777"  # the tutorial's grey for the other eight probabilities
ITEMS_PER_ROW = 3  # image + probability-bars pairs per row, as the tutorial's 5×3 grid
MISTAKES_SHOWN = 15  # the tutorial's num_rows=5 × num_cols=3
EXTREMES_SHOWN = 6  # per section of the most-confident / least-confident figure
PAIR_W, ROW_H, HEAD_H = 4.0, 2.0, 0.55  # inches: one image+bars pair, one grid row, a section's heading


def confusion_matrices(cm: np.ndarray, names: Sequence[str] = CLASS_NAMES) -> Figure:
    """The confusion matrix twice: counts, and row-normalised (each true class sums to 100%).

    Rows are the true class, columns the prediction. Both panels are shaded by the share of
    the true class and every cell carries its number, so the figure reads without a colour bar.
    """
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows != 0)
    fig = Figure(figsize=(14, 7))
    fig.subplots_adjust(left=0.1, right=0.99, bottom=0.2, top=0.94, wspace=0.4)
    panels = (
        ("counts", cm, lambda v: f"{int(v)}"),
        ("row-normalised (% of each true class)", 100 * share, lambda v: f"{v:.0f}" if v >= 1 else "<1" if v else ""),
    )
    for i, (title, values, fmt) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (t, p), v in np.ndenumerate(values):
            if text := fmt(v):
                ax.text(
                    p, t, text, ha="center", va="center", fontsize=8, color="white" if share[t, p] > 0.5 else "black"
                )
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"confusion matrix: {title}")
    return fig


def _prediction_pairs(fig, images, labels, probs, names, cols: int, head_in: float) -> None:
    """The tutorial's plot_image + plot_value_array for each image, ``cols`` pairs per row.

    ``fig`` (a Figure or SubFigure) keeps ``head_in`` inches at the top for a heading.
    """
    rows = max(1, math.ceil(len(images) / cols))
    height = rows * ROW_H + head_in
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.12 * ROW_H / height, top=1 - head_in / height,
                        wspace=0.12, hspace=0.45)  # fmt: skip
    for i, (img, label, p) in enumerate(zip(images, labels, probs, strict=True)):
        label, pred = int(label), int(np.argmax(p))
        color = CORRECT_COLOR if pred == label else WRONG_COLOR
        ax = fig.add_subplot(rows, 2 * cols, 2 * i + 1)
        ax.imshow(img, cmap="binary", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{names[pred]} {100 * np.max(p):2.0f}% ({names[label]})", color=color, fontsize=9)
        bars_ax = fig.add_subplot(rows, 2 * cols, 2 * i + 2)
        bars = bars_ax.bar(range(len(p)), p, color=OTHER_BAR_COLOR)
        bars_ax.set_ylim(0, 1)
        bars_ax.set_xticks(range(len(p)), [str(c) for c in range(len(p))], fontsize=7)
        bars_ax.set_yticks([])
        bars[pred].set_color(WRONG_COLOR)
        bars[label].set_color(CORRECT_COLOR)  # set last: a correct prediction's bar is blue


def prediction_grid(
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    title: str = "",
    names: Sequence[str] = CLASS_NAMES,
    cols: int = ITEMS_PER_ROW,
) -> Figure:
    """Images titled "predicted NN% (true)" (blue right, red wrong), each with its ten probabilities."""
    rows = max(1, math.ceil(len(images) / cols))
    fig = Figure(figsize=(PAIR_W * cols, rows * ROW_H + HEAD_H))
    _prediction_pairs(fig, images, labels, probs, names, cols, HEAD_H)
    if title:
        fig.suptitle(title, y=1 - 0.12 / (rows * ROW_H + HEAD_H), va="top")
    return fig


def misclassified(x: np.ndarray, y: np.ndarray, probs: np.ndarray, n: int = MISTAKES_SHOWN) -> Figure:
    """The ``n`` most confident mistakes: what the model gets wrong while sure of itself."""
    y = np.asarray(y)
    pred, conf = np.argmax(probs, axis=1), np.max(probs, axis=1)
    wrong = np.flatnonzero(pred != y)
    shown = wrong[np.argsort(-conf[wrong], kind="stable")][:n]
    title = f"the {len(shown)} most confident of {len(wrong):,} mistakes"
    return prediction_grid(x[shown], y[shown], probs[shown], title)


def confidence_extremes(x: np.ndarray, y: np.ndarray, probs: np.ndarray, n: int = EXTREMES_SHOWN) -> Figure:
    """Two sections: the ``n`` most confident correct predictions and the ``n`` least confident ones."""
    y = np.asarray(y)
    pred, conf = np.argmax(probs, axis=1), np.max(probs, axis=1)
    right = np.flatnonzero(pred == y)
    sure = right[np.argsort(-conf[right], kind="stable")][:n]
    unsure = np.argsort(conf, kind="stable")[:n]
    rows = max(1, math.ceil(n / ITEMS_PER_ROW))
    section_h = rows * ROW_H + HEAD_H
    fig = Figure(figsize=(PAIR_W * ITEMS_PER_ROW, 2 * section_h))
    sections = (
        (sure, f"most confident correct ({len(sure)} of {len(right):,} correct)"),
        (unsure, f"least confident: lowest top probability ({len(unsure)} of {len(y):,})"),
    )
    for sub, (idx, title) in zip(fig.subfigures(2, 1), sections, strict=True):
        _prediction_pairs(sub, x[idx], y[idx], probs[idx], CLASS_NAMES, ITEMS_PER_ROW, HEAD_H)
        sub.suptitle(title, y=1 - 0.12 / section_h, va="top")
    return fig


def reliability_diagram(calibration: dict) -> Figure:
    """Accuracy against confidence per bin (a calibrated model sits on the diagonal) and images per bin.

    ``calibration`` is ``metrics.calibration(probs, y)``.
    """
    edges = np.asarray(calibration["edges"])
    centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    count = np.asarray(calibration["count"])
    filled = count > 0
    fig = Figure(figsize=(11, 4.2))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.91, wspace=0.22)
    ax = fig.add_subplot(1, 2, 1)
    ax.bar(centers[filled], np.asarray(calibration["accuracy"])[filled], width=width[filled], edgecolor="black",
           color="#4c72b0", label="accuracy in bin")  # fmt: skip
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.plot(centers[filled], np.asarray(calibration["confidence"])[filled], "o", color=WRONG_COLOR, ms=4,
            label="mean confidence in bin")  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability: ECE {calibration['ece']:.4f} ({calibration['bins']} bins)")
    ax.legend(loc="upper left", fontsize=8)
    hist = fig.add_subplot(1, 2, 2)
    hist.bar(centers, count, width=width, edgecolor="black", color="#999999")
    hist.set_xlim(0, 1)
    hist.set_yscale("symlog")
    hist.set_xlabel("confidence (top probability)")
    hist.set_ylabel("images (log scale)")
    hist.set_title("images per confidence bin")
    return fig
