"""Streaming prediction (textcnn.streaming, textcnn predict --output): real files in tmp_path, every format."""

from __future__ import annotations

import csv
import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest

from textcnn import DataFormatError, MissingDependencyError, TextCNNClassifier
from textcnn.cli import main
from textcnn.streaming import predict_file

from .conftest import TINY, make_corpus

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

FORMATS = ["csv", "jsonl", "parquet"]


def rows_of(n: int = 10, seed: int = 3) -> list[dict]:
    texts, _ = make_corpus(n, seed=seed)
    return [{"id": f"r{i}", "text": t, "n": str(i)} for i, t in enumerate(texts)]


def write(path: Path, rows: list[dict]) -> Path:
    fmt = path.suffix[1:]
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def read(path: Path) -> list[dict]:
    fmt = path.suffix[1:]
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return pq.read_table(path).to_pylist()


@pytest.mark.parametrize("out_fmt", FORMATS)
@pytest.mark.parametrize("in_fmt", FORMATS)
def test_every_format_in_and_out_keeps_columns_and_order(fitted, tmp_path, in_fmt, out_fmt):
    rows = rows_of(10)
    src = write(tmp_path / f"in.{in_fmt}", rows)
    out = tmp_path / f"out.{out_fmt}"
    result = predict_file(fitted, src, out, chunk_size=4)
    got = read(out)
    expected = fitted.predict_records([r["text"] for r in rows])
    assert result.rows == 10 and len(got) == 10
    assert list(got[0]) == ["id", "text", "n", "label", "probability"]
    for row, rec, exp in zip(rows, got, expected):
        assert {k: rec[k] for k in row} == row  # passed through unchanged, in input order
        assert rec["label"] == exp["label"]
        assert float(rec["probability"]) == pytest.approx(exp["probability"], rel=1e-5)


def test_typed_columns_pass_through_parquet_and_jsonl(fitted, tmp_path):
    rows = [{"text": t, "n": i, "score": i / 2, "tags": ["a", "b"]} for i, t in enumerate(make_corpus(6)[0])]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    predict_file(fitted, tmp_path / "in.parquet", tmp_path / "out.parquet")
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.field("n").type == pa.int64() and table.schema.field("probability").type == pa.float64()
    assert [{k: r[k] for k in rows[0]} for r in table.to_pylist()] == rows
    predict_file(fitted, tmp_path / "in.parquet", tmp_path / "out.jsonl")
    assert [{k: r[k] for k in rows[0]} for r in read(tmp_path / "out.jsonl")] == rows


def test_chunk_boundaries_do_not_change_the_output(fitted, tmp_path):
    src = write(tmp_path / "in.csv", rows_of(10))
    predict_file(fitted, src, tmp_path / "a.csv", chunk_size=3, top_k=2)
    predict_file(fitted, src, tmp_path / "b.csv", chunk_size=1000, top_k=2)
    a, b = read(tmp_path / "a.csv"), read(tmp_path / "b.csv")
    assert len(a) == 10 and [r["id"] for r in a] == [f"r{i}" for i in range(10)]
    for x, y in zip(a, b):  # probabilities: equal up to float32 rounding (batches of other sizes)
        assert {k: v for k, v in x.items() if "probability" not in k} == {k: v for k, v in y.items() if "probability" not in k}
        for k in x:
            if "probability" in k:
                assert float(x[k]) == pytest.approx(float(y[k]), rel=1e-5)


def test_top_k_columns_and_a_clashing_label_column(fitted, tmp_path):
    texts, labels = make_corpus(5, seed=4)
    src = write(tmp_path / "in.jsonl", [{"text": t, "label": y} for t, y in zip(texts, labels)])
    predict_file(fitted, src, tmp_path / "out.csv", top_k=3)  # 2 classes: top-3 gives 2 columns pairs
    got = read(tmp_path / "out.csv")
    assert list(got[0]) == ["text", "label", "predicted_label", "predicted_probability", "predicted_top1_label",
                            "predicted_top1_probability", "predicted_top2_label", "predicted_top2_probability"]
    assert [r["label"] for r in got] == labels  # the input's own label column is untouched
    assert all(r["predicted_label"] == r["predicted_top1_label"] for r in got)


def test_multi_label_labels_joined_by_the_separator(tmp_path):
    rows = [("sunny beach holiday", "travel|weather"), ("rain storm tonight", "weather"), ("flight hotel", "travel")] * 12
    clf = TextCNNClassifier(**{**TINY, "window_sizes": (1, 2), "epochs": 10}).fit(*zip(*rows))
    src = write(tmp_path / "in.csv", [{"text": t} for t, _ in rows[:3]])
    predict_file(clf, src, tmp_path / "out.jsonl")
    got = read(tmp_path / "out.jsonl")
    for row, rec in zip(got, clf.predict_records([t for t, _ in rows[:3]])):
        assert row["label"] == "|".join(rec["labels"])
        assert [float(p) for p in row["probability"].split("|") if p] == pytest.approx(rec["probabilities"])


def test_missing_text_column_names_the_column_and_file(fitted, tmp_path):
    for fmt in FORMATS:
        src = write(tmp_path / f"in.{fmt}", [{"body": "good film"}])
        with pytest.raises(DataFormatError, match=rf"in\.{fmt}.*no (column )?'text'"):
            predict_file(fitted, src, tmp_path / "out.csv")
    with pytest.raises(DataFormatError, match=r"columns: 'body'.*--text-col"):
        predict_file(fitted, tmp_path / "in.csv", tmp_path / "out.csv")
    assert predict_file(fitted, tmp_path / "in.csv", tmp_path / "out.csv", text_col="body").rows == 1


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # a writer left open
@pytest.mark.parametrize("out_fmt", FORMATS)
def test_a_failure_midway_leaves_no_target_and_keeps_an_old_one(fitted, tmp_path, out_fmt):
    rows = rows_of(10)
    rows[7]["text"] = ""
    src = write(tmp_path / "in.csv", rows)
    out = tmp_path / f"out.{out_fmt}"
    with pytest.raises(DataFormatError, match=r"in\.csv, line 9: the 'text' field is empty.*--skip-invalid"):
        predict_file(fitted, src, out, chunk_size=3)  # two chunks were written before line 9
    assert list(tmp_path.iterdir()) == [src]  # no target, no temporary file left
    out.write_text("old\n")
    with pytest.raises(DataFormatError):
        predict_file(fitted, src, out, chunk_size=3)
    assert out.read_text() == "old\n"
    gc.collect()


def test_skip_invalid_skips_and_lists_bad_rows(fitted, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "good film"}\nnot json\n{"text": ""}\n{"other": 1}\n{"text": "bad film"}\n', encoding="utf-8")
    result = predict_file(fitted, src, tmp_path / "out.jsonl", skip_invalid=True)
    assert [r["text"] for r in read(tmp_path / "out.jsonl")] == ["good film", "bad film"]
    assert [line for line, _ in result.skipped] == [2, 3, 4] and "lines 2, 3, 4" in result.skipped_summary()


def test_bad_bytes_and_ragged_csv_rows_name_the_line(fitted, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"text,id\ngood,1\nbad \xff film,2\n")
    with pytest.raises(DataFormatError, match=r"in\.csv, line 3: bytes that are not UTF-8"):
        predict_file(fitted, src, tmp_path / "out.csv")
    src.write_bytes(b"text,id\ngood,1\nbad,2,3\n")
    with pytest.raises(DataFormatError, match=r"line 3: 3 field\(s\) where the header has 2"):
        predict_file(fitted, src, tmp_path / "out.csv")


def test_jsonl_rows_with_new_fields_need_jsonl_output(fitted, tmp_path):
    src = write(tmp_path / "in.jsonl", [{"text": "good"}, {"text": "bad", "extra": 1}])
    with pytest.raises(DataFormatError, match=r"line 2: the field\(s\) \['extra'\].*--output-format jsonl"):
        predict_file(fitted, src, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()
    predict_file(fitted, src, tmp_path / "out.jsonl")
    assert read(tmp_path / "out.jsonl")[1]["extra"] == 1


def test_parquet_without_pyarrow_names_the_extra(fitted, tmp_path, monkeypatch):
    src = write(tmp_path / "in.csv", rows_of(2))
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what a missing package looks like to import
    with pytest.raises(MissingDependencyError, match=r"pip install 'textcnn\[parquet\]'"):
        predict_file(fitted, src, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_cli_output_file_and_stdout(model_dir, tmp_path, capsys):
    src = write(tmp_path / "in.csv", rows_of(5))
    assert main(["predict", str(model_dir), "--input", str(src), "--output", str(tmp_path / "o.parquet"), "-q"]) == 0
    assert [r["id"] for r in read(tmp_path / "o.parquet")] == [f"r{i}" for i in range(5)]
    capsys.readouterr()
    assert main(["predict", str(model_dir), "--input", str(src), "--output", "-", "--chunk-size", "2"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(5)] and "wrote 5 predictions" in err


def test_cli_lines_input_and_errors(model_dir, tmp_path, capsys):
    src = tmp_path / "texts.txt"
    src.write_text("great film\n\nawful\n", encoding="utf-8")
    assert main(["predict", str(model_dir), "--input", str(src), "--output", str(tmp_path / "o.csv"), "-q"]) == 0
    assert [r["text"] for r in read(tmp_path / "o.csv")] == ["great film", "", "awful"]  # as the existing predict
    cases = [
        (["--output", str(tmp_path / "o.txt")], "Cannot tell the format of --output"),
        (["--output", "-", "--chunk-size", "0"], "--chunk-size must be an int >= 1. Got 0"),
        (["--output", "-", "--format", "csv"], "--format is for printing without --output"),
        (["--output-format", "csv"], "--output-format needs --output"),
        (["--output", "-", "--output-format", "parquet"], "Parquet cannot be streamed to standard output"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        assert main(["predict", str(model_dir), "--input", str(src), *extra]) == 2
        assert message in capsys.readouterr().err
    pq.write_table(pa.Table.from_pylist([{"text": "x"}]), tmp_path / "in.parquet")
    assert main(["predict", str(model_dir), "--input", str(tmp_path / "in.parquet")]) == 2
    assert "Parquet input needs --output" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["textcnn.streaming", "textcnn.card"])
def test_streaming_and_card_import_no_torch(module):
    """The PyTorch-free runtime streams and shows cards too: these modules must not import torch."""
    src = Path(__file__).resolve().parents[1] / "src" / "textcnn"
    code = f"""
import sys, types
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
pkg = types.ModuleType("textcnn"); pkg.__path__ = [{str(src)!r}]; sys.modules["textcnn"] = pkg  # skip __init__
import {module}
assert "torch" not in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
