"""From texts to token ids, and from logits to probabilities, labels and records: NumPy only.

Shared by :class:`textcnn.TextCNNClassifier` (PyTorch) and :mod:`textcnn.runtime` (onnxruntime), so
both give the same ``predict``, ``predict_proba`` and ``predict_records`` for the same logits. Nothing
here imports torch.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .data import check_texts, to_python
from .errors import ConfigError


class LabelledPredictions:
    """``predict``, ``predict_proba``, ``predict_records`` over a ``decision_function``.

    The subclass provides ``decision_function(X) -> logits (N, C)`` and the fitted attributes
    ``config_``, ``tokenizer_``, ``vocab_``, ``classes_``, ``multi_label_`` and ``thresholds_``.
    """

    def _check_fitted(self) -> None:
        """Raises NotFittedError before fit; a loaded predictor is always fitted."""

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Texts -> token id lists, cut to ``max_text_len``."""
        self._check_fitted()
        limit, encode = self.config_.max_text_len, self.vocab_.encode
        head = getattr(self.tokenizer_, "tokenize_head", None)
        if head is not None:  # stops reading a long text once it has max_text_len tokens
            return [encode(head(t, limit)) for t in texts]
        tokenize = self.tokenizer_.tokenize
        return [encode(tokenize(t)[:limit]) for t in texts]

    def decision_function(self, X: Iterable[str]) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, X: Iterable[str]) -> np.ndarray:
        """Class probabilities (N, n_classes): softmax, or independent sigmoids for multi-label."""
        return self._proba_from_logits(self.decision_function(X))

    def predict(self, X: Iterable[str]) -> np.ndarray:
        """The most probable label per text; for multi-label, the list of labels above their thresholds."""
        return self._labels_from_proba(self.predict_proba(X))

    def _proba_from_logits(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(logits) if self.multi_label_ else softmax(logits)

    def _labels_from_proba(self, proba: np.ndarray) -> np.ndarray:
        if not self.multi_label_:
            return self.classes_[proba.argmax(axis=1)]
        out = np.empty(len(proba), dtype=object)
        for i, row in enumerate(proba >= self.thresholds_):
            out[i] = [self.classes_[j] for j in np.flatnonzero(row)]
        return out

    def predict_records(self, X: Iterable[str], top_k: int = 1) -> list[dict]:
        """One dict per text: ``text``, ``label`` (or ``labels`` for multi-label), ``probability`` and ``top_k``.

        The shape the CLI's jsonl output and the REST server return.
        """
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ConfigError(f"The 'top_k' parameter must be an int >= 1. Got {top_k!r} instead.")
        texts = check_texts(X, "X")
        return self._records(texts, self.predict_proba(texts), top_k)

    def _records(self, texts: list[str], proba: np.ndarray, top_k: int) -> list[dict]:
        predicted = self._labels_from_proba(proba)
        k = min(top_k, len(self.classes_))
        out = []
        for text, row, pred in zip(texts, proba, predicted):
            order = np.argsort(-row, kind="stable")[:k]
            rec = {"text": text}
            if self.multi_label_:
                rec["labels"] = [to_python(c) for c in pred]
                rec["probabilities"] = [float(row[list(self.classes_).index(c)]) for c in pred]
            else:
                rec["label"] = to_python(pred)
                rec["probability"] = float(row.max())
            rec["top_k"] = [{"label": to_python(self.classes_[j]), "probability": float(row[j])} for j in order]
            out.append(rec)
        return out


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-log(1 + exp(-x))): no overflow (and no RuntimeWarning) for logits far below zero.
    return np.exp(-np.logaddexp(0.0, -x))
