"""Labels: canonical form, detection notes, labels that split into nothing, unknown labels at evaluation."""

import json
import re

import numpy as np
import pytest

from textcnn import DataFormatError, TextCNNClassifier, load
from textcnn.cli import main
from textcnn.labels import canonical, class_list, detect_multi_label, label_targets, normalise_labels

from .conftest import TINY, write_csv


def test_ints_numpy_ints_and_strings_are_one_label():
    np = pytest.importorskip("numpy")
    assert canonical(1) == canonical(np.int64(1)) == canonical("1") == "1"
    assert class_list([1, "1", np.int64(0), 2], multi=False) == [0, 1, 2]
    assert class_list([10, "b", 2], multi=False) == [10, 2, "b"]  # mixed types: sorted as str, no TypeError
    assert label_targets(["1", "0"], [0, 1], multi=False, what="evaluation").tolist() == [1, 0]


def test_a_model_fitted_on_ints_is_evaluated_from_the_cli(corpus, tmp_path, capsys):
    texts, labels = corpus
    ints = [1 if y == "pos" else 0 for y in labels]
    TextCNNClassifier(**TINY).fit(texts, ints).save(tmp_path / "m")
    assert list(load(tmp_path / "m").classes_) == [0, 1]
    test = write_csv(tmp_path / "test.csv", texts[:40], ints[:40])  # the reader gives "0" and "1"
    assert main(["eval", str(tmp_path / "m"), str(test), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["labels"] == ["0", "1"] and report["n"] == 40 and report["accuracy"] > 0.8


def test_unknown_evaluation_labels_are_named_not_blamed_on_dev(fitted, tmp_path, capsys):
    with pytest.raises(DataFormatError, match=r"The evaluation labels 'meh' \(2 texts\) are not among the model's "
                                              r"classes \(neg, pos\).*Remove those texts"):
        fitted.evaluate(["good", "bad", "so so", "meh"], ["pos", "neg", "meh", "meh"])
    path = write_csv(tmp_path / "t.csv", ["good", "fine"], ["pos", "meh"])
    model = tmp_path / "m"
    fitted.save(model)
    assert main(["eval", str(model), str(path)]) == 2
    err = capsys.readouterr().err
    assert "error: The evaluation labels 'meh' (1 text)" in err and "dev" not in err and "Traceback" not in err


ML_ROWS = [("sunny beach", ["travel", "weather"]), ("rain storm", ["weather"]), ("cheap flight", ["travel"]),
           ("stock crash", ["money"])] * 10


@pytest.fixture(scope="module")
def multi_fitted():
    return TextCNNClassifier(**{**TINY, "window_sizes": (1, 2)}).fit([t for t, _ in ML_ROWS], [y for _, y in ML_ROWS])


def test_multi_label_evaluation_refuses_labels_the_model_never_saw(multi_fitted):
    """It used to drop them silently: a text labelled 'sport' alone scored as a correct empty prediction."""
    with pytest.raises(DataFormatError, match=r"The evaluation labels 'sport' \(2 texts\) are not among the "
                                              r"model's classes \(money, travel, weather\)"):
        multi_fitted.evaluate(["sunny beach", "stock crash", "rain storm"], ["travel|sport", "sport", "weather"])
    assert multi_fitted.evaluate(["sunny beach"], ["travel|weather"])["n"] == 1


def test_multi_label_dev_labels_unknown_to_training_are_refused():
    texts, labels = [t for t, _ in ML_ROWS], [y for _, y in ML_ROWS]
    with pytest.raises(DataFormatError, match=r"The dev labels 'sport' \(1 text\) are not among the training labels"):
        TextCNNClassifier(**TINY).fit(texts, labels, validation_data=(["a match"], [["sport", "money"]]))


def test_one_label_with_the_separator_makes_multi_label_and_says_so(corpus):
    texts, labels = corpus
    labels = ["pos|neg" if i == 3 else y for i, y in enumerate(labels)]
    multi, note, worrying = detect_multi_label(labels, None, "|")
    assert multi and worrying
    with pytest.warns(UserWarning, match=r"1 of 160 labels contain the label separator '\|' \(for example "
                                         r"'pos\|neg'\), so the data is read as multi-label.*--no-multi-label "
                                         r"\(multi_label=False\).*--label-sep"):
        clf = TextCNNClassifier(**{**TINY, "epochs": 1}).fit(texts, labels)
    assert clf.multi_label_
    assert detect_multi_label(labels, False, "|") == (False, None, False)


def test_the_cli_prints_the_separator_warning_even_when_quiet(corpus, tmp_path, capsys):
    texts, labels = corpus
    path = write_csv(tmp_path / "t.csv", texts, ["a|b" if i == 0 else y for i, y in enumerate(labels)])
    assert main(["train", str(path), "--out", str(tmp_path / "m"), "--epochs", "1", "--window-sizes", "2", "-q"]) == 0
    assert "warning: 1 of 160 labels contain the label separator '|' (for example 'a|b')" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["|", " | ", "||"])
def test_a_label_that_splits_into_nothing_names_the_row(bad, corpus, tmp_path, capsys):
    texts, labels = corpus
    labels = [bad if i == 5 else y + "|x" for i, y in enumerate(labels)]
    with pytest.raises(DataFormatError, match=rf"y\[5\]: the label '{re.escape(bad)}' holds no label once split on '\|' and "
                                              r"stripped. Give every text at least one label"):
        TextCNNClassifier(**TINY).fit(texts, labels)
    path = write_csv(tmp_path / "t.csv", texts, labels)
    assert main(["train", str(path), "--out", str(tmp_path / "m"), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}, line 7: the label '{bad.strip()}' holds no label" in err and "Traceback" not in err


def test_normalise_and_targets_for_multi_label():
    rows = normalise_labels(["b|a", ["a", " a "], 3], multi=True, sep="|")
    assert rows == [["a", "b"], ["a"], ["3"]]
    assert np.array_equal(label_targets(rows, ["3", "a", "b"], multi=True, what="dev"),
                       np.array([[0.0, 1, 1], [0, 1, 0], [1, 0, 0]]))
    with pytest.raises(DataFormatError, match=r"y\[1\]: the label is a list"):
        normalise_labels(["a", ["b"]], multi=False, sep="|")
