"""The fast paths agree with the plain float32 model, fall back cleanly, and change no saved file."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from textcnn import TextCNNClassifier, load
from textcnn.data import pad_batch
from textcnn.errors import ConfigError
from textcnn.fastpath import Engine, Predictor, TableEngine, deduplicated_forward, table_budget_bytes, table_bytes
from textcnn.model import TextCNN
from textcnn.tokenizers import make_tokenizer
from textcnn.training import make_optimizer, sparse_embeddings, training_path

WORDS = "good great fine fun bad awful dull poor plot film actor scene".split()


def small_model(**changes) -> TextCNN:
    torch.manual_seed(0)
    args = dict(vocab_size=40, embedding_size=8, feature_size=6, window_sizes=(2, 3, 5), num_class=3)
    return TextCNN(**{**args, **changes}).eval()


def ragged_ids() -> torch.Tensor:
    """Texts of lengths 9, 5, 2 (shorter than the widest window) and 1, right-padded with 0."""
    ids = torch.randint(2, 40, (4, 9), generator=torch.Generator().manual_seed(1))  # (B, T)
    for row, n in enumerate([9, 5, 2, 1]):
        ids[row, n:] = 0
    return ids


@pytest.mark.parametrize("kernel", ["fused", "embedding_bag"])
@pytest.mark.parametrize("changes", [{}, {"batch_norm": True}, {"multichannel": True}, {"window_sizes": (1, 4)}])
def test_table_engine_matches_the_float32_forward(changes, kernel, monkeypatch):
    if kernel == "embedding_bag":
        monkeypatch.setenv("TEXTCNN_NO_NUMBA", "1")
    model = small_model(**changes)
    if model.norms is not None:  # non-trivial running statistics, some negative scales
        for norm in model.norms:
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2)
            norm.weight.data.uniform_(-1, 1)
    engine = TableEngine(model)
    assert engine.fused_for(1) == (kernel == "fused" and model.norms is None)
    for ids in (ragged_ids(), ragged_ids()[:, :2], ragged_ids()[2:3]):
        with torch.no_grad():
            expected = model(ids)  # (B, C)
        assert torch.allclose(engine(ids), expected, atol=1e-5)
        assert torch.allclose(engine.pool(ids), model.pool(ids), atol=1e-5)
        if engine.fused_for(1):
            lists = [row[row != 0].tolist() for row in ids]
            assert torch.allclose(engine.logits_lists(lists), expected, atol=1e-5)


def test_fused_kernel_on_lists_matches_the_model_with_threads_and_chunks(monkeypatch):
    import textcnn.fastpath as fastpath

    model = small_model(window_sizes=(2, 3, 5))
    gen = torch.Generator().manual_seed(2)
    lengths = [0, 1, 2, 4, 5, 6, 30, 3, 0, 17, 1]  # empty, shorter than every window, and long
    ids = [torch.randint(1, 40, (n,), generator=gen).tolist() for n in lengths]
    engine = TableEngine(model)
    assert engine.fused_for(1)
    with torch.no_grad():
        expected = torch.cat([model(pad_batch([x], 5)) for x in ids])  # one text at a time, padded
    assert torch.allclose(engine.logits_lists(ids), expected, atol=1e-5)
    # Split over threads (by tokens) and over chunks of texts: the same numbers, in the same order.
    monkeypatch.setattr(fastpath, "PARALLEL_MIN_TOKENS", 1)
    monkeypatch.setattr(fastpath, "LIST_CHUNK", 4)
    assert torch.allclose(engine.logits_lists(ids), expected, atol=1e-5)
    assert engine.logits_lists([]).shape == (0, 3)


def test_deduplicated_training_forward_matches_values_and_gradients():
    model = small_model()
    ids = ragged_ids()
    grads = []
    for forward in (model, lambda x: deduplicated_forward(model, x)):
        model.zero_grad()
        out = forward(ids)  # eval mode: dropout off, so both are deterministic
        F.cross_entropy(out, torch.tensor([0, 1, 2, 0])).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        assert torch.allclose(out, model(ids), atol=1e-5)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_training_uses_sparse_embedding_gradients_and_restores_the_module():
    model = small_model()
    optimizers = make_optimizer(model, 1e-3, 0.01)
    assert [type(o).__name__ for o in optimizers] == ["Adam", "SparseAdam"]
    with sparse_embeddings(model):
        deduplicated_forward(model, ragged_ids()).sum().backward()
        assert model.embedding.weight.grad.is_sparse
    assert model.embedding.sparse is False
    assert "SparseAdam" in training_path(model, torch.device("cpu"))
    assert "own forward" in training_path(small_model(batch_norm=True), torch.device("cpu"))


@pytest.fixture(scope="module")
def fitted() -> TextCNNClassifier:
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(1, 12))) for _ in range(160)]
    labels = ["pos" if sum(w in t.split() for w in WORDS[:4]) >= sum(w in t.split() for w in WORDS[4:8]) else "neg"
              for t in texts]
    clf = TextCNNClassifier(embedding_size=16, feature_size=8, window_sizes=(2, 3, 4), epochs=3, verbose=0)
    return clf.fit(texts, labels)


def probe_texts() -> list[str]:
    return ["good", "bad film", "a great fun plot with a dull actor", "", "poor poor awful scene", "fine film " * 30]


def test_classifier_fast_path_agrees_with_the_plain_forward(fitted):
    ids = fitted.encode(probe_texts())
    plain = fitted._logits_from_ids(ids, fast=False)
    fast = fitted._logits_from_ids(ids)
    assert isinstance(fitted._forward(torch.device("cpu")), TableEngine)
    assert torch.allclose(fast, plain, atol=1e-5)
    proba = fitted.predict_proba(probe_texts())
    assert np.abs(proba - F.softmax(plain, dim=1).numpy()).max() < 1e-3
    assert list(fitted.predict(probe_texts())) == list(fitted.classes_[plain.argmax(1).numpy()])
    # One text alone gives the same answer as inside a batch.
    assert np.allclose(fitted.predict_proba(probe_texts()[2:3]), proba[2:3], atol=1e-6)
    # Many texts (embedding_bag on length-sorted batches) give the same as few (the fused kernel).
    many = probe_texts() * 7
    assert np.allclose(fitted.predict_proba(many), np.tile(proba, (7, 1)), atol=1e-6)


def _scale_data(m):  # a write through .data: PyTorch's version counter does not see it
    m.convs[0].weight.data.mul_(-2.0)


def _redraw_embedding_data(m):
    new = torch.randn(m.embedding.weight.shape, generator=torch.Generator().manual_seed(3))
    m.embedding.weight.data.copy_(new.index_fill_(0, torch.tensor([0]), 0.0))  # the padding row stays zero


def _bias_data(m):
    m.convs[1].bias.data.add_(0.5)


def _assign_data(m):
    m.convs[0].weight.data = -2.0 * m.convs[0].weight.data


def _no_grad_in_place(m):
    with torch.no_grad():
        m.convs[0].weight.mul_(-2.0)
        m.embedding.weight[2:5] = 0.3  # a few rows only


def _inference_mode_in_place(m):
    with torch.inference_mode():
        m.convs[2].bias.add_(0.5)


def _load_state_dict(m):
    m.load_state_dict({k: -v if k.startswith("convs") else v for k, v in m.state_dict().items()})


def _load_state_dict_assign(m):  # new Parameter objects: the old ones are left untouched
    m.load_state_dict({k: -v.clone() if k.startswith("convs") else v for k, v in m.state_dict().items()}, assign=True)


def _new_parameter(m):
    m.convs[0].weight = torch.nn.Parameter(-2.0 * m.convs[0].weight.detach())


def _numpy_rows_then_weights_changed(m):  # few values, behind PyTorch's back: the model must be told
    m.embedding.weight.detach().numpy()[2:6] = 0.4
    m.weights_changed()


def _warm_start_training(m):  # more steps of textcnn's own optimizers on the same module
    optimizers = make_optimizer(m, 0.05, 0.0)
    ids = pad_batch(fitted_ids(), 4)
    m.train()
    with sparse_embeddings(m):
        for _ in range(3):
            for o in optimizers:
                o.zero_grad()
            F.cross_entropy(deduplicated_forward(m, ids), torch.ones(len(ids), dtype=torch.long)).backward()
            for o in optimizers:
                o.step()
    m.eval()


def fitted_ids() -> list[list[int]]:
    return [[3, 4, 5], [6, 7], [8, 9, 10, 11, 2], [5]]


WEIGHT_EDITS = [_scale_data, _redraw_embedding_data, _bias_data, _assign_data, _no_grad_in_place,
                _inference_mode_in_place, _load_state_dict, _load_state_dict_assign, _new_parameter,
                _numpy_rows_then_weights_changed, _warm_start_training]


@pytest.mark.parametrize("edit", WEIGHT_EDITS, ids=lambda f: f.__name__.strip("_"))
def test_tables_follow_weight_changes(fitted, edit):
    clf = copy.deepcopy(fitted)
    texts = probe_texts()
    before = clf.predict_proba(texts)
    clf.predict_proba(texts * 7)  # builds the tables; both engines (fused kernel: few texts; embedding_bag: many)
    edit(clf.model_)
    plain = F.softmax(clf._logits_from_ids(clf.encode(texts), fast=False), 1).numpy()
    assert not np.allclose(before, plain, atol=1e-4)
    assert np.allclose(clf.predict_proba(texts), plain, atol=1e-5)
    assert np.allclose(clf.predict_proba(texts * 7), np.tile(plain, (7, 1)), atol=1e-5)


def test_tables_follow_a_new_fit(fitted):
    clf = copy.deepcopy(fitted)
    texts = probe_texts()
    before = clf.predict_proba(texts)
    rng = np.random.default_rng(1)
    clf.fit([" ".join(rng.choice(WORDS, size=4)) for _ in range(60)], ["a", "b", "c"] * 20)
    after = clf.predict_proba(texts)
    assert after.shape == (len(texts), 3) and before.shape != after.shape
    plain = F.softmax(clf._logits_from_ids(clf.encode(texts), fast=False), 1).numpy()
    assert np.allclose(after, plain, atol=1e-5)


def test_weights_key_is_unchanged_by_reads_and_unrelated_modules():
    model = small_model()
    engine = TableEngine(model)
    with torch.no_grad():
        model(ragged_ids())
    model.fc.weight.data.mul_(2.0)  # read live at each call: not part of the tables
    TextCNN(vocab_size=5, embedding_size=2, feature_size=2, window_sizes=(1,), num_class=2)  # registers parameters
    assert engine.is_current()
    model.weights_changed()
    assert not engine.is_current()


def test_the_engine_is_chosen_by_value_not_by_its_description(monkeypatch):
    import textcnn.fastpath as fastpath

    cpu = torch.device("cpu")
    assert Predictor().choose(small_model(), cpu)[0] is Engine.TABLES_FUSED
    assert Predictor().choose(small_model(batch_norm=True), cpu)[0] is Engine.TABLES
    assert Predictor().choose(small_model().double(), cpu)[0] is Engine.PLAIN
    assert Predictor().choose(small_model(), torch.device("cuda"))[0] is Engine.PLAIN
    monkeypatch.setenv("TEXTCNN_TABLE_MAX_MB", "0")
    assert Predictor().choose(small_model(), cpu)[0] is Engine.PLAIN
    monkeypatch.delenv("TEXTCNN_TABLE_MAX_MB")
    # The words are for people: rewording them changes no choice.
    real = Predictor.choose
    monkeypatch.setattr(Predictor, "choose", lambda self, m, d: (real(self, m, d)[0], "exact words reworded"))
    assert isinstance(Predictor().engine(small_model(), cpu), TableEngine)
    monkeypatch.setattr(Predictor, "choose", lambda self, m, d: (Engine.PLAIN, "exact per-word tables"))
    assert Predictor().engine(small_model(), cpu) is None
    assert fastpath.Engine.PLAIN.value == "plain"


def test_a_float64_model_predicts_through_its_own_forward(fitted):
    clf = copy.deepcopy(fitted)
    expected = clf.predict_proba(probe_texts())
    clf.model_.double()
    assert clf._forward(torch.device("cpu")) is clf.model_
    assert np.allclose(clf.predict_proba(probe_texts()), expected, atol=1e-5)


def test_table_budget_falls_back_and_verbose_names_the_path(fitted, monkeypatch, capsys):
    clf = copy.deepcopy(fitted)
    clf.verbose = 2
    expected = clf.predict_proba(probe_texts())
    # 1 MB: the default n-gram channel's table, 131,073 buckets x 2 classes (the word tables are tiny)
    assert "prediction path: exact per-word tables (1 MB): embedding_bag on length-sorted batches, a fused numba kernel" in capsys.readouterr().err
    clf = copy.deepcopy(fitted)
    clf.verbose = 2
    monkeypatch.setenv("TEXTCNN_NO_NUMBA", "1")
    assert np.allclose(clf.predict_proba(probe_texts()), expected, atol=1e-5)
    assert "embedding_bag; TEXTCNN_NO_NUMBA is set" in capsys.readouterr().err
    monkeypatch.setenv("TEXTCNN_TABLE_MAX_MB", "0")
    assert np.allclose(clf.predict_proba(probe_texts()), expected, atol=1e-5)
    assert "prediction path: plain float32 forward (the tables would take" in capsys.readouterr().err
    assert clf._forward(torch.device("cpu")) is clf.model_


def test_gpu_device_uses_the_model_not_the_tables():
    model = small_model()
    predictor = Predictor()
    assert predictor.engine(model, torch.device("cuda")) is None
    assert "plain float32 forward on cuda" in predictor.path(model, torch.device("cuda"))


def test_table_memory_rule(monkeypatch):
    model = small_model()
    assert table_bytes(model) == 40 * 6 * (2 + 3 + 5) * 4
    monkeypatch.setenv("TEXTCNN_TABLE_MAX_MB", "2.5")
    assert table_budget_bytes() == int(2.5 * 2**20)
    monkeypatch.setenv("TEXTCNN_TABLE_MAX_MB", "lots")
    with pytest.raises(ConfigError, match="TEXTCNN_TABLE_MAX_MB environment variable must be a number of megabytes"):
        table_budget_bytes()


def test_saved_files_hold_weights_only_and_reload_identically(fitted, tmp_path):
    fitted.predict_proba(probe_texts())  # builds the tables
    fitted.save(tmp_path / "m")
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert sorted(saved) == sorted(fitted.model_.state_dict())
    assert json.loads((tmp_path / "m" / "config.json").read_text())["format_version"] >= 1
    assert np.allclose(load(tmp_path / "m").predict_proba(probe_texts()), fitted.predict_proba(probe_texts()), atol=1e-6)


@pytest.mark.parametrize("name", ["word", "char"])
def test_tokenize_head_equals_the_cut_full_tokenization(name):
    tokenizer = make_tokenizer(name)
    texts = ["x-" * 3000, "don't " * 900 + "stop", "a" * 5000 + " b c", "İ" * 800 + " Ok" * 300, "short one", ""]
    for text in texts:
        for limit in (1, 2, 7, 35, 400):
            assert tokenizer.tokenize_head(text, limit) == tokenizer.tokenize(text)[:limit]


def test_length_batches_keep_every_text_once_and_bound_the_padded_size():
    from textcnn.data import length_batches

    lengths = [400, 3, 35, 0, 120, 400, 7, 399, 35, 1000]
    batches = length_batches(lengths, 4, max_tokens=800)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 4
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 800
    assert [len(b) for b in length_batches(lengths, 4)] == [4, 4, 2]


def test_pad_batch_vectorised():
    assert pad_batch([[1, 2, 3], [4], []], 5).tolist() == [[1, 2, 3, 0, 0], [4, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    assert pad_batch([], 2).shape == (0, 2)


def test_cli_verbose_names_the_prediction_path(fitted, tmp_path, capsys):
    from textcnn.cli import main

    fitted.save(tmp_path / "m")
    assert main(["predict", str(tmp_path / "m"), "good film", "-v"]) == 0
    captured = capsys.readouterr()
    assert "prediction path: exact per-word tables" in captured.err
    assert captured.out.split("\t")[0] in set(fitted.classes_)
    assert main(["predict", str(tmp_path / "m"), "good film"]) == 0
    assert "prediction path" not in capsys.readouterr().err


def test_cli_reports_a_bad_table_budget(fitted, tmp_path, capsys, monkeypatch):
    from textcnn.cli import main

    fitted.save(tmp_path / "m")
    monkeypatch.setenv("TEXTCNN_TABLE_MAX_MB", "-5")
    assert main(["predict", str(tmp_path / "m"), "good film"]) == 2
    assert "error: The TEXTCNN_TABLE_MAX_MB environment variable must be" in capsys.readouterr().err


def test_winners_only_backward_matches_the_full_backward(monkeypatch):
    import textcnn.fastpath as fastpath

    model = small_model()
    ids = ragged_ids()
    grads = []
    for threshold in (0, 10**6):  # winners-only for every length, then never
        monkeypatch.setattr(fastpath, "WINNERS_MIN_WINDOWS", threshold)
        model.zero_grad()
        out = deduplicated_forward(model, ids)
        out.sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    for a, b in zip(grads[0][1], grads[1][1]):
        assert torch.allclose(a, b, atol=1e-5)


def test_fused_kernel_without_a_cache_folder_or_without_numba(monkeypatch):
    import sys

    import numba

    import textcnn.fastpath as fastpath

    real_njit = numba.njit

    def njit_without_cache(*args, **kwargs):  # what numba says when no cache folder is writable
        if kwargs.get("cache"):
            raise RuntimeError("cannot cache function '_pool_kernel_source': no locator available")
        return real_njit(*args, **kwargs)

    monkeypatch.setattr(fastpath, "_KERNEL", None)
    monkeypatch.setattr(fastpath, "_KERNEL_ERROR", None)
    monkeypatch.setattr(numba, "njit", njit_without_cache)
    kernel = fastpath.fused_kernel()
    assert kernel is not None  # compiled for this process only
    assert torch.allclose(TableEngine(small_model()).logits_lists([[3, 4, 5, 6]]),
                          small_model()(torch.tensor([[3, 4, 5, 6, 0]])), atol=1e-5)

    monkeypatch.setattr(fastpath, "_KERNEL", None)
    monkeypatch.setattr(fastpath, "_KERNEL_ERROR", None)
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba -> ImportError
    assert fastpath.fused_kernel() is None
    assert fastpath.no_kernel_reason().startswith("numba unavailable: ")
    assert "embedding_bag; numba unavailable" in Predictor().path(small_model(), torch.device("cpu"))
    assert not TableEngine(small_model()).fused_for(1)


def test_the_kernels_compile_where_numba_is_installed(tmp_path):
    """numba is a dependency: a kernel it cannot compile (an unsupported construct in the kernels or the
    model's hash helpers they call) would otherwise fall back silently and every kernel test would skip.
    Compiled from scratch in a fresh process: numba's on-disk cache does not see edits to the helpers."""
    pytest.importorskip("numba")
    code = ("from textcnn.fastpath import fused_kernel, ngram_kernel, no_kernel_reason\n"
            "assert fused_kernel() is not None and ngram_kernel() is not None, no_kernel_reason()")
    env = {k: v for k, v in os.environ.items() if k != "TEXTCNN_NO_NUMBA"}
    done = subprocess.run([sys.executable, "-c", code], env={**env, "NUMBA_CACHE_DIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
