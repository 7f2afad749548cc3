import json

import numpy as np
import pytest

from textcnn import DataFormatError, read_records
from textcnn.data import length_batches, pad_batch, stratified_split, training_batches


def test_csv_with_quotes_and_custom_columns(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('id,body,y\n1,"hello, world",a\n2,"multi\nline",b\n', encoding="utf-8")
    r = read_records(p, text_col="body", label_col="y")
    assert r.texts == ["hello, world", "multi\nline"]
    assert r.labels == ["a", "b"]
    assert r.lines == [2, 3]


def test_tsv_jsonl_fasttext_and_lines(tmp_path):
    (tmp_path / "d.tsv").write_text("text\tlabel\nhi there\tx\n", encoding="utf-8")
    assert read_records(tmp_path / "d.tsv").labels == ["x"]
    rows = [{"text": "one", "label": "a"}, {"text": "two", "label": ["a", "b"]}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert read_records(tmp_path / "d.jsonl").labels == ["a", ["a", "b"]]
    (tmp_path / "d.txt").write_text("__label__pos great film\n__label__a __label__b two labels\n", encoding="utf-8")
    r = read_records(tmp_path / "d.txt")
    assert r.texts == ["great film", "two labels"] and r.labels == ["pos", ["a", "b"]]
    (tmp_path / "p.txt").write_text("first\n\nthird\n", encoding="utf-8")
    r = read_records(tmp_path / "p.txt", labeled=False)
    assert r.texts == ["first", "", "third"] and r.labels is None


def test_format_flag_overrides_extension(tmp_path):
    (tmp_path / "d.data").write_text("text,label\nhi,x\n", encoding="utf-8")
    assert read_records(tmp_path / "d.data", fmt="csv").texts == ["hi"]
    with pytest.raises(DataFormatError, match="Unknown --format 'xml'"):
        read_records(tmp_path / "d.data", fmt="xml")


def test_utf8_bom_is_ignored(tmp_path):
    (tmp_path / "d.csv").write_bytes(b"\xef\xbb\xbftext,label\nhi,x\n")
    assert read_records(tmp_path / "d.csv").texts == ["hi"]


def test_missing_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"Cannot read '.*nope.csv': the path does not exist"):
        read_records(tmp_path / "nope.csv")


def test_missing_column_names_the_flag(tmp_path):
    (tmp_path / "d.csv").write_text("sentence,label\nhi,x\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"no column 'text' in the header \(columns: 'sentence', 'label'\). Pass --text-col"):
        read_records(tmp_path / "d.csv")


def test_empty_text_names_file_and_line(tmp_path):
    (tmp_path / "d.csv").write_text("text,label\nhi,x\n  ,y\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"d.csv, line 3: the 'text' field is empty. Fix or remove the row, or pass --skip-invalid"):
        read_records(tmp_path / "d.csv")


def test_missing_label(tmp_path):
    (tmp_path / "d.csv").write_text("text,label\nhi,\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"line 2: no label in the 'label' field"):
        read_records(tmp_path / "d.csv")
    (tmp_path / "d.txt").write_text("no label here\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"line 1: no '__label__' label at the start of the line"):
        read_records(tmp_path / "d.txt")


def test_undecodable_bytes_name_the_line(tmp_path):
    (tmp_path / "d.csv").write_bytes(b"text,label\nok,x\nbad \xff byte,y\n")
    with pytest.raises(DataFormatError, match=r"d.csv, line 3: bytes that are not UTF-8 \(0xff at byte 20\). Re-save the file as UTF-8"):
        read_records(tmp_path / "d.csv")


def test_skip_invalid_reports_how_many_and_where(tmp_path):
    (tmp_path / "d.csv").write_bytes(b"text,label\nok,x\nbad \xff byte,y\n ,z\nfine,\nalso ok,y\n")
    r = read_records(tmp_path / "d.csv", skip_invalid=True)
    assert r.texts == ["ok", "also ok"]
    assert [line for line, _ in r.skipped] == [3, 4, 5]
    assert "Skipped 3 invalid row(s)" in r.skipped_summary() and "lines 3, 4, 5" in r.skipped_summary()


def test_bad_json_and_short_rows(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": "x"}\n{oops\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"line 2: not valid JSON"):
        read_records(tmp_path / "d.jsonl")
    (tmp_path / "d.jsonl").write_text('{"body": "a", "label": "x"}\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"line 1: no 'text' field \(pass --text-col"):
        read_records(tmp_path / "d.jsonl")
    (tmp_path / "d.csv").write_text("text,label\nonly-one-field\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"line 2: 1 field\(s\) where the header has 2"):
        read_records(tmp_path / "d.csv")


def test_empty_file_and_no_rows(tmp_path):
    (tmp_path / "d.csv").write_text("", encoding="utf-8")
    with pytest.raises(DataFormatError, match="the file is empty"):
        read_records(tmp_path / "d.csv")
    (tmp_path / "h.csv").write_text("text,label\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="no rows with text were found"):
        read_records(tmp_path / "h.csv")


def test_stratified_split_keeps_class_shares():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    train, dev = stratified_split(labels, 0.1, seed=3)
    assert sorted(train + dev) == list(range(100))
    assert [labels[i] for i in dev].count("a") == 5 and [labels[i] for i in dev].count("c") == 2
    assert stratified_split(labels, 0.1, seed=3) == (train, dev)


def test_padding_and_batches():
    x = pad_batch([[5, 6], [7]], min_len=4)
    assert x.tolist() == [[5, 6, 0, 0], [7, 0, 0, 0]]
    groups = length_batches([5, 1, 3, 2], 2)
    assert [g.tolist() for g in groups] == [[1, 3], [2, 0]]
    seen = np.concatenate(list(training_batches([3] * 10, 4, np.random.default_rng(0))))
    assert sorted(seen.tolist()) == list(range(10))


def test_long_csv_fields_are_read_and_the_limit_is_restored(tmp_path):
    import csv

    long_text = "word " * 60_000  # 300,000 characters: over the csv module's default 131,072
    (tmp_path / "d.csv").write_text(f'text,label\n"{long_text}",x\nshort,y\n', encoding="utf-8")
    before = csv.field_size_limit()
    assert read_records(tmp_path / "d.csv").texts == [long_text, "short"]
    assert csv.field_size_limit() == before


def test_a_field_over_the_limit_gets_its_own_message(tmp_path, monkeypatch):
    from textcnn import data

    monkeypatch.setattr(data, "CSV_FIELD_LIMIT", 1000)
    (tmp_path / "d.tsv").write_text("text\tlabel\nok\tx\n" + "a" * 2000 + "\ty\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"d.tsv, line 3: a field is longer than 1,000 characters, the most "
                                              r"textcnn reads \(textcnn.data.CSV_FIELD_LIMIT\)") as e:
        read_records(tmp_path / "d.tsv")
    assert "Check the quoting" not in str(e.value)
    assert data.CSV_FIELD_LIMIT == 1000 and pytest.importorskip("csv").field_size_limit() != 1000


def test_json_that_python_cannot_read_names_the_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": "x"}\n' + "[" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"d.jsonl, line 2: JSON that cannot be read"):
        read_records(tmp_path / "d.jsonl")
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": ' + "1" * 5000 + "}\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"d.jsonl, line 1: JSON that cannot be read"):
        read_records(tmp_path / "d.jsonl")


def test_lines_end_only_at_newlines(tmp_path):
    """A text holding U+2028 or a form feed is one row: line numbers match an editor's."""
    (tmp_path / "d.jsonl").write_text('{"text": "a\u2028b", "label": "x"}\n{"text": "c\x85d", "label": "y"}\n',
                                      encoding="utf-8")
    r = read_records(tmp_path / "d.jsonl")
    assert r.texts == ["a\u2028b", "c\x85d"] and r.lines == [1, 2]
    (tmp_path / "d.txt").write_bytes("__label__x one\u2028two\r\n__label__y three\r__label__z four\n".encode())
    r = read_records(tmp_path / "d.txt")
    assert r.texts == ["one two", "three", "four"] and r.lines == [1, 2, 3]


def test_stratified_split_of_tiny_classes_is_never_empty():
    train, dev = stratified_split(["a"] * 3 + ["b"] * 4 + ["c"], 0.1, seed=0)
    assert len(dev) == 1 and 7 in train  # the largest class gives one text; a class of one stays in train
    assert sorted(train + dev) == list(range(8))
    with pytest.raises(DataFormatError, match="Cannot hold out a dev set"):
        stratified_split(["a", "b", "c"], 0.5, seed=0)
    assert stratified_split([["x", "y"], ["x"], [1], [1]], 0.5, seed=0)[1]  # multi-label rows, int labels


def test_the_lines_format_is_refused_where_labels_are_needed(tmp_path):
    """Found by the reader fuzz test: an empty line gave a text without a label (lists of unequal length)."""
    (tmp_path / "d.txt").write_text("text,label\n\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"d.txt: the 'lines' format holds texts without labels.*--format csv"):
        read_records(tmp_path / "d.txt", fmt="lines", skip_invalid=True)
