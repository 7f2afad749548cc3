import pytest

from textcnn import ConfigError
from textcnn.tokenizers import cjk_share, make_tokenizer, resolve_tokenizer_name


def test_word_tokenizer_is_unicode_aware_and_keeps_spans():
    tok = make_tokenizer("word", lowercase=True)
    text = "Café Zürich didn't open?  Ünïcode!"
    pieces = tok.tokenize_with_spans(text)
    assert [p[0] for p in pieces] == ["café", "zürich", "didn't", "open", "?", "ünïcode", "!"]
    for token, start, end in pieces:
        assert text[start:end].lower() == token
    assert tok.tokenize(text) == [p[0] for p in pieces]


def test_lowercase_is_optional():
    assert make_tokenizer("word", lowercase=False).tokenize("Hello World") == ["Hello", "World"]


def test_char_tokenizer_splits_cjk_per_character():
    tok = make_tokenizer("char")
    assert tok.tokenize("中华 女子学院") == ["中", "华", "女", "子", "学", "院"]
    assert tok.tokenize_with_spans("日本語")[2] == ("語", 2, 3)


def test_auto_picks_char_for_cjk_and_word_otherwise():
    assert resolve_tokenizer_name("auto", ["中华女子学院：本科层次仅1专业招男生"]) == ("char", None)
    assert resolve_tokenizer_name("auto", ["what is the capital of France ?"]) == ("word", None)
    assert cjk_share(["東京は日本の首都です"]) > 0.9


def test_word_on_cjk_gives_advice():
    name, advice = resolve_tokenizer_name("word", ["两天价网站背后重重迷雾：做个网站究竟要多少钱"] * 3)
    assert name == "word"
    assert "--tokenizer char" in advice


def test_jieba_segments_chinese_words_with_spans():
    pytest.importorskip("jieba")
    tok = make_tokenizer("jieba")
    text = "我爱北京天安门"
    pieces = tok.tokenize_with_spans(text)
    assert "".join(p[0] for p in pieces) == text
    assert all(text[s:e] == t for t, s, e in pieces)
    assert len(pieces) < len(text)


def test_unknown_tokenizer_is_named():
    with pytest.raises(ConfigError, match="The 'tokenizer' parameter must be one of 'auto', 'char', 'jieba', 'word'. Got 'bpe'"):
        make_tokenizer("bpe")


def test_the_ascii_fast_rule_matches_the_general_rule_on_every_ascii_character():
    import random

    from textcnn.tokenizers import _WORD, _WORD_ASCII_LOWER

    rng = random.Random(0)
    alphabet = [chr(i) for i in range(128)]
    texts = ["don't stop", "well-known a--b x' 'y _under_ it's", "A\x1cB\x1fc\x0bd\te", "x-" * 50]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(3000)]
    texts += ["".join(rng.choice("ab-'_ .\x1c0") for _ in range(rng.randint(0, 30))) for _ in range(3000)]
    for text in texts:
        lower = text.lower()
        assert _WORD_ASCII_LOWER.findall(lower) == _WORD.findall(lower), repr(text)
    tok = make_tokenizer("word")
    assert tok.tokenize("Don't STOP-me now!") == ["don't", "stop-me", "now", "!"]
