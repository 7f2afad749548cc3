"""Multi-label end to end: detection, sigmoid + BCE, tuned thresholds saved, eval report, predict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from textcnn import TextCNNClassifier, load
from textcnn.cli import main

ROWS = [
    ("sunny beach holiday", ["travel", "weather"]),
    ("rain storm tonight", ["weather"]),
    ("flight hotel booking", ["travel"]),
    ("stock market crash", ["money"]),
    ("cheap flight deals", ["money", "travel"]),
    ("bank rates rise", ["money"]),
    ("snow cancels flight", ["travel", "weather"]),
    ("tax refund money", ["money"]),
]
TRAIN = ROWS * 6
FAST = ["--epochs", "25", "--window-sizes", "1,2", "--feature-size", "16", "--learning-rate", "0.01", "-q"]


def _csv(path, rows, sep="|"):
    path.write_text("text,label\n" + "".join(f"{t},{sep.join(y)}\n" for t, y in rows), encoding="utf-8")
    return str(path)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("writer", [_csv, _jsonl])
def test_cli_train_eval_predict(tmp_path, capsys, writer):
    ext = "csv" if writer is _csv else "jsonl"
    train = writer(tmp_path / f"train.{ext}", TRAIN)
    dev = writer(tmp_path / f"dev.{ext}", ROWS)
    model = tmp_path / "model"
    assert main(["train", train, "--dev", dev, "--out", str(model), *FAST]) == 0
    labels = json.loads((model / "labels.json").read_text())
    assert labels["classes"] == ["money", "travel", "weather"]
    assert len(labels["thresholds"]) == 3 and all(0 < t < 1 for t in labels["thresholds"])
    capsys.readouterr()

    assert main(["eval", str(model), dev, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["task"] == "multi-label"
    assert report["micro_f1"] > 0.9 and report["macro_f1"] > 0.9
    assert set(report["per_class"]) == {"money", "travel", "weather"}

    assert main(["eval", str(model), dev]) == 0
    text = capsys.readouterr().out
    assert "micro avg" in text and "macro avg" in text and "exact-match accuracy" in text

    assert main(["predict", str(model), "snow cancels flight", "--format", "jsonl"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["labels"] == ["travel", "weather"]
    assert len(rec["probabilities"]) == 2 and all(p >= t for p, t in zip(rec["probabilities"], labels["thresholds"][1:]))

    assert main(["predict", str(model), "stock market crash"]) == 0
    assert capsys.readouterr().out.startswith("money\t")


def test_custom_separator_and_forcing(tmp_path, capsys):
    train = _csv(tmp_path / "train.csv", TRAIN, sep=";")
    assert main(["train", train, "--out", str(tmp_path / "m"), "--label-sep", ";", *FAST]) == 0
    assert load(tmp_path / "m").multi_label_
    # --no-multi-label: 'money;travel' is one class of its own
    assert main(["train", train, "--out", str(tmp_path / "s"), "--label-sep", ";", "--no-multi-label", *FAST]) == 0
    single = load(tmp_path / "s")
    assert not single.multi_label_ and "money;travel" in list(single.classes_)
    # --multi-label on data without any separator: one label per text, sigmoid outputs
    plain = _csv(tmp_path / "plain.csv", [(t, y[:1]) for t, y in TRAIN])
    assert main(["train", plain, "--out", str(tmp_path / "f"), "--multi-label", *FAST]) == 0
    forced = load(tmp_path / "f")
    assert forced.multi_label_ and forced.thresholds_ is not None
    capsys.readouterr()


def test_python_api_lists_and_thresholds():
    texts, labels = [t for t, _ in TRAIN], [y for _, y in TRAIN]
    clf = TextCNNClassifier(epochs=25, window_sizes=(1, 2), feature_size=16, learning_rate=0.01, verbose=0)
    clf.fit(texts, labels, validation_data=([t for t, _ in ROWS], [y for _, y in ROWS]))
    assert clf.multi_label_
    proba = clf.predict_proba(["cheap flight deals"])
    assert proba.shape == (1, 3) and not np.isclose(proba.sum(), 1.0)  # independent sigmoids
    assert list(clf.predict(["cheap flight deals"])[0]) == ["money", "travel"]
    clf.thresholds_ = np.array([1.01, 1.01, 1.01])  # nothing passes: an empty label list, not an error
    assert list(clf.predict(["cheap flight deals"])[0]) == []


def test_list_labels_with_multi_label_false():
    with pytest.raises(ValueError, match=r"y\[0\]: the label is a list \(\['x'\]\), but multi_label=False"):
        TextCNNClassifier(multi_label=False, verbose=0).fit(["a b", "c d"], [["x"], ["y"]])


def test_sigmoid_is_exact_and_silent_for_extreme_logits():
    import warnings

    from textcnn.classifier import _sigmoid

    x = np.array([[-1000.0, -40.0, -2.0, 0.0, 2.0, 40.0, 1000.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in exp would raise here
        p = _sigmoid(x)
    assert np.allclose(p[0, 2:5], 1 / (1 + np.exp(-x[0, 2:5])))
    assert p[0, 0] == 0.0 and 0 < p[0, 1] < 1e-17 and p[0, -1] == 1.0


def test_thresholds_are_tuned_on_dev_where_0_5_is_not_best():
    """'rare' is on 30% of the texts with 'sun', at random: its probability there is ~0.3, so the best
    threshold (F1 0.46 by marking them all) lies below 0.5, where nothing would be marked (F1 0)."""
    from textcnn.metrics import best_thresholds

    def rows(n, offset):
        out = []
        for i in range(offset, offset + n):
            if i % 2:
                out.append((f"stock bank market {i % 7}", ["money"]))
            else:
                out.append((f"sun beach sea {i % 7}", ["travel", "rare"] if i % 10 in (0, 4, 8) and i % 20 < 10 else ["travel"]))
        return out

    train, dev = rows(200, 0), rows(80, 1000)
    clf = TextCNNClassifier(epochs=6, window_sizes=(1,), feature_size=8, embedding_size=8, learning_rate=0.01,
                            min_freq=1, verbose=0)
    clf.fit([t for t, _ in train], [y for _, y in train], validation_data=([t for t, _ in dev], [y for _, y in dev]))
    rare = list(clf.classes_).index("rare")
    dev_targets = np.array([[c in y for c in clf.classes_] for _, y in dev])
    np.testing.assert_array_equal(clf.thresholds_, best_thresholds(dev_targets, clf.predict_proba([t for t, _ in dev])))
    assert clf.thresholds_[rare] < 0.45
    tuned = clf.evaluate([t for t, _ in dev], [y for _, y in dev])["per_class"]["rare"]["f1"]
    clf.thresholds_ = np.full(len(clf.classes_), 0.5)
    assert tuned > clf.evaluate([t for t, _ in dev], [y for _, y in dev])["per_class"]["rare"]["f1"] + 0.2
