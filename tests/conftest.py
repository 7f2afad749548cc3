"""Tiny corpora and fixtures, made in memory or in tmp_path (no ../shared needed)."""

from __future__ import annotations

import csv
import random

import pytest

from textcnn import TextCNNClassifier

POSITIVE = ["good", "great", "superb", "lovely", "brilliant", "fun"]
NEGATIVE = ["bad", "awful", "boring", "dull", "terrible", "poor"]
FILLER = ["the", "film", "was", "really", "plot", "acting", "and", "a", "story", "quite"]

# Small, fast settings for tests: the behaviour is the same as with the defaults.
TINY = dict(embedding_size=16, feature_size=8, window_sizes=(2, 3), epochs=4, batch_size=16, learning_rate=0.01,
            ngram_features=512, ngram_embedding_size=8, verbose=0)


def make_corpus(n: int = 160, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.sample(FILLER, rng.randint(2, 6)) + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def write_csv(path, texts, labels, header=("text", "label")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(zip(texts, labels))
    return path


@pytest.fixture(scope="session")
def corpus():
    return make_corpus(160, seed=0)


@pytest.fixture(scope="session")
def dev_corpus():
    return make_corpus(40, seed=1)


@pytest.fixture(scope="session")
def fitted(corpus, dev_corpus):
    """A small trained classifier shared by read-only tests."""
    return TextCNNClassifier(**TINY).fit(*corpus, validation_data=dev_corpus)


@pytest.fixture(scope="session")
def model_dir(fitted, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "sentiment"
    fitted.save(path)
    return path


@pytest.fixture
def train_csv(tmp_path, corpus):
    return write_csv(tmp_path / "train.csv", *corpus)


@pytest.fixture
def dev_csv(tmp_path, dev_corpus):
    return write_csv(tmp_path / "dev.csv", *dev_corpus)


TREC_CLASSES = ["abbr", "desc", "enty", "hum", "loc", "num"]  # TREC's six coarse classes


def trec_like(n: int, seed: int) -> tuple[list[str], list[str]]:
    """TREC-sized synthetic data: short questions whose class shows in one of a few cue words, among shared
    filler words (tests/test_ddp.py, benchmarks/scale.py)."""
    rng = random.Random(seed)
    cues = {c: [f"{c}{i}" for i in range(4)] for c in TREC_CLASSES}
    filler = [f"w{i}" for i in range(60)]
    texts, labels = [], []
    for i in range(n):
        label = TREC_CLASSES[i % len(TREC_CLASSES)]
        words = rng.sample(filler, rng.randint(4, 10)) + [rng.choice(cues[label])]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels
