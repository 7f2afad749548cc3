"""TextCNNConfig: every hyperparameter in one frozen dataclass.

Field names follow the seed tutorial (``embedding_size``, ``feature_size``, ``window_sizes``,
``max_text_len``, ``dropout_rate``, ``num_class``) and are the same in Python, in ``config.json``
and, in kebab-case, on the command line.
"""

from __future__ import annotations

import dataclasses
import re
import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ConfigError

EMBEDDING_MODES = ("rand", "static", "non-static", "multichannel")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
MONITORS = ("auto", "accuracy", "macro_f1", "micro_f1", "loss")
SINGLE_LABEL_MONITORS = ("auto", "accuracy", "macro_f1", "loss")  # micro F1 is accuracy there: not reported
CLASS_WEIGHTS = (None, "balanced")
DEFAULT_NGRAM_FEATURES = 131_072  # n-gram channel buckets (on by default: dev evidence, benchmarks/README.md)
TUNE_SEARCH_SHARE = 0.7  # textcnn tune: the search's share of the budget; the rest re-scores the best settings
TUNE_RESCORE = 3  # textcnn tune: how many of the best settings are trained again with a second seed
DEFAULT_EMBEDDING_SIZE = 128  # embedding_size=None without pretrained vectors
DEFAULT_VECTOR_VOCAB = 100_000  # vector_vocab=None with pretrained vectors
WORD_WINDOW_SIZES = (3, 4, 5)  # window_sizes=None with word tokens (Kim 2014)
CHAR_WINDOW_SIZES = (1, 2, 3)  # window_sizes=None with character tokens (THUCNews dev, benchmarks/README.md)
WORD_NGRAM_ORDER = 2  # ngram_order=None with word tokens: uni- and bigrams
CHAR_NGRAM_ORDER = 3  # ngram_order=None with character tokens: and trigrams (THUCNews dev, benchmarks/README.md)
NGRAM_ORDERS = (1, 2, 3)  # the channel's longest n-grams: unigrams, bigrams or trigrams
WORD_LEARNING_RATE = 3e-3  # learning_rate=None with an embedding table
ENCODER_LEARNING_RATE = 1e-3  # learning_rate=None with an encoder input (MR, SST-2 dev, benchmarks/README.md)


def _doc(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose help text travels in its metadata (used by the CLI)."""
    return field(metadata={"help": text}, **kwargs)


@dataclass(frozen=True)
class TextCNNConfig:
    """Hyperparameters of a TextCNN classifier, its tokenizer, vocabulary and training."""

    # --- the model, with the seed tutorial's names ---
    embedding_size: int | None = _doc(
        "Word-vector size: Conv1d in_channels. None: 128 (DEFAULT_EMBEDDING_SIZE), or the size of the "
        "pretrained vectors given with --embeddings.",
        default=None,
    )
    feature_size: int = _doc("Filters (feature maps) per window size: Conv1d out_channels.", default=100)
    window_sizes: tuple[int, ...] | None = _doc(
        "Conv1d kernel sizes, one branch each. None: 3,4,5 for words (Kim 2014), 1,2,3 for characters "
        "(the char tokenizer, chosen for Chinese and Japanese).",
        default=None,
    )
    max_text_len: int = _doc("Texts are cut to this many tokens (shorter ones are not padded to it).", default=400)
    dropout_rate: float = _doc("Dropout on the pooled features, training only.", default=0.5)
    num_class: int | None = _doc("Number of classes; None infers it from the training labels.", default=None)
    batch_norm: bool = _doc("BatchNorm1d after each conv (left commented out in the seed).", default=False)
    ngram_features: int = _doc(
        "Hash buckets of the n-gram channel: each token and each run of adjacent tokens up to ngram_order is hashed into one of N "
        "buckets, a learned vector per bucket, and the mean vector's own linear term is added to the logits. "
        "0: no channel. On by default (2**17 buckets, a 50 MB table with 100-d vectors: dev accuracy +1.7 MR, "
        "+0.9 SST-2, +0.2 TREC, 2-seed means, benchmarks/README.md); a model saved without the field has no "
        "channel.", default=DEFAULT_NGRAM_FEATURES)
    ngram_embedding_size: int = _doc("Size of the n-gram channel's vectors (with ngram_features > 0).", default=100)
    ngram_order: int | None = _doc(
        "The n-gram channel's longest n-grams: 1 (tokens), 2 (and adjacent pairs) or 3 (and triples). None: 3 "
        "for characters (THUCNews dev, benchmarks/README.md), 2 for words; a model saved without the field has 2.",
        default=None)
    # --- embeddings (Kim 2014's variants) ---
    embedding_mode: str = _doc(
        "rand (random init), static (frozen vectors), non-static (fine-tuned vectors, random init "
        "without --embeddings) or multichannel (one frozen and one fine-tuned copy).",
        default="non-static",
    )
    embeddings: str | None = _doc("Pretrained vectors: a file path or a registered name.", default=None)
    encoder: str | None = _doc(
        "A frozen pretrained transformer encoder whose last-layer token states the convolutions read instead "
        "of an embedding table: a local Hugging Face model directory, or a registered name (minilm-l6). Its "
        "tokenizer replaces --tokenizer (max_text_len counts word pieces). Needs pip install 'textcnn[encoder]'.",
        default=None,
    )
    max_norm: float | None = _doc("Max L2 norm of each class's weight row in the last layer (Kim: 3).", default=3.0)
    vector_vocab: int | None = _doc(
        "Also add the first N words of the pretrained vectors (most frequent first in GloVe, word2vec and "
        "fastText files) to the vocabulary, so words never seen in training keep their vector at prediction "
        "time (on top of max_vocab_size). None: 100000 with --embeddings, else 0. 0: training words only.",
        default=None,
    )
    # --- text to ids ---
    tokenizer: str = _doc("auto, word, char or jieba. auto picks char for CJK text, else word.", default="auto")
    lowercase: bool = _doc("Lower-case text before tokenizing.", default=True)
    min_freq: int = _doc("Keep tokens seen at least this often in training; with --embeddings, the vectors' "
                         "first vector_vocab words are kept whatever their count.", default=2)
    max_vocab_size: int | None = _doc("Keep at most this many tokens (most frequent first); None keeps all.", default=100_000)
    # --- training ---
    epochs: int = _doc("Maximum passes over the training data.", default=10)
    batch_size: int = _doc("Texts per training step.", default=50)
    learning_rate: float | None = _doc("Adam learning rate. None: 3e-3, or 1e-3 with --encoder (dev choices, "
                                       "benchmarks/README.md).", default=None)
    embedding_lr_scale: float | None = _doc(
        "Learning rate of the embedding tables (word embeddings, the n-gram channel's) relative to learning_rate "
        "(SparseAdam there, Adam elsewhere). None: 1, or 3 with --encoder, so that the n-gram channel keeps the "
        "word model's 3e-3 while the head learns at 1e-3 (dev choice, benchmarks/README.md).",
        default=None,
    )
    weight_decay: float = _doc("L2 penalty on dense weights (not on embeddings).", default=0.0)
    patience: int = _doc("Stop after this many epochs without a better dev score.", default=3)
    monitor: str = _doc("Dev metric for early stopping: auto (accuracy; macro_f1 for multi-label), accuracy, "
                        "macro_f1, micro_f1 (multi-label only) or loss.", default="auto")
    class_weight: str | None = _doc("None, or 'balanced' to weight the loss by inverse class frequency.", default=None)
    dev_fraction: float = _doc("Share of train held out (stratified) as dev when no dev set is given.", default=0.1)
    multi_label: bool | None = _doc("Force multi-label (True) or single-label (False); None detects it.", default=None)
    label_sep: str = _doc("Separator of labels in one field for multi-label data.", default="|")
    seed: int = _doc("Random seed: two CPU runs with the same seed give identical models.", default=0)
    device: str = _doc("auto, cpu, cuda or cuda:N.", default="auto")
    precision: str = _doc("Training arithmetic: auto (bfloat16 autocast on CPUs with native bfloat16 and on GPUs "
                          "that have it, else float32), float32, bfloat16, or float16 (CUDA, with a GradScaler). "
                          "float32 and bfloat16 runs are not bit-identical.", default="auto")
    max_steps: int | None = _doc("Stop after this many training steps in all (None: run the epochs); "
                                 "the dev set is scored once more at that point.", default=None)

    def __post_init__(self) -> None:
        if isinstance(self.window_sizes, list):
            object.__setattr__(self, "window_sizes", tuple(self.window_sizes))
        _validate(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TextCNNConfig":
        """Builds a config, rejecting unknown keys with the closest valid name."""
        check_known_keys(values)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["window_sizes"] = None if self.window_sizes is None else list(self.window_sizes)
        return out

    def replace(self, **changes: Any) -> "TextCNNConfig":
        check_known_keys(changes)
        return dataclasses.replace(self, **changes)


def default_window_sizes(tokenizer: str) -> tuple[int, ...]:
    """The window sizes that ``window_sizes=None`` stands for with this (resolved) tokenizer."""
    return CHAR_WINDOW_SIZES if tokenizer == "char" else WORD_WINDOW_SIZES


def default_ngram_order(tokenizer: str) -> int:
    """The n-gram channel's order that ``ngram_order=None`` stands for with this (resolved) tokenizer."""
    return CHAR_NGRAM_ORDER if tokenizer == "char" else WORD_NGRAM_ORDER


def default_learning_rate(encoder: str | None) -> float:
    """The learning rate that ``learning_rate=None`` stands for with this input."""
    return WORD_LEARNING_RATE if encoder is None else ENCODER_LEARNING_RATE


def default_embedding_lr_scale(encoder: str | None) -> float:
    """The embedding_lr_scale that None stands for: with an encoder the channel learns at the word model's rate."""
    return 1.0 if encoder is None else WORD_LEARNING_RATE / ENCODER_LEARNING_RATE


def resolve_monitor(monitor: str, multi_label: bool) -> str:
    """The dev metric to early-stop on for this task; refuses one the task does not report."""
    choices = MONITORS if multi_label else SINGLE_LABEL_MONITORS
    if monitor not in choices:
        task = "multi-label" if multi_label else "single-label"
        raise ConfigError(
            f"The 'monitor' parameter (--monitor) must be one of {', '.join(map(repr, choices))} for {task} data. "
            f"Got {monitor!r} instead" + (" (micro F1 is reported for multi-label data only; on single-label data "
                                         "it equals accuracy)." if monitor == "micro_f1" else ".")
        )
    if monitor == "auto":
        return "macro_f1" if multi_label else "accuracy"
    return monitor


def check_known_keys(values: Mapping[str, Any]) -> None:
    names = TextCNNConfig.field_names()
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else f" Valid names: {', '.join(names)}."
            raise ConfigError(f"Unknown parameter '{key}'.{hint}")


def _bad(name: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"The '{name}' parameter must be {expected}. Got {value!r} instead.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_POSITIVE_INTS = ("feature_size", "max_text_len", "min_freq", "epochs", "batch_size")


def _validate(c: TextCNNConfig) -> None:
    for name in _POSITIVE_INTS:
        value = getattr(c, name)
        if not _is_int(value) or value < 1:
            raise _bad(name, "an int >= 1", value)
    if c.embedding_size is not None and (not _is_int(c.embedding_size) or c.embedding_size < 1):
        raise _bad("embedding_size", "None or an int >= 1", c.embedding_size)
    if not _is_int(c.ngram_features) or c.ngram_features < 0:
        raise _bad("ngram_features", "an int >= 0 (0: no n-gram channel)", c.ngram_features)
    if not _is_int(c.ngram_embedding_size) or c.ngram_embedding_size < 1:
        raise _bad("ngram_embedding_size", "an int >= 1", c.ngram_embedding_size)
    if c.ngram_order is not None and (not _is_int(c.ngram_order) or c.ngram_order not in NGRAM_ORDERS):
        raise _bad("ngram_order", "None, 1, 2 or 3", c.ngram_order)
    if not _is_int(c.patience) or c.patience < 0:
        raise _bad("patience", "an int >= 0", c.patience)
    if not _is_int(c.seed):
        raise _bad("seed", "an int", c.seed)
    if c.num_class is not None and (not _is_int(c.num_class) or c.num_class < 2):
        raise _bad("num_class", "None or an int >= 2", c.num_class)
    if c.max_vocab_size is not None and (not _is_int(c.max_vocab_size) or c.max_vocab_size < 1):
        raise _bad("max_vocab_size", "None or an int >= 1", c.max_vocab_size)
    ws = c.window_sizes
    if ws is not None and (not isinstance(ws, tuple) or not ws or not all(_is_int(k) and k >= 1 for k in ws)):
        raise _bad("window_sizes", "None or a non-empty list of ints >= 1, e.g. [3, 4, 5]", ws)
    if not _is_number(c.dropout_rate) or not 0 <= c.dropout_rate < 1:
        raise _bad("dropout_rate", "a float in [0, 1)", c.dropout_rate)
    if not _is_number(c.dev_fraction) or not 0 < c.dev_fraction < 1:
        raise _bad("dev_fraction", "a float in (0, 1)", c.dev_fraction)
    if c.learning_rate is not None and (not _is_number(c.learning_rate) or c.learning_rate <= 0):
        raise _bad("learning_rate", "None or a float > 0", c.learning_rate)
    if c.embedding_lr_scale is not None and (not _is_number(c.embedding_lr_scale) or c.embedding_lr_scale <= 0):
        raise _bad("embedding_lr_scale", "None or a float > 0", c.embedding_lr_scale)
    if c.vector_vocab is not None and (not _is_int(c.vector_vocab) or c.vector_vocab < 0):
        raise _bad("vector_vocab", "None or an int >= 0", c.vector_vocab)
    if not _is_number(c.weight_decay) or c.weight_decay < 0:
        raise _bad("weight_decay", "a float >= 0", c.weight_decay)
    if c.max_norm is not None and (not _is_number(c.max_norm) or c.max_norm <= 0):
        raise _bad("max_norm", "None or a float > 0", c.max_norm)
    _check_choice("embedding_mode", c.embedding_mode, EMBEDDING_MODES)
    if not (c.device in DEVICES or isinstance(c.device, str) and re.fullmatch(r"cuda:\d+", c.device)):
        raise _bad("device", f"one of {', '.join(map(repr, DEVICES))} or 'cuda:N'", c.device)
    _check_choice("precision", c.precision, PRECISIONS)
    if c.max_steps is not None and (not _is_int(c.max_steps) or c.max_steps < 1):
        raise _bad("max_steps", "None or an int >= 1", c.max_steps)
    _check_choice("monitor", c.monitor, MONITORS)
    _check_choice("class_weight", c.class_weight, CLASS_WEIGHTS)
    if not isinstance(c.tokenizer, str) or not c.tokenizer:
        raise _bad("tokenizer", "a tokenizer name such as 'word' or 'char'", c.tokenizer)
    if not isinstance(c.label_sep, str) or not c.label_sep:
        raise _bad("label_sep", "a non-empty string", c.label_sep)
    if c.embedding_mode in ("static", "multichannel") and c.embeddings is None:
        raise ConfigError(
            f"The '{c.embedding_mode}' embedding mode needs pretrained vectors. "
            "Pass embeddings=PATH_OR_NAME (--embeddings on the CLI), or use embedding_mode='non-static'."
        )
    if c.vector_vocab and c.embeddings is None:
        raise ConfigError(f"vector_vocab={c.vector_vocab} adds words from pretrained vectors, but none were given. "
                          "Pass embeddings=PATH_OR_NAME (--embeddings on the CLI), or leave vector_vocab unset.")
    if c.encoder is not None:
        _check_encoder(c)
    elif c.tokenizer == "encoder":
        raise ConfigError("tokenizer='encoder' is the word-piece tokenizer of an encoder input, but no encoder was "
                          "given. Pass encoder=NAME_OR_DIR (--encoder on the CLI), or use tokenizer='auto'.")
    if c.embedding_mode == "rand" and c.embeddings is not None:
        raise ConfigError(
            "embedding_mode='rand' means random initialisation, but embeddings were given. "
            "Use embedding_mode='non-static' (or 'static'/'multichannel') with pretrained vectors."
        )


def _check_encoder(c: TextCNNConfig) -> None:
    """An encoder input replaces the tokenizer and the embedding table: refuse settings for those."""
    if not isinstance(c.encoder, str) or not c.encoder:
        raise _bad("encoder", "None, a registered encoder name such as 'minilm-l6' or a model directory", c.encoder)
    if c.embeddings is not None or c.embedding_mode in ("static", "multichannel") or c.vector_vocab:
        raise ConfigError("encoder= gives the convolutions an encoder's token states, so there are no word vectors "
                          "to set: drop embeddings / embedding_mode / vector_vocab (--embeddings, --embedding-mode, "
                          "--vector-vocab), or drop --encoder.")
    if c.tokenizer not in ("auto", "encoder"):
        raise ConfigError(f"tokenizer={c.tokenizer!r} was given with encoder={c.encoder!r}, whose own word-piece "
                          "tokenizer replaces it. Leave tokenizer at 'auto' (drop --tokenizer).")


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        shown = ", ".join(repr(v) for v in choices)
        raise _bad(name, f"one of {shown}", value)
