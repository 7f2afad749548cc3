import json
import shutil
import subprocess
from pathlib import Path

import pytest

import textcnn
from textcnn import ModelFormatError


@pytest.fixture
def copy(model_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(model_dir, dst)
    return dst


def test_directory_layout(model_dir):
    names = sorted(p.name for p in Path(model_dir).iterdir())
    assert names == ["README.md", "card.json", "config.json", "history.json", "labels.json", "model.safetensors", "tokenizer.json", "vocab.json"]
    meta = json.loads((model_dir / "config.json").read_text())
    assert meta["format_version"] == 1 and meta["textcnn_version"] == textcnn.__version__
    assert meta["config"]["num_class"] == 2 and meta["config"]["tokenizer"] == "word"
    assert json.loads((model_dir / "tokenizer.json").read_text()) == {"name": "word", "lowercase": True}


def test_missing_file(copy):
    (copy / "vocab.json").unlink()
    with pytest.raises(ModelFormatError, match="has no vocab.json, so it is not a complete textcnn model directory"):
        textcnn.load(copy)


def test_damaged_json_and_weights(copy):
    (copy / "labels.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelFormatError, match="labels.json is damaged"):
        textcnn.load(copy)


def test_damaged_weights(copy):
    (copy / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ModelFormatError, match="model.safetensors is damaged"):
        textcnn.load(copy)


def test_weights_from_another_model(copy, tmp_path, corpus):
    other = textcnn.TextCNNClassifier(embedding_size=8, feature_size=3, window_sizes=(2,), epochs=1, verbose=0).fit(*corpus)
    other.save(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.safetensors", copy / "model.safetensors")
    with pytest.raises(ModelFormatError, match="does not match config.json"):
        textcnn.load(copy)


def test_newer_format_is_refused(copy):
    meta = json.loads((copy / "config.json").read_text())
    meta["format_version"] = 99
    (copy / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="model format 99 .* reads formats up to 1. Upgrade with: pip install -U textcnn"):
        textcnn.load(copy)


def test_not_a_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="is not a directory. Pass the directory written by"):
        textcnn.load(tmp_path / "nothing")


def test_save_replaces_a_model_atomically_and_refuses_foreign_dirs(fitted, copy, tmp_path):
    fitted.save(copy)  # replacing an existing model works
    assert not [p for p in copy.parent.iterdir() if p.name.startswith(".")], "no temporary leftovers"
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"x")
    with pytest.raises(ModelFormatError, match="exists, is not empty and holds no textcnn model"):
        fitted.save(foreign)
    assert (foreign / "cat.jpg").exists()


def test_no_pickle_in_the_package():
    src = Path(textcnn.__file__).parent
    out = subprocess.run(["grep", "-rnE", r"^[^#]*(import pickle|cPickle|torch[.]load[(])", str(src)], capture_output=True, text=True)
    assert out.stdout == ""
