import numpy as np
import pytest
import torch

import textcnn
from textcnn import ConfigError, DataFormatError, NotFittedError, TextCNNClassifier

from .conftest import TINY, make_corpus


def test_overfits_a_tiny_corpus(corpus):
    """spaCy-style: the loss falls well below its start and the training texts are learned."""
    clf = TextCNNClassifier(**{**TINY, "epochs": 12, "patience": 12}).fit(*corpus, validation_data=corpus)
    losses = [h["train_loss"] for h in clf.history_]
    assert losses[-1] < 0.5 * losses[0]
    assert clf.score(*corpus) >= 0.95


def test_predictions_follow_classes_and_keep_string_labels(fitted, dev_corpus):
    texts, labels = dev_corpus
    assert list(fitted.classes_) == ["neg", "pos"]
    proba = fitted.predict_proba(texts)
    assert proba.shape == (len(texts), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert (fitted.predict(texts) == fitted.classes_[proba.argmax(axis=1)]).all()
    assert fitted.score(texts, labels) > 0.8


def test_batch_equals_texts_one_by_one(fitted, dev_corpus):
    texts = dev_corpus[0][:12] + ["good", "x"]
    together = fitted.predict_proba(texts)
    alone = np.vstack([fitted.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_one_word_and_empty_texts_are_answered(fitted):
    proba = fitted.predict_proba(["great", "", "   "])
    assert np.isfinite(proba).all() and proba.shape == (3, 2)


def test_save_load_gives_identical_probabilities(fitted, model_dir, dev_corpus):
    loaded = textcnn.load(model_dir)
    np.testing.assert_array_equal(loaded.predict_proba(dev_corpus[0]), fitted.predict_proba(dev_corpus[0]))
    assert loaded.config_ == fitted.config_
    assert loaded.history_ == fitted.history_


def test_two_runs_with_one_seed_are_identical(corpus, dev_corpus):
    a = TextCNNClassifier(**TINY).fit(*corpus, validation_data=dev_corpus)
    b = TextCNNClassifier(**TINY).fit(*corpus, validation_data=dev_corpus)
    for (name, pa), pb in zip(a.model_.state_dict().items(), b.model_.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_without_dev_a_stratified_tenth_is_held_out(corpus, capsys):
    TextCNNClassifier(**{**TINY, "epochs": 1, "verbose": 1}).fit(*corpus)
    err = capsys.readouterr().err
    assert "no dev set given: holding out a stratified 10% of train (16 of 160 texts) as dev" in err


def test_integer_labels_and_pandas_input(corpus):
    pd = pytest.importorskip("pandas")
    texts, labels = corpus
    ints = [1 if y == "pos" else 0 for y in labels]
    clf = TextCNNClassifier(**TINY).fit(pd.Series(texts), pd.Series(ints))
    assert list(clf.classes_) == [0, 1]
    assert clf.predict(pd.Series(texts[:3])).tolist()[0] in (0, 1)


def test_class_weight_balanced_trains(corpus):
    texts, labels = corpus
    clf = TextCNNClassifier(**{**TINY, "class_weight": "balanced"}).fit(texts[:100] + texts[101::2], labels[:100] + labels[101::2])
    assert set(clf.predict(texts[:20])) <= {"pos", "neg"}


def test_multi_label_from_joined_labels():
    texts, labels = make_corpus(200, seed=4)
    multi = [y + ("|long" if len(t.split()) > 4 else "") for t, y in zip(texts, labels)]
    clf = TextCNNClassifier(**{**TINY, "epochs": 8}).fit(texts, multi)
    assert clf.multi_label_ and list(clf.classes_) == ["long", "neg", "pos"]
    assert clf.thresholds_.shape == (3,)
    pred = clf.predict(texts[:5])
    assert all(isinstance(p, list) for p in pred)
    report = clf.evaluate(texts, multi)
    assert {"micro_f1", "macro_f1", "per_class"} <= set(report)


def test_sklearn_contract(corpus):
    base = pytest.importorskip("sklearn.base")
    model_selection = pytest.importorskip("sklearn.model_selection")
    clf = TextCNNClassifier(embedding_size=16, verbose=0)
    clone = base.clone(clf)
    assert clone.get_params() == clf.get_params() and clone is not clf
    assert clf.set_params(feature_size=4).feature_size == 4
    texts, labels = corpus
    search = model_selection.GridSearchCV(
        TextCNNClassifier(**{**TINY, "epochs": 2}), {"feature_size": [4, 8]}, cv=2)
    search.fit(np.array(texts[:80]), np.array(labels[:80]))
    assert search.best_params_["feature_size"] in (4, 8)


def test_not_fitted_error():
    with pytest.raises(NotFittedError, match=r"not fitted yet. Call fit\(texts, labels\) first, or load"):
        TextCNNClassifier().predict(["hi"])


def test_input_errors(fitted, corpus):
    texts, labels = corpus
    with pytest.raises(DataFormatError, match="X has 160 texts but y has 3 labels"):
        TextCNNClassifier(**TINY).fit(texts, labels[:3])
    with pytest.raises(DataFormatError, match=r"X\[1\] is not a string \(got float: nan\)"):
        fitted.predict(["ok", float("nan")])
    with pytest.raises(DataFormatError, match="at least 2 are needed"):
        TextCNNClassifier(**TINY).fit(texts, ["pos"] * len(texts))
    with pytest.raises(DataFormatError, match=r"The dev labels 'meh' \(1 text\) are not among the training labels \(neg, pos\)"):
        TextCNNClassifier(**TINY).fit(texts, labels, validation_data=(texts[:2], ["pos", "meh"]))
    with pytest.raises(ConfigError, match="num_class=3 but the training labels hold 2 classes"):
        TextCNNClassifier(**{**TINY, "num_class": 3}).fit(texts, labels)
    with pytest.raises(DataFormatError, match=r"The evaluation labels 'unknown' \(1 text\) are not among the model's classes"):
        fitted.evaluate(["good"], ["unknown"])
    with pytest.raises(ConfigError, match="The 'top_k' parameter must be an int >= 1. Got 0"):
        fitted.predict_records(["good"], top_k=0)


def test_cuda_request_without_gpu_is_refused(corpus):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="PyTorch sees no CUDA GPU. Use --device cpu or auto"):
        TextCNNClassifier(**{**TINY, "device": "cuda"}).fit(*corpus)


def test_predict_records_shape(fitted):
    rec = fitted.predict_records(["a great film"], top_k=5)[0]
    assert rec["text"] == "a great film" and rec["label"] in ("pos", "neg")
    assert len(rec["top_k"]) == 2 and rec["top_k"][0]["label"] == rec["label"]
    assert rec["probability"] == rec["top_k"][0]["probability"]


# ----- issue 12: monitors, random state, tiny data, NaN scores, class weights -----

def test_a_monitor_the_task_does_not_report_is_refused_before_training(corpus, capsys):
    """micro_f1 on single-label data used to train a whole epoch, then die with a KeyError."""
    with pytest.raises(ConfigError, match=r"The 'monitor' parameter \(--monitor\) must be one of 'auto', 'accuracy', "
                                          r"'macro_f1', 'loss' for single-label data. Got 'micro_f1' instead"):
        TextCNNClassifier(**{**TINY, "monitor": "micro_f1", "verbose": 1}).fit(*corpus)
    assert "epoch 1/" not in capsys.readouterr().err


@pytest.mark.parametrize("monitor", ["accuracy", "macro_f1", "loss"])
def test_every_single_label_monitor_trains(monitor, corpus):
    clf = TextCNNClassifier(**{**TINY, "epochs": 1, "monitor": monitor}).fit(*corpus)
    assert f"dev_{monitor}" in clf.history_[0]


def test_fit_model_names_the_reported_metrics_for_an_unknown_monitor():
    from textcnn.training import TrainSettings, fit_model

    model = torch.nn.Sequential(torch.nn.Embedding(5, 2), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    settings = TrainSettings(epochs=1, batch_size=2, learning_rate=0.1, weight_decay=0, patience=0,
                             monitor="micro_f1", seed=0, progress=False)
    with pytest.raises(ConfigError, match=r"reports only 'loss', 'accuracy'"):
        fit_model(model, [[1, 2], [3, 4]], torch.tensor([0, 1]), torch.nn.functional.cross_entropy,
                  lambda m: {"loss": 0.5, "accuracy": 1.0}, settings, lambda *a: None)


def test_a_nan_dev_score_stops_training_with_advice():
    from textcnn.errors import TrainingError
    from textcnn.training import TrainSettings, fit_model

    model = torch.nn.Sequential(torch.nn.Embedding(5, 2), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    settings = TrainSettings(epochs=3, batch_size=2, learning_rate=0.1, weight_decay=0, patience=3,
                             monitor="loss", seed=0, progress=False)
    with pytest.raises(TrainingError, match=r"Epoch 1 gave dev_loss=nan: .*Lower --learning-rate"):
        fit_model(model, [[1, 2], [3, 4]], torch.tensor([0, 1]), torch.nn.functional.cross_entropy,
                  lambda m: {"loss": float("nan"), "accuracy": 0.5}, settings, lambda *a: None)


def test_fit_leaves_the_global_random_state_alone_and_stays_reproducible(corpus, dev_corpus):
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    a = TextCNNClassifier(**{**TINY, "epochs": 2}).fit(*corpus)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = TextCNNClassifier(**{**TINY, "epochs": 2}).fit(*corpus)
    for (name, pa), pb in zip(a.model_.state_dict().items(), b.model_.state_dict().values()):
        assert torch.equal(pa, pb), name


@pytest.mark.parametrize("per_class", [2, 3, 5])
def test_tiny_classes_still_get_a_dev_set(per_class):
    texts = [f"good film {i}" for i in range(per_class)] + [f"bad film {i}" for i in range(per_class)]
    labels = ["pos"] * per_class + ["neg"] * per_class
    clf = TextCNNClassifier(**{**TINY, "epochs": 2, "min_freq": 1}).fit(texts, labels)
    assert all(np.isfinite(h["dev_loss"]) for h in clf.history_)


def test_one_text_per_class_is_refused_with_advice():
    with pytest.raises(DataFormatError, match=r"Cannot hold out a dev set: each of the 2 training texts has a class of "
                                              r"its own.*--dev DEV_FILE, or validation_data"):
        TextCNNClassifier(**TINY).fit(["good", "bad"], ["pos", "neg"])


def test_balanced_class_weight_changes_the_loss_and_the_model(corpus):
    texts, labels = corpus
    keep = [i for i, y in enumerate(labels) if y == "pos" or i % 8 == 1]  # 80 pos, 20 neg
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    plain = TextCNNClassifier(**{**TINY, "epochs": 2}).fit(texts, labels)
    weighted = TextCNNClassifier(**{**TINY, "epochs": 2, "class_weight": "balanced"}).fit(texts, labels)
    targets = torch.tensor([1, 1, 1, 1, 0])  # pos is the common class: a miss on neg costs more when balanced
    logits = torch.tensor([[0.0, 2.0]] * 4 + [[0.0, 2.0]])
    device = torch.device("cpu")
    assert not torch.isclose(weighted._loss_fn(targets, device)(logits, targets), plain._loss_fn(targets, device)(logits, targets))
    assert not torch.equal(weighted.model_.fc.weight, plain.model_.fc.weight)
