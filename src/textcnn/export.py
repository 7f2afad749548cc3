"""``textcnn export``: a saved model as an ONNX graph (and its int8 quantization) for textcnn.runtime.

The graph maps token ids (batch, length), int64, right-padded with 0, to logits (batch, classes); both
axes are dynamic. It computes the model's own function: the ids are padded by the widest window
before the model runs, so every text, the empty one included, has at least one full window, and the
model's mask keeps padding from winning the max (padding past the text is masked, so the extra
zeros change nothing). Export checks the graph with ``onnx.checker`` and compares it with the
PyTorch model on every length from 0 to past the widest window before writing it.

Files go into the model directory by default (``model.onnx``, ``model.int8.onnx``) and are recorded
in the directory's exports.json (with their SHA-256); the runtime finds and checks them there. Saving
the model again writes a fresh directory without them, so a graph never outlives its weights.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .atomicdir import file_sha256
from .errors import ConfigError, ModelFormatError, missing_dependency
from .model import TextCNN, min_length
from .serialization import record_export
from .vocab import PAD_ID

OPSET = 18
FILES = {False: "model.onnx", True: "model.int8.onnx"}
EXPORT_KEYS = {False: "onnx", True: "onnx-int8"}
INPUT, OUTPUT = "ids", "logits"
QUANTIZED_OPS = ["Gather", "Gemm", "MatMul"]  # Gather: the embedding table, most of the weights
TOLERANCE = 1e-4  # largest logit difference accepted between the graph and the PyTorch model


class PaddedForExport(nn.Module):
    """The model behind a fixed pad by its widest window, so one traced graph serves every length."""

    def __init__(self, model: TextCNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = F.pad(ids, (0, min_length(self.model.window_sizes)), value=PAD_ID)  # (B, T + max_k)
        return self.model(ids)  # (B, C)


def export_onnx(model_dir, out=None, *, int8: bool = False) -> Path:
    """Writes the ONNX graph of the model saved in ``model_dir`` and records it in its exports.json.

    Args:
        model_dir: a directory written by ``clf.save()`` or ``textcnn train``.
        out: the file to write; default ``model_dir/model.onnx`` (``model.int8.onnx`` with ``int8``).
        int8: write the dynamically quantized graph (int8 weights) instead of the float32 one.

    Returns:
        The path written.

    Raises:
        MissingDependencyError: onnx, onnxscript or onnxruntime is not installed.
        ModelFormatError: ``model_dir`` is not a model, or the graph does not match the model.
    """
    from .classifier import load

    _import_onnx()
    model_dir = Path(model_dir)
    clf = load(model_dir)
    if clf.config_.encoder is not None:
        raise ConfigError(f"'{model_dir}' reads a transformer encoder ({clf.config_.encoder}); textcnn export writes "
                          "graphs of embedding-table models only for now. Serve it with the PyTorch runtime "
                          "(textcnn serve / textcnn predict without --runtime onnx).")
    out = Path(out) if out is not None else model_dir / FILES[int8]
    write_graph(clf.model_, out, int8=int8)
    if out.resolve().parent == model_dir.resolve():
        record_export(model_dir, EXPORT_KEYS[int8], {"file": out.name, "format": "onnx", "opset": OPSET,
                                                     "sha256": file_sha256(out), "textcnn_version": __version__})
    return out


def write_graph(model: TextCNN, out, *, int8: bool = False) -> Path:
    """The ONNX graph of ``model`` (checked against it on every length), written to ``out`` in one step."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        graph = Path(tmp) / "model.onnx"
        _export_fp32(model, graph)
        _check_graph(model, graph)
        if int8:
            quantized = Path(tmp) / "model.int8.onnx"
            _quantize(graph, quantized)
            graph = quantized
        os.replace(graph, out)
    return out


def _import_onnx() -> None:
    for package in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(package)
        except ImportError as e:
            raise missing_dependency(package, "onnx", "'textcnn export'") from e


def _export_fp32(model: TextCNN, file: Path) -> None:
    import onnx

    wrapped = PaddedForExport(model).eval()
    example = torch.ones(2, min_length(model.window_sizes) + 1, dtype=torch.long)  # (B, T)
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("length")}
    with warnings.catch_warnings(), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(wrapped, (example,), dynamo=True, opset_version=OPSET, input_names=[INPUT],
                                    output_names=[OUTPUT], dynamic_shapes=(dims,), optimize=True, verbose=False)
    program.save(str(file))
    graph = onnx.load(str(file))
    for node in graph.graph.node:  # the exporter's notes: source paths and stack traces of this machine
        del node.metadata_props[:]
    graph.doc_string = f"textcnn {__version__}: token ids (batch, length), int64, 0-padded -> logits (batch, classes)"
    onnx.save(graph, str(file))
    onnx.checker.check_model(str(file), full_check=True)


@torch.inference_mode()
def _check_graph(model: TextCNN, file: Path) -> None:
    """The graph against the model on lengths 0 .. widest window + 2, ragged batches included."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    vocab = model.embedding.num_embeddings
    worst = 0.0
    for length in range(min_length(model.window_sizes) + 3):
        ids = rng.integers(1, vocab, size=(3, length)) if vocab > 1 else np.zeros((3, length), dtype=np.int64)
        ids[1, length // 2:] = PAD_ID  # a shorter text in the same batch
        ids[2, :] = PAD_ID  # an empty one
        expected = model(F.pad(torch.from_numpy(ids), (0, min_length(model.window_sizes)))).numpy()  # (3, C)
        got = session.run(None, {INPUT: ids.astype(np.int64)})[0]  # (3, C)
        worst = max(worst, float(np.abs(expected - got).max()))
    if worst > TOLERANCE:
        raise ModelFormatError(f"The exported graph differs from the PyTorch model by {worst:.2e} in a logit "
                               f"(tolerance {TOLERANCE}). Please report this with the model's config.json.")


def _quantize(fp32: Path, int8: Path) -> None:
    """int8 weights. The embedding table and the last layer: onnxruntime's dynamic quantization (the
    Gather dequantizes only the rows it reads). The convolutions: weight-only, per filter, dequantized
    once when the session loads, so they still run as float convolutions (ConvInteger with dynamically
    quantized activations measured up to 10x slower on CPU)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet("root"):  # its advice to pre-process: the graph is already optimized by the exporter
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS)
    graph = onnx.load(str(int8))
    _int8_conv_weights(graph.graph)
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, str(int8))


def _int8_conv_weights(graph) -> None:
    """Each Conv's float weight (F, C, k) -> int8 weight, a float scale per filter and a DequantizeLinear."""
    from onnx import helper, numpy_helper

    weights = {t.name: t for t in graph.initializer}
    dequantize = []
    for node in graph.node:
        if node.op_type != "Conv" or node.input[1] not in weights:
            continue
        name = node.input[1]
        w = numpy_helper.to_array(weights[name])  # (F, C, k)
        scale = (np.abs(w).reshape(len(w), -1).max(axis=1) / 127).astype(np.float32)  # (F,)
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(w / scale[:, None, None]), -127, 127).astype(np.int8)  # (F, C, k)
        graph.initializer.remove(weights[name])
        graph.initializer.extend([numpy_helper.from_array(q, f"{name}_int8"),
                                  numpy_helper.from_array(scale, f"{name}_scale"),
                                  numpy_helper.from_array(np.zeros(len(w), np.int8), f"{name}_zero")])
        dequantize.append(helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero"],
                                           [f"{name}_dequantized"], axis=0, name=f"{name}_dequantize"))
        node.input[1] = f"{name}_dequantized"
    for node in reversed(dequantize):  # ahead of every node: they read only initializers
        graph.node.insert(0, node)


@contextlib.contextmanager
def _quiet(logger: str):
    log = logging.getLogger(None if logger == "root" else logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


