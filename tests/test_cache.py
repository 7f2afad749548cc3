"""Out-of-core training: streaming readers, the on-disk token cache, and fit_files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from textcnn import DataFormatError, TextCNNClassifier, read_records
from textcnn.cli import main
from textcnn.data import stream_records
from textcnn.training import Callback

from .conftest import make_corpus, write_csv

SMALL = dict(embedding_size=16, feature_size=8, window_sizes=(2, 3), epochs=2, batch_size=16, min_freq=1,
             learning_rate=0.01, precision="float32", device="cpu", verbose=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    return write_csv(d / "train.csv", *make_corpus(240, seed=4)), write_csv(d / "dev.csv", *make_corpus(60, seed=5))


def _same_weights(a, b) -> bool:
    return all(torch.equal(v, b.model_.state_dict()[k]) for k, v in a.model_.state_dict().items())


def _write_as(path, fmt: str, texts, labels):
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"label": labels, "text": texts}), path, row_group_size=50)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)))
    elif fmt == "tsv":
        path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)))
    else:  # fastText
        path.write_text("".join(f"__label__{y} {t}\n" for t, y in zip(texts, labels)))
    return path


def test_fit_files_trains_the_model_fit_trains_on_the_same_rows(files, tmp_path):
    train, dev = files
    tr, dv = read_records(train), read_records(dev)
    in_memory = TextCNNClassifier(**SMALL).fit(tr.texts, tr.labels, validation_data=(dv.texts, dv.labels))
    cached = TextCNNClassifier(**SMALL).fit_files(train, dev, cache_dir=tmp_path)
    assert cached.vocab_.itos == in_memory.vocab_.itos
    assert _same_weights(in_memory, cached)
    assert isinstance(cached.history_, list) and len(cached.history_) == 2


def test_a_second_run_hits_the_cache_and_a_changed_file_does_not(files, tmp_path, capsys):
    train, dev = files
    first = TextCNNClassifier(**SMALL).fit_files(train, dev, cache_dir=tmp_path)
    assert "token cache hit" not in capsys.readouterr().err
    again = TextCNNClassifier(**SMALL).fit_files(train, dev, cache_dir=tmp_path)
    err = capsys.readouterr().err
    assert err.count("token cache hit") == 3 and "counted " not in err and "encoded 240" not in err
    assert _same_weights(first, again)

    changed = write_csv(tmp_path / "changed.csv", *make_corpus(240, seed=6))
    TextCNNClassifier(**SMALL).fit_files(changed, dev, cache_dir=tmp_path)
    err = capsys.readouterr().err
    assert "counted 240 texts" in err and f"encoded 240 texts of {changed}" in err


def test_the_cache_entry_is_ids_and_offsets_with_a_header(files, tmp_path):
    train, dev = files
    TextCNNClassifier(**SMALL).fit_files(train, dev, cache_dir=tmp_path)
    entry = next(p for p in tmp_path.iterdir() if (p / "header.json").exists() and "train" in
                 json.loads((p / "header.json").read_text())["source"]["path"])
    header = json.loads((entry / "header.json").read_text())
    assert header["texts"] == 240 and header["source"]["size"] == os.path.getsize(train)
    assert len(header["source"]["sha256"]) == 64 and header["tokenizer"]["name"] == "word"
    offsets = np.fromfile(entry / "offsets.bin", dtype=np.int64)
    assert len(offsets) == 241 and offsets[-1] * 4 == os.path.getsize(entry / "ids.bin")


class _MappedFiles(Callback):
    """Which files of the cache the training process has memory-mapped, seen at every step."""

    def __init__(self, root) -> None:
        self.root, self.mapped, self.steps = str(root), set(), 0

    def on_step_end(self, loop) -> None:
        self.steps += 1
        with open("/proc/self/maps") as maps:
            self.mapped |= {line.split()[-1] for line in maps if self.root in line}


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/self/maps (Linux)")
def test_training_reads_the_cache_without_mapping_it(files, tmp_path):
    # Mapped pages count in the process's RSS, and the kernel maps them in large blocks around each
    # read row: a memory map of ids.bin made nearly all of a 330 MB cache resident in 300 steps.
    train, dev = files
    seen = _MappedFiles(tmp_path)
    for _ in range(2):  # the run that writes the cache, then a cache hit
        TextCNNClassifier(**SMALL).fit_files(train, dev, cache_dir=tmp_path, callbacks=[seen])
    assert seen.steps == 2 * 2 * 15 and seen.mapped == set()


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "tsv", "fasttext"])
def test_every_format_streams_to_the_same_model(files, tmp_path, fmt):
    train, dev = files
    tr = read_records(train)
    other = _write_as(tmp_path / f"train.{ {'fasttext': 'txt'}.get(fmt, fmt) }", fmt, tr.texts, tr.labels)
    csv_model = TextCNNClassifier(**SMALL).fit_files(train, dev, cache_dir=tmp_path / "a")
    other_model = TextCNNClassifier(**SMALL).fit_files(other, dev, cache_dir=tmp_path / "b")
    assert other_model.vocab_.itos == csv_model.vocab_.itos
    assert _same_weights(csv_model, other_model)


def test_without_dev_a_seeded_share_is_held_out(files, tmp_path, capsys):
    clf = TextCNNClassifier(**SMALL).fit_files(files[0], cache_dir=tmp_path)
    assert "holding out a random 10% of train" in capsys.readouterr().err
    assert clf.score(*make_corpus(60, seed=5)) > 0.4


def test_stream_records_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\ngood film,pos\n,neg\n")
    with pytest.raises(DataFormatError, match=r"bad.csv, line 3: the 'text' field is empty"):
        stream_records(bad, lambda *row: None)
    rows = []
    assert stream_records(bad, lambda *row: rows.append(row), skip_invalid=True) == [(3, "the 'text' field is empty")]
    assert rows == [(2, "good film", "pos")]


def test_a_parquet_file_without_the_column_says_which_flag(tmp_path):
    path = _write_as(tmp_path / "t.parquet", "parquet", ["a b"], ["x"])
    with pytest.raises(DataFormatError, match=r"no column 'body' in the header .* Pass --text-col"):
        stream_records(path, lambda *row: None, text_col="body")


def test_cli_trains_through_the_cache_and_resumes(files, tmp_path, capsys):
    train, dev = files
    flags = ["--epochs", "2", "--batch-size", "16", "--embedding-size", "16", "--feature-size", "8", "--min-freq", "1",
             "--precision", "float32", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    assert main(["train", str(train), "--dev", str(dev), "--out", str(tmp_path / "m"), *flags,
                 "--checkpoint-every", "5"]) == 0
    assert "encoded 240 texts" in capsys.readouterr().err
    assert main(["train", str(train), "--dev", str(dev), "--out", str(tmp_path / "m2"), *flags, "--resume",
                 "--checkpoint-dir", str(tmp_path / "m.checkpoint")]) == 0
    err = capsys.readouterr().err
    assert "token cache hit" in err and "resumed from" in err
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == (tmp_path / "m2" / "model.safetensors").read_bytes()


class _DevBatches(Callback):
    """The (B, T) shapes the model sees in eval mode during training: the dev evaluation's batches."""

    def __init__(self) -> None:
        self.shapes = []

    def on_train_begin(self, loop) -> None:
        loop.model.register_forward_pre_hook(lambda m, args: None if m.training else self.shapes.append(args[0].shape))


def test_the_dev_evaluation_while_training_runs_in_small_batches(tmp_path):
    # The dev pass's batches set the peak memory of a large run (1M rows: +330 MB at 32,768 padded tokens).
    from textcnn.classifier import EVAL_TOKENS

    texts, labels = make_corpus(600, seed=7)
    long_texts = [" ".join([t] * 6) for t in texts]  # 18 to 42 tokens: 512 of them pass EVAL_TOKENS
    seen = _DevBatches()
    TextCNNClassifier(**{**SMALL, "epochs": 1}).fit(long_texts[:100], labels[:100], validation_data=(long_texts, labels),
                                                  callbacks=[seen])
    assert sum(shape[0] for shape in seen.shapes) == 600
    assert max(shape[0] * shape[1] for shape in seen.shapes) <= EVAL_TOKENS
