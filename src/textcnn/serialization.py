"""The model directory: plain JSON and safetensors, nothing executable.

    MODEL_DIR/
      config.json        format_version, textcnn_version, task, the TextCNNConfig fields, and with an
                         encoder input (format 3) "encoder": {"name", "sha256": {file: hex digest}}
      vocab.json         {"tokens": [...]}  (id = position; 0 <pad>, 1 <unk>)
      labels.json        {"classes": [...], "thresholds": [...] | null}  (thresholds: multi-label)
      tokenizer.json     {"name": "word", "lowercase": true}
      model.safetensors  the TextCNN state dict (float32)
      history.json       one entry per training epoch
      manifest.json      {"sha256": {file: hex digest}} of the six files above (format 2)
      README.md, card.json  the model card (textcnn.card): descriptive, outside the manifest

Reading checks everything before a model is built: each file's SHA-256 against manifest.json (so
a flipped byte anywhere is caught, also in a label name that still parses), then each file's
structure, and that the files agree with each other (class count, vocabulary size, tensor names,
shapes and dtypes). Anything wrong raises ModelFormatError naming the file and what is wrong.
Format 1 directories (textcnn 0.1, without manifest.json) are read with the same checks but the
checksums. Format 3 is format 2 plus the encoder entry: only models with an encoder input are written
in it (so older textcnn versions say to upgrade instead of failing on them); the encoder itself is
never copied: reading resolves it by name and refuses one whose files' SHA-256 differ. Writing goes through :func:`textcnn.atomicdir.replace_dir`: a complete new directory
replaces the old one in one step where the OS allows (that module says where it does not).

This module deals in plain parts (:class:`ModelParts`); the estimator is assembled from them in
classifier.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

from typing import TYPE_CHECKING

from . import __version__
from .atomicdir import read_files, replace_dir, replace_file, write_file
from .config import TextCNNConfig
from .data import to_python
from .errors import ModelFormatError
from .tokenizers import Tokenizer, tokenizer_from_spec
from .vocab import Vocab

if TYPE_CHECKING:  # PyTorch is needed for the weights only: the torch-free runtime reads the rest here
    import torch

    from .model import TextCNN

FORMAT_VERSION = 3  # the newest format read; models without an encoder input are written in format 2
PLAIN_FORMAT, ENCODER_FORMAT = 2, 3
CONFIG, VOCAB, LABELS, TOKENIZER = "config.json", "vocab.json", "labels.json", "tokenizer.json"
WEIGHTS, HISTORY, MANIFEST = "model.safetensors", "history.json", "manifest.json"
EXPORTS = "exports.json"  # {"onnx": {"file", "sha256", ...}, "onnx-int8": {...}}: written by textcnn export
FILES = (CONFIG, VOCAB, LABELS, TOKENIZER, WEIGHTS, HISTORY)  # the files manifest.json covers
TASKS = ("single-label", "multi-label")
FIX = "Restore the model directory from a copy, or train and save the model again."


@dataclass
class ModelDescription:
    """What a model directory holds besides the network: the resolved config, text-to-ids parts, labels."""

    config: TextCNNConfig
    multi_label: bool
    vocab: Vocab
    tokenizer: Tokenizer
    classes: list
    thresholds: list[float] | None
    history: list


@dataclass
class ModelInfo(ModelDescription):
    """A model directory without its network, all checked: what the PyTorch-free runtime needs."""

    path: Path
    files: dict  # name -> bytes (or the OSError met reading it), all from one version of the directory


@dataclass
class ModelParts(ModelDescription):
    """A whole model: its description and the network."""

    model: TextCNN


# ----- writing -----

def write_model(parts: ModelParts, path, extra_files: dict[str, bytes] | None = None) -> Path:
    """Writes the model directory at ``path``, replacing an older model there in one step.

    ``extra_files`` (name -> bytes, e.g. the model card) are written in the same step but stay outside
    the manifest: they describe the model, are never read to build it, and ``textcnn eval`` updates them.
    """
    path = Path(path)
    target = Path(os.path.realpath(path))  # a symlink to a model: replace the model, keep the link
    _check_target(target)
    state = {k: v.detach().cpu().contiguous() for k, v in parts.model.state_dict().items()}
    meta = {"format_version": PLAIN_FORMAT, "textcnn_version": __version__, "task": TASKS[parts.multi_label],
            "config": parts.config.to_dict()}
    if parts.config.encoder is not None:
        meta.update(format_version=ENCODER_FORMAT, encoder=parts.tokenizer.describe())
    files = {
        CONFIG: _json_bytes(meta),
        VOCAB: _json_bytes(parts.vocab.to_json()),
        LABELS: _json_bytes({"classes": [to_python(c) for c in parts.classes],
                             "thresholds": None if parts.thresholds is None else [float(t) for t in parts.thresholds]}),
        TOKENIZER: _json_bytes(parts.tokenizer.spec()),
        WEIGHTS: safetensors_bytes(state, {"format": "pt", "textcnn_format_version": str(meta["format_version"])}),
        HISTORY: _json_bytes(parts.history),
    }
    files[MANIFEST] = _json_bytes({"sha256": {name: _sha256(data) for name, data in files.items()}})
    files.update(extra_files or {})  # descriptive files (the model card), outside the manifest

    def write(tmp: Path) -> None:
        for name, data in files.items():
            write_file(tmp / name, data)

    replace_dir(target, write)
    return path


def safetensors_bytes(tensors: dict[str, "torch.Tensor"], metadata: dict[str, str]) -> bytes:
    """safetensors bytes that depend only on the tensors and metadata.

    The safetensors library writes the metadata in a random (hash map) order, so the same weights
    gave different files in two processes; the header is rewritten with its keys sorted.
    """
    from safetensors.torch import save as save_safetensors

    data = save_safetensors(tensors, metadata=metadata)
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the tensors' data stays 8-byte aligned
    return len(header).to_bytes(8, "little") + header + data[8 + n :]


def _check_target(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise ModelFormatError(f"Cannot save the model to '{target}': a file of that name exists. Choose another --out.")
    if target.is_dir() and not (target / CONFIG).exists() and any(target.iterdir()):
        raise ModelFormatError(
            f"Cannot save the model to '{target}': the directory exists, is not empty and holds no textcnn "
            "model. Choose another --out, or empty it first."
        )


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----- reading -----

def read_model(path) -> ModelParts:
    """Reads and checks a model directory; the network comes back on the CPU in eval mode.

    Raises:
        ModelFormatError: a file is missing, damaged or disagrees with another, or the directory
            comes from a newer format. The message names the file and what is wrong.
    """
    info = read_model_info(path, weights=True)
    described = {f.name: getattr(info, f.name) for f in fields(ModelDescription)}
    return ModelParts(**described, model=_model(info.path, info.files, info.config, len(info.vocab)))


def read_model_info(path, *, weights: bool = False, extra: tuple[str, ...] = ()) -> ModelInfo:
    """Reads and checks everything but the network (no PyTorch needed); ``files`` holds the bytes read.

    ``weights`` also reads (and checksums) model.safetensors; ``extra`` names more files to read from
    the same version of the directory (the runtime's exports.json and graph), unchecked.
    """
    path = Path(path)
    names = [n for n in FILES if weights or n != WEIGHTS]
    blobs = _read_blobs(path, (*names, MANIFEST, *extra))
    meta = _json_object(path, CONFIG, blobs)
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(f"{path / CONFIG} has no valid 'format_version' (got {version!r}): it is not a "
                               f"textcnn model config. {FIX}")
    try:
        _verify_checksums(path, blobs, names, required=version >= 2)
    except ModelFormatError:
        if version > FORMAT_VERSION:
            raise _newer_format(path, meta, version) from None
        raise
    if version > FORMAT_VERSION:
        raise _newer_format(path, meta, version)
    cfg, multi = _config(path, meta)
    vocab = _parsed(path, VOCAB, blobs, Vocab.from_json)
    if cfg.encoder is None:
        tokenizer = _parsed(path, TOKENIZER, blobs, tokenizer_from_spec)
    else:
        tokenizer = _encoder(path, meta, _json_object(path, TOKENIZER, blobs))
    if (tokenizer.name, tokenizer.lowercase) != (cfg.tokenizer, cfg.lowercase):
        raise ModelFormatError(f"{path / TOKENIZER} describes tokenizer {tokenizer.spec()} but {CONFIG} says "
                               f"tokenizer={cfg.tokenizer!r}, lowercase={cfg.lowercase}. {FIX}")
    classes, thresholds = _labels(path, blobs, cfg, multi)
    history = _history(path, blobs, required=version >= 2)
    return ModelInfo(path=path, config=cfg, multi_label=multi, vocab=vocab, tokenizer=tokenizer, classes=classes,
                     thresholds=thresholds, history=history, files=blobs)


def record_export(path, key: str, entry: dict) -> None:
    """Adds ``entry`` under ``key`` in the directory's exports.json (replaced in one step).

    exports.json is outside the manifest: exporting adds to a model without changing it. Saving the
    model again writes a fresh directory, so graphs of older weights never outlive them.
    """
    path = Path(path)
    file = path / EXPORTS
    exports = {}
    if file.is_file():
        try:
            exports = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelFormatError(f"{file} is damaged ({e}); delete it and export again.") from None
        if not isinstance(exports, dict):
            raise ModelFormatError(f"{file} must hold a JSON object; delete it and export again.")
    exports[key] = entry
    replace_file(file, _json_bytes(exports))


def _read_blobs(path: Path, names: tuple[str, ...]) -> dict[str, bytes | OSError]:
    try:
        return read_files(path, names)
    except (FileNotFoundError, NotADirectoryError):
        raise ModelFormatError(f"'{path}' is not a directory. Pass the directory written by 'textcnn train --out' "
                               "or clf.save().") from None
    except OSError as e:
        raise ModelFormatError(f"Cannot read the model directory '{path}': {e.strerror or e}.") from None


def _blob(path: Path, name: str, blobs: dict) -> bytes:
    data = blobs[name]
    if isinstance(data, FileNotFoundError):
        raise ModelFormatError(
            f"'{path}' has no {name}, so it is not a complete textcnn model directory (it needs "
            f"{', '.join(FILES)} and, since format 2, {MANIFEST}). Copy the whole directory, or train and save the "
            "model again."
        )
    if isinstance(data, OSError):
        raise ModelFormatError(f"Cannot read {path / name}: {data.strerror or data}. {FIX}")
    return data


def _json(path: Path, name: str, blobs: dict):
    data = _blob(path, name, blobs)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ModelFormatError(f"{path / name} is damaged (not valid JSON: {e}). {FIX}") from None


def _json_object(path: Path, name: str, blobs: dict) -> dict:
    obj = _json(path, name, blobs)
    if not isinstance(obj, dict):
        raise ModelFormatError(f"{path / name} must hold a JSON object, but holds a {_json_type(obj)}. {FIX}")
    return obj


def _json_type(obj) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(obj), "number")


def _parsed(path: Path, name: str, blobs: dict, parse):
    """``parse(json)``; its ValueError becomes a ModelFormatError naming the file."""
    obj = _json_object(path, name, blobs)
    try:
        return parse(obj)
    except ValueError as e:
        raise ModelFormatError(f"{path / name} is not valid: {e}. {FIX}") from None


def _verify_checksums(path: Path, blobs: dict, names: list[str], required: bool) -> None:
    """Each of ``names`` against manifest.json (which must list every file of FILES)."""
    if isinstance(blobs[MANIFEST], FileNotFoundError) and not required:
        return  # format 1: written before checksums
    manifest = _json_object(path, MANIFEST, blobs)
    sums = manifest.get("sha256")
    if set(manifest) != {"sha256"} or not isinstance(sums, dict) or set(sums) != set(FILES):
        raise ModelFormatError(f"{path / MANIFEST} is damaged: it must hold {{\"sha256\": {{...}}}} with one entry for "
                               f"each of {', '.join(FILES)}. {FIX}")
    for name in names:
        if sums[name] != _sha256(_blob(path, name, blobs)):
            raise ModelFormatError(f"{path / name} is damaged or was changed: its SHA-256 differs from the one "
                                   f"{MANIFEST} recorded when the model was saved (or {MANIFEST} is damaged). {FIX}")


def _newer_format(path: Path, meta: dict, version: int) -> ModelFormatError:
    return ModelFormatError(
        f"'{path}' was written in model format {version} by textcnn {meta.get('textcnn_version', '?')}; this textcnn "
        f"({__version__}) reads formats up to {FORMAT_VERSION}. Upgrade with: pip install -U textcnn"
    )


def _config(path: Path, meta: dict) -> tuple[TextCNNConfig, bool]:
    file = path / CONFIG
    unknown = sorted(set(meta) - {"format_version", "textcnn_version", "task", "config", "encoder"})
    if unknown:
        raise ModelFormatError(f"{file} has unknown keys {unknown}. {FIX}")
    task = meta.get("task")
    if task not in TASKS:
        raise ModelFormatError(f"{file}: 'task' must be 'single-label' or 'multi-label', not {task!r}. {FIX}")
    values = meta.get("config")
    if not isinstance(values, dict):
        raise ModelFormatError(f"{file}: 'config' must be a JSON object of TextCNNConfig fields. {FIX}")
    # saved before the n-gram channel existed: without it; before ngram_order: uni- and bigrams
    values = {"ngram_features": 0, "ngram_order": 2, **values}
    try:
        cfg = TextCNNConfig.from_dict(values)
    except (TypeError, ValueError) as e:
        raise ModelFormatError(f"{file} holds an invalid config: {e}") from None
    if cfg.num_class is None:
        raise ModelFormatError(f"{file}: 'num_class' is null, but a saved model always records its class count. {FIX}")
    multi = task == "multi-label"
    if cfg.multi_label is not None and cfg.multi_label != multi:
        raise ModelFormatError(f"{file}: 'task' is {task!r} but the config says multi_label={cfg.multi_label}. {FIX}")
    return cfg, multi


def _encoder(path: Path, meta: dict, spec: dict):
    """The encoder config.json names, checked against the SHA-256 of its files recorded there."""
    from .encoder import SPEC, load_encoder

    entry, name = meta.get("encoder"), meta["config"]["encoder"]
    if not isinstance(entry, dict) or entry.get("name") != name or not isinstance(entry.get("sha256"), dict):
        raise ModelFormatError(f"{path / CONFIG}: a model with encoder={name!r} needs an 'encoder' entry "
                               f"{{\"name\": {json.dumps(name)}, \"sha256\": {{file: digest}}}}. {FIX}")
    if spec != SPEC:
        raise ModelFormatError(f"{path / TOKENIZER} must hold {json.dumps(SPEC)} for a model with an encoder input, "
                               f"not {json.dumps(spec)}. {FIX}")
    return load_encoder(name, expected=entry["sha256"], where=str(path))


def _labels(path: Path, blobs: dict, cfg: TextCNNConfig, multi: bool) -> tuple[list, list[float] | None]:
    file = path / LABELS
    labels = _json_object(path, LABELS, blobs)
    if "classes" not in labels or not set(labels) <= {"classes", "thresholds"}:
        raise ModelFormatError(f"{file} must hold {{\"classes\": [...], \"thresholds\": [...] | null}}; "
                               f"it has the keys {sorted(labels)}. {FIX}")
    classes, thresholds = labels["classes"], labels.get("thresholds")
    if not isinstance(classes, list) or not all(isinstance(c, (str, int, float)) for c in classes):
        raise ModelFormatError(f"{file}: 'classes' must be a list of labels (strings or numbers). {FIX}")
    if len(set(classes)) != len(classes):
        raise ModelFormatError(f"{file}: 'classes' lists a label twice. {FIX}")
    if len(classes) != cfg.num_class:
        raise ModelFormatError(f"{file} holds {len(classes)} classes but {CONFIG} says num_class={cfg.num_class}: "
                               f"the files come from different models. {FIX}")
    if not multi:
        if thresholds is not None:
            raise ModelFormatError(f"{file} holds thresholds, but the model is single-label ({CONFIG}). {FIX}")
        return classes, None
    if not isinstance(thresholds, list) or len(thresholds) != len(classes) or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1 for t in thresholds):
        raise ModelFormatError(f"{file}: a multi-label model needs 'thresholds', one number in [0, 1] per class "
                               f"({len(classes)}); got {_short(thresholds)}. {FIX}")
    return classes, [float(t) for t in thresholds]


def _short(obj) -> str:
    text = json.dumps(obj)
    return text if len(text) <= 80 else text[:77] + "..."


def _history(path: Path, blobs: dict, required: bool) -> list:
    if isinstance(blobs[HISTORY], FileNotFoundError) and not required:
        return []  # optional in format 1
    history = _json(path, HISTORY, blobs)
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise ModelFormatError(f"{path / HISTORY} must hold a JSON list of objects (one per epoch). {FIX}")
    return history


def _model(path: Path, blobs: dict, cfg: TextCNNConfig, vocab_size: int) -> TextCNN:
    """The network with the saved weights, checked against the shapes the config and vocabulary imply."""
    import torch
    from safetensors.torch import load as load_safetensors

    from .model import build_model

    file = path / WEIGHTS
    try:
        state = load_safetensors(_blob(path, WEIGHTS, blobs))
    except ModelFormatError:
        raise
    except Exception as e:  # noqa: BLE001 - the parser of untrusted bytes: any failure means a damaged file
        raise ModelFormatError(f"{file} is damaged ({type(e).__name__}: {' '.join(str(e).split())}). {FIX}") from None
    with torch.device("meta"):  # shapes only: a config claiming a huge model allocates nothing here
        model = build_model(cfg, vocab_size)
    _check_state(file, state, model.state_dict(), vocab_size, cfg.num_class)
    model = model.to_empty(device="cpu")
    model.load_state_dict(state)
    return model.eval()


def _check_state(file: Path, state: dict, expected: dict, vocab_size: int, num_class: int) -> None:
    rows = state.get("embedding.weight")
    if rows is not None and rows.dim() == 2 and rows.shape[0] != vocab_size:
        raise ModelFormatError(f"{file} has an embedding table of {rows.shape[0]} rows, but {VOCAB} holds {vocab_size} "
                               f"tokens: the files come from different models. {FIX}")
    fc = state.get("fc.weight")
    if fc is not None and fc.dim() == 2 and fc.shape[0] != num_class:
        raise ModelFormatError(f"{file}: the last layer has {fc.shape[0]} outputs, but {LABELS} and {CONFIG} hold "
                               f"{num_class} classes: the files come from different models. {FIX}")
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    dtypes = [f"{k} {state[k].dtype} (expected {v.dtype})"
              for k, v in expected.items() if k in state and state[k].dtype != v.dtype]
    if missing or extra or shapes or dtypes:
        found = [f"{what}: {', '.join(items[:5])}" for what, items in
                 (("missing tensors", missing), ("unexpected tensors", extra), ("wrong shapes", shapes),
                  ("wrong dtypes", dtypes)) if items]
        raise ModelFormatError(f"{file} does not match {CONFIG} ({'; '.join(found)}). The files come from "
                               f"different models or were damaged; copy the whole directory of one model. {FIX}")
    # A NaN or infinity anywhere makes the sum non-finite (one fast pass); huge finite values can
    # too, so a non-finite sum is confirmed element-wise.
    bad = [k for k, t in state.items() if t.is_floating_point() and not math.isfinite(t.sum())
           and not bool(t.isfinite().all())]
    if bad:
        raise ModelFormatError(f"{file} holds NaN or infinite weights in {', '.join(bad[:5])}. {FIX}")
