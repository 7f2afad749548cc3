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

import json
from pathlib import Path
from typing import Iterable

import numpy as np

from . import __version__
from .config import TextCNNConfig
from .data import check_texts, length_batches, pad_ids
from .errors import ConfigError, ModelFormatError, TextCNNError, missing_dependency
from .predictions import LabelledPredictions
from .tokenizers import make_tokenizer
from .vocab import Vocab

FORMAT_VERSION = 1  # the model directory format this runtime reads (textcnn.serialization writes it)
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
    path = Path(model_dir)
    if not path.is_dir():
        raise ModelFormatError(f"'{path}' is not a directory. Pass the directory written by 'textcnn train --out' "
                               "or clf.save(), after 'textcnn export' has added its ONNX graph.")
    meta = _read_json(path, "config.json")
    pred = OnnxPredictor()
    pred.config_ = _config(path, meta)
    pred.vocab_ = Vocab.from_json(_read_json(path, "vocab.json"))
    pred.tokenizer_ = make_tokenizer(**_read_json(path, "tokenizer.json"))
    labels = _read_json(path, "labels.json")
    pred.classes_ = np.array(labels["classes"], dtype=object)
    pred.multi_label_ = meta.get("task") == "multi-label"
    pred.thresholds_ = None if labels.get("thresholds") is None else np.asarray(labels["thresholds"], dtype=float)
    pred.model_file_ = _graph_file(path, meta, int8)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    pred.session_ = ort.InferenceSession(str(pred.model_file_), options, providers=["CPUExecutionProvider"])
    return pred


def _config(path: Path, meta: dict) -> TextCNNConfig:
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise ModelFormatError(f"{path / 'config.json'} has no integer 'format_version': it is not a textcnn model config.")
    if version > FORMAT_VERSION:
        raise ModelFormatError(f"'{path}' was written in model format {version}; this textcnn ({__version__}) reads "
                               f"formats up to {FORMAT_VERSION}. Upgrade with: pip install -U 'textcnn[runtime]'")
    try:
        return TextCNNConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ConfigError) as e:
        raise ModelFormatError(f"{path / 'config.json'} holds an invalid config: {e}") from None


def _graph_file(path: Path, meta: dict, int8: bool) -> Path:
    if not isinstance(int8, bool):
        raise ConfigError(f"The 'int8' parameter must be a bool. Got {int8!r} instead.")
    key, default = GRAPHS[int8]
    entry = meta.get("exports", {}).get(key) or {}
    file = path / Path(str(entry.get("file", default))).name  # never outside the model directory
    if not file.is_file():
        raise ModelFormatError(f"'{path}' has no {file.name}: export the model first with: "
                               f"textcnn export {path} --format onnx{' --int8' if int8 else ''}")
    return file


def _read_json(path: Path, name: str):
    file = path / name
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(f"'{path}' has no {name}, so it is not a complete textcnn model directory. "
                               "Copy the whole directory.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{file} is damaged (not valid JSON: {e}). Restore it from a copy, or save the model again.") from None
