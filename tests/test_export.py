"""textcnn export: the ONNX graph computes the model's function on every length; int8; exports.json records it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from textcnn import TextCNNClassifier, load  # noqa: E402
from textcnn.cli import main  # noqa: E402
from textcnn.export import export_onnx  # noqa: E402

from .conftest import TINY, make_corpus  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Batch norm, two embedding tables, windows up to 4: a model directory with both graphs."""
    root = tmp_path_factory.mktemp("export")
    path, vectors = root / "model", root / "glove.txt"
    rng = np.random.default_rng(0)
    vectors.write_text("".join(f"{w} {' '.join(f'{v:.3f}' for v in rng.normal(size=16))}\n"
                               for w in sorted(set(" ".join(make_corpus(120)[0]).split()))), encoding="utf-8")
    params = {**TINY, "epochs": 2, "window_sizes": (2, 4), "batch_norm": True, "embedding_mode": "multichannel",
              "embeddings": str(vectors)}
    TextCNNClassifier(**params).fit(*make_corpus(120), validation_data=make_corpus(30, 1)).save(path)
    assert main(["export", str(path), "--format", "onnx"]) == 0
    assert main(["export", str(path), "--int8"]) == 0
    return path


def run(file, ids: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(file), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]


def test_graph_is_checked_dynamic_and_recorded(exported):
    graph = onnx.load(str(exported / "model.onnx"))
    onnx.checker.check_model(graph, full_check=True)
    dims = [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "length"] and graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert graph.opset_import[0].version >= 17
    exports = json.loads((exported / "exports.json").read_text())
    assert exports["onnx"]["file"] == "model.onnx" and exports["onnx-int8"]["file"] == "model.int8.onnx"
    assert len(exports["onnx"]["sha256"]) == 64
    assert load(exported).classes_.tolist() == ["neg", "pos"]  # the checked model files are unchanged


@torch.inference_mode()
def test_graph_equals_the_model_on_every_length(exported):
    """Lengths 0 .. past the widest window (4), ragged batches padded with 0, one text alone."""
    model = load(exported).model_
    rng = np.random.default_rng(1)
    for length in range(8):
        ids = rng.integers(1, model.embedding.num_embeddings, size=(4, length))
        ids[1, length // 2:] = 0
        ids[2, 1:] = 0
        for batch in (ids, ids[:1]):
            expected = model(F.pad(torch.from_numpy(batch), (0, max(0, 4 - length)))).numpy()  # the model pads to 4
            np.testing.assert_allclose(run(exported / "model.onnx", batch), expected, atol=1e-5, rtol=0)


def test_int8_graph_has_int8_weights_and_agrees(exported):
    graph = onnx.load(str(exported / "model.int8.onnx"))
    biggest = max(graph.graph.initializer, key=lambda t: np.prod(t.dims))
    assert biggest.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)  # an embedding table (or the n-gram one)
    dequantized = {o for n in graph.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert all(n.input[1] in dequantized for n in graph.graph.node if n.op_type == "Conv")  # int8 filters
    floats = sum(np.prod(t.dims) for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    assert floats < 0.1 * sum(np.prod(t.dims) for t in graph.graph.initializer)  # scales, biases
    clf = load(exported)
    texts = make_corpus(60, seed=3)[0]
    ids = np.zeros((len(texts), clf.config_.max_text_len), dtype=np.int64)
    for i, row in enumerate(clf.encode(texts)):
        ids[i, :len(row)] = row
    logits = clf.decision_function(texts)
    assert (run(exported / "model.int8.onnx", ids).argmax(1) == logits.argmax(1)).mean() >= 0.95


def test_out_elsewhere_is_not_recorded(exported, tmp_path):
    out = export_onnx(exported, tmp_path / "elsewhere.onnx")
    assert out.is_file()
    assert "elsewhere.onnx" not in (exported / "exports.json").read_text()


def test_export_of_a_non_model_is_one_clear_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
