"""The n-gram channel (``ngram_features``): hashing, training, saving, explanations, CLI and summary.

That every prediction engine computes the channel like the model's forward is checked in
tests/test_engines.py (the models named "n-gram channel").
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import textcnn
from textcnn import TextCNNClassifier, TextCNNConfig
from textcnn.cli import main
from textcnn.data import pad_batch
from textcnn.errors import ConfigError
from textcnn.fastpath import TableEngine, fused_kernel, ngram_kernel
from textcnn.model import (NGRAM_A, NGRAM_B, NGRAM_M, TRIGRAM_MARK, gram_bucket, ngram_bucket, ngram_buckets,
                           trigram_first)
from textcnn.summary import render_summary
from textcnn.training import make_optimizer

from .conftest import TINY

DATA = Path(__file__).parent / "data"
BUCKETS = 97


@pytest.fixture(scope="module")
def channel(corpus, dev_corpus) -> TextCNNClassifier:
    return TextCNNClassifier(**{**TINY, "ngram_features": BUCKETS, "ngram_embedding_size": 6}).fit(
        *corpus, validation_data=dev_corpus)


def test_buckets_are_the_same_in_python_numpy_torch_and_numba():
    firsts = [1, 2, 5, 99_999, 2**31 - 1, 2**32 - 1]
    seconds = [0, 1, 7, 2**31 - 1, 2**32 - 1]
    pairs = [(a, b) for a in firsts for b in seconds]
    exact = [(a * NGRAM_A + b) % NGRAM_M * NGRAM_B % BUCKETS + 1 for a, b in pairs]  # Python's big ints
    a, b = np.array(pairs).T
    assert [ngram_bucket(x, y, BUCKETS) for x, y in pairs] == exact
    assert ngram_bucket(a, b, BUCKETS).tolist() == exact
    assert ngram_bucket(torch.from_numpy(a), torch.from_numpy(b), BUCKETS).tolist() == exact
    if fused_kernel() is not None:  # the kernel's hash: one-hot scores read back which bucket each n-gram hit
        scores = np.eye(BUCKETS + 1, dtype=np.float32)
        out = np.empty((len(firsts), BUCKETS + 1), dtype=np.float32)
        ngram_kernel()(np.array(firsts, np.int64), np.arange(len(firsts) + 1), scores, BUCKETS, 2, out)
        assert out.argmax(axis=1).tolist() == [ngram_bucket(x, 0, BUCKETS) for x in firsts]


def test_trigrams_hash_alike_everywhere_and_never_as_a_bigram():
    ids = [1, 2, 5, 99_999, 2**31 - 1]
    triples = [(a, b, c) for a in ids for b in ids for c in ids]
    exact = [((((a * NGRAM_A + b) % NGRAM_M + 2**31) * NGRAM_A + c) % NGRAM_M * NGRAM_B % BUCKETS + 1) for a, b, c in triples]
    assert [gram_bucket(t, BUCKETS) for t in triples] == exact
    a, b, c = np.array(triples).T
    assert ngram_bucket(trigram_first(a, b), c, BUCKETS).tolist() == exact
    batch = torch.tensor(triples)  # (N, 3): one trigram per row, after 3 unigrams and 2 bigrams
    assert ngram_buckets(batch, BUCKETS, order=3)[:, 5].tolist() == exact
    assert int(trigram_first(a, b).min()) >= TRIGRAM_MARK > max(ids)  # a trigram's pair is never a bigram's
    if fused_kernel() is not None:  # one text of 3 ids through the kernel: 6 n-grams, one-hot scores
        scores = np.eye(BUCKETS + 1, dtype=np.float32)
        out = np.empty((1, BUCKETS + 1), dtype=np.float32)
        ngram_kernel()(np.array([3, 4, 5], np.int32), np.array([0, 3]), scores, BUCKETS, 3, out)
        expected = np.zeros(BUCKETS + 1)
        for gram in [(3,), (4,), (5,), (3, 4), (4, 5), (3, 4, 5)]:
            expected[gram_bucket(gram, BUCKETS)] += 1 / 6
        np.testing.assert_allclose(out[0], expected, atol=1e-6)


@pytest.mark.parametrize("order, width", [(1, 3), (2, 5), (3, 6)])
def test_the_order_sets_which_n_grams_a_batch_has(order, width):
    ids = torch.tensor([[3, 4, 5], [6, 7, 0], [0, 0, 0]])
    buckets = ngram_buckets(ids, BUCKETS, order)  # (3, width)
    grams = [(3,), (4,), (5,), (3, 4), (4, 5), (3, 4, 5)][:width]
    assert buckets[0].tolist() == [gram_bucket(g, BUCKETS) for g in grams]
    assert (buckets[1] != 0).sum() == [2, 3, 3][order - 1]  # 2 unigrams, 1 bigram, no trigram
    assert buckets[2].tolist() == [0] * width


def test_buckets_of_a_padded_batch_skip_padding():
    ids = torch.tensor([[3, 4, 5], [6, 0, 0], [0, 0, 0]])
    buckets = ngram_buckets(ids, BUCKETS)  # (3, 5): 3 unigrams, 2 bigrams
    assert buckets[0].tolist() == [ngram_bucket(3, 0, BUCKETS), ngram_bucket(4, 0, BUCKETS), ngram_bucket(5, 0, BUCKETS),
                                   ngram_bucket(3, 4, BUCKETS), ngram_bucket(4, 5, BUCKETS)]
    assert buckets[1].tolist() == [ngram_bucket(6, 0, BUCKETS), 0, 0, 0, 0]
    assert buckets[2].tolist() == [0] * 5
    assert int(buckets[0].min()) >= 1 and int(buckets.max()) <= BUCKETS


@pytest.mark.parametrize("numba", [True, False], ids=["kernel", "embedding_bag"])
def test_the_table_engine_computes_the_channel_with_and_without_numba(channel, numba, monkeypatch):
    if not numba:
        monkeypatch.setattr(textcnn.fastpath, "ngram_kernel", lambda: None)
    elif fused_kernel() is None:
        pytest.skip("numba is not installed")
    ids = pad_batch(channel.encode(["good film", "the plot was dull and boring", "", "zzz"]))
    with torch.no_grad():
        torch.testing.assert_close(TableEngine(channel.model_)(ids), channel.model_(ids), atol=1e-5, rtol=1e-5)


def test_single_texts_and_batches_share_one_compiled_kernel(channel, monkeypatch):
    """Flat and padded ids reach the kernel as int32, one compiled signature: a second one cost a one-off
    compile of about a second inside the first big prediction of a process."""
    if fused_kernel() is None:
        pytest.skip("numba is not installed")
    dtypes, original = [], TableEngine._ngram_flat

    def spy(self, flat, starts):
        dtypes.append(flat.dtype)
        return original(self, flat, starts)

    monkeypatch.setattr(TableEngine, "_ngram_flat", spy)
    channel.predict_proba(["good film"])  # the fused path, unpadded
    channel.predict_proba(["good film", "the plot was dull and boring"] * 200)  # the batch path, padded
    assert len(dtypes) >= 2 and set(dtypes) == {np.dtype(np.int32)}


def test_the_channel_adds_its_mean_bag_term_to_the_logits(channel):
    model = channel.model_
    ids = pad_batch(channel.encode(["good film", "the plot was dull and boring", ""]))
    with torch.no_grad():
        cnn = model.fc(model.pool(ids))
        vectors = model.ngram_embedding.weight
        expected = []
        for row in ids.tolist():
            real = [t for t in row if t]
            grams = [(t, 0) for t in real] + list(zip(real, real[1:]))
            mean = (torch.stack([vectors[ngram_bucket(a, b, BUCKETS)] for a, b in grams]).mean(0) if grams
                    else torch.zeros(vectors.shape[1]))
            expected.append(model.ngram_fc(mean))
        torch.testing.assert_close(model(ids), cnn + torch.stack(expected))


def test_sparse_adam_trains_the_bag_rows_the_batches_use(corpus, dev_corpus):
    clf = TextCNNClassifier(**{**TINY, "epochs": 1, "ngram_features": 5000, "ngram_embedding_size": 6})
    clf.fit(*corpus, validation_data=dev_corpus)
    model = clf.model_
    optimizers = make_optimizer(model, 0.01, 0.0)
    sparse = [p for opt in optimizers if isinstance(opt, torch.optim.SparseAdam) for g in opt.param_groups
              for p in g["params"]]
    assert any(p is model.ngram_embedding.weight for p in sparse)
    initial = textcnn.model.build_model(clf.config_, len(clf.vocab_)).ngram_embedding.weight.detach()
    changed = (model.ngram_embedding.weight.detach() != initial).any(dim=1)  # (N + 1,)
    used = set(ngram_buckets(pad_batch(clf.encode(corpus[0])), 5000).flatten().tolist()) - {0}
    assert set(torch.nonzero(changed).flatten().tolist()) == used  # exactly the rows the texts use
    assert not model.ngram_embedding.weight[0].any()  # bucket 0 (no n-gram) stays zero
    assert not torch.equal(model.ngram_fc.weight, textcnn.model.build_model(clf.config_, len(clf.vocab_)).ngram_fc.weight)


def test_max_norm_leaves_the_channel_alone(channel):
    model = channel.model_
    before = model.ngram_fc.weight.detach().clone()
    with torch.no_grad():
        model.ngram_fc.weight.mul_(100)  # far above any max norm
        model.apply_max_norm(0.5)
        assert float(model.fc.weight.norm(dim=1).max()) <= 0.5 + 1e-6
        assert torch.equal(model.ngram_fc.weight, before * 100)
        model.ngram_fc.weight.copy_(before)


def test_save_load_round_trip(channel, tmp_path):
    texts = ["a good film", "boring plot", "", "zzz qqq"]
    channel.save(tmp_path / "m")
    loaded = textcnn.load(tmp_path / "m")
    assert loaded.config_.ngram_features == BUCKETS and loaded.model_.ngram_fc is not None
    np.testing.assert_array_equal(loaded.predict_proba(texts), channel.predict_proba(texts))


def test_a_config_saved_before_the_channel_loads_without_it():
    """Model directories written before ``ngram_features`` existed mean no channel (the default is on)."""
    assert TextCNNConfig().ngram_features > 0
    config = json.loads((DATA / "model-format1" / "config.json").read_text())
    assert "ngram_features" not in config["config"]
    clf = textcnn.load(DATA / "model-format1")
    assert clf.config_.ngram_features == 0 and clf.model_.ngram_fc is None


def test_explanations_list_the_channel_n_grams_and_still_sum_to_the_logit(channel):
    text = "the plot was really dull  and boring"
    exp = channel.explain([text])[0]
    ids = pad_batch(channel.encode([text]))
    with torch.no_grad():
        logits = channel.model_(ids)[0].double().numpy()
        channel_terms = (channel.model_.ngram_logits(ids)[0] - channel.model_.ngram_fc.bias).double().numpy()
    n = len(exp["tokens"])
    for c, cls in enumerate(exp["classes"]):
        grams = cls["channel_ngrams"]
        assert len(grams) == 2 * n - 1  # every unigram and bigram, once
        assert abs(sum(g["contribution"] for g in grams) - channel_terms[c]) < 1e-5
        assert abs(sum(cls["token_scores"]) + cls["unattributed"] + cls["bias"] - logits[c]) < 1e-5
        assert abs(cls["logit"] - logits[c]) < 1e-5
        assert all(g["text"] == text[g["char_start"]:g["char_end"]] for g in grams)
        assert {g["token_end"] - g["token_start"] for g in grams} == {1, 2}
        assert [g["contribution"] for g in grams] == sorted((g["contribution"] for g in grams), reverse=True)
    assert "dull  and" in {g["text"] for g in exp["classes"][0]["channel_ngrams"]}  # spans keep the text as typed


def test_explanations_with_trigrams_list_each_once_and_still_sum(corpus, dev_corpus):
    clf = TextCNNClassifier(**{**TINY, "epochs": 1, "ngram_features": 64, "ngram_order": 3}).fit(*corpus)
    assert clf.config_.ngram_order == 3 and clf.model_.ngram_order == 3
    text = "the plot was really dull"
    exp = clf.explain([text])[0]
    ids = pad_batch(clf.encode([text]))
    with torch.no_grad():
        logits = clf.model_(ids)[0].double().numpy()
    n = len(exp["tokens"])
    for c, cls in enumerate(exp["classes"]):
        grams = cls["channel_ngrams"]
        assert len(grams) == 3 * n - 3  # every uni-, bi- and trigram, once
        assert sorted(g["token_end"] - g["token_start"] for g in grams) == [1] * n + [2] * (n - 1) + [3] * (n - 2)
        assert abs(sum(cls["token_scores"]) + cls["unattributed"] + cls["bias"] - logits[c]) < 1e-5
    assert "was really dull" in {g["text"] for g in exp["classes"][0]["channel_ngrams"]}


def test_the_order_defaults_to_trigrams_for_characters_and_bigrams_for_words(corpus, tmp_path):
    words = TextCNNClassifier(**{**TINY, "epochs": 1}).fit(*corpus)
    chars = TextCNNClassifier(**{**TINY, "epochs": 1, "tokenizer": "char"}).fit(*corpus)
    assert TextCNNConfig().ngram_order is None
    assert (words.config_.ngram_order, words.model_.ngram_order) == (2, 2)
    assert (chars.config_.ngram_order, chars.model_.ngram_order) == (3, 3)
    chars.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["config"]["ngram_order"] == 3
    loaded = textcnn.load(tmp_path / "m")
    assert loaded.model_.ngram_order == 3
    texts = ["a good film", "boring plot", ""]
    np.testing.assert_array_equal(loaded.predict_proba(texts), chars.predict_proba(texts))


def test_a_model_saved_before_the_order_existed_keeps_uni_and_bigrams(corpus, tmp_path):
    chars = TextCNNClassifier(**{**TINY, "epochs": 1, "tokenizer": "char", "ngram_order": 2}).fit(*corpus)
    chars.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    del meta["config"]["ngram_order"]  # as written before the field: the char default is now 3
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())  # re-signed, as an old save would be
    manifest["sha256"]["config.json"] = hashlib.sha256((tmp_path / "m" / "config.json").read_bytes()).hexdigest()
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    loaded = textcnn.load(tmp_path / "m")
    assert loaded.config_.ngram_order == 2 and loaded.model_.ngram_order == 2
    texts = ["a good film", "boring plot", ""]
    np.testing.assert_array_equal(loaded.predict_proba(texts), chars.predict_proba(texts))


def test_explain_shows_the_channel_in_the_terminal(channel, tmp_path, capsys):
    channel.save(tmp_path / "m")
    assert main(["explain", str(tmp_path / "m"), "the plot was dull"]) == 0
    out = capsys.readouterr().out
    assert "n-gram channel" in out and "convolution n-grams" in out and "bag" in out


def test_summary_shows_the_channel(channel):
    text = render_summary(channel.model_, batch_size=4, text_len=10)
    assert "n-gram buckets (uni + bi)" in text and "4 x 19" in text  # 10 unigrams + 9 bigrams
    assert "n-gram vectors" in text and f"{(BUCKETS + 1) * 6:,}" in text and "n-gram fc" in text


def test_cli_flag_sets_the_channel(tmp_path, train_csv, dev_csv, capsys):
    out = tmp_path / "model"
    fast = ["--embedding-size", "8", "--feature-size", "4", "--window-sizes", "2,3", "--epochs", "1", "-q"]
    assert main(["train", str(train_csv), "--dev", str(dev_csv), "--out", str(out), "--ngram-features", "64",
                 "--ngram-embedding-size", "3", *fast]) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["ngram_features"] == 64 and config["ngram_embedding_size"] == 3
    assert main(["train", str(train_csv), "--out", str(tmp_path / "bad"), "--ngram-features", "-1", *fast]) == 2
    assert "--ngram-features" in capsys.readouterr().err
    assert main(["train", str(train_csv), "--out", str(tmp_path / "tri"), "--ngram-order", "3", *fast]) == 0
    assert json.loads((tmp_path / "tri" / "config.json").read_text())["config"]["ngram_order"] == 3
    assert main(["train", str(train_csv), "--out", str(tmp_path / "bad"), "--ngram-order", "5", *fast]) == 2
    assert "--ngram-order" in capsys.readouterr().err


def test_bad_values_are_refused_with_the_parameter_named():
    with pytest.raises(ConfigError, match="The 'ngram_features' parameter must be an int >= 0"):
        TextCNNConfig(ngram_features=-1)
    with pytest.raises(ConfigError, match="The 'ngram_embedding_size' parameter must be an int >= 1"):
        TextCNNConfig(ngram_embedding_size=0)
    for bad in (0, 4, 2.0, "3"):
        with pytest.raises(ConfigError, match="The 'ngram_order' parameter must be None, 1, 2 or 3"):
            TextCNNConfig(ngram_order=bad)
