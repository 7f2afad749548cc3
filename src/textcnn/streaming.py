"""Streaming batch prediction: a file in, the same rows with their predictions out, in bounded memory.

    textcnn predict MODEL_DIR --input big.csv --output predictions.parquet

Rows are read in chunks of ``chunk_size``, classified and written before the next chunk is read, so a
file of ten million rows never sits in memory. Every input column passes through unchanged, followed
by the prediction columns; rows keep their input order. The output is written to a temporary file
beside the target and renamed into place at the end: a failure never leaves a half-written target.

This module imports neither torch nor (until a Parquet file is met) pyarrow, so the PyTorch-free
runtime uses it too: :func:`predict_file` takes any predictor with ``predict_records(texts, top_k)``
(the shape of :meth:`TextCNNClassifier.predict_records`), ``classes_`` and ``multi_label_``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from .data import skipped_summary
from .errors import ConfigError, DataFormatError, missing_dependency

FORMATS = ("csv", "tsv", "jsonl", "parquet", "lines")
OUTPUT_FORMATS = ("csv", "tsv", "jsonl", "parquet")
DEFAULT_CHUNK_SIZE = 10_000
PREDICTION_PREFIX = "predicted_"  # prefixed to the prediction columns when the input has one of their names
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
               ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_SKIP_HINT = "or pass --skip-invalid to skip such rows"
_BAD_BYTES = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by errors='surrogateescape'


@dataclass
class StreamResult:
    """What :func:`predict_file` did: rows written, rows skipped (with --skip-invalid), time taken."""

    rows: int
    seconds: float
    source: str
    skipped: list[tuple[int, str]] = field(default_factory=list)
    unit: str = "line"  # what the numbers in ``skipped`` count: lines, or rows of a Parquet file

    def skipped_summary(self) -> str | None:
        return skipped_summary(self.source, self.skipped, self.unit)


def detect_input_format(path: str | Path, fmt: str | None = None) -> str:
    """The input format: ``fmt`` if given, else from the extension; other files hold one text per line."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(f"--input-format {fmt!r} cannot be streamed. Use one of: {', '.join(FORMATS)}.")
        return fmt
    return _EXTENSIONS.get(Path(str(path)).suffix.lower(), "lines")


def detect_output_format(path: str | Path, fmt: str | None = None) -> str:
    """The output format: ``fmt`` if given, JSONL for '-' (standard output), else from the extension."""
    if fmt is None:
        fmt = "jsonl" if str(path) == "-" else _EXTENSIONS.get(Path(str(path)).suffix.lower())
        if fmt is None:
            raise ConfigError(f"Cannot tell the format of --output '{path}' from its extension. Name it .csv, .tsv, "
                              f".jsonl or .parquet, or pass --output-format {{{','.join(OUTPUT_FORMATS)}}}.")
    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"--output-format {fmt!r} is not one of: {', '.join(OUTPUT_FORMATS)}.")
    if fmt == "parquet" and str(path) == "-":
        raise ConfigError("Parquet cannot be streamed to standard output. Give --output FILE.parquet, "
                          "or --output - for JSONL.")
    return fmt


def predict_file(predictor, input: str | Path, output: str | Path, *, input_format: str | None = None,
                 output_format: str | None = None, text_col: str = "text", chunk_size: int = DEFAULT_CHUNK_SIZE,
                 top_k: int = 1, skip_invalid: bool = False, progress: bool = False) -> StreamResult:
    """Classifies every row of ``input`` and writes the rows with their predictions to ``output``.

    Args:
        predictor: a fitted TextCNNClassifier, or a textcnn.runtime predictor.
        input: a CSV, TSV, JSONL or Parquet file, or a file of one text per line; '-' reads standard input.
        output: the file to write (its format from the extension); '-' writes JSONL to standard output.
        input_format, output_format: override the formats the extensions imply.
        text_col: the column (JSON field) holding the text.
        chunk_size: rows read, classified and written at a time (memory grows with it, not with the file).
        top_k: with k > 1, also the columns top1_label, top1_probability, ... topk_probability.
        skip_invalid: skip bad rows (listed in the result) instead of stopping at the first.
        progress: a progress bar with texts/s on standard error.

    Returns:
        A :class:`StreamResult`.

    Raises:
        DataFormatError: a bad row (naming the file and line), a missing text column.
        MissingDependencyError: Parquet without pyarrow.
    """
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ConfigError(f"--chunk-size must be an int >= 1. Got {chunk_size!r} instead.")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ConfigError(f"The 'top_k' parameter must be an int >= 1. Got {top_k!r} instead.")
    out_fmt = detect_output_format(output, output_format)
    source = _Source(input, detect_input_format(input, input_format), text_col, skip_invalid)
    started = time.perf_counter()
    with _progress(progress, source.total_rows()) as bar, _atomic_output(output, out_fmt) as stream:
        writer, rows = None, 0
        try:
            for chunk in source.chunks(chunk_size):
                records = predictor.predict_records(chunk.texts, top_k=top_k)
                if writer is None:
                    names = _prediction_names(predictor, top_k, source.columns)
                    writer = _WRITERS[out_fmt](stream, source, names, out_fmt)
                writer.write(chunk, [_prediction_values(rec, names, predictor) for rec in records])
                rows += len(chunk.texts)
                bar.update(len(chunk.texts))
        finally:
            if writer is not None:  # also on failure: the temporary file is closed, then removed
                writer.close()
        if writer is None:
            raise DataFormatError(f"{source.name}: no rows with text were found. Check the file and --input-format.")
    return StreamResult(rows, time.perf_counter() - started, source.name, source.skipped, source.unit)


# ----- reading -----

@dataclass
class Chunk:
    rows: list[dict]  # every input column of each valid row
    texts: list[str]
    lines: list[int]


class _Source:
    """Rows of one input file, checked one by one: a bad row raises or (skip_invalid) is skipped."""

    def __init__(self, path, fmt: str, text_col: str, skip_invalid: bool) -> None:
        self.path, self.fmt, self.text_col, self.skip_invalid = path, fmt, text_col, skip_invalid
        self.name = "<stdin>" if str(path) == "-" else str(path)
        self.unit = "row" if fmt == "parquet" else "line"
        self.columns: list[str] | None = None  # known after the header (first row for JSONL)
        self.arrow_schema = None  # the input's own column types (Parquet input only)
        self.skipped: list[tuple[int, str]] = []
        if self.name != "<stdin>" and not Path(path).is_file():
            what = "is a directory, not a file" if Path(path).is_dir() else "does not exist"
            raise DataFormatError(f"Cannot read '{self.name}': the path {what}. Check the path and try again.")

    def total_rows(self) -> int | None:
        return _parquet_file(self.path, self.name).metadata.num_rows if self.fmt == "parquet" else None

    def problem(self, line: int, message: str) -> None:
        if not self.skip_invalid:
            raise DataFormatError(f"{self.name}, {self.unit} {line}: {message}. Fix or remove the row, {_SKIP_HINT}.")
        self.skipped.append((line, message))

    def chunks(self, size: int) -> Iterator[Chunk]:
        chunk = Chunk([], [], [])
        for line, row in self._rows(size):
            text = row[self.text_col]
            if text is None or not isinstance(text, str):
                self.problem(line, f"the '{self.text_col}' field is {'empty' if text is None else 'not a string'}")
                continue
            if self.fmt != "lines" and not text.strip():  # one text per line: an empty line is a text too
                self.problem(line, f"the '{self.text_col}' field is empty")
                continue
            chunk.rows.append(row)
            chunk.texts.append(text)
            chunk.lines.append(line)
            if len(chunk.rows) == size:
                yield chunk
                chunk = Chunk([], [], [])
        if chunk.rows:
            yield chunk

    def _rows(self, size: int) -> Iterator[tuple[int, dict]]:
        if self.fmt == "parquet":
            yield from self._parquet(size)
            return
        with self._open() as f:
            if self.fmt in ("csv", "tsv"):
                yield from self._delimited(f, "\t" if self.fmt == "tsv" else ",")
            elif self.fmt == "jsonl":
                yield from self._jsonl(f)
            else:
                self.columns = [self.text_col]
                for line, raw in enumerate(f, start=1):
                    raw = raw.rstrip("\r\n")
                    if _BAD_BYTES.search(raw):
                        self.problem(line, "bytes that are not UTF-8")
                        continue
                    yield line, {self.text_col: raw}

    def _open(self) -> IO[str]:
        # Bad bytes are kept as surrogates and reported per row (with its line), never as a crash mid-file.
        if self.name == "<stdin>":
            import io

            return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", errors="surrogateescape", newline="")
        return open(self.path, encoding="utf-8-sig", errors="surrogateescape", newline="")

    def _delimited(self, f: IO[str], delimiter: str) -> Iterator[tuple[int, dict]]:
        rows = csv.reader(f, delimiter=delimiter)
        try:
            header = next(rows)
        except StopIteration:
            raise DataFormatError(f"{self.name}: the file is empty. Expected a header line such as 'text'.") from None
        except csv.Error as e:
            raise DataFormatError(f"{self.name}, line 1: not valid CSV ({e}). Check the quoting.") from None
        self._set_columns(header)
        start = rows.line_num + 1
        try:
            for row in rows:
                line, start = start, rows.line_num + 1
                if not row or row == [""]:
                    continue
                if len(row) != len(header):
                    self.problem(line, f"{len(row)} field(s) where the header has {len(header)}")
                elif _BAD_BYTES.search("".join(row)):
                    self.problem(line, "bytes that are not UTF-8")
                else:
                    yield line, dict(zip(header, row))
        except csv.Error as e:
            raise DataFormatError(f"{self.name}, line {rows.line_num}: not valid CSV ({e}). Check the quoting.") from None

    def _set_columns(self, columns: list[str]) -> None:
        if self.text_col not in columns:
            shown = ", ".join(repr(c) for c in columns)
            raise DataFormatError(f"{self.name}: no column '{self.text_col}' in the header (columns: {shown}). "
                                  "Pass --text-col with one of those names.")
        if len(set(columns)) != len(columns):
            twice = sorted({c for c in columns if columns.count(c) > 1})
            raise DataFormatError(f"{self.name}: the header names the column(s) {twice} more than once. "
                                  "Rename them so every column has its own name.")
        self.columns = list(columns)

    def _jsonl(self, f: IO[str]) -> Iterator[tuple[int, dict]]:
        for line, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            if _BAD_BYTES.search(raw):
                self.problem(line, "bytes that are not UTF-8")
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                self.problem(line, f"not valid JSON ({e.msg})")
                continue
            if not isinstance(obj, dict):
                self.problem(line, "a JSON value that is not an object")
            elif self.text_col not in obj:
                self.problem(line, f"no '{self.text_col}' field (pass --text-col to name another)")
            else:
                if self.columns is None:
                    self.columns = list(obj)  # the first row's fields are the columns of CSV and Parquet output
                yield line, obj

    def _parquet(self, size: int) -> Iterator[tuple[int, dict]]:
        pf = _parquet_file(self.path, self.name)
        self.arrow_schema = pf.schema_arrow
        self._set_columns(pf.schema_arrow.names)
        row = 0
        for batch in pf.iter_batches(batch_size=size):
            for values in batch.to_pylist():
                row += 1
                yield row, values


def _pyarrow(purpose: str):
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise missing_dependency("pyarrow", "parquet", purpose) from None
    return pyarrow


def _parquet_file(path, name: str):
    pa = _pyarrow("Reading Parquet")
    if name == "<stdin>":
        raise ConfigError("Parquet cannot be read from standard input. Give --input FILE.parquet.")
    try:
        return pa.parquet.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataFormatError(f"{name}: not a readable Parquet file ({e}). Check the file, or pass --input-format.") from None


# ----- predictions -----

def _prediction_names(predictor, top_k: int, columns: list[str]) -> list[str]:
    """label, probability (and topN_label, topN_probability); prefixed if the input has such a column."""
    names = ["label", "probability"]
    for i in range(1, min(top_k, len(predictor.classes_)) + 1 if top_k > 1 else 1):
        names += [f"top{i}_label", f"top{i}_probability"]
    while set(names) & set(columns):
        names = [PREDICTION_PREFIX + n for n in names]
    return names


def _prediction_values(rec: dict, names: list[str], predictor) -> dict:
    """One record of ``predict_records`` as flat columns; multi-label labels joined by the label separator."""
    if "labels" in rec:
        sep = getattr(predictor, "label_sep", "|")
        values = [sep.join(map(str, rec["labels"])), sep.join(repr(p) for p in rec["probabilities"])]
    else:
        values = [rec["label"], rec["probability"]]
    for top in rec["top_k"] if len(names) > 2 else ():
        values += [top["label"], top["probability"]]
    return dict(zip(names, values))


# ----- writing -----

class _atomic_output:
    """A text or binary stream on a temporary sibling of ``path``, renamed onto it only on success."""

    def __init__(self, path, fmt: str) -> None:
        self.path, self.binary = path, fmt == "parquet"

    def __enter__(self):
        if str(self.path) == "-":
            self.tmp, self.file = None, sys.stdout
            return sys.stdout
        target = Path(self.path)
        if target.is_dir():
            raise ConfigError(f"--output '{target}' is a directory. Give a file name such as {target / 'predictions.csv'}.")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "wb") if self.binary else os.fdopen(fd, "w", encoding="utf-8", newline="")
        return self.file

    def __exit__(self, kind, error, tb) -> None:
        if self.tmp is None:
            self.file.flush()
            return
        self.file.close()
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


class _DelimitedWriter:
    def __init__(self, stream: IO[str], source: _Source, names: list[str], fmt: str) -> None:
        self.stream, self.source = stream, source
        self.writer = csv.writer(stream, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
        self.writer.writerow(source.columns + names)

    def write(self, chunk: Chunk, predictions: list[dict]) -> None:
        columns = self.source.columns
        for line, row, pred in zip(chunk.lines, chunk.rows, predictions):
            _check_columns(self.source, line, row)
            self.writer.writerow([_cell(row.get(c)) for c in columns] + [_cell(pred[n]) for n in pred])
        self.stream.flush()

    def close(self) -> None:
        pass


def _check_columns(source: _Source, line: int, row: dict) -> None:
    """CSV and Parquet have one set of columns: a JSONL row with fields the first row lacks cannot be written."""
    if source.fmt == "jsonl" and not set(row) <= set(source.columns):
        extra = sorted(set(row) - set(source.columns))
        raise DataFormatError(f"{source.name}, line {line}: the field(s) {extra} are not in the first row, and CSV and "
                              "Parquet need the same columns in every row. Write JSONL instead (--output-format jsonl).")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


class _JsonlWriter:
    def __init__(self, stream: IO[str], source: _Source, names: list[str], fmt: str) -> None:
        self.stream, self.source, self.names = stream, source, set(names)

    def write(self, chunk: Chunk, predictions: list[dict]) -> None:
        lines = []
        for line, row, pred in zip(chunk.lines, chunk.rows, predictions):
            if not self.names.isdisjoint(row):  # only a field the first row lacks: the names avoid the first row's
                raise DataFormatError(f"{self.source.name}, line {line}: the field(s) {sorted(self.names & set(row))} "
                                      "clash with the prediction columns. Rename them, or add them to the first row.")
            lines.append(json.dumps({**row, **pred}, ensure_ascii=False, default=str))
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class _ParquetWriter:
    """One Parquet row group per chunk; column types from the input (Parquet) or the first chunk."""

    def __init__(self, stream: IO[bytes], source: _Source, names: list[str], fmt: str) -> None:
        self.stream, self.source, self.names = stream, source, names
        self.pa = _pyarrow("Writing Parquet")
        self.schema, self.writer = None, None

    def write(self, chunk: Chunk, predictions: list[dict]) -> None:
        pa = self.pa
        for line, row in zip(chunk.lines, chunk.rows):
            _check_columns(self.source, line, row)
        rows = [{**{c: row.get(c) for c in self.source.columns}, **pred} for row, pred in zip(chunk.rows, predictions)]
        if self.schema is None:
            self.schema = self._schema(rows)
            self.writer = pa.parquet.ParquetWriter(self.stream, self.schema)
        try:
            table = pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise DataFormatError(
                f"{self.source.name}, lines {chunk.lines[0]}-{chunk.lines[-1]}: a value does not fit its column's type "
                f"in the first rows ({e}). Parquet needs one type per column: make the column consistent, "
                "or write CSV or JSONL.") from None
        self.writer.write_table(table)

    def _schema(self, rows: list[dict]):
        pa = self.pa
        inferred = pa.Table.from_pylist(rows).schema
        given = self.source.arrow_schema
        fields = []
        for f in inferred:
            if given is not None and f.name in given.names:
                f = given.field(f.name)
            elif given is None and self.source.fmt != "jsonl" and f.name in self.source.columns:
                f = pa.field(f.name, pa.string())  # CSV, TSV, lines: text, whatever it looks like
            elif pa.types.is_null(f.type):
                f = pa.field(f.name, pa.string())
            fields.append(f)
        return pa.schema(fields)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


_WRITERS = {
    "csv": _DelimitedWriter,
    "tsv": _DelimitedWriter,
    "jsonl": _JsonlWriter,
    "parquet": _ParquetWriter,
}


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def _progress(show: bool, total: int | None):
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=" texts", unit_scale=True, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
