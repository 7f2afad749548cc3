"""Reading labelled text: CSV, TSV, JSONL, fastText and plain lines; splitting; batching.

Every problem with an input file is reported as a DataFormatError naming the file, the line and
the fix. With ``skip_invalid=True`` bad rows are skipped instead and listed in ``Records.skipped``.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import DataFormatError
from .labels import canonical
from .vocab import PAD_ID

FORMATS = ("csv", "tsv", "jsonl", "fasttext", "lines")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
               ".json": "jsonl", ".ft": "fasttext", ".fasttext": "fasttext"}
FASTTEXT_PREFIX = "__label__"
_SKIP_HINT = "or pass --skip-invalid to skip such rows"
# The longest CSV/TSV field read, in characters (Python's csv module stops at 131,072 by default;
# a long document is legitimate). A longer field is refused with its own message.
CSV_FIELD_LIMIT = 64 * 1024 * 1024
# Lines end at \n, \r\n or \r only (str.splitlines also splits at \x0b, \x1c, \u2028 ..., which
# would cut a JSON string or a text in two and put later line numbers off from an editor's).
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass
class Records:
    """Texts read from one source, with their labels (a str, or a list for multi-label) and line numbers."""

    texts: list[str]
    labels: list | None
    lines: list[int]
    source: str
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def skipped_summary(self) -> str | None:
        return skipped_summary(self.source, self.skipped)


def skipped_summary(source: str, skipped: list[tuple[int, str]], unit: str = "line") -> str | None:
    """One line naming the rows that --skip-invalid skipped (the first 10), or None."""
    if not skipped:
        return None
    where = ", ".join(str(line) for line, _ in skipped[:10])
    more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    return f"Skipped {len(skipped)} invalid row(s) of {source} ({unit}s {where}{more})."


def detect_format(path: Path, fmt: str | None, *, labeled: bool) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise DataFormatError(f"Unknown --format {fmt!r}. Use one of: {', '.join(FORMATS)}.")
        return fmt
    ext = _EXTENSIONS.get(path.suffix.lower())
    if ext:
        return ext
    if labeled:
        return "fasttext"  # .txt and friends: fastText's own '__label__x text' format
    return "lines"


def read_records(
    path: str | Path,
    *,
    fmt: str | None = None,
    text_col: str = "text",
    label_col: str = "label",
    labeled: bool = True,
    skip_invalid: bool = False,
) -> Records:
    """Reads a file of texts (and labels when ``labeled``). ``path`` '-' reads standard input."""
    if str(path) == "-":
        import sys

        raw, name, p = sys.stdin.buffer.read(), "<stdin>", Path("stdin.txt")
    else:
        p = Path(path)
        name = str(p)
        if not p.is_file():
            what = "is a directory, not a file" if p.is_dir() else "does not exist"
            raise DataFormatError(f"Cannot read '{name}': the path {what}. Check the path and try again.")
        raw = p.read_bytes()
    kind = detect_format(p, fmt, labeled=labeled)
    if labeled and kind == "lines":
        raise DataFormatError(f"{name}: the 'lines' format holds texts without labels, but labels are needed here. "
                              "Pass --format csv, tsv, jsonl or fasttext.")
    text = _decode(raw, name, skip_invalid)
    reader = _Reader(name, text_col, label_col, labeled, skip_invalid)
    {"csv": reader.delimited, "tsv": reader.delimited, "jsonl": reader.jsonl,
     "fasttext": reader.fasttext, "lines": reader.plain}[kind](text, "\t" if kind == "tsv" else ",")
    return reader.records()


def _decode(raw: bytes, name: str, skip_invalid: bool) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if skip_invalid:
            return raw.decode("utf-8", errors="surrogateescape")  # bad rows are dropped per row
        line = raw[: e.start].count(b"\n") + 1
        raise DataFormatError(
            f"{name}, line {line}: bytes that are not UTF-8 (0x{raw[e.start]:02x} at byte {e.start}). "
            f"Re-save the file as UTF-8 ({_SKIP_HINT})."
        ) from None


_BAD_BYTES = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of bytes that are not UTF-8


def _has_bad_bytes(text: str) -> bool:
    return _BAD_BYTES.search(text) is not None


class _Reader:
    """Collects rows, turning each problem into an error or a skipped row."""

    def __init__(self, name: str, text_col: str, label_col: str, labeled: bool, skip_invalid: bool) -> None:
        self.name, self.text_col, self.label_col = name, text_col, label_col
        self.labeled, self.skip_invalid = labeled, skip_invalid
        self.texts: list[str] = []
        self.labels: list = []
        self.lines: list[int] = []
        self.skipped: list[tuple[int, str]] = []

    def records(self) -> Records:
        if not self.texts:
            raise DataFormatError(f"{self.name}: no rows with text were found. Check the file and --format.")
        return Records(self.texts, self.labels if self.labeled else None, self.lines, self.name, self.skipped)

    def problem(self, line: int, message: str) -> None:
        if self.skip_invalid:
            self.skipped.append((line, message))
            return
        raise DataFormatError(f"{self.name}, line {line}: {message}. Fix or remove the row, {_SKIP_HINT}.")

    def add(self, line: int, text, label) -> None:
        if isinstance(text, str) and _has_bad_bytes(text) or isinstance(label, str) and _has_bad_bytes(label):
            return self.problem(line, "bytes that are not UTF-8")
        if not isinstance(text, str):
            return self.problem(line, f"the '{self.text_col}' field is not a string (got {type(text).__name__})")
        if not text.strip():
            return self.problem(line, f"the '{self.text_col}' field is empty")
        if self.labeled:
            label = _clean_label(label)
            if label is None:
                return self.problem(line, f"no label in the '{self.label_col}' field")
        self.keep(line, text, label)

    def keep(self, line: int, text: str, label) -> None:
        if self.labeled:
            self.labels.append(label)
        self.texts.append(text)
        self.lines.append(line)

    def delimited(self, text: str, delimiter: str) -> None:
        old_limit = csv.field_size_limit(CSV_FIELD_LIMIT)  # a process-wide setting: restored below
        try:
            self._delimited(text, delimiter)
        finally:
            csv.field_size_limit(old_limit)

    def _delimited(self, text: str, delimiter: str) -> None:
        rows = csv.reader(io.StringIO(text, newline="") if isinstance(text, str) else text, delimiter=delimiter)
        try:
            header = next(rows)
        except StopIteration:
            raise DataFormatError(f"{self.name}: the file is empty. Expected a header line such as 'text,label'.") from None
        except csv.Error as e:
            raise self._csv_error(rows.line_num, e) from None
        text_i = self._column(header, self.text_col, "--text-col")
        label_i = self._column(header, self.label_col, "--label-col") if self.labeled else None
        start = rows.line_num + 1
        try:
            for row in rows:
                line, start = start, rows.line_num + 1
                if not row or row == [""]:
                    continue
                if len(row) <= max(text_i, label_i or 0):
                    self.problem(line, f"{len(row)} field(s) where the header has {len(header)}")
                    continue
                self.add(line, row[text_i], row[label_i] if label_i is not None else None)
        except csv.Error as e:
            raise self._csv_error(rows.line_num, e) from None

    def _csv_error(self, line: int, e: csv.Error) -> DataFormatError:
        if "field larger than field limit" in str(e):
            return DataFormatError(
                f"{self.name}, line {line}: a field is longer than {CSV_FIELD_LIMIT:,} characters, the most textcnn "
                "reads (textcnn.data.CSV_FIELD_LIMIT). Split or shorten the text; if the field runs on over many "
                "lines, a quote (\") is probably left open before it."
            )
        return DataFormatError(f"{self.name}, line {line}: not valid CSV ({e}). Check the quoting.")

    def _column(self, header: list[str], name: str, flag: str) -> int:
        if name in header:
            return header.index(name)
        shown = ", ".join(repr(h) for h in header)
        raise DataFormatError(
            f"{self.name}: no column '{name}' in the header (columns: {shown}). Pass {flag} with one of those names."
        )

    def jsonl(self, text, _: str) -> None:
        for line, raw in enumerate(_lines(text), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                self.problem(line, f"not valid JSON ({e.msg})")
                continue
            except (ValueError, RecursionError) as e:  # a number of over 4,300 digits; arrays nested too deep
                self.problem(line, f"JSON that cannot be read ({str(e)[:80] or type(e).__name__})")
                continue
            if not isinstance(obj, dict):
                self.problem(line, "a JSON value that is not an object")
                continue
            if self.text_col not in obj:
                self.problem(line, f"no '{self.text_col}' field (pass --text-col to name another)")
                continue
            self.add(line, obj[self.text_col], obj.get(self.label_col))

    def fasttext(self, text, _: str) -> None:
        for line, raw in enumerate(_lines(text), start=1):
            if not raw.strip():
                continue
            labels, words = [], raw.split()
            while words and words[0].startswith(FASTTEXT_PREFIX):
                labels.append(words.pop(0)[len(FASTTEXT_PREFIX):])
            if self.labeled and not labels:
                self.problem(line, f"no '{FASTTEXT_PREFIX}' label at the start of the line")
                continue
            label = labels[0] if len(labels) == 1 else labels
            self.add(line, " ".join(words), label if self.labeled else None)

    def plain(self, text: str, _: str) -> None:
        lines = _LINE_END.split(text)
        if lines[-1] == "":  # the end of the last line, not an empty text after it
            lines.pop()
        for line, raw in enumerate(lines, start=1):
            self.add(line, raw, None) if raw.strip() else self.empty(line)

    def empty(self, line: int) -> None:
        # One text per line: an empty line is a text too, and gets a defined (padding-only) answer.
        self.texts.append("")
        self.lines.append(line)


def _lines(text) -> Iterator[str]:
    """The lines of a str, or of a text file opened with newline='' (their ends cut off)."""
    if isinstance(text, str):
        yield from _LINE_END.split(text)
        return
    for raw in text:
        yield raw.rstrip("\r\n")


class _Streamer(_Reader):
    """A _Reader that hands each good row to ``sink(line, text, label)`` instead of keeping it."""

    def __init__(self, sink, *args) -> None:
        super().__init__(*args)
        self.sink = sink
        self.rows = 0

    def keep(self, line: int, text: str, label) -> None:
        self.rows += 1
        self.sink(line, text, label)

    def parquet(self, path: Path, _: str) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataFormatError(f"{self.name}: reading Parquet needs pyarrow. Install it with: pip install 'textcnn[parquet]'") from None
        try:
            table = pq.ParquetFile(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise DataFormatError(f"{self.name}: not a readable Parquet file ({e}).") from None
        names = table.schema_arrow.names
        columns = [self._column(names, self.text_col, "--text-col")]
        if self.labeled:
            columns.append(names[self._column(names, self.label_col, "--label-col")])
        row = 0
        for batch in table.iter_batches(batch_size=8192, columns=[names[columns[0]], *columns[1:]]):
            texts = batch.column(0).to_pylist()
            labels = batch.column(1).to_pylist() if self.labeled else [None] * len(texts)
            for text, label in zip(texts, labels):
                row += 1
                self.add(row, text, label)


def stream_records(path: str | Path, sink, *, fmt: str | None = None, text_col: str = "text",
                   label_col: str = "label", labeled: bool = True, skip_invalid: bool = False) -> list:
    """Reads a file row by row, calling ``sink(line, text, label)`` on each good row; memory stays flat.

    The formats of :func:`read_records` plus Parquet (``.parquet``, via pyarrow; ``line`` is the
    row number there). Returns the skipped rows, ``(line, why)``, with ``skip_invalid``.
    """
    p = Path(path)
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "does not exist"
        raise DataFormatError(f"Cannot read '{p}': the path {what}. Check the path and try again.")
    kind = "parquet" if fmt == "parquet" or fmt is None and p.suffix.lower() in (".parquet", ".pq") else \
        detect_format(p, fmt, labeled=labeled)
    reader = _Streamer(sink, str(p), text_col, label_col, labeled, skip_invalid)
    if kind == "parquet":
        reader.parquet(p, "")
    else:
        with open(p, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            {"csv": reader.delimited, "tsv": reader.delimited, "jsonl": reader.jsonl,
             "fasttext": reader.fasttext, "lines": reader.plain}[kind](f, "\t" if kind == "tsv" else ",")
    if not reader.rows:
        raise DataFormatError(f"{p}: no rows with text were found. Check the file and --format.")
    return reader.skipped


def _clean_label(label):
    if isinstance(label, list):
        items = [str(x).strip() for x in label if str(x).strip()]
        return items or None
    if label is None or isinstance(label, bool) or (isinstance(label, float) and label != label):
        return None
    label = str(label).strip()
    return label or None


def to_python(value):
    """numpy scalars -> Python scalars (labels in JSON output); anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def check_texts(texts: Sequence, what: str = "texts") -> list[str]:
    """Validates texts given from Python (lists, pandas Series, arrays)."""
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise DataFormatError(f"{what}[{i}] is not a string (got {type(t).__name__}: {t!r}). Pass a list of str.")
    return out


def stratified_split(labels: Sequence, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Holds out ``fraction`` of each class (the first label, for multi-label rows) as dev.

    Every class keeps at least one training text (a class of one text stays in train). When the
    shares round to nothing (classes of a handful of texts), one text of the largest class that has
    two or more is held out, so the dev set is never empty.

    Raises:
        DataFormatError: no class has two texts, so no dev text can be spared.
    """
    by_class: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(canonical(y[0] if isinstance(y, (list, tuple)) else y), []).append(i)
    rng = random.Random(seed)
    shuffled = {}
    for key in sorted(by_class):
        shuffled[key] = by_class[key][:]
        rng.shuffle(shuffled[key])
    n_dev = {key: min(int(round(len(idx) * fraction)), len(idx) - 1) for key, idx in shuffled.items()}
    if not any(n_dev.values()):
        largest = max(shuffled, key=lambda key: len(shuffled[key]))  # the first such class in sorted order
        if len(shuffled[largest]) < 2:
            raise DataFormatError(
                f"Cannot hold out a dev set: each of the {len(labels)} training texts has a class of its own, and "
                "every class needs a training text. Give a dev set (--dev DEV_FILE, or validation_data=(texts, "
                "labels)), or more texts per class."
            )
        n_dev[largest] = 1
    train, dev = [], []
    for key, idx in shuffled.items():
        dev.extend(idx[: n_dev[key]])
        train.extend(idx[n_dev[key]:])
    return sorted(train), sorted(dev)


def pad_batch(seqs: Sequence[Sequence[int]], min_len: int = 1):
    """Right-pads id lists with PAD_ID to the longest (at least ``min_len``): a (B, T) int64 torch tensor."""
    import torch  # here, not at the top: the PyTorch-free runtime reads files and pads with this module

    return torch.from_numpy(pad_ids(seqs, min_len))


def pad_ids(seqs: Sequence[Sequence[int]], min_len: int = 1) -> np.ndarray:
    """Right-pads id lists with PAD_ID to the longest (at least ``min_len``): (B, T) int64."""
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))  # (B,)
    width = max(min_len, int(lengths.max(initial=0)))
    out = np.full((len(seqs), width), PAD_ID, dtype=np.int64)
    # One vectorised scatter instead of a Python loop over rows.
    out[np.arange(width) < lengths[:, None]] = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64,
                                                           count=int(lengths.sum()))
    return out


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Indices grouped by similar length (for prediction: little padding, order restored by caller).

    With ``max_tokens``, a batch also stops before its padded size (texts x longest) passes it, so
    batches of long texts are smaller (their intermediate sums stay in cache); at least one text each.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    if max_tokens is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches, start = [], 0
    while start < len(order):
        window = lengths[order[start : start + batch_size]]  # ascending
        padded = window * np.arange(1, len(window) + 1)  # padded size of the first m texts: nondecreasing in m
        size = max(1, int(np.searchsorted(padded, max_tokens, side="right")))
        batches.append(order[start : start + size])
        start += size
    return batches


def training_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled batches of similar length: shuffle, sort within pools of 50 batches, shuffle batches."""
    idx = rng.permutation(len(lengths))
    lengths = np.asarray(lengths)
    pool = batch_size * 50
    batches = []
    for start in range(0, len(idx), pool):
        chunk = idx[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    for b in rng.permutation(len(batches)):
        yield batches[b]
