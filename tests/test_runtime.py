"""textcnn.runtime: the exported graph gives the classifier's answers, with no PyTorch in the process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import textcnn  # noqa: E402
import textcnn.runtime  # noqa: E402
from textcnn import ModelFormatError, TextCNNClassifier  # noqa: E402
from textcnn.export import export_onnx  # noqa: E402

from .conftest import TINY, make_corpus  # noqa: E402
from .serving import Server, http  # noqa: E402

TEXTS = ["", "good", "a bad film", "the plot was really dull and boring and the acting poor", *make_corpus(40, seed=9)[0]]


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    """The conftest model, copied, with both graphs."""
    import shutil

    path = tmp_path_factory.mktemp("runtime") / "model"
    shutil.copytree(model_dir, path)
    export_onnx(path)
    export_onnx(path, int8=True)
    return path


@pytest.fixture(scope="module")
def multi_label_dir(tmp_path_factory):
    texts, labels = make_corpus(120)
    labels = [[y, "long"] if len(t.split()) > 4 else [y] for t, y in zip(texts, labels)]
    path = tmp_path_factory.mktemp("runtime-ml") / "model"
    TextCNNClassifier(**{**TINY, "epochs": 2}).fit(texts, labels).save(path)
    export_onnx(path)
    return path


def test_same_answers_as_the_classifier(exported, fitted):
    pred = textcnn.runtime.load(exported)
    np.testing.assert_allclose(pred.predict_proba(TEXTS), fitted.predict_proba(TEXTS), atol=1e-5, rtol=0)
    assert pred.predict(TEXTS).tolist() == fitted.predict(TEXTS).tolist()
    got, expected = pred.predict_records(TEXTS[:5], top_k=2), fitted.predict_records(TEXTS[:5], top_k=2)
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    assert [r["text"] for r in got] == TEXTS[:5] and len(got[0]["top_k"]) == 2
    assert pred.classes_.tolist() == fitted.classes_.tolist() and pred.config_ == fitted.config_
    assert pred.predict_proba(TEXTS[2:3]).shape == (1, 2) and pred.predict_proba([]).shape == (0, 2)


def test_int8_graph(exported, fitted):
    pred = textcnn.runtime.load(exported, int8=True)
    assert pred.model_file_.name == "model.int8.onnx"
    assert (pred.predict(TEXTS) == fitted.predict(TEXTS)).mean() >= 0.9


def test_multi_label_thresholds(multi_label_dir):
    clf, pred = textcnn.load(multi_label_dir), textcnn.runtime.load(multi_label_dir)
    assert pred.multi_label_ and pred.predict(TEXTS).tolist() == clf.predict(TEXTS).tolist()
    assert [r["labels"] for r in pred.predict_records(TEXTS)] == [r["labels"] for r in clf.predict_records(TEXTS)]


def test_without_torch_in_the_process(exported, fitted):
    """`import torch` raises in the child; the runtime still loads and predicts, and the torch names say how to install."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import textcnn, textcnn.runtime
        pred = textcnn.runtime.load({str(exported)!r})
        proba = pred.predict_proba({TEXTS!r}).tolist()
        try:
            textcnn.TextCNNClassifier
            message = None
        except textcnn.MissingDependencyError as e:
            message = str(e)
        print(json.dumps({{"proba": proba, "message": message, "modules": sorted(k for k, v in sys.modules.items() if v is not None)}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    np.testing.assert_allclose(out["proba"], fitted.predict_proba(TEXTS), atol=1e-5, rtol=0)
    assert "pip install 'textcnn[train]'" in out["message"]
    assert not any(m == "torch" or m.startswith("torch.") or m == "safetensors" for m in out["modules"])


def test_predict_a_file_without_torch(exported, fitted, tmp_path):
    """`textcnn predict --runtime onnx --input --output` streams a file in a process where torch cannot be imported."""
    import csv

    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    with source.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "text"], *[[i, t] for i, t in enumerate(TEXTS[1:])]])  # no empty row
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        from textcnn.cli import main
        code = main(["predict", {str(exported)!r}, "--runtime", "onnx", "--input", {str(source)!r},
                     "--output", {str(out)!r}, "--chunk-size", "7", "-q"])
        assert "torch" not in sys.modules or sys.modules["torch"] is None
        sys.exit(code)
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [str(i) for i in range(len(TEXTS) - 1)]
    assert [r["label"] for r in rows] == [str(y) for y in fitted.predict(TEXTS[1:])]


def test_missing_graph_says_how_to_export(model_dir):
    with pytest.raises(ModelFormatError, match=r"textcnn export .* --format onnx --int8"):
        textcnn.runtime.load(model_dir, int8=True)
    with pytest.raises(ModelFormatError, match="not a directory"):
        textcnn.runtime.load(model_dir / "config.json")


def test_a_damaged_or_stale_graph_is_refused(exported, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    graph = bytearray((copy / "model.onnx").read_bytes())
    graph[len(graph) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(graph))
    with pytest.raises(ModelFormatError, match=r"model.onnx is damaged or was changed"):
        textcnn.runtime.load(copy)
    labels = json.loads((copy / "labels.json").read_text())
    (copy / "labels.json").write_text(json.dumps({**labels, "classes": labels["classes"][::-1]}))
    with pytest.raises(ModelFormatError, match=r"labels.json is damaged or was changed"):
        textcnn.runtime.load(copy)  # the runtime checks the model files like textcnn.load does


def test_serve_through_the_runtime(exported, fitted, tmp_path):
    with Server(exported, "--runtime", "onnx", log=tmp_path / "server.log") as srv:
        status, body = http("POST", srv.url + "/v1/predict", {"texts": TEXTS[:6], "top_k": 2})
        assert status == 200
        assert [r["label"] for r in body["predictions"]] == fitted.predict(TEXTS[:6]).tolist()
        status, meta = http("GET", srv.url + "/v1/metadata")
        assert status == 200 and "onnxruntime" in meta["versions"] and "torch" not in meta["versions"]
        status, body = http("POST", srv.url + "/v1/explain", {"texts": ["good"]})
        assert status == 422 and "PyTorch" in body["detail"]
