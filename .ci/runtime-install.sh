#!/usr/bin/env bash
# The PyTorch-free install, for real: a fresh venv gets the textcnn wheel built from this checkout with
# only its 'runtime' extra (onnxruntime, numpy: from PyPI), no torch; it loads a model that TORCH_PY
# trained and exported, and must give the PyTorch model's labels and probabilities.
# Usage: .ci/runtime-install.sh [TORCH_PY]   (TORCH_PY: a Python with textcnn[train,onnx]; default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_PY=${1:-.venv/bin/python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# 1. Where PyTorch is: train a tiny model, export it, keep the classifier's answers.
PYTHONPATH=src "$TORCH_PY" - "$WORK" <<'PY'
import json, sys
from pathlib import Path
sys.path.insert(0, "tests")
from conftest import TINY, make_corpus
from textcnn import TextCNNClassifier
from textcnn.export import export_onnx

work = Path(sys.argv[1])
clf = TextCNNClassifier(**TINY).fit(*make_corpus(160), validation_data=make_corpus(40, 1))
clf.save(work / "model")
export_onnx(work / "model")
texts = ["", "good", "a dull and boring film", *make_corpus(20, seed=5)[0]]
expected = {"texts": texts, "labels": clf.predict(texts).tolist(), "proba": clf.predict_proba(texts).tolist()}
(work / "expected.json").write_text(json.dumps(expected))
PY

# 2. A fresh venv without torch: the wheel of this checkout plus its runtime extra.
ISOLATION=$("$TORCH_PY" -c 'import setuptools' 2>/dev/null && echo --no-build-isolation || true)
"$TORCH_PY" -m pip wheel -q --no-deps $ISOLATION -w "$WORK/dist" .
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q "$(ls "$WORK"/dist/textcnn-*.whl)[runtime]"
SIZE=$(du -sm "$WORK/venv" | cut -f1)

# 3. Predict there, outside the checkout, and compare.
cd "$WORK"
"$WORK/venv/bin/python" - "$WORK" <<'PY'
import importlib.util, json, sys
from pathlib import Path
import numpy as np
assert importlib.util.find_spec("torch") is None, "torch is installed in the runtime venv"
import textcnn.runtime
assert "site-packages" in textcnn.runtime.__file__, textcnn.runtime.__file__
work = Path(sys.argv[1])
expected = json.loads((work / "expected.json").read_text())
pred = textcnn.runtime.load(work / "model")
assert pred.predict(expected["texts"]).tolist() == expected["labels"]
assert np.abs(pred.predict_proba(expected["texts"]) - np.array(expected["proba"])).max() < 1e-5
try:
    textcnn.TextCNNClassifier
    raise SystemExit("textcnn.TextCNNClassifier imported without torch")
except textcnn.MissingDependencyError as e:
    assert "textcnn[train]" in str(e)
PY
echo "runtime install: ok (a fresh venv with textcnn[runtime], no torch, ${SIZE} MB, gives the PyTorch model's answers)"
