import numpy as np
import pytest

from textcnn.metrics import best_thresholds, classification_report, confusion_matrix, multilabel_report


def test_single_label_report_matches_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    r = classification_report(y, p, ["a", "b", "c", "d"])
    assert r["accuracy"] == pytest.approx(sk.accuracy_score(y, p))
    assert r["macro_f1"] == pytest.approx(sk.f1_score(y, p, average="macro"))
    assert r["weighted_f1"] == pytest.approx(sk.f1_score(y, p, average="weighted"))
    assert r["per_class"]["b"]["recall"] == pytest.approx(sk.recall_score(y, p, average=None)[1])
    assert r["confusion_matrix"] == sk.confusion_matrix(y, p).tolist()


def test_multilabel_report_matches_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y, p = rng.random((100, 5)) > 0.6, rng.random((100, 5)) > 0.5
    r = multilabel_report(y, p, list("abcde"))
    assert r["micro_f1"] == pytest.approx(sk.f1_score(y, p, average="micro"))
    assert r["macro_f1"] == pytest.approx(sk.f1_score(y, p, average="macro"))
    assert r["accuracy"] == pytest.approx(sk.accuracy_score(y, p))


def test_confusion_matrix_by_hand_and_zero_division():
    assert confusion_matrix([0, 1, 1], [0, 0, 1], 2).tolist() == [[1, 0], [1, 1]]
    r = classification_report([0, 0], [0, 0], ["a", "b"])
    assert r["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_best_thresholds_separate_the_classes():
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    probs = np.array([[0.3, 0.1], [0.25, 0.2], [0.1, 0.9], [0.05, 0.4]])
    t = best_thresholds(y, probs)
    assert 0.1 < t[0] <= 0.25 and 0.4 < t[1] <= 0.9
