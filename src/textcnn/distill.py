"""``textcnn distill``: train a fast word-vector TextCNN on a slower teacher model's soft targets.

The recipe of task-specific distillation into small networks (Tang et al. 2019, "Distilling
Task-Specific Knowledge from BERT into Simple Neural Networks"; TinyBERT's word replacement): the
teacher labels the training texts and a transfer set made from them by augmentation (word dropout;
word replacement by one of the word's nearest neighbours; then with some probability keeping only a
random n-gram of 1-5 words), and the student learns the teacher's class probabilities.

With an encoder teacher the neighbours come from the encoder itself: static word vectors distilled
from it as model2vec does (each word alone through the encoder, the mean of its word pieces'
last-layer states, PCA), over the training words and the encoder's whole-word vocabulary, so the
transfer set carries words the labelled texts never used, and the teacher says what they mean; the
student starts from those vectors.

On the labelled texts the target mixes the teacher's probabilities with the true label:
``alpha * softmax(teacher_logits / temperature) + (1 - alpha) * one_hot(label)``; on the transfer
set it is the teacher's alone. The dev set (given, or held out from the labelled texts
before augmentation, so no copy of a dev text reaches training) is scored on its true labels.

Any saved textcnn model can teach; the point is an ``--encoder`` model teaching a model without one,
which keeps the fast prediction paths.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .classifier import TextCNNClassifier
from .config import DEFAULT_EMBEDDING_SIZE, TextCNNConfig
from .data import stratified_split
from .errors import ConfigError
from .labels import detect_multi_label, label_targets, normalise_labels
from .tokenizers import make_tokenizer, resolve_tokenizer_name

DEFAULT_COPIES = 10  # augmented texts drawn per training text
P_DROP = 0.1  # each word is dropped with this probability
P_REPLACE = 0.15  # each kept word with neighbours is replaced by one of them with this probability
P_NGRAM = 0.25  # then, with this probability, only a random n-gram of the rest is kept
MAX_NGRAM = 5
NEIGHBOURS = 10  # the nearest words a word may be replaced by
VECTOR_DIMS = DEFAULT_EMBEDDING_SIZE  # the encoder's static word vectors after PCA: the student's by default
VECTOR_STD = 0.3  # their scale as the student's starting vectors
WORD_BATCH = 512  # words per encoder call


def augment(texts: Sequence[str], copies: int, *, seed: int, p_drop: float = P_DROP, p_ngram: float = P_NGRAM,
            max_n: int = MAX_NGRAM, characters: bool = False, neighbours: dict[str, list[str]] | None = None,
            p_replace: float = P_REPLACE) -> list[str]:
    """Up to ``copies`` distinct new texts per text (word dropout, replacement, n-gram sampling); none equals an input.

    ``characters``: treat each character as a word (Chinese, Japanese: text without spaces).
    ``neighbours``: lower-cased word -> the words it may be replaced by (none: no replacement).
    """
    rng = np.random.default_rng(seed)
    seen, out = set(texts), []
    join = "" if characters else " "
    neighbours = neighbours or {}
    for text in texts:
        words = list(text.replace(" ", "")) if characters else text.split()
        for _ in range(copies):
            kept = []
            for word, r in zip(words, rng.random(len(words))):
                if r < p_drop:
                    continue
                options = neighbours.get(word.lower()) if r < p_drop + p_replace else None
                kept.append(options[int(rng.integers(len(options)))] if options else word)
            kept = kept or words
            if len(kept) > 1 and rng.random() < p_ngram:
                n = int(rng.integers(1, min(max_n, len(kept)) + 1))
                start = int(rng.integers(0, len(kept) - n + 1))
                kept = kept[start:start + n]
            new = join.join(kept)
            if new and new not in seen:
                seen.add(new)
                out.append(new)
    return out


def encoder_word_vectors(encoder, words: Sequence[str], dims: int = VECTOR_DIMS) -> np.ndarray:
    """Static vectors (len(words), dims) from a frozen encoder, as model2vec distils them.

    Each word alone through the encoder (its [CLS]/[SEP] around it), the mean of its word pieces'
    last-layer states, then PCA to ``dims`` over all the words. A word without pieces gets [UNK]'s.
    """
    import torch

    pieces = [p or [encoder.unk_id] for p in encoder.encode(list(words), 32).pieces]
    states = np.zeros((len(pieces), encoder.hidden_size), dtype=np.float32)
    order = np.argsort([len(p) for p in pieces], kind="stable")  # few pads per batch
    for start in range(0, len(order), WORD_BATCH):
        rows = order[start: start + WORD_BATCH]
        batch = [pieces[i] for i in rows]
        sums = encoder.states(batch, max(map(len, batch))).sum(dim=1)  # (B, H): zero past each word
        states[rows] = (sums / torch.tensor([[len(p)] for p in batch])).numpy()
    centred = states - states.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # (H, H): principal directions
    return (centred @ vt[:dims].T).astype(np.float32)


def nearest_words(vectors: np.ndarray, words: Sequence[str], queries: Sequence[str], k: int = NEIGHBOURS,
                  chunk: int = 2048) -> dict[str, list[str]]:
    """Each query word (one of ``words``) -> its ``k`` nearest other words by cosine of ``vectors``."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    index = {w: i for i, w in enumerate(words)}
    rows = [index[q] for q in queries if q in index]
    out = {}
    for start in range(0, len(rows), chunk):
        block = rows[start: start + chunk]
        sims = unit[block] @ unit.T  # (b, V)
        sims[np.arange(len(block)), block] = -np.inf  # not itself
        top = np.argpartition(-sims, min(k, len(words) - 1) - 1, axis=1)[:, :k]
        for i, (row, cols) in enumerate(zip(block, top)):
            cols = cols[np.argsort(-sims[i, cols])]  # nearest first
            out[words[row]] = [words[c] for c in cols if words[c] != words[row]]
    return out


@dataclass
class TeacherWords:
    """An encoder teacher's static word vectors and the neighbours :func:`augment` replaces words by."""

    words: list[str]  # the student's training tokens, then the encoder's whole words the texts lack
    vectors: np.ndarray  # (len(words), dims) float32, scaled to a standard deviation of VECTOR_STD
    neighbours: dict[str, list[str]]  # each training word of letters -> its nearest words


def teacher_words(teacher, texts: Sequence[str], tokenize: Callable[[str], list[str]], dims: int = VECTOR_DIMS,
                  log: Callable[[str], None] = print) -> TeacherWords | None:
    """The static vectors of the student's tokens (``tokenize``) and the encoder's words; None without an encoder."""
    from .encoder import Encoder

    encoder = teacher.tokenizer_
    if not isinstance(encoder, Encoder):
        return None
    ours = sorted({token for text in texts for token in tokenize(text)})
    known = set(ours)
    words = ours + sorted(w for w in encoder.vocabulary() if w.isalpha() and w not in known)
    vectors = encoder_word_vectors(encoder, words, dims)
    vectors *= VECTOR_STD / max(float(vectors.std()), 1e-12)
    neighbours = nearest_words(vectors, words, [w for w in ours if w.isalpha()])
    log(f"distill: the teacher's encoder gives static vectors for {len(words)} words ({len(ours)} of the training "
        f"texts); {len(neighbours)} training words get {NEIGHBOURS} nearest words to be replaced by")
    return TeacherWords(words, vectors, neighbours)


def write_vectors(found: TeacherWords, directory: Path) -> str:
    """``found``'s vectors as a .npy matrix and its vocabulary file (textcnn.embeddings reads them): the .npy path."""
    path = Path(directory) / "teacher-vectors.npy"
    np.save(path, found.vectors)
    (Path(directory) / "teacher-vectors.vocab.txt").write_text("".join(w + "\n" for w in found.words), encoding="utf-8")
    return str(path)


def soft_labels(teacher_logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / temperature), row by row (N, C) float32."""
    z = teacher_logits / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def mixed_targets(teacher_logits: np.ndarray, labels: Sequence, classes: list, alpha: float,
                  temperature: float) -> tuple[np.ndarray, list]:
    """The student's targets over the labelled texts (the first ``len(labels)`` rows), then the transfer set.

    Returns the class probabilities (N, C), ``classes``' order (the labelled rows mixed with the true
    label by ``alpha``), and the transfer set's most likely classes (the card counts them).
    """
    proba = soft_labels(teacher_logits, temperature)
    n = len(labels)
    one_hot = np.eye(len(classes), dtype=np.float32)[label_targets(labels, classes, False, "training",
                                                                   among="the teacher's classes")]
    proba[:n] = alpha * proba[:n] + (1 - alpha) * one_hot
    return proba, [classes[i] for i in proba[n:].argmax(axis=1)]


def distill(
    teacher, texts: Sequence[str], labels: Sequence, dev_texts: Sequence[str] | None = None,
    dev_labels: Sequence | None = None, *, copies: int = DEFAULT_COPIES, alpha: float = 0.5,
    temperature: float = 1.0, params: dict[str, Any] | None = None, teacher_vectors: bool = True,
    log: Callable[[str], None] = print,
) -> TextCNNClassifier:
    """A student TextCNNClassifier(**params) trained on ``teacher``'s soft targets (see the module doc).

    Args:
        teacher: a fitted classifier (``textcnn.load(dir)``) whose classes are the training labels'.
        copies: augmented texts per training text (0: the training texts alone).
        alpha: the teacher's share of the target on labelled texts (1: the teacher alone).
        temperature: softens (> 1) or sharpens (< 1) the teacher's probabilities.
        params: the student's config (its own seed, vectors, ...); verbose too.
        teacher_vectors: with an encoder teacher and no ``embeddings`` in ``params``, the student starts
            from the encoder's static word vectors (over its training words and the encoder's vocabulary).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"--alpha must be in [0, 1] (the teacher's share of the target), got {alpha}.")
    if temperature <= 0:
        raise ConfigError(f"--temperature must be more than 0, got {temperature}.")
    if copies < 0:
        raise ConfigError(f"--copies must be 0 or more, got {copies}.")
    params = dict(params or {})
    cfg = TextCNNConfig.from_dict({k: v for k, v in params.items() if k != "verbose"})
    texts, labels = list(texts), list(labels)
    multi, _, _ = detect_multi_label(labels, cfg.multi_label, cfg.label_sep)
    if multi or teacher.multi_label_:
        raise ConfigError("textcnn distill supports single-label data for now; this data or teacher is multi-label.")
    labels = normalise_labels(labels, multi, cfg.label_sep)
    if dev_texts is None:
        train_idx, dev_idx = stratified_split(labels, cfg.dev_fraction, cfg.seed)
        dev_texts, dev_labels = [texts[i] for i in dev_idx], [labels[i] for i in dev_idx]
        texts, labels = [texts[i] for i in train_idx], [labels[i] for i in train_idx]
        log(f"distill: no dev set given: holding out a stratified {cfg.dev_fraction:.0%} of train ({len(dev_texts)} "
            "texts) before augmenting")
    name = resolve_tokenizer_name(cfg.tokenizer, texts[:1000])[0]
    characters = name in ("char", "jieba")
    wants_vectors = teacher_vectors and cfg.embeddings is None and cfg.encoder is None
    dims = cfg.embedding_size or VECTOR_DIMS
    found = (teacher_words(teacher, texts, make_tokenizer(name, cfg.lowercase).tokenize, dims, log)
             if copies or wants_vectors else None)
    neighbours = found.neighbours if found is not None and copies else {}
    vectors = wants_vectors and found is not None and found.vectors.shape[1] == dims
    if wants_vectors and found is not None and not vectors:
        log(f"distill: the student starts from random vectors: its embedding_size {dims} is more than the "
            f"encoder's vectors give ({found.vectors.shape[1]})")
    transfer = augment(texts, copies, seed=cfg.seed, characters=characters, neighbours=neighbours)
    log(f"distill: {len(texts)} training texts + {len(transfer)} augmented; the teacher labels them")
    proba, guessed = mixed_targets(teacher.decision_function(texts + transfer), labels, list(teacher.classes_),
                                   alpha, temperature)
    with tempfile.TemporaryDirectory(prefix="textcnn-distill-") as tmp:
        student = TextCNNClassifier(**{**params, **({"embeddings": write_vectors(found, tmp)} if vectors else {})})
        student.fit(texts + transfer, labels + guessed, validation_data=(dev_texts, dev_labels),
                    soft_targets=(list(teacher.classes_), proba))
    if vectors:  # the file is gone: the card says where the starting vectors came from
        student.set_params(embeddings=None, vector_vocab=None)
        student.config_ = student.config_.replace(embeddings=None, vector_vocab=0)
    student.training_data_["distilled"] = {"texts": len(texts), "augmented": len(transfer), "alpha": alpha,
                                           "temperature": temperature, "words_with_neighbours": len(neighbours),
                                           "teacher_vectors": len(found.words) if vectors else 0}
    return student
