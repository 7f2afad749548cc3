"""Explanations are exact: per class, the n-gram contributions plus the bias give the model's logit."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from .serving import tiny_corpus, train_tiny

from textcnn import ConfigError, NotFittedError, TextCNN, TextCNNClassifier
from textcnn.cli import main
from textcnn.data import pad_batch

TEXTS = [
    "how many kings of paris ?",
    "who",  # shorter than the widest window: the winning window covers padding
    "",  # no tokens at all
    "where is the zzz qqq river , old   city ?",  # unknown words, odd spacing
    "who wrote the first book of the old city in paris , the big river of the king ?",  # cut by max_text_len
]

MODELS = {
    "windows 2,3": dict(window_sizes=(2, 3)),
    "windows 1,4,6 with batch norm": dict(window_sizes=(1, 4, 6), batch_norm=True),
    "windows 3,5 multichannel": dict(window_sizes=(3, 5), multichannel=True),
    "windows 2,4 batch norm, max_text_len 7": dict(window_sizes=(2, 4), batch_norm=True, max_text_len=7),
}


@pytest.fixture(scope="module", params=list(MODELS), ids=list(MODELS))
def clf(request):
    params = dict(MODELS[request.param])
    if not params.pop("multichannel", False):
        return train_tiny(**params)
    # Multichannel needs pretrained vectors to train; a random two-table model explains the same way.
    clf = train_tiny(**params)
    cfg = clf.config_
    torch.manual_seed(1)
    clf.model_ = TextCNN(vocab_size=len(clf.vocab_), embedding_size=cfg.embedding_size, feature_size=cfg.feature_size,
                         window_sizes=cfg.window_sizes, num_class=len(clf.classes_), multichannel=True).eval()
    torch.nn.init.normal_(clf.model_.fc.bias)
    return clf


@pytest.fixture(scope="module")
def multi_clf():
    texts, labels = tiny_corpus()
    labels = [[y, "Q"] if "?" in t and i % 3 == 0 else [y] for i, (t, y) in enumerate(zip(texts, labels))]
    return TextCNNClassifier(embedding_size=16, feature_size=8, window_sizes=(2, 3), epochs=3,
                             multi_label=True, verbose=0).fit(texts, labels)


def _check_sums(clf, texts):
    logits = clf.decision_function(texts)  # (N, C), the model's own float32 forward pass
    explanations = clf.explain(texts)
    assert len(explanations) == len(texts)
    for exp, row in zip(explanations, logits):
        assert [c["label"] for c in exp["classes"]] == list(clf.classes_)
        for cls, logit in zip(exp["classes"], row):
            assert cls["logit"] == pytest.approx(logit, abs=1e-4)
            by_token = sum(cls["token_scores"]) + cls["unattributed"] + cls["bias"]
            grams = cls["ngrams"] + cls.get("channel_ngrams", [])  # the convolutions' and the n-gram channel's
            by_ngram = sum(g["contribution"] for g in grams) + cls["unattributed"] + cls["bias"]
            assert by_token == pytest.approx(logit, abs=1e-4)
            assert by_ngram == pytest.approx(logit, abs=1e-4)
        assert exp["walk"]["logits"] == pytest.approx(list(row), abs=1e-4)
    return explanations


def test_contributions_add_up_to_every_logit(clf):
    explanations = _check_sums(clf, TEXTS)
    # Something is attributed: the text's n-grams carry non-zero contributions.
    assert any(g["contribution"] != 0 for g in explanations[0]["classes"][0]["ngrams"])


def test_multi_label_contributions_add_up(multi_clf):
    explanations = _check_sums(multi_clf, TEXTS)
    assert "labels" in explanations[0]["prediction"]


# Known and unknown words, punctuation, accents, emoji: texts of 0 to 12 tokens, and raw Unicode.
_WORDS = st.sampled_from(["who", "what", "where", "how", "many", "the", "river", "kings", "paris", "old", "city",
                          "zzz", "qqq", "?", ",", "  ", "ÉTÉ", "naïve", "🙂", "\u200b", "שלום"])
_TEXTS = st.lists(st.lists(_WORDS, max_size=12).map(" ".join) | st.text(max_size=40), min_size=1, max_size=4)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(texts=_TEXTS)
def test_contributions_add_up_for_random_texts(clf, texts):
    _check_sums(clf, texts)


def test_spans_point_at_the_original_characters(clf):
    exp = clf.explain(["Where IS  the   river ?"])[0]
    for tok in exp["tokens"]:
        assert exp["text"][tok["start"]:tok["end"]].lower() == tok["token"]
    for cls in exp["classes"]:
        for g in cls["ngrams"]:
            assert g["text"] == exp["text"][g["char_start"]:g["char_end"]]
            assert g["key"] == " ".join(t["token"] for t in exp["tokens"][g["token_start"]:g["token_end"]])
            assert 0 <= g["token_start"] < g["token_end"] <= len(exp["tokens"])


def test_short_and_empty_texts(clf):
    short, empty = clf.explain(["who", ""])
    assert [t["token"] for t in short["tokens"]] == ["who"]
    for cls in short["classes"]:
        assert all((g["token_start"], g["token_end"]) == (0, 1) for g in cls["ngrams"])
        assert cls["unattributed"] == 0
    widest = max(clf.config_.window_sizes)
    assert short["walk"]["token_ids_shape"] == [1, widest]
    for branch in short["walk"]["branches"]:
        assert branch["text_windows"] == 1 and branch["conv_shape"][2] == widest - branch["window"] + 1
    assert empty["tokens"] == [] and all(c["ngrams"] == [] for c in empty["classes"])


def test_truncation_is_reported_and_respected(clf):
    text = TEXTS[-1]
    exp = clf.explain([text])[0]
    limit = clf.config_.max_text_len
    n = len(clf.tokenizer_.tokenize(text))
    assert exp["n_tokens"] == n
    assert exp["truncated"] == (n > limit)
    assert len(exp["tokens"]) == min(n, limit)
    assert all(g["token_end"] <= min(n, limit) for c in exp["classes"] for g in c["ngrams"])


def test_walk_winners_are_the_windows_that_won(clf):
    """Each branch's strongest filter, run on its winning n-gram alone, gives the same pooled value."""
    text = "where is the old city of paris in the river ?"
    exp = clf.explain([text])[0]
    ids = clf.encode([text])[0]
    model = clf.model_
    feature_size = model.fc.in_features // len(model.window_sizes)
    for b, branch in enumerate(exp["walk"]["branches"]):
        g = branch["best_ngram"]
        assert g["token_end"] - g["token_start"] == branch["window"]
        window = pad_batch([ids[g["token_start"]:g["token_end"]]], max(model.window_sizes))  # (1, max_k)
        with torch.inference_mode():
            pooled = model.pool(window)  # (1, F*n)
        assert float(pooled[0, b * feature_size + branch["best_filter"]]) == pytest.approx(branch["best_value"], abs=1e-5)


def test_dropout_is_off_and_training_mode_restored(clf):
    clf.model_.train()
    try:
        first, second = clf.explain([TEXTS[0]])[0], clf.explain([TEXTS[0]])[0]
        assert clf.model_.training
    finally:
        clf.model_.eval()
    assert first["classes"] == second["classes"]
    assert [c["logit"] for c in first["classes"]] == pytest.approx(list(clf.decision_function([TEXTS[0]])[0]), abs=1e-4)


def test_choosing_classes(clf):
    exp = clf.explain([TEXTS[0]], classes=["LOC"])[0]
    assert [c["label"] for c in exp["classes"]] == ["LOC"]
    with pytest.raises(ConfigError, match=r"The class 'SPORT' is not one of the model's classes \(HUM, LOC, NUM\)"):
        clf.explain([TEXTS[0]], classes=["SPORT"])


def test_explain_before_fit():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        TextCNNClassifier().explain(["x"])


def test_question_words_drive_the_prediction():
    clf = train_tiny(epochs=10)
    exp = clf.explain(["how many old kings of paris ?"])[0]
    num = next(c for c in exp["classes"] if c["label"] == "NUM")
    assert exp["prediction"]["label"] == "NUM"
    top = num["ngrams"][0]["key"]
    assert "how" in top or "many" in top


# ----- the command line -----

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m"
    train_tiny(epochs=10).save(path)
    return path


def test_cli_explain_json(model_dir, capsys):
    assert main(["explain", str(model_dir), "how many kings ?", "who wrote the book ?", "--format", "json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    exp = json.loads(lines[0])
    assert exp["text"] == "how many kings ?"
    for cls in exp["classes"]:
        assert sum(cls["token_scores"]) + cls["unattributed"] + cls["bias"] == pytest.approx(cls["logit"], abs=1e-4)


def test_cli_explain_terminal_view(model_dir, capsys):
    assert main(["explain", str(model_dir), "how many kings ?", "--class", "HUM", "--top-ngrams", "2"]) == 0
    out = capsys.readouterr().out
    assert "explaining: HUM" in out and "how many kings ?" in out and "predicted: NUM" in out
    assert "logit" in out and "bias" in out


def test_cli_explain_corpus(model_dir, tmp_path, capsys):
    texts, _ = tiny_corpus(60, seed=1)
    corpus = tmp_path / "questions.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert main(["explain", str(model_dir), "--input", str(corpus), "--top-ngrams", "3", "--format", "json"]) == 0
    tops = json.loads(capsys.readouterr().out)
    assert sorted(tops) == ["HUM", "LOC", "NUM"]
    assert all(len(rows) <= 3 for rows in tops.values())
    assert any("many" in row["ngram"] or "much" in row["ngram"] for row in tops["NUM"])
    assert main(["explain", str(model_dir), "--input", str(corpus)]) == 0
    assert "n-grams that most often drive" in capsys.readouterr().out


def test_corpus_drivers_count_the_channel_and_each_ngram_once_per_text():
    from textcnn.explain import corpus_top_ngrams

    clf = train_tiny()
    with torch.no_grad():
        clf.model_.fc.weight.zero_()  # the convolutions say nothing: every driver is the channel's
    texts = ["how many many many kings ?", "how many kings ?"]
    tops = corpus_top_ngrams(clf, texts)
    rows = {row["ngram"]: row for rows in tops.values() for row in rows}
    assert rows, "the channel's n-grams drive the predictions"
    assert all(row["texts"] <= len(texts) for row in rows.values())  # "many" thrice in a text counts once


@pytest.mark.parametrize("argv, message", [
    (["how"], None),
    ([], "Give texts to explain as arguments, or --input FILE"),
    (["how", "--class", "SPORT"], "The class 'SPORT' is not one of the model's classes"),
    (["how", "--top-ngrams", "0"], "--top-ngrams must be an int >= 1. Got 0 instead."),
])
def test_cli_explain_errors(model_dir, capsys, argv, message):
    status = main(["explain", str(model_dir), *argv])
    err = capsys.readouterr().err
    if message is None:
        assert status == 0 and err == ""
    else:
        assert status == 2 and message in err and "Traceback" not in err


def test_cli_explain_bad_model_dir(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "nope"), "how"]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_terminal_colours_follow_the_sign():
    from textcnn.explain_view import coloured_text, token_style

    assert token_style(0.0, 1.0) == ""
    assert "rgb(46,160,67)" in token_style(2.0, 2.0)  # strongest for: full green
    assert "rgb(207,34,46)" in token_style(-2.0, 2.0)  # strongest against: full red
    exp = {"text": "ab  cd", "tokens": [{"start": 0, "end": 2}, {"start": 4, "end": 6}]}
    text = coloured_text(exp, {"token_scores": [1.0, -0.5]})
    assert text.plain == "ab  cd"
    assert [str(s.style) for s in text.spans] == [token_style(1.0, 1.0), token_style(-0.5, 1.0)]
