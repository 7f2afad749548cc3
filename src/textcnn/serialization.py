"""The model directory: plain JSON and safetensors, nothing executable.

    MODEL_DIR/
      config.json        format_version, textcnn_version, task, the TextCNNConfig fields
      vocab.json         {"tokens": [...]}  (id = position; 0 <pad>, 1 <unk>)
      labels.json        {"classes": [...], "thresholds": [...] | null}
      tokenizer.json     {"name": "word", "lowercase": true}
      model.safetensors  the TextCNN state dict
      history.json       one entry per training epoch

A directory is written to a temporary sibling first and renamed into place, so a crash never
leaves a half-written model, and an existing model is replaced only once the new one is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__, card
from .config import TextCNNConfig
from .data import to_python
from .errors import ConfigError, ModelFormatError
from .tokenizers import make_tokenizer
from .vocab import Vocab

FORMAT_VERSION = 1
FILES = ("config.json", "vocab.json", "labels.json", "tokenizer.json", "model.safetensors", "history.json")


def save_model(clf, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        _write_json(tmp / "config.json", {
            "format_version": FORMAT_VERSION,
            "textcnn_version": __version__,
            "task": "multi-label" if clf.multi_label_ else "single-label",
            "config": clf.config_.to_dict(),
        })
        _write_json(tmp / "vocab.json", clf.vocab_.to_json())
        thresholds = None if clf.thresholds_ is None else [float(t) for t in clf.thresholds_]
        _write_json(tmp / "labels.json", {"classes": [to_python(c) for c in clf.classes_], "thresholds": thresholds})
        _write_json(tmp / "tokenizer.json", clf.tokenizer_.spec())
        _write_json(tmp / "history.json", getattr(clf, "history_", []))
        state = {k: v.detach().cpu().contiguous() for k, v in clf.model_.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "textcnn_format_version": str(FORMAT_VERSION)})
        card.write_card(clf, tmp)  # README.md + card.json: see textcnn.card
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _replace_dir(new: Path, target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise ModelFormatError(f"Cannot save the model to '{target}': a file of that name exists. Choose another --out.")
    old = None
    if target.exists():
        if not (target / "config.json").exists() and any(target.iterdir()):
            raise ModelFormatError(
                f"Cannot save the model to '{target}': the directory exists, is not empty and holds no textcnn "
                "model. Choose another --out, or empty it first."
            )
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
    os.rename(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")



def load_model(path):
    """Reads a model directory and returns a fitted TextCNNClassifier (on the CPU, eval mode)."""
    from .classifier import TextCNNClassifier, build_model

    path = Path(path)
    if not path.is_dir():
        raise ModelFormatError(f"'{path}' is not a directory. Pass the directory written by 'textcnn train --out' or clf.save().")
    meta = _read_json(path, "config.json")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise ModelFormatError(f"{path / 'config.json'} has no integer 'format_version': it is not a textcnn model config.")
    if version > FORMAT_VERSION:
        raise ModelFormatError(
            f"'{path}' was written in model format {version} by textcnn {meta.get('textcnn_version', '?')}; this textcnn "
            f"({__version__}) reads formats up to {FORMAT_VERSION}. Upgrade with: pip install -U textcnn"
        )
    try:
        cfg = TextCNNConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ConfigError) as e:
        raise ModelFormatError(f"{path / 'config.json'} holds an invalid config: {e}") from None
    labels = _read_json(path, "labels.json")
    clf = TextCNNClassifier(**{k: v for k, v in cfg.to_dict().items()}, verbose=0)
    clf.config_ = cfg
    clf.vocab_ = Vocab.from_json(_read_json(path, "vocab.json"))
    clf.tokenizer_ = make_tokenizer(**_read_json(path, "tokenizer.json"))
    clf.classes_ = np.array(labels["classes"], dtype=object)
    clf.multi_label_ = meta.get("task") == "multi-label"
    clf.thresholds_ = None if labels.get("thresholds") is None else np.asarray(labels["thresholds"], dtype=float)
    clf.history_ = _read_json(path, "history.json") if (path / "history.json").exists() else []
    clf.model_ = build_model(cfg, len(clf.vocab_))
    _load_weights(clf.model_, path / "model.safetensors")
    clf.model_.eval()
    return clf


def _read_json(path: Path, name: str):
    file = path / name
    if not file.is_file():
        raise ModelFormatError(
            f"'{path}' has no {name}, so it is not a complete textcnn model directory (it needs {', '.join(FILES[:5])}). "
            "Copy the whole directory, or train and save the model again."
        )
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{file} is damaged (not valid JSON: {e}). Restore it from a copy, or save the model again.") from None


def _load_weights(model: torch.nn.Module, file: Path) -> None:
    if not file.is_file():
        raise ModelFormatError(f"'{file.parent}' has no model.safetensors (the weights). Copy the whole model directory.")
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFormatError(f"{file} is damaged ({e}). Restore it from a copy, or save the model again.") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    bad = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or bad:
        raise ModelFormatError(
            f"{file} does not match config.json (missing tensors: {missing[:5]}, wrong shapes: {bad[:5]}). "
            "The files come from different models; copy the whole directory of one model."
        )
    model.load_state_dict(state)
