"""Property tests: a damaged data file is read, or refused with a DataFormatError naming the file.

Files are written from random bytes and from random rows (quoting, BOMs, CR/LF mixes, NULs, long
fields, bad UTF-8, odd JSON). Bounded and derandomized, so the suite stays fast and CI stable.
"""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textcnn import DataFormatError, read_records
from textcnn.data import FORMATS

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PIECES = ['"', '""', ",", "\t", "\n", "\r", "\r\n", "\x00", "\ufeff", "__label__", "__label__x ", "|", " ", "{", "}",
          '{"text": ', '"label"', "[", "]", "\\", "text,label\n", "text\tlabel\n", "\udc80", "\u2028", "\x85"]
FIELD = st.one_of(st.text(max_size=20), st.sampled_from(PIECES), st.just("x" * 140_000))
LINE_END = st.sampled_from(["\n", "\r\n", "\r"])
JSON_VALUE = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                          max_leaves=6)


@st.composite
def delimited_files(draw):
    sep = draw(st.sampled_from([",", "\t"]))
    rows = draw(st.lists(st.lists(FIELD, min_size=1, max_size=4), max_size=6))
    lines = [draw(st.sampled_from(["text", "label", "other", ""])) + sep + "label"]
    for row in rows:
        quoted = [f'"{f}"' if draw(st.booleans()) else f for f in row]
        lines.append(sep.join(quoted))
    return "".join(line + draw(LINE_END) for line in lines)


@st.composite
def jsonl_files(draw):
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        obj = {k: draw(st.one_of(JSON_VALUE, st.text(max_size=10))) for k in draw(st.sets(st.sampled_from(["text", "label", "x"])))}
        line = json.dumps(obj, ensure_ascii=draw(st.booleans()))
        lines.append(draw(st.sampled_from([line, line[: len(line) // 2], "[" * 5000, "1" * 5000, draw(FIELD)])))
    return "".join(line + draw(LINE_END) for line in lines)


@st.composite
def fasttext_files(draw):
    lines = [draw(st.sampled_from(["", "__label__a ", "__label__a __label__b ", "__label__ ", "__label__|"]))
             + " ".join(draw(st.lists(FIELD, max_size=4))) for _ in range(draw(st.integers(0, 6)))]
    return "".join(line + draw(LINE_END) for line in lines)


def _encode(draw, text: str) -> bytes:
    raw = text.encode("utf-8", errors="surrogateescape" if draw(st.booleans()) else "surrogatepass")
    if draw(st.booleans()):
        raw = b"\xef\xbb\xbf" + raw
    return raw


@st.composite
def files(draw):
    """(bytes, format): mostly a format that fits the content, sometimes any."""
    kind = draw(st.sampled_from(["bytes", "delimited", "jsonl", "fasttext"]))
    fits = {"bytes": FORMATS, "delimited": ("csv", "tsv"), "jsonl": ("jsonl",), "fasttext": ("fasttext", "lines")}[kind]
    fmt = draw(st.sampled_from(fits if draw(st.integers(0, 4)) else FORMATS))
    if kind == "bytes":
        return draw(st.binary(max_size=300)), fmt
    text = draw({"delimited": delimited_files, "jsonl": jsonl_files, "fasttext": fasttext_files}[kind]())
    return _encode(draw, text), fmt


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@SETTINGS
@given(file=files(), labeled=st.booleans(), skip_invalid=st.booleans())
def test_readers_read_or_name_the_file(workdir, file, labeled, skip_invalid):
    raw, fmt = file
    path = workdir / f"data.{fmt}"
    path.write_bytes(raw)
    try:
        records = read_records(path, fmt=fmt, labeled=labeled, skip_invalid=skip_invalid)
    except DataFormatError as e:
        assert str(path) in str(e), str(e)
        return
    assert records.texts and len(records.texts) == len(records.lines)
    assert all(isinstance(t, str) for t in records.texts)
    assert records.lines == sorted(records.lines) and records.lines[0] >= 1
    if labeled:
        assert len(records.labels) == len(records.texts)
        for label in records.labels:
            assert (isinstance(label, str) and label.strip() == label and label) or \
                (isinstance(label, list) and label and all(isinstance(x, str) and x for x in label))
    else:
        assert records.labels is None
