"""Explain's class handling and cost bound, in the Python API the server relies on."""

from __future__ import annotations

import pytest
from .serving import tiny_corpus, train_tiny

from textcnn import ConfigError
from textcnn.explain import explain_cost

TEXTS, _ = tiny_corpus(6, seed=3)


@pytest.fixture(scope="module")
def clf():
    return train_tiny(epochs=1)


def test_repeated_classes_are_explained_once(clf):
    exp = clf.explain(TEXTS[:2], classes=["HUM", "LOC", "HUM"] * 1000)
    assert [[c["label"] for c in e["classes"]] for e in exp] == [["HUM", "LOC"]] * 2


def test_explain_cost_counts_tokens_windows_and_distinct_classes(clf):
    texts = ["who was the old king", "where", ""]  # 5, 1 and (at least) 1 tokens
    per_token = 2 + 2  # two window sizes, and the n-gram channel's uni- and bigram
    assert clf.config_.ngram_features > 0
    assert explain_cost(clf, texts) == 7 * per_token * 3
    assert explain_cost(clf, texts, classes=["LOC"] * 50) == 7 * per_token
    long = " ".join(["king"] * (clf.config_.max_text_len + 50))  # only used tokens count
    assert explain_cost(clf, [long], classes=["LOC"]) == clf.config_.max_text_len * per_token
    with pytest.raises(ConfigError, match="'SPORT' is not one of the model's classes"):
        explain_cost(clf, texts, classes=["SPORT"])
