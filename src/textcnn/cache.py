"""Training on files larger than memory: a streaming vocabulary pass and an on-disk token cache.

``textcnn train`` on a file reads it twice, row by row (:func:`textcnn.data.stream_records`: CSV,
TSV, JSONL, fastText and Parquet): the first pass counts the tokens and labels (the vocabulary
is built exactly as from a list of texts), the second encodes every text once into a cache
entry, a directory of

* ``ids.bin``: the token ids of every text, int32, one after the other (cut to max_text_len);
* ``offsets.bin``: int64, N+1 of them: text i is ``ids[offsets[i]:offsets[i+1]]``;
* ``targets.npy``: the labels as class indices (int64), or a 0/1 float32 matrix for multi-label;
* ``header.json``: the source file (path, size, mtime, sha256), the reader options, the
  tokenizer spec, the vocabulary's sha256 and the classes.

Training reads each batch's rows from ``ids.bin`` with ``pread``, so memory holds the vocabulary
and the offsets (8 bytes a text), whatever the number of texts. (Not a memory map: the pages of a
mapped file count in the process's resident memory, and the kernel maps them in large blocks around
each row read, so 300 random batches made nearly all of a 330 MB ``ids.bin`` resident.) A later run on the
same file (same size and mtime) and the same text settings finds the entries and skips both
passes ("token cache hit" in the log). Entries are written whole or not at all
(:mod:`textcnn.atomicdir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .atomicdir import file_sha256, replace_dir, write_file
from .data import stream_records
from .vocab import Vocab

FORMAT = 1
CHUNK = 8192  # rows encoded per write
SAMPLE = 2000  # texts that decide tokenizer='auto'


def default_cache_dir() -> Path:
    """$TEXTCNN_CACHE_DIR, else ~/.cache/textcnn (or $XDG_CACHE_HOME/textcnn)."""
    if os.environ.get("TEXTCNN_CACHE_DIR"):
        return Path(os.environ["TEXTCNN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "textcnn"


@dataclass(frozen=True)
class ReadOptions:
    fmt: str | None = None
    text_col: str = "text"
    label_col: str = "label"
    skip_invalid: bool = False


class TokenSeqs:
    """Texts as token ids on disk: ``seqs[i]`` is an int32 array; ``index`` picks a subset (a split).

    ``ids`` is the open ``ids.bin`` (read at offsets, never mapped: see the module docstring).
    """

    def __init__(self, ids: BinaryIO, offsets: np.ndarray, fingerprint: str, index: np.ndarray | None = None) -> None:
        self.ids, self.offsets, self.index = ids, offsets, index
        self.fingerprint = fingerprint if index is None else f"{fingerprint}:{hashlib.sha256(index.tobytes()).hexdigest()}"

    def __len__(self) -> int:
        return len(self.offsets) - 1 if self.index is None else len(self.index)

    def _row(self, i) -> int:
        return int(i) if self.index is None else int(self.index[i])

    def __getitem__(self, i) -> np.ndarray:
        j = self._row(i)
        start, end = int(self.offsets[j]), int(self.offsets[j + 1])
        return np.frombuffer(_read_at(self.ids, 4 * start, 4 * (end - start)), dtype=np.int32)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def lengths(self) -> np.ndarray:
        n = np.diff(self.offsets)
        return n if self.index is None else n[self.index]

    def subset(self, index: np.ndarray) -> "TokenSeqs":
        return TokenSeqs(self.ids, self.offsets, self.fingerprint, index if self.index is None else self.index[index])

    def padded(self, rows: np.ndarray, min_len: int = 1) -> torch.Tensor:
        """Rows ``rows`` right-padded with 0: (B, T) int64, like :func:`textcnn.data.pad_batch`."""
        parts = [self[i] for i in rows]
        width = max(min_len, max((len(p) for p in parts), default=0))
        out = np.zeros((len(parts), width), dtype=np.int64)
        for r, p in enumerate(parts):
            out[r, : len(p)] = p
        return torch.from_numpy(out)


def _read_at(file: BinaryIO, offset: int, size: int) -> bytes:
    if hasattr(os, "pread"):  # POSIX: no shared file position
        return os.pread(file.fileno(), size, offset)
    file.seek(offset)
    return file.read(size)


@dataclass
class Summary:
    """What the counting pass learns from the training file."""

    tokenizer: str
    vocab: Vocab
    labels: list  # the distinct raw labels, in order of first appearance
    n: int
    skipped: list


def source_identity(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]




class _Enough(Exception):
    pass


class TokenCache:
    """Cache entries under ``root`` for the files of one run; ``log`` reports hits and passes."""

    def __init__(self, root, options: ReadOptions, log: Callable[..., None], progress: bool = True) -> None:
        self.root, self.options, self.log, self.progress = Path(root), options, log, progress

    def _stream(self, path: Path, sink) -> list:
        o = self.options
        return stream_records(path, sink, fmt=o.fmt, text_col=o.text_col, label_col=o.label_col,
                              skip_invalid=o.skip_invalid)

    def _bar(self, desc: str, total: int | None = None):
        return tqdm(total=total, desc=desc, unit="text", disable=not self.progress, leave=False, dynamic_ncols=True)

    def sample(self, path: Path) -> list[str]:
        texts: list[str] = []

        def sink(line, text, label):
            texts.append(text)
            if len(texts) >= SAMPLE:
                raise _Enough

        with contextlib.suppress(_Enough):
            self._stream(path, sink)
        return texts

    def summary(self, path: Path, tokenizer, name: str, min_freq: int, max_size: int | None) -> Summary:
        """The vocabulary and the distinct labels of ``path``: from the cache, or a counting pass."""
        entry = self.root / f"vocab-{_key(source_identity(path), self.options, tokenizer.spec(), min_freq, max_size)}"
        meta_file = entry / "summary.json"
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            self.log(f"token cache hit: the vocabulary of {path} ({meta['n']} texts) from {entry}")
            return Summary(name, Vocab.from_json(meta["vocab"]), meta["labels"], meta["n"], meta["skipped"])
        labels: dict = {}
        counts: Counter[str] = Counter()
        bar = self._bar(f"counting {path.name}")

        n = 0

        def sink(line, text, label):
            nonlocal n
            labels.setdefault(json.dumps(label), label)
            counts.update(tokenizer.tokenize(text))
            n += 1
            bar.update()

        skipped = self._stream(path, sink)
        # A Counter updates another in its insertion order: the same vocabulary as from the texts themselves.
        vocab = Vocab.build([counts], min_freq=min_freq, max_size=max_size)
        bar.close()
        summary = Summary(name, vocab, list(labels.values()), n, skipped)
        meta = {"format": FORMAT, "vocab": vocab.to_json(), "labels": summary.labels, "n": summary.n,
                "skipped": skipped, "source": source_identity(path), "tokenizer": tokenizer.spec()}
        replace_dir(entry, lambda tmp: write_file(tmp / "summary.json", json.dumps(meta).encode()))
        self.log(f"counted {summary.n} texts of {path}: vocabulary of {len(vocab)} tokens")
        return summary

    def tokens(self, path: Path, encode: Callable[[list[str]], list[list[int]]], targets: Callable[[list], np.ndarray],
               spec: dict, vocab: Vocab, classes: list, max_len: int) -> tuple[TokenSeqs, torch.Tensor]:
        """``path`` encoded: from the cache, or an encoding pass that writes the entry."""
        vocab_hash = hashlib.sha256(json.dumps(vocab.itos).encode()).hexdigest()
        identity = source_identity(path)
        entry = self.root / f"tokens-{_key(identity, self.options, spec, vocab_hash, [str(c) for c in classes], max_len)}"
        if not (entry / "header.json").is_file():
            self._encode(path, entry, encode, targets, identity, spec, vocab_hash, classes, max_len)
        else:
            self.log(f"token cache hit: {path} encoded in {entry}")
        header = json.loads((entry / "header.json").read_text(encoding="utf-8"))
        ids = open(entry / "ids.bin", "rb", buffering=0)  # closed with the TokenSeqs that reads it
        offsets = np.fromfile(entry / "offsets.bin", dtype=np.int64)
        y = torch.from_numpy(np.load(entry / "targets.npy", allow_pickle=False))
        return TokenSeqs(ids, offsets, fingerprint=header["key"]), y

    def _encode(self, path, entry, encode, targets, identity, spec, vocab_hash, classes, max_len) -> None:
        bar = self._bar(f"encoding {path.name}")
        started = time.perf_counter()
        done = [0]

        def write(tmp: Path) -> None:
            n, tokens, parts = 0, 0, []
            offsets = [np.zeros(1, np.int64)]
            with open(tmp / "ids.bin", "wb") as ids_file:
                texts: list[str] = []
                labels: list = []

                def flush():
                    nonlocal n, tokens
                    encoded = [np.asarray(ids, dtype=np.int32) for ids in encode(texts)]
                    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
                    if encoded:
                        np.concatenate(encoded).tofile(ids_file)
                    offsets.append(tokens + np.cumsum(lengths))
                    parts.append(targets(labels))
                    tokens += int(lengths.sum())
                    n += len(texts)
                    bar.update(len(texts))
                    texts.clear()
                    labels.clear()

                def sink(line, text, label):
                    texts.append(text)
                    labels.append(label)
                    if len(texts) >= CHUNK:
                        flush()

                self._stream(path, sink)
                flush()
                ids_file.flush()
                os.fsync(ids_file.fileno())
            write_file(tmp / "offsets.bin", np.concatenate(offsets).tobytes())
            with open(tmp / "targets.npy", "wb") as f:
                np.save(f, np.concatenate(parts), allow_pickle=False)
            header = {"format": FORMAT, "key": entry.name, "source": {**identity, "sha256": file_sha256(path)},
                      "read": self.options.__dict__, "tokenizer": spec, "vocab_sha256": vocab_hash,
                      "classes": [str(c) for c in classes], "max_text_len": max_len, "texts": n, "tokens": tokens}
            write_file(tmp / "header.json", json.dumps(header, indent=1).encode())
            done[0] = n

        replace_dir(entry, write)
        bar.close()
        self.log(f"encoded {done[0]} texts of {path} into {entry} "
                 f"({done[0] / max(time.perf_counter() - started, 1e-9):.0f} texts/s, both passes' reading included)")
