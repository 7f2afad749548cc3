"""Kim's variants (rand, max-norm) and Chinese / Japanese tokenisation through the classifier."""

from __future__ import annotations

import pytest
import torch

from textcnn import TextCNNClassifier
from textcnn.cli import main
from textcnn.errors import ConfigError

TEXTS = ["good film", "great film", "fine good", "awful film", "bad awful", "bad film"] * 8
LABELS = ["pos", "pos", "pos", "neg", "neg", "neg"] * 8


def test_max_norm_bounds_every_class_row():
    clf = TextCNNClassifier(epochs=3, learning_rate=0.5, max_norm=0.5, window_sizes=(1, 2), verbose=0)
    clf.fit(TEXTS, LABELS)
    norms = clf.model_.fc.weight.norm(dim=1)
    assert torch.all(norms <= 0.5 + 1e-5)
    unconstrained = TextCNNClassifier(epochs=3, learning_rate=0.5, max_norm=None, window_sizes=(1, 2), verbose=0)
    assert unconstrained.fit(TEXTS, LABELS).model_.fc.weight.norm(dim=1).max() > 0.5


def test_rand_mode_is_random_init_and_trains():
    clf = TextCNNClassifier(embedding_mode="rand", epochs=2, window_sizes=(1, 2), verbose=0).fit(TEXTS, LABELS)
    assert clf.model_.static_embedding is None and clf.model_.embedding.weight.requires_grad
    assert clf.config_.embedding_size == 128
    assert not clf.model_.embedding.weight[0].any()


def test_rand_with_vectors_is_refused():
    with pytest.raises(ConfigError, match="embedding_mode='rand' means random initialisation"):
        TextCNNClassifier(embedding_mode="rand", embeddings="glove-6b-50d", verbose=0).fit(TEXTS, LABELS)


def test_cli_bad_embedding_mode(tmp_path, capsys):
    train = tmp_path / "t.csv"
    train.write_text("text,label\na b,x\nc d,y\n", encoding="utf-8")
    assert main(["train", str(train), "--out", str(tmp_path / "m"), "--embedding-mode", "frozen"]) == 2
    assert "--embedding-mode must be one of 'rand', 'static', 'non-static', 'multichannel'" in capsys.readouterr().err


ZH = ["股市大涨投资者欢呼", "央行宣布降息", "球队赢得冠军", "足球比赛精彩", "基金收益上涨", "篮球明星退役"] * 6
ZH_Y = ["finance", "finance", "sports", "sports", "finance", "sports"] * 6


def test_auto_tokenizer_uses_characters_for_chinese_and_japanese():
    clf = TextCNNClassifier(epochs=1, window_sizes=(1, 2), verbose=0).fit(ZH, ZH_Y)
    assert clf.config_.tokenizer == "char"
    assert clf.tokenizer_.tokenize("央行降息") == ["央", "行", "降", "息"]
    ja = ["今日はいい天気です", "映画がとても面白い"] * 10
    clf = TextCNNClassifier(epochs=1, window_sizes=(1,), verbose=0).fit(ja, ["a", "b"] * 10)
    assert clf.config_.tokenizer == "char"


def test_default_windows_follow_the_tokenizer(tmp_path):
    small = dict(epochs=1, embedding_size=8, feature_size=4, verbose=0)
    chars = TextCNNClassifier(**small).fit(ZH, ZH_Y)
    assert chars.config_.window_sizes == (1, 2, 3) and chars.model_.window_sizes == (1, 2, 3)
    assert TextCNNClassifier(**small).fit(TEXTS, LABELS).config_.window_sizes == (3, 4, 5)  # words: Kim's
    assert TextCNNClassifier(tokenizer="word", **small).fit(ZH, ZH_Y).config_.window_sizes == (3, 4, 5)
    assert TextCNNClassifier(window_sizes=(2, 4), **small).fit(ZH, ZH_Y).config_.window_sizes == (2, 4)
    chars.save(tmp_path / "m")
    from textcnn import load

    assert load(tmp_path / "m").model_.window_sizes == (1, 2, 3)


def test_jieba_words_for_chinese():
    pytest.importorskip("jieba")
    clf = TextCNNClassifier(tokenizer="jieba", epochs=1, window_sizes=(1, 2), verbose=0).fit(ZH, ZH_Y)
    assert clf.config_.tokenizer == "jieba"
    assert any(len(t) > 1 for t in clf.vocab_.itos[2:])  # words, not only characters
    assert clf.predict(["球队赢得比赛"]).shape == (1,)


def test_word_tokenizer_on_chinese_gives_advice(capsys):
    TextCNNClassifier(tokenizer="word", epochs=1, window_sizes=(1,), verbose=1).fit(ZH, ZH_Y)
    assert "Use --tokenizer char (or jieba for Chinese words)" in capsys.readouterr().err


def test_embedding_size_validation():
    from textcnn import TextCNNConfig

    assert TextCNNConfig().embedding_size is None  # 128, or the pretrained vectors' size
    with pytest.raises(ConfigError, match=r"The 'embedding_size' parameter must be None or an int >= 1\. Got 0 instead\."):
        TextCNNConfig(embedding_size=0)
