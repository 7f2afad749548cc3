"""Every engine computes the plain model's function: one definition, many implementations.

An engine maps texts to logits (N, C). Each is run on the same random models (batch norm with
non-trivial statistics, multichannel, windows wider than the texts) and the same texts (empty,
only unknown words, shorter than every window, long), as one ragged batch and one text at a
time, against the plain float32 model run on each text alone.

The exported ONNX graphs (float32 and int8, run by onnxruntime as textcnn.runtime runs them) are
engines too. To add an engine, append an ``EngineCase`` to ``ENGINES``: a name, a factory
that takes the fitted classifier and returns ``texts -> logits`` (or calls ``pytest.skip``), and
its tolerance.

Tolerance: the float32 engines add the same products in other orders (the tables sum per-word
products window by window, the numba kernel fuses multiply-adds, the training forward runs one
GEMM per distinct word), so they differ from the model by float32 rounding: about 1e-6 on these
logits of size ~1. ``FLOAT32`` (atol and rtol 1e-4) leaves a margin of 100x and still fails on any
real difference (a window that wrongly wins, a missing bias, padding that counts). The int8 graph
rounds every weight to 1/127 of its filter's (row's) largest: on these logits of size ~1 that moved
them by at most 0.004 (measured on the five models), so ``INT8`` allows 0.02, far below a wrong
window's effect.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from textcnn import TextCNN, TextCNNClassifier
from textcnn.data import pad_batch
from textcnn.fastpath import TableEngine, training_forward
from textcnn.model import min_length

from .serving import train_tiny

FLOAT32 = dict(atol=1e-4, rtol=1e-4)
INT8 = dict(atol=0.02, rtol=0.02)


@dataclass(frozen=True)
class EngineCase:
    name: str
    make: Callable[[TextCNNClassifier], Callable[[list[str]], np.ndarray]]
    tolerance: dict


def _on_ids(run: Callable[[TextCNNClassifier, list[list[int]]], torch.Tensor]):
    """``run(clf, ids) -> logits`` -> an engine over texts, without autograd."""
    def engine(clf: TextCNNClassifier):
        def logits(texts: list[str]) -> np.ndarray:
            with torch.no_grad():
                return run(clf, clf.encode(texts)).numpy()
        return logits
    return engine


def _pooled_logits(model: TextCNN, ids: torch.Tensor) -> torch.Tensor:
    """The forward's two terms, computed apart: the convolutions' and the n-gram channel's."""
    logits = model.fc(model.pool(ids))  # (B, C)
    return logits if model.ngram_fc is None else logits + model.ngram_logits(ids)


def _tables(clf: TextCNNClassifier):
    engine = TableEngine(clf.model_)  # built once, as the classifier does
    return lambda texts: engine(pad_batch(clf.encode(texts))).numpy()


def _fused(clf: TextCNNClassifier):
    engine = TableEngine(clf.model_)
    if not engine.fused_for(1):
        pytest.skip("no fused kernel: numba missing, or a batch norm model")
    return lambda texts: engine.logits_lists(clf.encode(texts)).numpy()


def _explained(clf: TextCNNClassifier):
    """The explanation's parts added up: per class, token scores + unattributed + bias."""
    def logits(texts: list[str]) -> np.ndarray:
        return np.array([[sum(c["token_scores"]) + c["unattributed"] + c["bias"] for c in exp["classes"]]
                         for exp in clf.explain(texts)])
    return logits


def _onnx(int8: bool):
    """The exported graph through onnxruntime: ids padded with PAD_ID, as textcnn.runtime feeds it."""
    def engine(clf: TextCNNClassifier):
        ort = pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
        from textcnn.export import write_graph

        graphs = clf.__dict__.setdefault("_test_graphs", {})  # one export per model and kind
        if int8 not in graphs:
            with tempfile.TemporaryDirectory() as tmp:
                file = write_graph(clf.model_, Path(tmp) / "model.onnx", int8=int8)
                graphs[int8] = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        session = graphs[int8]
        return lambda texts: session.run(None, {"ids": pad_batch(clf.encode(texts)).numpy()})[0]
    return engine


ENGINES = [
    EngineCase("forward", _on_ids(lambda clf, ids: clf.model_(pad_batch(ids))), FLOAT32),
    EngineCase("pool (+ ngram_logits)", _on_ids(lambda clf, ids: _pooled_logits(clf.model_, pad_batch(ids))), FLOAT32),
    EngineCase("shape walk", _on_ids(lambda clf, ids: clf.model_.shape_walk(
        pad_batch(ids, min_length(clf.model_.window_sizes)))[-1][1]), FLOAT32),
    EngineCase("tables, embedding_bag", _tables, FLOAT32),
    EngineCase("tables, fused numba kernel", _fused, FLOAT32),
    EngineCase("training forward, eval mode", _on_ids(
        lambda clf, ids: training_forward(clf.model_)(pad_batch(ids))), FLOAT32),
    EngineCase("explain, contributions + bias", _explained, FLOAT32),
    EngineCase("classifier decision_function", lambda clf: clf.decision_function, FLOAT32),
    EngineCase("ONNX graph, float32", _onnx(int8=False), FLOAT32),
    EngineCase("ONNX graph, int8", _onnx(int8=True), INT8),
]

MODELS = {
    "windows 2,3,5": dict(window_sizes=(2, 3, 5)),
    "windows 1,4,7, batch norm": dict(window_sizes=(1, 4, 7), batch_norm=True),
    "windows 3,5, multichannel": dict(window_sizes=(3, 5), multichannel=True),
    "windows 2,6, multichannel, batch norm": dict(window_sizes=(2, 6), multichannel=True, batch_norm=True),
    "window 9, wider than most texts": dict(window_sizes=(9,)),
    # the n-gram channel: few buckets, so n-grams share them (hash collisions are part of the function)
    "windows 2,3,5, n-gram channel": dict(window_sizes=(2, 3, 5), ngram_features=13),
    "windows 1,4,7, batch norm, n-gram channel": dict(window_sizes=(1, 4, 7), batch_norm=True, ngram_features=500),
    "window 9, multichannel, n-gram channel": dict(window_sizes=(9,), multichannel=True, ngram_features=64),
    "windows 1,2,3, n-gram channel with trigrams": dict(window_sizes=(1, 2, 3), ngram_features=31, ngram_order=3),
    "windows 3,4, n-gram channel of unigrams": dict(window_sizes=(3, 4), ngram_features=29, ngram_order=1),
}


def random_model(clf: TextCNNClassifier, *, window_sizes, batch_norm=False, multichannel=False,
                 ngram_features=0, ngram_order=2) -> TextCNN:
    """A model of the classifier's shape with random weights of size ~1 and, with batch norm, random statistics."""
    model = TextCNN(vocab_size=len(clf.vocab_), embedding_size=8, feature_size=6, window_sizes=window_sizes,
                    num_class=len(clf.classes_), batch_norm=batch_norm, multichannel=multichannel,
                    ngram_features=ngram_features, ngram_embedding_size=5, ngram_order=ngram_order)
    gen = torch.Generator().manual_seed(sum(window_sizes) + 10 * batch_norm + 100 * multichannel + ngram_features)
    with torch.no_grad():
        for name, p in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("num_batches_tracked"):
                continue
            x = torch.rand(p.shape, generator=gen) * 2 - 1  # U[-1, 1]: negative batch norm scales too
            if name.endswith("running_var"):
                x = x.abs() + 0.5
            elif p.dim() > 1 and "embedding" not in name:
                x /= p[0].numel() ** 0.5
            p.copy_(x)
        for table in (model.embedding, model.static_embedding, model.ngram_embedding):
            if table is not None:
                table.weight[0] = 0.0  # the padding row (bucket 0, no n-gram, in the channel)
    return model.eval()


@pytest.fixture(scope="module")
def carrier() -> TextCNNClassifier:
    """A fitted classifier: its tokenizer, vocabulary and classes carry the random models."""
    return train_tiny(epochs=1)


@pytest.fixture(scope="module", params=list(MODELS), ids=list(MODELS))
def clf(request, carrier) -> TextCNNClassifier:
    params = MODELS[request.param]
    clf = copy.deepcopy(carrier)
    clf.config_ = dataclasses.replace(clf.config_, window_sizes=params["window_sizes"],
                                      batch_norm=params.get("batch_norm", False),
                                      ngram_features=params.get("ngram_features", 0), ngram_embedding_size=5,
                                      ngram_order=params.get("ngram_order", 2))
    clf.model_ = random_model(clf, **params)  # multichannel needs pretrained vectors to train: random is as good
    return clf


def probe_texts(clf: TextCNNClassifier, seed: int = 0) -> list[str]:
    """Empty, only unknown words, shorter than every window, and up to 14 words, known and unknown."""
    rng = np.random.default_rng(seed)
    words = clf.vocab_.itos[2:] + ["zzz", "qqq"]
    texts = ["", "zzz", "zzz qqq", clf.vocab_.itos[2], "?"]
    texts += [" ".join(rng.choice(words, size=n)) for n in rng.integers(0, 15, size=15)]
    return texts


def reference_logits(clf: TextCNNClassifier, texts: list[str]) -> np.ndarray:
    """The plain float32 model (dropout off), one text at a time, unpadded."""
    with torch.no_grad():
        return np.concatenate([clf.model_(torch.tensor([ids], dtype=torch.long).reshape(1, -1)).numpy()
                               for ids in clf.encode(texts)])


@pytest.mark.parametrize("case", ENGINES, ids=[e.name for e in ENGINES])
def test_every_engine_matches_the_plain_model(clf, case):
    texts = probe_texts(clf)
    expected = reference_logits(clf, texts)
    run = case.make(clf)
    np.testing.assert_allclose(run(texts), expected, **case.tolerance, err_msg="ragged batch")
    alone = np.concatenate([run([t]) for t in texts[:10]])  # the edge cases and a few more
    np.testing.assert_allclose(alone, expected[:10], **case.tolerance, err_msg="one text at a time")


def test_the_reference_is_the_model_function(clf):
    """The reference itself: padding a text (to any length) never changes its logits."""
    texts = probe_texts(clf)
    ids = clf.encode(texts)
    with torch.no_grad():
        padded = clf.model_(pad_batch(ids, 40)).numpy()
    np.testing.assert_allclose(padded, reference_logits(clf, texts), **FLOAT32)
    assert np.isfinite(padded).all()


@pytest.mark.parametrize("table_mb", [None, "0"], ids=["tables", "plain forward"])
def test_predict_proba_of_a_text_alone_equals_it_in_a_padded_batch(clf, table_mb, monkeypatch):
    if table_mb is not None:
        monkeypatch.setenv("TEXTCNN_TABLE_MAX_MB", table_mb)
    texts = probe_texts(clf, seed=1)
    expected = torch.softmax(torch.from_numpy(reference_logits(clf, texts)), dim=1).numpy()
    alone = np.concatenate([clf.predict_proba([t]) for t in texts])
    few = np.concatenate([clf.predict_proba(texts[i : i + 3]) for i in range(0, len(texts), 3)])  # fused kernel
    many = clf.predict_proba(texts * 3)  # length-sorted, padded batches
    np.testing.assert_allclose(alone, expected, atol=1e-5)
    np.testing.assert_allclose(few, expected, atol=1e-5)
    np.testing.assert_allclose(many, np.tile(expected, (3, 1)), atol=1e-5)
