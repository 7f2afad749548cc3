"""The training loop's callbacks, max_steps, precision and devices."""

from __future__ import annotations

import json

import pytest
import torch

from textcnn import ConfigError, TextCNNClassifier
from textcnn.serialization import safetensors_bytes
from textcnn.training import Callback, autocast_dtype

from .conftest import TINY

FLOAT32 = {**TINY, "precision": "float32", "device": "cpu"}


class Recorder(Callback):
    """Counts steps and epochs; stops after ``stop_after`` epochs."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.steps, self.epochs, self.began, self.ended, self.stop_after = 0, [], 0, 0, stop_after

    def on_train_begin(self, loop):
        self.began += 1

    def on_step_end(self, loop):
        self.steps += 1
        assert loop.step == self.steps

    def on_epoch_end(self, loop, entry):
        self.epochs.append(entry["epoch"])
        if self.stop_after is not None and loop.epoch >= self.stop_after:
            loop.stop = True

    def on_train_end(self, loop):
        self.ended += 1


def _weights(clf) -> dict:
    return {k: v.clone() for k, v in clf.model_.state_dict().items()}


def test_a_callback_sees_every_step_and_epoch(corpus, dev_corpus):
    rec = Recorder()
    clf = TextCNNClassifier(**FLOAT32).fit(*corpus, validation_data=dev_corpus, callbacks=[rec])
    steps_per_epoch = -(-len(corpus[0]) // TINY["batch_size"])
    assert (rec.began, rec.ended) == (1, 1)
    assert rec.epochs == [1, 2, 3, 4] == [h["epoch"] for h in clf.history_]
    assert rec.steps == 4 * steps_per_epoch


def test_a_callback_stopping_after_one_epoch_equals_one_epoch(corpus, dev_corpus):
    stopped = TextCNNClassifier(**FLOAT32).fit(*corpus, validation_data=dev_corpus, callbacks=[Recorder(stop_after=1)])
    one = TextCNNClassifier(**{**FLOAT32, "epochs": 1}).fit(*corpus, validation_data=dev_corpus)
    assert len(stopped.history_) == 1
    for name, value in _weights(one).items():
        assert torch.equal(value, stopped.model_.state_dict()[name]), name


def test_max_steps_stops_mid_epoch_and_scores_the_dev_set(corpus, dev_corpus):
    rec = Recorder()
    clf = TextCNNClassifier(**{**FLOAT32, "max_steps": 3}).fit(*corpus, validation_data=dev_corpus, callbacks=[rec])
    assert rec.steps == 3
    assert len(clf.history_) == 1 and clf.history_[0]["texts"] == 3 * TINY["batch_size"]
    assert "dev_accuracy" in clf.history_[0]


def test_max_steps_is_validated():
    with pytest.raises(ConfigError, match=r"The 'max_steps' parameter must be None or an int >= 1. Got 0 instead."):
        TextCNNClassifier(max_steps=0).fit(["a b"] * 4, ["x", "y"] * 2)


def test_forced_bfloat16_trains_close_to_float32(corpus, dev_corpus):
    f32 = TextCNNClassifier(**FLOAT32).fit(*corpus, validation_data=dev_corpus)
    bf16 = TextCNNClassifier(**{**FLOAT32, "precision": "bfloat16"}).fit(*corpus, validation_data=dev_corpus)
    a, b = f32.predict_proba(dev_corpus[0]), bf16.predict_proba(dev_corpus[0])
    assert abs(f32.history_[0]["train_loss"] - bf16.history_[0]["train_loss"]) < 0.02
    assert abs(a - b).max() < 0.1
    assert not all(torch.equal(v, bf16.model_.state_dict()[k]) for k, v in f32.model_.state_dict().items()), \
        "bfloat16 autocast did not run: the weights are bit-identical to float32"


def test_precision_choices():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("float32", cpu) is None
    assert autocast_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError, match="'float16', which is for CUDA GPUs only"):
        autocast_dtype("float16", cpu)
    assert autocast_dtype("float16", cuda) == torch.float16
    with pytest.raises(ConfigError, match=r"The 'precision' parameter must be one of"):
        TextCNNClassifier(precision="fp8").fit(["a b"] * 4, ["x", "y"] * 2)


@pytest.mark.parametrize("device", ["cuda:x", "gpu", "cuda:"])
def test_a_bad_device_is_named(device):
    with pytest.raises(ConfigError, match=r"The 'device' parameter must be one of .* or 'cuda:N'"):
        TextCNNClassifier(device=device).fit(["a b"] * 4, ["x", "y"] * 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ConfigError, match=r"device='cuda:1' was asked for, but PyTorch sees no CUDA GPU"):
        TextCNNClassifier(device="cuda:1").fit(["a b"] * 4, ["x", "y"] * 2)


def test_safetensors_bytes_do_not_depend_on_the_metadata_order():
    tensors = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2)}
    keys = [f"k{i}" for i in range(12)]
    forward = safetensors_bytes(tensors, {k: "v" for k in keys})
    backward = safetensors_bytes(tensors, {k: "v" for k in reversed(keys)})
    assert forward == backward
    n = int.from_bytes(forward[:8], "little")
    assert n % 8 == 0 and list(json.loads(forward[8 : 8 + n])["__metadata__"]) == sorted(keys)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_training_predicting_and_explaining_on_cuda(corpus, dev_corpus, precision):
    clf = TextCNNClassifier(**{**TINY, "device": "cuda", "precision": precision}).fit(*corpus, validation_data=dev_corpus)
    assert next(clf.model_.parameters()).device.type == "cuda"
    assert clf.score(*dev_corpus) > 0.6
    assert clf.explain(dev_corpus[0][:2])[0]["label"] in clf.classes_
