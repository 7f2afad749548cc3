"""Predict with an exported model and no PyTorch: onnxruntime and NumPy only.

    pip install 'textcnn[runtime]'          # no torch
    textcnn export MODEL_DIR --format onnx  # where PyTorch is installed (once)

    >>> import textcnn.runtime
    >>> clf = textcnn.runtime.load("runs/sst2")           # doctest: +SKIP
    >>> clf.predict(["a gripping, funny film"])           # doctest: +SKIP
    array(['positive'], dtype=object)

The predictor reads the model directory's tokenizer, vocabulary and labels, and its ``model.onnx`` (or
``model.int8.onnx``); it has the classifier's ``predict``, ``predict_proba``, ``predict_records`` and
``decision_function``, the same attributes (``classes_``, ``config_``, ``vocab_``, ``tokenizer_``,
``multi_label_``, ``thresholds_``) and gives the same answers within float rounding. Nothing here,
nor in the modules it imports, imports torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

import numpy as np

from .data import check_texts, length_batches, pad_ids
from .errors import ConfigError, ModelFormatError, TextCNNError, missing_dependency
from .predictions import LabelledPredictions
from .serialization import EXPORTS, read_model_info

GRAPHS = {False: ("onnx", "model.onnx"), True: ("onnx-int8", "model.int8.onnx")}  # int8 -> config key, file
BATCH_TEXTS, BATCH_TOKENS = 512, 32_768  # texts of similar length go together, at most this many padded tokens


class OnnxPredictor(LabelledPredictions):
    """A saved model's ONNX graph with its tokenizer, vocabulary and labels. Made by :func:`load`.

    Attributes:
        classes_: the labels; ``predict_proba`` columns follow this order.
        config_: the model's :class:`TextCNNConfig`.
        tokenizer_, vocab_: as saved with the model.
        multi_label_: whether each text may carry several labels.
        thresholds_: per-label decision thresholds (multi-label only).
        session_: the ``onnxruntime.InferenceSession``.
        model_file_: the graph file it runs.
    """

    def decision_function(self, X: Iterable[str]) -> np.ndarray:
        """Raw logits (N, n_classes), columns in ``classes_`` order."""
        texts = check_texts(X, "X")
        return self.logits_from_ids(self.encode(texts))

    def logits_from_ids(self, ids: list[list[int]]) -> np.ndarray:
        """Logits (N, C) in input order, for token id lists (batches of similar length)."""
        out = np.empty((len(ids), len(self.classes_)), dtype=np.float32)
        if len(ids) == 1:  # one text: no sorting, no scatter
            batches = [np.zeros(1, dtype=np.int64)]
        else:
            batches = length_batches([len(x) for x in ids], BATCH_TEXTS, BATCH_TOKENS)
        for batch in batches:
            x = pad_ids([ids[i] for i in batch])  # (B, T); the graph pads to the widest window itself
            out[batch] = self.session_.run(None, {"ids": x})[0]  # (B, C)
        return out

    def explain(self, X: Iterable[str], *, classes=None) -> list[dict]:
        raise TextCNNError("Explanations need the PyTorch model: load it with textcnn.load(model_dir) "
                           "(serve it without --runtime onnx), with textcnn[train] installed.")


def load(model_dir, int8: bool = False) -> OnnxPredictor:
    """Loads an exported model for prediction without PyTorch.

    Args:
        model_dir: a model directory that ``textcnn export MODEL_DIR --format onnx`` has written to.
        int8: run ``model.int8.onnx`` (``textcnn export --int8``) instead of ``model.onnx``.

    Raises:
        ModelFormatError: the directory is not a model, or has no exported graph.
        MissingDependencyError: onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise missing_dependency("onnxruntime", "runtime", "textcnn.runtime") from e
    info = read_model_info(model_dir, extra=(EXPORTS,))
    pred = OnnxPredictor()
    pred.config_, pred.multi_label_ = info.config, info.multi_label
    pred.vocab_, pred.tokenizer_ = info.vocab, info.tokenizer
    pred.classes_ = np.array(info.classes, dtype=object)
    pred.thresholds_ = None if info.thresholds is None else np.asarray(info.thresholds, dtype=float)
    pred.model_file_, graph = _graph(info.path, info.files[EXPORTS], int8)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    pred.session_ = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    return pred


def _graph(path: Path, exports: bytes | OSError, int8: bool) -> tuple[Path, bytes]:
    """The exported graph's file and bytes, checked against the SHA-256 that exports.json recorded."""
    if not isinstance(int8, bool):
        raise ConfigError(f"The 'int8' parameter must be a bool. Got {int8!r} instead.")
    key, default = GRAPHS[int8]
    export_first = f"Export it first with: textcnn export {path} --format onnx{' --int8' if int8 else ''}"
    try:
        entry = json.loads(exports)[key] if not isinstance(exports, OSError) else None
    except (ValueError, TypeError, KeyError):
        entry = None
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or "sha256" not in entry:
        raise ModelFormatError(f"'{path}' has no exported {default} recorded in {EXPORTS}. {export_first}")
    file = path / Path(entry["file"]).name  # never outside the model directory
    try:
        graph = file.read_bytes()
    except OSError as e:
        raise ModelFormatError(f"Cannot read {file}: {e.strerror or e}. {export_first}") from None
    if hashlib.sha256(graph).hexdigest() != entry["sha256"]:
        raise ModelFormatError(f"{file} is damaged or was changed: its SHA-256 differs from the one {EXPORTS} "
                               f"recorded. {export_first}")
    return file, graph


RUNTIMES = ("torch", "onnx", "onnx-int8")


def load_predictor(model_dir, runtime: str = "torch"):
    """A saved model for prediction: the PyTorch classifier (``"torch"``, imported only then), or the
    exported graph through :func:`load` (``"onnx"``, ``"onnx-int8"``); both have ``predict_records``.
    The choice behind ``--runtime`` of ``textcnn predict`` and ``textcnn serve``."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)}. Got {runtime!r} instead.")
    if runtime == "torch":
        from . import load as load_classifier

        return load_classifier(model_dir)
    return load(model_dir, int8=runtime == "onnx-int8")

