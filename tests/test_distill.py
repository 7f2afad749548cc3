"""textcnn distill: augmentation, training on soft targets, and a student that follows its teacher."""

from __future__ import annotations

import numpy as np
import pytest

import textcnn
from textcnn import TextCNNClassifier
from textcnn.cli import main
from textcnn.distill import augment, distill, nearest_words, soft_labels, teacher_words
from textcnn.errors import DataFormatError

from .conftest import TINY, make_corpus, write_csv

FLIP = {"pos": "neg", "neg": "pos"}


def test_augment_is_seeded_new_and_bounded():
    texts = ["the film was really very good and fun", "a dull and boring plot", "great"]
    out = augment(texts, 4, seed=3)
    assert out == augment(texts, 4, seed=3) and out != augment(texts, 4, seed=4)
    assert len(out) <= 4 * len(texts) and len(set(out)) == len(out)
    assert not set(out) & set(texts)
    for new in out:  # words kept in order, from one source text
        assert any(_subsequence(new.split(), t.split()) for t in texts)


def test_augment_characters_for_text_without_spaces():
    out = augment(["这部电影非常好看"], 5, seed=0, characters=True)
    assert out and all(" " not in t and _subsequence(list(t), list("这部电影非常好看")) for t in out)


def test_augment_replaces_words_by_their_neighbours_only():
    neighbours = {"good": ["great", "fine"], "film": ["movie"]}
    out = augment(["the film was good", "a good film"], 6, seed=0, p_drop=0.0, p_replace=1.0, p_ngram=0.0,
                  neighbours=neighbours)
    assert out and all(len(new.split()) in (3, 4) for new in out)
    for new in out:  # every word with neighbours is replaced, by one of them; the others stay
        assert not {"good", "film"} & set(new.split()) and {"movie"} <= set(new.split())
        assert set(new.split()) <= {"the", "was", "a", "great", "fine", "movie"}
    assert augment(["the film"], 3, seed=0, p_drop=0.0, p_ngram=0.0, p_replace=1.0) == []  # no neighbours: no change


def test_nearest_words_by_cosine():
    words = ["good", "great", "bad", "awful", "plot"]
    vectors = np.array([[1, 0.1, 0], [1, 0.2, 0], [-1, 0, 0.1], [-1, 0, 0.2], [0, 0, -1]], dtype=np.float32)
    found = nearest_words(vectors, words, ["good", "awful", "missing"], k=2)
    assert found == {"good": ["great", "plot"], "awful": ["bad", "plot"]}


@pytest.fixture(scope="module")
def encoder_teacher(tmp_path_factory):
    from .test_encoder import HEAD, make_encoder_dir

    texts, labels = make_corpus(120, seed=0)
    directory = make_encoder_dir(tmp_path_factory.mktemp("distill") / "bert")
    return TextCNNClassifier(encoder=str(directory), **HEAD).fit(texts, labels), texts, labels


def test_an_encoder_teacher_offers_its_own_words(encoder_teacher):
    """The neighbours of the training words include words of the encoder's vocabulary the texts never use."""
    teacher, texts, labels = encoder_teacher
    found = teacher_words(teacher, texts, lambda t: t.lower().split(), dims=16, log=lambda line: None)
    ours = {w.lower() for t in texts for w in t.split()}
    vocabulary = set(teacher.tokenizer_.vocabulary())
    assert found.vectors.shape == (len(found.words), 16) and set(found.words) == ours | {w for w in vocabulary if w.isalpha()}
    assert set(found.neighbours) == {w for w in ours if w.isalpha()}
    assert all(len(v) == 10 and set(v) <= ours | vocabulary and w not in v for w, v in found.neighbours.items())
    assert set().union(*found.neighbours.values()) - ours  # words from the encoder alone
    assert teacher_words(TextCNNClassifier(**TINY).fit(texts, labels), texts, str.split) is None  # no encoder


def test_the_student_starts_from_the_teachers_vectors(encoder_teacher, dev_corpus, tmp_path):
    """Its vocabulary holds the encoder's words (no transfer set: from the vectors alone); it saves, loads, says so."""
    teacher, texts, labels = encoder_teacher
    encoder_only = {w for w in teacher.tokenizer_.vocabulary() if w.isalpha()} - {w.lower() for t in texts for w in t.split()}
    student = distill(teacher, texts, labels, *dev_corpus, copies=0, params=TINY, log=lambda line: None)
    assert encoder_only and encoder_only <= set(student.vocab_.itos)
    assert student.training_data_["distilled"]["teacher_vectors"] == len(student.vocab_.itos) - 2  # all but PAD, UNK
    assert student.config_.embeddings is None and student.get_params()["embeddings"] is None  # no stale temp path
    student.save(tmp_path / "student")
    assert np.allclose(textcnn.load(tmp_path / "student").predict_proba(dev_corpus[0]), student.predict_proba(dev_corpus[0]))
    assert "static vectors of the teacher's encoder" in (tmp_path / "student" / "README.md").read_text()
    plain = distill(teacher, texts, labels, *dev_corpus, copies=0, params=TINY, teacher_vectors=False,
                    log=lambda line: None)
    assert not encoder_only & set(plain.vocab_.itos) and plain.training_data_["distilled"]["teacher_vectors"] == 0


def _subsequence(part, whole) -> bool:
    it = iter(whole)
    return all(w in it for w in part)


def test_soft_labels_temperature():
    logits = np.array([[2.0, 0.0], [0.0, 0.0]])
    sharp, soft = soft_labels(logits, 1.0), soft_labels(logits, 4.0)
    assert np.allclose(sharp.sum(1), 1) and np.allclose(sharp[1], 0.5)
    assert soft[0, 0] < sharp[0, 0]  # a higher temperature flattens


def test_one_hot_soft_targets_train_like_hard_labels(corpus, dev_corpus):
    texts, labels = corpus
    classes = sorted(set(labels))
    one_hot = np.eye(len(classes), dtype=np.float32)[[classes.index(y) for y in labels]]
    hard = TextCNNClassifier(**TINY).fit(texts, labels, validation_data=dev_corpus)
    soft = TextCNNClassifier(**TINY).fit(texts, labels, validation_data=dev_corpus, soft_targets=(classes, one_hot))
    assert np.allclose(hard.decision_function(dev_corpus[0]), soft.decision_function(dev_corpus[0]), atol=1e-4)


def test_soft_target_columns_follow_their_classes(corpus, dev_corpus):
    """Columns given in another order are matched by class name, not position."""
    texts, labels = corpus
    classes = sorted(set(labels))[::-1]
    one_hot = np.eye(len(classes), dtype=np.float32)[[classes.index(y) for y in labels]]
    clf = TextCNNClassifier(**TINY).fit(texts, labels, validation_data=dev_corpus, soft_targets=(classes, one_hot))
    assert clf.score(*dev_corpus) >= 0.9


@pytest.mark.parametrize("classes, proba, match", [
    (["neg", "pos"], np.full((3, 2), 0.5), "one row per training text"),
    (["neg", "other"], None, "are not the training labels"),
    (["neg", "pos"], "logits", r"probabilities in \[0, 1\]"),
])
def test_bad_soft_targets_are_refused(corpus, classes, proba, match):
    texts, labels = corpus
    if proba is None:
        proba = np.full((len(texts), 2), 0.5)
    elif isinstance(proba, str):
        proba = np.full((len(texts), 2), 3.0)
    with pytest.raises(DataFormatError, match=match):
        TextCNNClassifier(**TINY).fit(texts, labels, soft_targets=(classes, proba))


def test_student_follows_its_teacher_not_the_labels(corpus, dev_corpus):
    """A teacher trained on flipped labels: with alpha=1 the student learns the flip from soft targets alone."""
    texts, labels = corpus
    teacher = TextCNNClassifier(**TINY).fit(texts, [FLIP[y] for y in labels],
                                            validation_data=(dev_corpus[0], [FLIP[y] for y in dev_corpus[1]]))
    dev_flipped = (dev_corpus[0], [FLIP[y] for y in dev_corpus[1]])
    student = distill(teacher, texts, labels, *dev_flipped, copies=2, alpha=1.0, params=TINY, log=lambda m: None)
    agree = (student.predict(dev_corpus[0]) == teacher.predict(dev_corpus[0])).mean()
    assert agree >= 0.9 and student.score(*dev_corpus) <= 0.1
    assert student.training_data_["distilled"]["augmented"] > 0


def test_cli_distill_saves_a_student_with_its_card(tmp_path, model_dir, train_csv, dev_csv, capsys):
    out = tmp_path / "student"
    argv = ["distill", str(model_dir), str(train_csv), "--dev", str(dev_csv), "--out", str(out), "--copies", "2",
            "--embedding-size", "16", "--feature-size", "8", "--window-sizes", "2,3", "--epochs", "4", "--learning-rate", "0.01", "-q"]
    assert main(argv) == 0
    student, teacher = textcnn.load(out), textcnn.load(model_dir)
    texts = make_corpus(40, seed=5)[0]
    assert (student.predict(texts) == teacher.predict(texts)).mean() >= 0.9
    card = (out / "README.md").read_text(encoding="utf-8")
    assert f"soft targets of the teacher {model_dir.name}" in card


def test_cli_distill_refuses_multi_label_and_bad_alpha(tmp_path, model_dir, capsys):
    multi = write_csv(tmp_path / "multi.csv", ["good fun", "bad dull"] * 10, ["pos|fun", "neg"] * 10)
    assert main(["distill", str(model_dir), str(multi), "--out", str(tmp_path / "s"), "-q"]) == 2
    assert "single-label" in capsys.readouterr().err
    assert main(["distill", str(model_dir), str(multi), "--out", str(tmp_path / "s"), "--alpha", "2", "-q"]) == 2
    assert "--alpha" in capsys.readouterr().err


def test_cli_no_teacher_vectors(encoder_teacher, tmp_path, dev_csv):
    teacher, texts, labels = encoder_teacher
    teacher.save(tmp_path / "teacher")
    train = write_csv(tmp_path / "train.csv", texts, labels)
    small = ["--copies", "0", "--embedding-size", "16", "--feature-size", "8", "--window-sizes", "2,3", "--epochs", "2", "-q"]
    for flag, expected in (([], True), (["--no-teacher-vectors"], False)):
        out = tmp_path / f"student{len(flag)}"
        assert main(["distill", str(tmp_path / "teacher"), str(train), "--dev", str(dev_csv), "--out", str(out),
                     *small, *flag]) == 0
        assert ("static vectors of the teacher's encoder" in (out / "README.md").read_text(encoding="utf-8")) is expected


def test_a_student_wider_than_the_encoders_vectors_starts_from_random_ones(encoder_teacher, dev_corpus):
    teacher, texts, labels = encoder_teacher  # 32-d states
    lines = []
    student = distill(teacher, texts, labels, *dev_corpus, copies=0, params={**TINY, "embedding_size": 64}, log=lines.append)
    assert student.training_data_["distilled"]["teacher_vectors"] == 0 and student.config_.embedding_size == 64
    assert any("starts from random vectors" in line for line in lines)
