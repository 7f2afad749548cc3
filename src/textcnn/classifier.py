"""TextCNNClassifier: a scikit-learn style estimator around the TextCNN model.

Example:
    >>> from textcnn import TextCNNClassifier
    >>> clf = TextCNNClassifier(epochs=2, verbose=0).fit(["good film", "bad film"] * 20, ["pos", "neg"] * 20)
    >>> clf.predict(["a good one"]).shape
    (1,)
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .card import card_files, python_data, read_facts
from .config import (DEFAULT_EMBEDDING_SIZE, DEFAULT_VECTOR_VOCAB, TextCNNConfig, check_known_keys,
                     default_embedding_lr_scale, default_learning_rate, default_ngram_order, default_window_sizes,
                     resolve_monitor)
from . import distributed
from .data import check_texts, length_batches, pad_batch, stratified_split
from .errors import ConfigError, DataFormatError, ModelFormatError, NotFittedError
from .fastpath import Predictor
from .labels import class_list, detect_multi_label, label_targets, normalise_labels, soft_targets_for
from .metrics import best_thresholds, classification_report, multilabel_report
from .model import build_model, min_length
from .predictions import LabelledPredictions
from .predictions import sigmoid as _sigmoid
from .serialization import ModelParts, read_model, write_model
from .tokenizers import make_tokenizer, resolve_tokenizer_name
from .training import Callback, TrainSettings, fit_model, seeded
from .vocab import PAD, UNK, Vocab, vocabulary_warning

PREDICT_BATCH = 512
PREDICT_TOKENS = 32_768  # padded tokens per prediction batch (measured: ~80 texts of 400 tokens beat 512, 3x)
EVAL_TOKENS = 8_192  # per dev batch while training: the peak memory of `textcnn train` (1M rows: +330 MB at 32,768)
_DEFAULTS = TextCNNConfig()


class TextCNNClassifier(LabelledPredictions):
    """Kim's (2014) convolutional text classifier with its tokenizer, vocabulary and labels.

    Every constructor parameter is a field of :class:`TextCNNConfig` (see its docs), plus ``verbose``
    (0 silent, 1 progress and one line per epoch, 2 also the chosen code paths).

    Attributes (set by ``fit`` or ``load``):
        classes_: the labels, sorted; ``predict_proba`` columns follow this order.
        config_: the resolved :class:`TextCNNConfig` (``num_class``, ``tokenizer``, ``embedding_size`` and
            ``window_sizes`` filled in).
        tokenizer_: the tokenizer, rebuilt from its saved spec at load time; with ``encoder``, the
            :class:`textcnn.encoder.Encoder` (its word-piece tokenizer and the frozen transformer).
        vocab_: the :class:`Vocab` built from the training split.
        model_: the trained :class:`TextCNN` module (eval mode).
        multi_label_: whether each text may carry several labels.
        thresholds_: per-label decision thresholds (multi-label only, tuned on dev).
        history_: one dict per epoch (train loss, dev metrics, speed).
        training_data_: rows and label counts of the train and dev splits (and the files, from the CLI),
            JSON-safe: the model card's facts (see :mod:`textcnn.card`). Not restored by ``load``.
    """

    def __init__(
        self,
        *,
        embedding_size: int | None = _DEFAULTS.embedding_size,
        feature_size: int = _DEFAULTS.feature_size,
        window_sizes: Sequence[int] | None = _DEFAULTS.window_sizes,
        max_text_len: int = _DEFAULTS.max_text_len,
        dropout_rate: float = _DEFAULTS.dropout_rate,
        num_class: int | None = _DEFAULTS.num_class,
        batch_norm: bool = _DEFAULTS.batch_norm,
        ngram_features: int = _DEFAULTS.ngram_features,
        ngram_embedding_size: int = _DEFAULTS.ngram_embedding_size,
        ngram_order: int | None = _DEFAULTS.ngram_order,
        embedding_mode: str = _DEFAULTS.embedding_mode,
        embeddings: str | None = _DEFAULTS.embeddings,
        encoder: str | None = _DEFAULTS.encoder,
        max_norm: float | None = _DEFAULTS.max_norm,
        vector_vocab: int | None = _DEFAULTS.vector_vocab,
        tokenizer: str = _DEFAULTS.tokenizer,
        lowercase: bool = _DEFAULTS.lowercase,
        min_freq: int = _DEFAULTS.min_freq,
        max_vocab_size: int | None = _DEFAULTS.max_vocab_size,
        epochs: int = _DEFAULTS.epochs,
        batch_size: int = _DEFAULTS.batch_size,
        learning_rate: float | None = _DEFAULTS.learning_rate,
        embedding_lr_scale: float | None = _DEFAULTS.embedding_lr_scale,
        weight_decay: float = _DEFAULTS.weight_decay,
        patience: int = _DEFAULTS.patience,
        monitor: str = _DEFAULTS.monitor,
        class_weight: str | None = _DEFAULTS.class_weight,
        dev_fraction: float = _DEFAULTS.dev_fraction,
        multi_label: bool | None = _DEFAULTS.multi_label,
        label_sep: str = _DEFAULTS.label_sep,
        seed: int = _DEFAULTS.seed,
        device: str = _DEFAULTS.device,
        precision: str = _DEFAULTS.precision,
        max_steps: int | None = _DEFAULTS.max_steps,
        verbose: int = 1,
    ) -> None:
        self.embedding_size = embedding_size
        self.feature_size = feature_size
        self.window_sizes = window_sizes
        self.max_text_len = max_text_len
        self.dropout_rate = dropout_rate
        self.num_class = num_class
        self.batch_norm = batch_norm
        self.ngram_features = ngram_features
        self.ngram_embedding_size = ngram_embedding_size
        self.ngram_order = ngram_order
        self.embedding_mode = embedding_mode
        self.embeddings = embeddings
        self.encoder = encoder
        self.max_norm = max_norm
        self.vector_vocab = vector_vocab
        self.tokenizer = tokenizer
        self.lowercase = lowercase
        self.min_freq = min_freq
        self.max_vocab_size = max_vocab_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.embedding_lr_scale = embedding_lr_scale
        self.weight_decay = weight_decay
        self.patience = patience
        self.monitor = monitor
        self.class_weight = class_weight
        self.dev_fraction = dev_fraction
        self.multi_label = multi_label
        self.label_sep = label_sep
        self.seed = seed
        self.device = device
        self.precision = precision
        self.max_steps = max_steps
        self.verbose = verbose

    # ----- scikit-learn protocol -----

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in [*TextCNNConfig.field_names(), "verbose"]}

    def set_params(self, **params: Any) -> "TextCNNClassifier":
        check_known_keys({k: v for k, v in params.items() if k != "verbose"})
        for name, value in params.items():
            setattr(self, name, value)
        return self

    _estimator_type = "classifier"  # scikit-learn < 1.6 reads this

    def __sklearn_tags__(self):
        """scikit-learn >= 1.6 asks estimators for tags; imported lazily, so sklearn stays optional."""
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        tags = Tags(estimator_type="classifier", target_tags=TargetTags(required=True), classifier_tags=ClassifierTags())
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        return tags

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items() if k != "verbose" and v != getattr(_DEFAULTS, k)}
        return f"TextCNNClassifier({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def _log(self, message: str, level: int = 1) -> None:
        if self.verbose >= level:
            print(message, file=sys.stderr, flush=True)

    # ----- fitting -----

    def fit(self, X: Iterable[str], y: Iterable, *, validation_data: tuple | None = None,
            callbacks: Sequence[Callback] = (), cache_dir=None,
            soft_targets: tuple | None = None) -> "TextCNNClassifier":
        """Builds tokenizer, vocabulary and model from the training texts and trains with early stopping.

        Args:
            X: training texts (list, pandas Series, array of str).
            y: their labels: strings or ints, or for multi-label a list of labels per text
                (or strings joined by ``label_sep``).
            validation_data: ``(texts, labels)`` for early stopping; without it a stratified
                ``dev_fraction`` of X is held out.
            callbacks: :class:`textcnn.training.Callback` objects run by the training loop, e.g. a
                :class:`textcnn.checkpoint.Checkpointer` (periodic checkpoints, exact resume).
            cache_dir: with an encoder, where states too large for memory are kept (default
                :func:`textcnn.cache.default_cache_dir`); a later run on the same texts reuses them.
            soft_targets: ``(classes, probabilities)``: train on these class probabilities (N, C), columns
                in ``classes`` order (a teacher's, see :mod:`textcnn.distill`) instead of ``y``; ``y`` still
                gives the classes and the stratified dev split. Dev scores use the dev labels.

        Returns:
            self

        Raises:
            ConfigError: a parameter is out of range, or ``monitor`` is not reported for this task.
            DataFormatError: texts or labels are unusable (the message names the row and the fix).
            TrainingError: the dev metrics became NaN (training diverged).

        PyTorch's global random state is left as it was: the seeded parts run on a forked generator.
        """
        cfg = TextCNNConfig.from_dict({k: v for k, v in self.get_params().items() if k != "verbose"})
        texts, labels = _check_xy(X, y, "X", "y")
        multi, note, worrying = detect_multi_label(labels, cfg.multi_label, cfg.label_sep)
        monitor = resolve_monitor(cfg.monitor, multi)  # before any work: a bad monitor fails at once
        if worrying:
            _warn(note)
        elif note:
            self._log(f"note: {note}")
        labels = normalise_labels(labels, multi, cfg.label_sep)
        soft = None
        if soft_targets is not None:
            soft_classes, proba = soft_targets
            soft = soft_targets_for(class_list(labels, multi), soft_classes, proba, len(texts))
        if validation_data is None:
            train_idx, dev_idx = stratified_split(labels, cfg.dev_fraction, cfg.seed)
            soft = None if soft is None else soft[train_idx]
            self._log(f"no dev set given: holding out a stratified {cfg.dev_fraction:.0%} of train "
                      f"({len(dev_idx)} of {len(texts)} texts) as dev")
            dev_texts, dev_labels = [texts[i] for i in dev_idx], [labels[i] for i in dev_idx]
            texts, labels = [texts[i] for i in train_idx], [labels[i] for i in train_idx]
        else:
            dev_texts, dev_labels = _check_xy(*validation_data, "validation_data[0]", "validation_data[1]")
            dev_labels = normalise_labels(dev_labels, multi, cfg.label_sep, where=lambda i: f"validation_data[1][{i}]")
        dev_from = f"a stratified {cfg.dev_fraction:.0%} of the given texts" if validation_data is None else "validation_data"
        self.training_data_ = python_data(labels, dev_labels, dev_from)  # for the model card (textcnn.card)
        with seeded(cfg.seed):
            self._setup(cfg, texts, labels, multi)
            self._train(texts, labels, dev_texts, dev_labels, monitor, callbacks, cache_dir, soft)
        return self

    def fit_files(self, train, dev=None, *, cache_dir=None, fmt: str | None = None, text_col: str = "text",
                  label_col: str = "label", skip_invalid: bool = False,
                  callbacks: Sequence[Callback] = ()) -> "TextCNNClassifier":
        """Like :meth:`fit`, on files read row by row through an on-disk token cache: memory stays flat.

        Args:
            train, dev: paths of labelled files (CSV, TSV, JSONL, fastText or Parquet). Without
                ``dev``, a seeded random ``dev_fraction`` of train is held out (not stratified).
            cache_dir: where the token cache lives (default :func:`textcnn.cache.default_cache_dir`);
                a later run on the same unchanged file and text settings reuses it.
            fmt, text_col, label_col, skip_invalid: as for :func:`textcnn.read_records`.
            callbacks: as for :meth:`fit`.

        With ``dev`` given, the model is the one ``fit`` trains on the same rows and seed.
        """
        from .cache import ReadOptions, TokenCache, default_cache_dir

        cfg = TextCNNConfig.from_dict({k: v for k, v in self.get_params().items() if k != "verbose"})
        if cfg.encoder is not None:
            raise ConfigError("An encoder input (encoder=, --encoder) trains from texts held in memory, with their "
                              "states cached once (float16, on disk when large): use fit(texts, labels, cache_dir=...), "
                              "or on the CLI a CSV, TSV, JSONL or fastText file (not Parquet).")
        world = distributed.current()
        cache = TokenCache(cache_dir or default_cache_dir(), ReadOptions(fmt, text_col, label_col, skip_invalid),
                           self._log, progress=self.verbose >= 1)
        train = Path(train)
        with distributed.local_first(world):  # one rank per node builds the cache; the others find it
            name = self._resolve_tokenizer(cfg, cache.sample(train))
            summary = cache.summary(train, self.tokenizer_, name, cfg.min_freq, cfg.max_vocab_size)
            if summary.skipped:
                _warn(f"Skipped {len(summary.skipped)} invalid row(s) of {train} "
                      f"(lines {', '.join(str(line) for line, _ in summary.skipped[:10])}).")
            multi, note, worrying = detect_multi_label(summary.labels, cfg.multi_label, cfg.label_sep)
            monitor = resolve_monitor(cfg.monitor, multi)
            if note:
                _warn(note) if worrying else self._log(f"note: {note}")
            classes = class_list(normalise_labels(summary.labels, multi, cfg.label_sep), multi)
            with seeded(cfg.seed):
                self._finish_setup(cfg, name, summary.vocab, classes, multi, summary.n)
            seqs, targets = self._cached_tokens(cache, train, "training")
            if dev is not None:
                dev_seqs, dev_targets = self._cached_tokens(cache, Path(dev), "dev")
            else:
                held = np.random.default_rng(cfg.seed).random(len(seqs)) < cfg.dev_fraction
                held[0] |= not held.any()
                self._log(f"no dev set given: holding out a random {cfg.dev_fraction:.0%} of train "
                          f"({int(held.sum())} of {len(seqs)} texts) as dev")
                dev_seqs, dev_targets = seqs.subset(np.flatnonzero(held)), targets[torch.from_numpy(held)]
                seqs, targets = seqs.subset(np.flatnonzero(~held)), targets[torch.from_numpy(~held)]
        with seeded(cfg.seed):
            self._train_ids(seqs, targets, dev_seqs, dev_targets, monitor, callbacks)
        return self

    def _cached_tokens(self, cache, path: Path, what: str):
        multi, sep = self.multi_label_, self.config_.label_sep

        def targets(raw: list) -> np.ndarray:
            labels = normalise_labels(raw, multi, sep)
            return label_targets(labels, self.classes_, multi, what, among="the training labels")

        return cache.tokens(path, self.encode, targets, self.tokenizer_.spec(), self.vocab_, list(self.classes_),
                            self.config_.max_text_len)

    def _setup(self, cfg: TextCNNConfig, texts: list[str], labels: list, multi: bool) -> None:
        if cfg.encoder is not None:  # the encoder's word pieces and states: no vocabulary to build
            from .encoder import load_encoder

            self.tokenizer_ = load_encoder(cfg.encoder)
            self._finish_setup(cfg, "encoder", Vocab([PAD, UNK]), class_list(labels, multi), multi, len(texts))
            return
        name = self._resolve_tokenizer(cfg, texts)
        vocab = Vocab.build((self.tokenizer_.tokenize(t) for t in texts), min_freq=cfg.min_freq, max_size=cfg.max_vocab_size)
        self._finish_setup(cfg, name, vocab, class_list(labels, multi), multi, len(texts))

    def _resolve_tokenizer(self, cfg: TextCNNConfig, sample: list[str]) -> str:
        """Sets ``tokenizer_`` ('auto' decided on ``sample``); returns its name."""
        name, advice = resolve_tokenizer_name(cfg.tokenizer, sample)
        if advice:
            self._log(f"note: {advice}")
        self.tokenizer_ = make_tokenizer(name, lowercase=cfg.lowercase)
        return name

    def _finish_setup(self, cfg: TextCNNConfig, name: str, vocab: Vocab, classes: list, multi: bool, n_texts: int) -> None:
        """Vector words, labels, config and a fresh model, from the training data's vocabulary and classes."""
        self.vocab_ = vocab
        seen = getattr(vocab, "seen", None)
        if cfg.vector_vocab is None:
            from .embeddings import lists_words

            listed = cfg.embeddings is not None and lists_words(cfg.embeddings)
            cfg = cfg.replace(vector_vocab=DEFAULT_VECTOR_VOCAB if listed else 0)
        if cfg.vector_vocab:
            self.vocab_ = self._add_vector_words(cfg)
        warning = seen is not None and vocabulary_warning(self.vocab_, seen, cfg.min_freq, cfg.max_vocab_size)
        if warning:
            _warn(warning)
        self.multi_label_ = multi
        if len(classes) < 2:
            raise DataFormatError(f"The training labels hold {len(classes)} class(es) ({classes!r}); at least 2 are needed.")
        if cfg.num_class is not None and cfg.num_class != len(classes):
            raise ConfigError(f"num_class={cfg.num_class} but the training labels hold {len(classes)} classes "
                              f"({', '.join(map(str, classes[:10]))}). Leave num_class unset to infer it.")
        self.classes_ = np.array(classes, dtype=object)
        vectors, size = None, cfg.embedding_size or DEFAULT_EMBEDDING_SIZE
        if cfg.encoder is not None:
            cfg, size = self._encoder_config(cfg), self.tokenizer_.hidden_size
        if cfg.embeddings is not None:
            from .embeddings import check_dimension, load_vectors

            vectors = load_vectors(cfg.embeddings, self.vocab_.itos)
            size = check_dimension(vectors.dim, cfg.embedding_size, vectors.source)
        self.config_ = cfg.replace(num_class=len(classes), tokenizer=name, embedding_size=size,
                                   window_sizes=cfg.window_sizes or default_window_sizes(name),
                                   ngram_order=cfg.ngram_order or default_ngram_order(name),
                                   learning_rate=cfg.learning_rate or default_learning_rate(cfg.encoder),
                                   embedding_lr_scale=cfg.embedding_lr_scale or default_embedding_lr_scale(cfg.encoder))
        self.thresholds_ = np.full(len(classes), 0.5) if multi else None
        self.model_ = build_model(self.config_, len(self.vocab_))
        words = (f"encoder {cfg.encoder} ({self.tokenizer_.num_layers} layers, {size}-d states, frozen)"
                 if cfg.encoder else f"vocabulary {len(self.vocab_)} tokens, tokenizer '{name}'")
        self._log(f"{n_texts} training texts, {len(classes)} classes, {words}, "
                  f"{sum(p.numel() for p in self.model_.parameters())} parameters")
        if vectors is not None:
            from .embeddings import initialise_embeddings

            initialise_embeddings(self.model_, self.vocab_, self.config_, self._log, vectors=vectors)

    def _encoder_config(self, cfg: TextCNNConfig) -> TextCNNConfig:
        """The config with the encoder's facts: its hidden size, word pieces capped at its positions."""
        enc = self.tokenizer_
        if cfg.embedding_size is not None and cfg.embedding_size != enc.hidden_size:
            raise ConfigError(f"embedding_size={cfg.embedding_size} (--embedding-size) but the encoder {cfg.encoder!r} "
                              f"gives {enc.hidden_size}-d states. Leave embedding_size unset with an encoder.")
        if cfg.max_text_len > enc.max_pieces:
            self._log(f"note: max_text_len {cfg.max_text_len} is capped at the encoder's {enc.max_pieces} word pieces")
        return cfg.replace(max_text_len=min(cfg.max_text_len, enc.max_pieces), lowercase=enc.lowercase)

    def _add_vector_words(self, cfg: TextCNNConfig) -> Vocab:
        """The vocabulary plus the first ``vector_vocab`` words of the pretrained vectors (tokenizer's case)."""
        from .embeddings import vector_words

        words = vector_words(cfg.embeddings, cfg.vector_vocab)
        if cfg.lowercase:
            words = [w.lower() for w in words]
        size = len(self.vocab_)
        vocab = self.vocab_.extended(words, cfg.max_vocab_size + cfg.vector_vocab if cfg.max_vocab_size else None)
        self._log(f"vocabulary: {len(vocab) - size} words added from the first {cfg.vector_vocab} of {cfg.embeddings}")
        return vocab

    def _train(self, texts: list[str], labels: list, dev_texts: list[str], dev_labels: list, monitor: str,
               callbacks: Sequence[Callback] = (), cache_dir=None, soft: np.ndarray | None = None) -> None:
        hard = label_targets(labels, self.classes_, self.multi_label_, "training")
        targets = torch.from_numpy(hard if soft is None else soft)  # class probabilities: cross-entropy takes both
        dev_targets = torch.from_numpy(
            label_targets(dev_labels, self.classes_, self.multi_label_, "dev", among="the training labels"))
        self._train_ids(self.encode(texts), targets, self.encode(dev_texts), dev_targets, monitor, callbacks, cache_dir)

    def _train_ids(self, train_ids: Sequence, targets: torch.Tensor, dev_ids: Sequence, dev_targets: torch.Tensor,
                   monitor: str, callbacks: Sequence[Callback] = (), cache_dir=None) -> None:
        """Trains on encoded texts: lists of ids, or a :class:`textcnn.cache.TokenSeqs` on disk."""
        cfg = self.config_
        world = distributed.current()
        device = distributed.local_device(resolve_device(cfg.device), world)
        distributed.check_same(self._fingerprint(), "config, vocabulary or classes", world)
        if hasattr(train_ids, "cached"):  # encoder states: computed once here, read by every epoch
            train_ids, dev_ids = (x.cached(cache_dir, self._log, device) for x in (train_ids, dev_ids))
        self.model_.to(device)
        loss_fn = self._loss_fn(targets, device)

        def evaluate(model) -> dict:
            # The weights change every epoch: tables would be rebuilt for one pass, so plain forward.
            logits = self._logits_from_ids(dev_ids, device, fast=False, max_tokens=EVAL_TOKENS)
            loss = float(loss_fn(logits.to(device), dev_targets.to(device)))
            return {"loss": loss, **_headline(self._report_from_logits(logits.numpy(), dev_targets.numpy(), tune=True))}

        settings = TrainSettings(
            epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay, patience=cfg.patience, monitor=monitor, seed=cfg.seed,
            min_len=min_length(cfg.window_sizes), max_norm=cfg.max_norm, device=device, progress=self.verbose >= 1,
            embedding_lr_scale=cfg.embedding_lr_scale, max_steps=cfg.max_steps, precision=cfg.precision,
            fingerprint=self._fingerprint(train_ids, targets, dev_ids, dev_targets) if callbacks else "", world=world,
        )
        result = fit_model(self.model_, train_ids, targets, loss_fn, evaluate, settings, self._log, callbacks)
        if self.multi_label_:
            dev_logits = self._logits_from_ids(dev_ids, device, fast=False, max_tokens=EVAL_TOKENS).numpy()
            self.thresholds_ = best_thresholds(dev_targets.numpy(), _sigmoid(dev_logits))
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.model_.eval()  # stays on its device: prediction and explain follow it there
        self._log(f"best dev {monitor} {result.best_score:.4f} at epoch {result.best_epoch}")

    def _fingerprint(self, *data) -> str:
        """SHA-256 of the resolved config, vocabulary, classes and encoded data: what a checkpoint must match."""
        h = hashlib.sha256(json.dumps([self.config_.to_dict(), self.vocab_.itos, [str(c) for c in self.classes_]],
                                      ensure_ascii=False).encode())
        for part in data:
            if hasattr(part, "fingerprint"):  # a token cache: its header names the source file and vocabulary
                h.update(part.fingerprint.encode())
            elif isinstance(part, torch.Tensor):
                h.update(part.numpy().tobytes())
            else:
                for ids in part:
                    h.update(np.asarray(ids, dtype=np.int32).tobytes() + b"\xff\xff\xff\xff")
        return h.hexdigest()

    def _loss_fn(self, targets: torch.Tensor, device: torch.device):
        weight = None
        if self.config_.class_weight == "balanced":
            soft = targets.is_floating_point()  # multi-label 0/1 rows, or class probabilities
            counts = targets.sum(0) if soft else torch.bincount(targets, minlength=len(self.classes_))
            counts = counts.float().clamp(min=1)
            weight = (counts.sum() / (len(counts) * counts)).to(device)
        if self.multi_label_:
            # 'balanced' for multi-label weighs each label's positives against its negatives.
            pos_weight = None if weight is None else ((len(targets) - targets.sum(0)) / targets.sum(0).clamp(min=1)).to(device)
            return lambda logits, y: F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)
        return lambda logits, y: F.cross_entropy(logits, y, weight=weight)

    # ----- prediction -----

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                "This TextCNNClassifier is not fitted yet. Call fit(texts, labels) first, or load a saved "
                "model with textcnn.load(model_dir)."
            )

    @torch.inference_mode()
    def _logits_from_ids(self, ids: list[list[int]], device: torch.device | None = None,
                         fast: bool = True, max_tokens: int = PREDICT_TOKENS) -> torch.Tensor:
        """Logits (N, C) in input order; batches of similar length; the fastest exact path when ``fast``."""
        device = device or next(self.model_.parameters()).device
        was_training = self.model_.training
        if was_training:  # eval() walks every module: only when needed, single texts are latency-bound
            self.model_.eval()
        forward = self._forward(device) if fast else self.model_
        if hasattr(ids, "vectors"):  # an encoder input: its states per length-sorted batch, then the head
            from .encoder import ENCODE_BATCH, ENCODE_TOKENS

            out = torch.empty(len(ids), len(self.classes_))
            for batch in length_batches(ids.lengths(), ENCODE_BATCH, ENCODE_TOKENS):
                x = pad_batch([ids[i] for i in batch]).to(device)  # (B, T)
                out[torch.from_numpy(batch)] = forward(x, ids.vectors(batch, x.shape[1], device)).float().cpu()
        elif getattr(forward, "fused_for", lambda n: False)(len(ids)):  # few texts: the fused kernel, unpadded
            out = forward.logits_lists(ids)
        elif len(ids) == 1:  # one text: no sorting, no scatter
            out = forward(pad_batch(ids).to(device)).float().cpu()  # (1, C): each engine pads to its widest window
        else:
            out = torch.empty(len(ids), len(self.classes_))
            for batch in length_batches([len(x) for x in ids], PREDICT_BATCH, max_tokens):
                x = pad_batch([ids[i] for i in batch]).to(device)  # (B, T)
                out[torch.from_numpy(batch)] = forward(x).float().cpu()
        if was_training:
            self.model_.train()
        return out

    def _forward(self, device: torch.device):
        """The prediction path (see :mod:`textcnn.fastpath`): exact tables on CPU, else the model."""
        predictor = self.__dict__.get("_predictor")
        if predictor is None:  # built once per fitted classifier, not per call (single texts are latency-bound)
            predictor = self._predictor = Predictor()
        return predictor.engine(self.model_, device, self._log) or self.model_

    def encode(self, texts: Sequence[str]):
        """Texts -> token id lists cut to ``max_text_len``; with an encoder, an
        :class:`textcnn.encoder.EncodedTexts` (word pieces, their states computed batch by batch)."""
        self._check_fitted()
        if self.config_.encoder is not None:
            return self.tokenizer_.encode(texts, self.config_.max_text_len)
        return super().encode(texts)

    def decision_function(self, X: Iterable[str]) -> np.ndarray:
        """Raw logits (N, n_classes), columns in ``classes_`` order."""
        texts = check_texts(X, "X")
        return self._logits_from_ids(self.encode(texts)).numpy()

    def score(self, X: Iterable[str], y: Iterable) -> float:
        """Accuracy (exact-match accuracy for multi-label)."""
        return self.evaluate(X, y)["accuracy"]

    def evaluate(self, X: Iterable[str], y: Iterable) -> dict:
        """A full report: accuracy, macro/weighted (and micro, multi-label) P/R/F1, per class, confusion matrix.

        Labels are compared as str (a model fitted on the ints 0, 1 scores the labels "0", "1"). A label
        that is not among ``classes_`` raises DataFormatError naming it, for both tasks.
        """
        self._check_fitted()
        texts, labels = _check_xy(X, y, "X", "y")
        labels = normalise_labels(labels, self.multi_label_, self.config_.label_sep)
        targets = label_targets(labels, self.classes_, self.multi_label_, "evaluation")
        logits = self._logits_from_ids(self.encode(texts)).numpy()
        return self._report_from_logits(logits, targets)

    def _report_from_logits(self, logits: np.ndarray, targets: np.ndarray, tune: bool = False) -> dict:
        names = [str(c) for c in self.classes_]
        if not self.multi_label_:
            return classification_report(targets, logits.argmax(axis=1), names)
        proba = _sigmoid(logits)
        thresholds = best_thresholds(targets, proba) if tune else self.thresholds_
        return multilabel_report(targets, proba >= thresholds, names)

    # ----- persistence and explanations -----

    def save(self, path) -> None:
        """Writes the model directory (see :mod:`textcnn.serialization`); atomically replaces an old one."""
        self._check_fitted()
        thresholds = None if self.thresholds_ is None else list(self.thresholds_)
        write_model(ModelParts(config=self.config_, multi_label=self.multi_label_, vocab=self.vocab_,
                               tokenizer=self.tokenizer_, classes=list(self.classes_), thresholds=thresholds,
                               model=self.model_, history=getattr(self, "history_", [])), path,
                    extra_files=card_files(self))

    def explain(self, X: Iterable[str], *, classes: Sequence | None = None) -> list[dict]:
        """Exact explanations: each filter's contribution to each class's logit, on its winning n-gram.

        See :func:`textcnn.explain.explain` for the returned dicts; contributions plus the bias equal
        the logit for every class.
        """
        from .explain import explain

        return explain(self, X, classes=classes)


def load(path) -> TextCNNClassifier:
    """Reads a model directory written by ``save`` (``textcnn.load``): on the CPU, in eval mode.

    Raises:
        ModelFormatError: the directory is missing a file, is damaged or inconsistent, or comes from
            a newer format; the message names the file and what is wrong.
    """
    parts = read_model(path)
    clf = TextCNNClassifier(**parts.config.to_dict(), verbose=0)
    clf.config_, clf.multi_label_ = parts.config, parts.multi_label
    clf.vocab_, clf.tokenizer_ = parts.vocab, parts.tokenizer
    clf.classes_ = np.array(parts.classes, dtype=object)
    clf.thresholds_ = None if parts.thresholds is None else np.asarray(parts.thresholds, dtype=float)
    clf.history_, clf.model_ = parts.history, parts.model
    try:  # the card is descriptive: a damaged one must not stop the model from loading
        clf.training_data_ = (read_facts(path) or {}).get("training_data")
    except ModelFormatError:
        clf.training_data_ = None
    return clf


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} was asked for, but PyTorch sees no CUDA GPU. Use --device cpu or auto.")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"device={name!r} was asked for, but PyTorch sees {torch.cuda.device_count()} CUDA GPU(s) "
                          f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}). Pick one of those.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _check_xy(X, y, x_name: str, y_name: str) -> tuple[list[str], list]:
    texts = check_texts(X, x_name)
    labels = list(y)
    if len(texts) != len(labels):
        raise DataFormatError(f"{x_name} has {len(texts)} texts but {y_name} has {len(labels)} labels; they must match.")
    if not texts:
        raise DataFormatError(f"{x_name} is empty: at least one text is needed.")
    return texts, labels


def _warn(message: str) -> None:
    """A problem worth knowing that does not stop training (the CLI prints it as a 'warning:' line)."""
    warnings.warn(message, UserWarning, stacklevel=3)


def _headline(report: dict) -> dict:
    keys = ("accuracy", "macro_f1", "micro_f1")
    return {k: report[k] for k in keys if k in report}


