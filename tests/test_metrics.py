"""metrics.py against hand-computed values on small label arrays, plus properties on random ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmnist import metrics
from fmnist.errors import ModelError

# Three classes; class 2 is never predicted, so its precision is 0/0.
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 0, 0])
CM = [[1, 1, 0], [0, 2, 0], [2, 0, 0]]

# Four images, three classes: confidences 0.7 (right), 0.5 (wrong, true class runner-up),
# 0.5 (wrong, true class last), 0.9 (right).
PROBS = np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5], [0.05, 0.05, 0.9]])
Y = np.array([0, 1, 0, 2])


def one_hot_probs(pred: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[pred]


def test_confusion_matrix_by_hand():
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == CM
    assert cm.dtype == np.int64


def test_confusion_matrix_uint8_labels_do_not_overflow():
    # 255 * 10 + 9 overflows uint8 arithmetic; labels are widened before indexing.
    y = np.array([9, 9, 8], np.uint8)
    assert metrics.confusion_matrix(y, np.array([9, 8, 8], np.uint8), 10)[9, 8] == 1


def test_per_class_by_hand_with_a_class_never_predicted():
    pc = metrics.per_class(np.array(CM))
    assert pc["precision"] == pytest.approx([1 / 3, 2 / 3, 0.0])  # class 2: 0/0 reported as 0.0
    assert pc["recall"] == pytest.approx([1 / 2, 1.0, 0.0])
    assert pc["f1"] == pytest.approx([0.4, 0.8, 0.0])
    assert pc["support"].tolist() == [2, 2, 2]
    assert not any(np.isnan(v).any() for v in pc.values())


def test_summary_lists_never_predicted_and_says_how_it_is_reported():
    m = metrics.summarize(one_hot_probs(Y_PRED, 3), Y_TRUE, names=["a", "b", "c"])
    assert m["never_predicted"] == [2]
    assert m["absent"] == []
    assert m["per_class"][2] == {"class": 2, "name": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert "never predicted" in m["conventions"] and "0.0" in m["conventions"]
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["macro_f1"] == pytest.approx((0.4 + 0.8 + 0.0) / 3)
    assert m["confusion_matrix"] == CM


def test_recall_of_an_absent_class_is_zero_and_listed():
    m = metrics.summarize(one_hot_probs(np.array([0, 2]), 3), np.array([0, 0]))
    assert m["absent"] == [1, 2]
    assert m["per_class"][2]["precision"] == 0.0  # predicted once, never right
    assert m["per_class"][1]["recall"] == 0.0


def test_top_confusions_by_hand():
    rows = metrics.top_confusions(np.array(CM), names=["a", "b", "c"])
    assert rows == [
        {"true": 2, "true_name": "c", "predicted": 0, "predicted_name": "a", "count": 2, "share": 1.0},
        {"true": 0, "true_name": "a", "predicted": 1, "predicted_name": "b", "count": 1, "share": 0.5},
    ]
    assert metrics.top_confusions(np.eye(3, dtype=int)) == []  # no mistakes, no confusions


def test_top_k_accuracy_by_hand():
    assert metrics.top_k_accuracy(PROBS, Y, 1) == pytest.approx(0.5)
    assert metrics.top_k_accuracy(PROBS, Y, 2) == pytest.approx(0.75)
    assert metrics.top_k_accuracy(PROBS, Y, 3) == 1.0


def test_expected_calibration_error_by_hand():
    # 15 bins: 0.7 -> bin 10 (acc 1), the two 0.5s -> bin 7 (acc 0), 0.9 -> bin 13 (acc 1).
    # ECE = 1/4 * 0.3 + 2/4 * 0.5 + 1/4 * 0.1 = 0.35
    cal = metrics.calibration(PROBS, Y)
    assert cal["ece"] == pytest.approx(0.35)
    assert metrics.expected_calibration_error(PROBS, Y) == pytest.approx(0.35)
    assert cal["bins"] == metrics.ECE_BINS == 15
    assert np.flatnonzero(cal["count"]).tolist() == [7, 10, 13]
    assert cal["accuracy"][7] == 0.0 and cal["confidence"][7] == pytest.approx(0.5)
    assert len(cal["edges"]) == 16


def test_ece_bin_edges_are_right_closed():
    # Confidence exactly 1.0 lands in the last bin, exactly 2/15 in bin 1 = (1/15, 2/15].
    sure = metrics.calibration(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([0, 0]))
    assert sure["count"][-1] == 2 and sure["ece"] == 0.0  # sure and right: perfectly calibrated
    probs = np.full((1, 15), 1 / 15)
    probs[0, :2] = [2 / 15, 0.0]  # still sums to 1
    edge = metrics.calibration(probs, np.array([0]))
    assert edge["count"][1] == 1 and sum(edge["count"]) == 1


def test_one_hot_labels_accepted():
    m = metrics.summarize(PROBS, np.eye(3)[Y])
    assert m["accuracy"] == pytest.approx(0.5)


def test_summary_is_json_ready():
    m = metrics.summarize(PROBS, Y)
    assert json.loads(json.dumps(m)) == m
    assert m["top2_accuracy"] == pytest.approx(0.75)
    assert m["expected_calibration_error"] == pytest.approx(0.35)
    assert m["per_class"][0]["name"] == "0"  # not ten classes: names are the indices


def test_ten_classes_get_fashion_names():
    m = metrics.summarize(np.eye(10), np.arange(10))
    assert [c["name"] for c in m["per_class"]][:2] == ["T-shirt/top", "Trouser"]
    assert m["accuracy"] == 1.0 and m["top_confusions"] == [] and m["never_predicted"] == []


def test_labels_outside_the_classes_are_a_clear_error():
    with pytest.raises(ModelError, match="classes"):
        metrics.summarize(PROBS, np.array([0, 1, 2, 7]))
    with pytest.raises(ModelError, match="one row"):
        metrics.summarize(PROBS, np.array([0, 1]))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 6).flatmap(
        lambda k: st.tuples(
            st.just(k),
            st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=60),
        )
    )
)
def test_metric_properties(case):
    k, pairs = case
    t, p = np.array(pairs).T
    cm = metrics.confusion_matrix(t, p, k)
    assert cm.sum() == len(t)
    pc = metrics.per_class(cm)
    assert pc["support"].tolist() == np.bincount(t, minlength=k).tolist()
    for key in ("precision", "recall", "f1"):
        assert np.all((pc[key] >= 0) & (pc[key] <= 1)) and not np.isnan(pc[key]).any()
    # F1 is the harmonic mean: never above the larger of precision and recall.
    assert np.all(pc["f1"] <= np.maximum(pc["precision"], pc["recall"]) + 1e-12)
    rows = metrics.top_confusions(cm, k=k * k)
    assert sum(r["count"] for r in rows) == len(t) - np.trace(cm)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 50), st.integers(2, 10))
def test_probability_metric_properties(seed, n, k):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * rng.uniform(0.1, 5)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = rng.integers(0, k, n)
    top1 = float(np.mean(probs.argmax(1) == y))
    assert metrics.top_k_accuracy(probs, y, 1) == pytest.approx(top1)
    assert metrics.top_k_accuracy(probs, y, 2) >= top1
    cal = metrics.calibration(probs, y)
    assert 0.0 <= cal["ece"] <= 1.0
    assert sum(cal["count"]) == n
