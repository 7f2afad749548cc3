"""The model card (textcnn.card): written at save time, updated by eval, printed by `textcnn card`."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

import textcnn
from textcnn import TextCNNClassifier
from textcnn.card import card_facts, read_facts
from textcnn.cli import main

from .conftest import TINY, make_corpus, write_csv

FAST = ["--embedding-size", "16", "--feature-size", "8", "--window-sizes", "2,3", "--epochs", "2",
        "--batch-size", "16", "--learning-rate", "0.01", "-q"]


def test_saved_model_has_a_card_with_the_facts_of_python_data(fitted, model_dir, corpus):
    facts = json.loads((model_dir / "card.json").read_text(encoding="utf-8"))
    assert facts == read_facts(model_dir) == json.loads(json.dumps(card_facts(fitted)))
    assert facts["task"] == "single-label" and facts["labels"] == ["neg", "pos"]
    assert facts["label_counts"] == {"neg": 80, "pos": 80}  # validation_data given: all of train is train
    data = facts["training_data"]
    assert data["source"] == "Python objects" and data["files"] == []
    assert data["dev"] == {"rows": 40, "label_counts": {"neg": 20, "pos": 20}, "from": "validation_data"}
    assert facts["settings"] == fitted.config_.to_dict() and facts["textcnn_version"] == textcnn.__version__
    best = [e for e in fitted.history_ if e["best"]][-1]
    assert facts["dev_metrics"]["best_epoch"] == best["epoch"] == fitted.best_epoch_
    assert facts["dev_metrics"]["accuracy"] == round(best["dev_accuracy"], 4)
    readme = (model_dir / "README.md").read_text(encoding="utf-8")
    for text in ("# Model card", "| neg | 80 |", "Given as Python objects", "## Intended use", "## Limits",
                 f"best epoch {best['epoch']}", "| window_sizes | 2,3 |", "test: none yet"):
        assert text in readme


def test_held_out_dev_split_is_described(corpus):
    clf = TextCNNClassifier(**{**TINY, "epochs": 1}).fit(*corpus)
    data = card_facts(clf)["training_data"]
    assert data["train"]["rows"] + data["dev"]["rows"] == len(corpus[0])
    assert data["dev"]["from"] == "a stratified 10% of the given texts"


def test_cli_train_records_files_and_eval_adds_test_metrics(tmp_path, train_csv, dev_csv, capsys):
    model = tmp_path / "model"
    assert main(["train", str(train_csv), "--dev", str(dev_csv), "--out", str(model), *FAST]) == 0
    capsys.readouterr()
    facts = read_facts(model)
    files = facts["training_data"]["files"]
    assert [(f["role"], f["name"]) for f in files] == [("train", "train.csv"), ("dev", "dev.csv")]
    assert files[0]["bytes"] == train_csv.stat().st_size
    assert files[0]["sha256"] == hashlib.sha256(train_csv.read_bytes()).hexdigest()
    assert facts["training_data"]["dev"]["from"] == "the dev file dev.csv"
    assert str(tmp_path) not in (model / "card.json").read_text() + (model / "README.md").read_text()  # no paths

    test_csv = write_csv(tmp_path / "test.csv", *make_corpus(30, seed=7))
    assert main(["eval", str(model), str(test_csv), "--json", "--no-update-card"]) == 0
    assert read_facts(model)["test_metrics"] == {}
    report = json.loads(capsys.readouterr().out)
    assert main(["eval", str(model), str(test_csv)]) == 0
    test = read_facts(model)["test_metrics"]["test.csv"]
    assert test["rows"] == 30 and test["accuracy"] == round(report["accuracy"], 4)
    assert test["sha256"] == hashlib.sha256(test_csv.read_bytes()).hexdigest()
    assert not [p for p in model.iterdir() if p.name.startswith(".")], "no temporary leftovers"
    capsys.readouterr()
    assert main(["card", str(model)]) == 0
    printed = capsys.readouterr().out
    assert printed == (model / "README.md").read_text(encoding="utf-8") and "test on test.csv (30 texts" in printed
    assert main(["card", str(model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == read_facts(model)


def test_card_of_a_model_saved_before_cards(model_dir, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    (old / "card.json").unlink()
    (old / "README.md").unlink()
    assert main(["card", str(old)]) == 0
    out = capsys.readouterr().out
    assert "| neg | not recorded |" in out and "## Training data" in out and "Not recorded" in out


def test_multi_label_card_lists_thresholds_and_per_label_counts(tmp_path):
    rows = [("sunny beach", ["travel", "weather"]), ("rain storm", ["weather"]), ("hotel flight", ["travel"])] * 8
    clf = TextCNNClassifier(**{**TINY, "window_sizes": (1, 2), "epochs": 2}).fit(*zip(*rows))
    clf.save(tmp_path / "m")
    facts = read_facts(tmp_path / "m")
    assert facts["task"] == "multi-label" and len(facts["thresholds"]) == 2
    total = facts["training_data"]["train"]["rows"]
    assert facts["label_counts"]["weather"] + facts["label_counts"]["travel"] > total  # a row counts for each label
    assert "| label | training texts | threshold |" in (tmp_path / "m" / "README.md").read_text(encoding="utf-8")


def test_card_tables_escape_pipes_in_labels(tmp_path):
    texts, labels = make_corpus(60)
    clf = TextCNNClassifier(**{**TINY, "epochs": 1, "multi_label": False}).fit(texts, [f"a|{y}" for y in labels])
    clf.save(tmp_path / "m")
    assert "| a\\|neg |" in (tmp_path / "m" / "README.md").read_text(encoding="utf-8")
