"""Classification metrics from labels and predicted probabilities (pure NumPy).

"81% accurate" is where the tutorial stops. These answer the next questions: which
classes fail (per-class precision / recall / F1), which get mixed up (the confusion
matrix and its largest off-diagonal cells), whether the right answer was at least the
runner-up (top-2 accuracy), and whether the model's confidence can be trusted
(expected calibration error).

    m = summarize(probs, y)       # probs: (n, classes) from engine.predict_proba
    m["per_class"][6]             # {'class': 6, 'name': 'Shirt', 'precision': .., 'recall': .., ...}

Conventions (also written into every result as ``conventions``):
- confusion matrix: rows are the true class, columns the predicted class.
- precision of a class that is never predicted is 0/0, undefined; it is reported as 0.0
  (scikit-learn's ``zero_division=0``) and the class is listed in ``never_predicted``.
  Likewise recall of a class absent from the labels is reported as 0.0 and the class is
  listed in ``absent``; F1 is 0.0 whenever precision + recall is 0.
- expected calibration error: confidence = the largest probability; 15 equal-width bins
  over [0, 1], bin b holding confidences in (b/15, (b+1)/15] (bin 0 also takes 0);
  ECE = sum over bins of (images in bin / all images) * |accuracy in bin - mean
  confidence in bin|; empty bins add nothing (Naeini et al. 2015, Guo et al. 2017).

Everything returned by ``summarize`` is plain lists, ints and floats: it goes straight
into metrics.json.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fmnist.data import CLASS_NAMES
from fmnist.errors import ModelError

ECE_BINS = 15  # equal-width confidence bins for the expected calibration error (the usual choice since Guo et al.)
TOP_K = 2  # "was the right answer at least the runner-up?"
TOP_CONFUSIONS = 10  # off-diagonal cells kept, largest first
CONVENTIONS = (
    "confusion_matrix rows are true classes, columns predicted classes. "
    "Precision of a class never predicted (0/0) is reported as 0.0 and the class is listed in never_predicted; "
    "recall of a class absent from the labels is reported as 0.0 and listed in absent; F1 is 0.0 when "
    "precision + recall is 0. expected_calibration_error: confidence = max probability, "
    f"{ECE_BINS} equal-width bins (b/{ECE_BINS}, (b+1)/{ECE_BINS}], "
    "sum of (bin share of images) * |bin accuracy - bin mean confidence|."
)


def _labels(y: np.ndarray) -> np.ndarray:
    """Integer labels from integer labels or one-hot rows, as int64 (uint8 would overflow in index arithmetic)."""
    y = np.asarray(y)
    return (np.argmax(y, axis=-1) if y.ndim == 2 else y).astype(np.int64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0.0 where den is 0 (the reported value of an undefined ratio)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


# --------------------------------------------------------------------------- from labels
def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts; ``cm[t, p]`` = images of class t predicted as p."""
    t, p = _labels(y_true), _labels(y_pred)
    if len(t) != len(p):
        raise ModelError(f"{len(t)} labels but {len(p)} predictions: they must be the same length.")
    for name, v in (("labels", t), ("predictions", p)):
        if len(v) and (v.min() < 0 or v.max() >= num_classes):
            raise ModelError(
                f"{name} range over {v.min()}–{v.max()} but there are {num_classes} classes (0–{num_classes - 1}): "
                "check that the labels belong to this model."
            )
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 (float arrays) and support (int array) per class, from a confusion matrix.

    An undefined ratio (class never predicted, or absent from the labels) is 0.0: see the module doc.
    """
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(np.float64)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def top_confusions(cm: np.ndarray, k: int = TOP_CONFUSIONS, names: Sequence[str] | None = None) -> list[dict]:
    """The ``k`` largest off-diagonal cells: true → predicted, count, and share of that true class.

    Ties are broken by (true, predicted) index so the order is deterministic; empty cells are left out.
    """
    cm = np.asarray(cm)
    names = names or _names(len(cm))
    support = cm.sum(axis=1)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    rows = []
    for t, p in zip(*np.unravel_index(flat, cm.shape), strict=True):
        count = int(off[t, p])
        if count == 0:
            break
        rows.append(
            {
                "true": int(t),
                "true_name": names[t],
                "predicted": int(p),
                "predicted_name": names[p],
                "count": count,
                "share": float(count / support[t]),
            }
        )
    return rows


# --------------------------------------------------------------------------- from probabilities
def top_k_accuracy(probs: np.ndarray, y: np.ndarray, k: int = TOP_K) -> float:
    """Share of images whose true class is among the ``k`` highest probabilities."""
    probs, y = np.asarray(probs), _labels(y)
    if len(y) == 0:
        return 0.0
    if k >= probs.shape[1]:
        return 1.0
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == y[:, None], axis=1)))


def calibration(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Reliability-diagram data and the expected calibration error (see the module doc).

    Returns ``{'bins', 'edges', 'count', 'accuracy', 'confidence', 'ece'}``; per-bin accuracy
    and confidence are 0.0 for empty bins (their weight in the ECE is 0).
    """
    probs, y = np.asarray(probs, np.float64), _labels(y)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    # Right-closed bins: ceil(c * bins) - 1, so c = 1/15 falls in bin 0 and c = 1 in the last bin.
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    acc = _safe_div(np.bincount(which, weights=correct, minlength=bins), count)
    conf = _safe_div(np.bincount(which, weights=confidence, minlength=bins), count)
    ece = float(np.sum(count / max(len(y), 1) * np.abs(acc - conf)))
    return {
        "bins": bins,
        "edges": np.linspace(0.0, 1.0, bins + 1).tolist(),
        "count": count.tolist(),
        "accuracy": acc.tolist(),
        "confidence": conf.tolist(),
        "ece": ece,
    }


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE with ``bins`` equal-width confidence bins (0 = confidence matches accuracy everywhere)."""
    return calibration(probs, y, bins)["ece"]


def _names(num_classes: int) -> list[str]:
    return list(CLASS_NAMES) if num_classes == len(CLASS_NAMES) else [str(c) for c in range(num_classes)]


def summarize(probs: np.ndarray, y: np.ndarray, names: Sequence[str] | None = None) -> dict:
    """Every metric of ``probs`` (n, classes) against labels ``y``, as a JSON-ready dict.

    Keys: n, accuracy, top2_accuracy, expected_calibration_error, macro_precision / macro_recall /
    macro_f1, per_class (a list of {class, name, precision, recall, f1, support}),
    confusion_matrix (list of rows), top_confusions, never_predicted, absent, calibration,
    conventions.
    """
    probs, y = np.asarray(probs), _labels(y)
    if probs.ndim != 2 or len(probs) != len(y):
        raise ModelError(f"expected one row of class probabilities per label; got {probs.shape} for {len(y)} labels.")
    num_classes = probs.shape[1]
    names = list(names) if names is not None else _names(num_classes)
    cm = confusion_matrix(y, probs.argmax(axis=1), num_classes)
    pc = per_class(cm)
    cal = calibration(probs, y)
    return {
        "n": len(y),
        "accuracy": float(np.trace(cm) / max(len(y), 1)),
        "top2_accuracy": top_k_accuracy(probs, y, TOP_K),
        "expected_calibration_error": cal["ece"],
        "macro_precision": float(pc["precision"].mean()),
        "macro_recall": float(pc["recall"].mean()),
        "macro_f1": float(pc["f1"].mean()),
        "per_class": [
            {
                "class": c,
                "name": names[c],
                "precision": float(pc["precision"][c]),
                "recall": float(pc["recall"][c]),
                "f1": float(pc["f1"][c]),
                "support": int(pc["support"][c]),
            }
            for c in range(num_classes)
        ],
        "confusion_matrix": cm.tolist(),
        "top_confusions": top_confusions(cm, TOP_CONFUSIONS, names),
        "never_predicted": [int(c) for c in np.flatnonzero(cm.sum(axis=0) == 0)],
        "absent": [int(c) for c in np.flatnonzero(cm.sum(axis=1) == 0)],
        "calibration": cal,
        "conventions": CONVENTIONS,
    }
