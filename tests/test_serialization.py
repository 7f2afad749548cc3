import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import textcnn
from textcnn import ModelFormatError
from textcnn.model import build_model

DATA = Path(__file__).parent / "data"
PROBE = ["a great film", "the plot was awful", "story"]
SIGNED = ["config.json", "vocab.json", "labels.json", "tokenizer.json", "model.safetensors", "history.json"]
# Written by textcnn 0.1 (format 1, no manifest.json); the probabilities it gave for PROBE then.
FORMAT1_PROBA = [[0.483328, 0.516672], [0.461818, 0.538182], [0.468833, 0.531167]]
FORMAT1_MULTI_PROBA = [[0.48963, 0.544338, 0.545565], [0.474273, 0.543889, 0.550582], [0.47725, 0.549015, 0.550092]]


@pytest.fixture
def copy(model_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(model_dir, dst)
    return dst


def resign(model: Path) -> None:
    """Rewrites manifest.json for the files as they are now: what a crafted (not damaged) directory holds."""
    sums = {n: hashlib.sha256((model / n).read_bytes()).hexdigest() for n in SIGNED}
    (model / "manifest.json").write_text(json.dumps({"sha256": sums}))


def edit_json(model: Path, name: str, change) -> None:
    """Replaces a JSON file by change(its object) (or change's value when it is not callable), re-signed."""
    file = model / name
    obj = change(json.loads(file.read_text())) if callable(change) else change
    file.write_text(json.dumps(obj))
    resign(model)


def edit_weights(model: Path, change) -> None:
    state = load_file(str(model / "model.safetensors"))
    change(state)
    save_file(state, str(model / "model.safetensors"))
    resign(model)


def test_directory_layout(model_dir):
    names = sorted(p.name for p in Path(model_dir).iterdir())
    assert names == ["README.md", "card.json", "config.json", "history.json", "labels.json", "manifest.json", "model.safetensors",
                     "tokenizer.json", "vocab.json"]
    meta = json.loads((model_dir / "config.json").read_text())
    assert meta["format_version"] == 2 and meta["textcnn_version"] == textcnn.__version__
    assert meta["config"]["num_class"] == 2 and meta["config"]["tokenizer"] == "word"
    assert json.loads((model_dir / "tokenizer.json").read_text()) == {"name": "word", "lowercase": True}
    sums = json.loads((model_dir / "manifest.json").read_text())["sha256"]
    assert sums == {n: hashlib.sha256((model_dir / n).read_bytes()).hexdigest() for n in SIGNED}


@pytest.mark.parametrize("name, proba", [("model-format1", FORMAT1_PROBA),
                                         ("model-format1-multilabel", FORMAT1_MULTI_PROBA)])
def test_format1_directories_of_textcnn_0_1_still_load(name, proba, tmp_path):
    clf = textcnn.load(DATA / name)
    np.testing.assert_allclose(clf.predict_proba(PROBE), proba, atol=2e-6)
    if clf.multi_label_:
        np.testing.assert_allclose(clf.thresholds_, [0.44, 0.5, 0.5])
    clf.save(tmp_path / "again")  # and saving one writes the current format
    assert json.loads((tmp_path / "again" / "config.json").read_text())["format_version"] == 2
    np.testing.assert_allclose(textcnn.load(tmp_path / "again").predict_proba(PROBE), proba, atol=2e-6)


def test_missing_file(copy):
    (copy / "vocab.json").unlink()
    with pytest.raises(ModelFormatError, match=r"^'[^']*' has no vocab.json, so it is not a complete textcnn model directory"):
        textcnn.load(copy)


def test_missing_manifest_in_format_2(copy):
    (copy / "manifest.json").unlink()
    with pytest.raises(ModelFormatError, match=r"^'[^']*' has no manifest.json, so it is not a complete"):
        textcnn.load(copy)


def test_damaged_json(copy):
    (copy / "labels.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelFormatError, match="labels.json is damaged"):
        textcnn.load(copy)
    resign(copy)
    with pytest.raises(ModelFormatError, match="labels.json is damaged .not valid JSON"):
        textcnn.load(copy)


def test_a_label_renamed_in_valid_json_is_caught_by_the_checksum(copy):
    text = (copy / "labels.json").read_text()
    (copy / "labels.json").write_text(text.replace('"pos"', '"pas"'))
    with pytest.raises(ModelFormatError, match=r"labels.json is damaged or was changed: its SHA-256 differs"):
        textcnn.load(copy)


@pytest.mark.parametrize("content", [b"", b"\x00" * 20])
def test_damaged_weights(copy, content):
    (copy / "model.safetensors").write_bytes(content)
    resign(copy)
    with pytest.raises(ModelFormatError, match="model.safetensors is damaged"):
        textcnn.load(copy)


def test_truncated_weights(copy):
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    resign(copy)
    with pytest.raises(ModelFormatError, match="model.safetensors is damaged"):
        textcnn.load(copy)


def test_weights_from_another_model(copy, tmp_path, corpus):
    other = textcnn.TextCNNClassifier(embedding_size=8, feature_size=3, window_sizes=(2,), epochs=1, verbose=0).fit(*corpus)
    other.save(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.safetensors", copy / "model.safetensors")
    resign(copy)
    with pytest.raises(ModelFormatError, match="does not match config.json .missing tensors: conv"):
        textcnn.load(copy)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("convs.0.bias"), r"missing tensors: convs.0.bias"),
    (lambda s: s.update(extra=torch.zeros(2)), r"unexpected tensors: extra"),
    (lambda s: s.update({"convs.0.weight": torch.zeros(8, 16, 5)}), r"wrong shapes: convs.0.weight \(8, 16, 5\) \(expected \(8, 16, 2\)\)"),
    (lambda s: s.update({"fc.bias": s["fc.bias"].double()}), r"wrong dtypes: fc.bias torch.float64 \(expected torch.float32\)"),
    (lambda s: s.update({"fc.weight": torch.zeros(3, 16)}), r"the last layer has 3 outputs, but labels.json and config.json hold 2"),
    (lambda s: s["fc.bias"].fill_(float("nan")), r"NaN or infinite weights in fc.bias"),
])
def test_tensors_that_do_not_fit_the_config(copy, change, message):
    edit_weights(copy, change)
    with pytest.raises(ModelFormatError, match=message):
        textcnn.load(copy)


def test_embedding_rows_must_match_the_vocabulary(copy):
    edit_json(copy, "vocab.json", lambda v: {"tokens": v["tokens"] + ["zebra"]})
    with pytest.raises(ModelFormatError, match=r"embedding table of (\d+) rows, but vocab.json holds \d+ tokens"):
        textcnn.load(copy)


@pytest.mark.parametrize("vocab, message", [
    ({}, r'vocab.json is not valid: it must be a JSON object \{"tokens"'),
    ({"tokens": ["<pad>", "<unk>", 3]}, "'tokens' must be a list of strings"),
    ({"tokens": "<pad><unk>"}, "'tokens' must be a list of strings"),
    ({"tokens": ["<pad>", "<unk>", "good", "bad", "good"]}, "the token 'good' occurs more than once .ids 2 and 4."),
    ({"tokens": ["<unk>", "<pad>", "good"]}, r"'tokens' must start with '<pad>' \(id 0\) and '<unk>' \(id 1\)"),
    ({"tokens": ["<pad>", "<unk>"], "counts": {}}, r"unknown keys \['counts'\]"),
])
def test_bad_vocabularies(copy, vocab, message):
    edit_json(copy, "vocab.json", vocab)
    with pytest.raises(ModelFormatError, match=message):
        textcnn.load(copy)


@pytest.mark.parametrize("spec, message", [
    ({"name": "word", "lowercase": True, "strip_accents": True}, r"tokenizer.json is not valid: it has unknown keys \['strip_accents'\]"),
    ({"name": "sentencepiece", "lowercase": True}, r"'name' is 'sentencepiece', not one of 'char', 'jieba', 'word'"),
    ({"name": "word", "lowercase": "yes"}, "'lowercase' must be true or false"),
    ({"name": "char", "lowercase": True}, r"describes tokenizer .* but config.json says tokenizer='word'"),
])
def test_bad_tokenizer_specs(copy, spec, message):
    edit_json(copy, "tokenizer.json", spec)
    with pytest.raises(ModelFormatError, match=message):
        textcnn.load(copy)


@pytest.mark.parametrize("labels, message", [
    ({"classes": ["neg", "pos", "neu"], "thresholds": None}, "labels.json holds 3 classes but config.json says num_class=2"),
    ({"classes": ["neg", "neg"], "thresholds": None}, "'classes' lists a label twice"),
    ({"classes": ["neg", None], "thresholds": None}, "'classes' must be a list of labels"),
    ({"classes": ["neg", "pos"], "thresholds": [0.5, 0.5]}, "holds thresholds, but the model is single-label"),
    ({"labels": ["neg", "pos"]}, r"must hold \{\"classes\""),
])
def test_bad_labels(copy, labels, message):
    edit_json(copy, "labels.json", labels)
    with pytest.raises(ModelFormatError, match=message):
        textcnn.load(copy)


def test_class_count_must_match_the_last_layer(copy):
    edit_json(copy, "config.json", lambda m: {**m, "config": {**m["config"], "num_class": 3}})
    edit_json(copy, "labels.json", {"classes": ["neg", "neu", "pos"], "thresholds": None})
    with pytest.raises(ModelFormatError, match="the last layer has 2 outputs, but labels.json and config.json hold 3"):
        textcnn.load(copy)


@pytest.mark.parametrize("thresholds", [None, [0.5, 0.5], [0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 2.0], [0.5, "x", 0.5]])
def test_multilabel_thresholds_one_per_class(tmp_path, thresholds):
    model = tmp_path / "m"
    shutil.copytree(DATA / "model-format1-multilabel", model)
    edit_json(model, "labels.json", lambda labels: {**labels, "thresholds": thresholds})
    with pytest.raises(ModelFormatError, match=r"labels.json: a multi-label model needs 'thresholds', one number in \[0, 1\] per class \(3\)"):
        textcnn.load(model)


@pytest.mark.parametrize("change, message", [
    (lambda m: {**m, "task": "multi-label"}, r"'task' is 'multi-label' but the config says multi_label=False"),
    (lambda m: {**m, "task": "regression"}, r"'task' must be 'single-label' or 'multi-label', not 'regression'"),
    (lambda m: {**m, "config": {**m["config"], "dropout": 0.5}}, "holds an invalid config: Unknown parameter 'dropout'"),
    (lambda m: {**m, "config": {**m["config"], "num_class": None}}, "'num_class' is null"),
    (lambda m: {**m, "config": [1, 2]}, "'config' must be a JSON object"),
    (lambda m: {**m, "extra": 1}, r"config.json has unknown keys \['extra'\]"),
    (lambda m: {**m, "format_version": "2"}, r"has no valid 'format_version' \(got '2'\)"),
])
def test_bad_configs(copy, change, message):
    edit_json(copy, "config.json", lambda m: {**m, "config": {**m["config"], "multi_label": False}})
    edit_json(copy, "config.json", change)
    with pytest.raises(ModelFormatError, match=message):
        textcnn.load(copy)


@pytest.mark.parametrize("name", ["config.json", "vocab.json", "labels.json", "tokenizer.json", "manifest.json"])
@pytest.mark.parametrize("value, kind", [([1, 2], "list"), (3, "number"), ("x", "string"), (None, "null")])
def test_json_that_is_not_an_object(copy, name, value, kind):
    edit_json(copy, name, value)
    if name == "manifest.json":
        (copy / name).write_text(json.dumps(value))
    with pytest.raises(ModelFormatError, match=f"{name} must hold a JSON object, but holds a {kind}"):
        textcnn.load(copy)


def test_history_must_be_a_list(copy):
    edit_json(copy, "history.json", {"epoch": 1})
    with pytest.raises(ModelFormatError, match="history.json must hold a JSON list of objects"):
        textcnn.load(copy)


def test_newer_format_is_refused(copy):
    edit_json(copy, "config.json", lambda m: {**m, "format_version": 99})
    with pytest.raises(ModelFormatError, match="model format 99 .* reads formats up to 3. Upgrade with: pip install -U textcnn"):
        textcnn.load(copy)
    (copy / "manifest.json").write_text('{"checksums": "a newer layout"}')
    with pytest.raises(ModelFormatError, match="model format 99 .* Upgrade with"):
        textcnn.load(copy)


def test_not_a_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="is not a directory. Pass the directory written by"):
        textcnn.load(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelFormatError, match="is not a directory"):
        textcnn.load(tmp_path / "file")


def test_a_fifo_instead_of_a_file_does_not_hang(copy):
    (copy / "vocab.json").unlink()
    os.mkfifo(copy / "vocab.json")
    with pytest.raises(ModelFormatError, match="Cannot read .*vocab.json: it is not a regular file"):
        textcnn.load(copy)


def test_save_replaces_a_model_atomically_and_refuses_foreign_dirs(fitted, copy, tmp_path):
    fitted.save(copy)  # replacing an existing model works
    assert not [p for p in copy.parent.iterdir() if p.name.startswith(".")], "no temporary leftovers"
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"x")
    with pytest.raises(ModelFormatError, match="exists, is not empty and holds no textcnn model"):
        fitted.save(foreign)
    assert (foreign / "cat.jpg").exists()


def test_saving_through_a_symlink_replaces_the_model_it_points_to(fitted, copy, tmp_path):
    link = tmp_path / "current"
    link.symlink_to(copy)
    fitted.save(link)
    assert link.is_symlink() and (copy / "manifest.json").exists()
    assert textcnn.load(link).classes_.tolist() == fitted.classes_.tolist()


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_saved_modes_follow_the_umask(fitted, tmp_path, umask):
    old = os.umask(umask)
    try:
        fitted.save(tmp_path / "m")
        fitted.save(tmp_path / "m")  # a replacement too
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o777 & ~umask
    for file in (tmp_path / "m").iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~umask, file.name


def test_load_and_build_model_leave_the_global_random_state_alone(model_dir, fitted):
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    textcnn.load(model_dir)
    first = build_model(fitted.config_, 50)
    assert torch.equal(torch.random.get_rng_state(), before)
    second = build_model(fitted.config_, 50)  # still a function of the config's seed alone
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_loading_keeps_the_weights_trainable(model_dir, corpus):
    clf = textcnn.load(model_dir)
    assert all(p.requires_grad for p in clf.model_.parameters())
    assert not any(p.is_meta for p in clf.model_.parameters())
    clf.model_.fc.bias.data.add_(1.0)  # real, writable storage


def test_no_pickle_in_the_package():
    src = Path(textcnn.__file__).parent
    out = subprocess.run(["grep", "-rnE", r"^[^#]*(import pickle|cPickle|torch[.]load[(])", str(src)], capture_output=True, text=True)
    assert out.stdout == ""

