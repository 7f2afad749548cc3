"""Which n-grams won the max-pool, and by how much: exact explanations of a TextCNN's logits.

After max-pooling, the model is linear: ``logit[c] = bias[c] + sum_j W[c, j] * pooled[j]``, and each
pooled value ``pooled[j]`` comes from exactly one window of the text (the window that won filter j's
max over time). So ``W[c, j] * pooled[j]`` is filter j's contribution to class c, and it belongs to
that window. With batch norm, ``pooled`` is already the normalised, ReLU'd maximum (``TextCNN.pool``
applies BN and ReLU before the max), so the same sum holds. Nothing is approximated: for every class,
the contributions plus the bias equal the logit (up to float32 rounding).

Windows are summed into:

* n-grams: the real tokens a window covers (a window hanging over the padding of a text shorter than
  it covers fewer tokens), with their character span in the original text;
* tokens: each window's contribution split evenly over the real tokens it covers.

Only a text with no tokens at all has windows that cover none; their contribution is ``unattributed``.
So ``sum(token_scores) + unattributed + bias == logit`` and the same for the n-grams.

With the n-gram channel (``ngram_features`` > 0) the logit has a second, linear term: the channel's
linear layer on the mean of the text's n-gram vectors (up to ``ngram_order``). Each n-gram's share is its vector
through that layer divided by the number of n-grams; these are listed per class as
``channel_ngrams`` (with character spans, like ``ngrams``), added to ``token_scores`` (an n-gram's
split evenly over its tokens), and the channel's bias is part of ``bias``. The sums above still hold, the
n-grams' with both lists: ``sum(ngrams) + sum(channel_ngrams) + unattributed + bias == logit``.

Example:
    >>> from textcnn import TextCNNClassifier
    >>> clf = TextCNNClassifier(epochs=1, verbose=0).fit(["good film", "bad film"] * 20, ["pos", "neg"] * 20)
    >>> exp = clf.explain(["a good film"])[0]
    >>> c = exp["classes"][0]
    >>> abs(sum(c["token_scores"]) + c["unattributed"] + c["bias"] - c["logit"]) < 1e-4
    True
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np
import torch

from .data import check_texts, length_batches, pad_batch, to_python
from .errors import ConfigError
from .model import gram_bucket, min_length, ngram_spans
from .vocab import UNK_ID

EXPLAIN_BATCH = 256
DRIVERS_PER_TEXT = 3  # n-grams per text counted by corpus_top_ngrams


def explain(clf, texts: Iterable[str], *, classes: Sequence | None = None) -> list[dict]:
    """Explains each text's logits, class by class, down to the winning n-grams.

    Args:
        clf: a fitted (or loaded) TextCNNClassifier.
        texts: the texts to explain.
        classes: labels to explain; None explains every class in ``clf.classes_`` order.

    Returns:
        One JSON-ready dict per text: ``text``, ``tokens`` (used tokens with character spans and
        whether the vocabulary knows them), ``n_tokens``, ``truncated``, ``prediction`` (as
        ``predict_records`` gives it), ``walk`` (the forward pass's shapes and winners for this text)
        and ``classes``: per class ``label``, ``logit``, ``probability``, ``bias``, ``token_scores``,
        ``ngrams`` (sorted by contribution, largest first) and ``unattributed``.

    Raises:
        NotFittedError: the classifier is not fitted.
        DataFormatError: a text is not a string.
        ConfigError: a label in ``classes`` is not one of the model's classes.
    """
    clf._check_fitted()
    texts = check_texts(texts, "texts")
    class_idx = _class_indices(clf, classes)
    spans = [clf.tokenizer_.tokenize_with_spans(t) for t in texts]
    limit = clf.config_.max_text_len
    if clf.config_.encoder is not None:  # word pieces: the head reads their encoder states
        inputs, unknown = clf.encode(texts), clf.tokenizer_.head_unk_id
        ids = list(inputs)
    else:
        inputs = ids = [clf.vocab_.encode([tok for tok, _, _ in s[:limit]]) for s in spans]
        unknown = UNK_ID
    pooled, positions = _pool_all(clf.model_, inputs, min_length(clf.model_.window_sizes))
    weight = clf.model_.fc.weight.detach().cpu().double().numpy()  # (C, F*n)
    bias = clf.model_.fc.bias.detach().cpu().double().numpy()  # (C,)
    # The prediction shown comes from these very logits (the exact float32 model), not a faster path.
    logits_shape = (len(ids), len(bias))
    channel = [_channel(clf.model_, x) for x in ids]  # per text: (C, n-grams) contributions and their spans
    if clf.model_.ngram_fc is not None:
        bias = bias + clf.model_.ngram_fc.bias.detach().cpu().double().numpy()  # (C,)
    logits = pooled @ weight.T + bias + np.array([c.sum(axis=1) for c, _ in channel]).reshape(logits_shape)  # (N, C)
    records = clf._records(texts, clf._proba_from_logits(logits), len(clf.classes_))
    out = []
    for i, text in enumerate(texts):
        used = spans[i][:limit]
        contrib = weight * pooled[i]  # (C, F*n)
        exp = {
            "text": text,
            "tokens": [{"token": tok, "start": s, "end": e, "known": tid != unknown}
                       for (tok, s, e), tid in zip(used, ids[i])],
            "n_tokens": len(spans[i]),
            "truncated": len(spans[i]) > limit,
            "prediction": {k: v for k, v in records[i].items() if k != "text"},
            "walk": _walk(clf, text, used, pooled[i], positions[i], contrib, bias, channel[i][0]),
            "classes": [_class_explanation(clf, text, used, positions[i], contrib[c], bias[c], c, records[i],
                                           (channel[i][0][c], channel[i][1])) for c in class_idx],
        }
        out.append(exp)
    return out


def _class_indices(clf, classes: Sequence | None) -> list[int]:
    """Indices of the asked classes in ``clf.classes_``, each once, in the order first asked."""
    if classes is None:
        return list(range(len(clf.classes_)))
    names = {str(c): i for i, c in enumerate(clf.classes_)}
    out: dict[int, None] = {}  # ordered, without repeats: a class asked twice is explained once
    for c in classes:
        if str(c) not in names:
            raise ConfigError(f"The class {c!r} is not one of the model's classes "
                              f"({', '.join(map(str, clf.classes_))}).")
        out[names[str(c)]] = None
    return list(out)


def explain_cost(clf, texts: Iterable[str], *, classes: Sequence | None = None) -> int:
    """An upper bound on the n-gram scores :func:`explain` would return: for each text, its used tokens
    (at least 1) x (its window sizes, + 2 with the n-gram channel) x the distinct classes asked. The server refuses requests over
    ``--max-explain-cost`` with it before doing the work.

    Raises:
        DataFormatError: a text is not a string.
        ConfigError: a label in ``classes`` is not one of the model's classes.
    """
    clf._check_fitted()
    texts = check_texts(texts, "texts")
    n_classes = len(_class_indices(clf, classes))
    limit = clf.config_.max_text_len
    tokens = sum(max(1, min(len(clf.tokenizer_.tokenize(t)), limit)) for t in texts)
    per_token = len(clf.config_.window_sizes) + (2 if clf.config_.ngram_features else 0)  # the channel: uni + bi
    return tokens * per_token * n_classes


@torch.inference_mode()
def _pool_all(model, ids, min_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Pooled values (N, F*n) in float32 and winning window starts (N, F*n), dropout off.

    ``ids``: id lists, or an encoder input (:class:`textcnn.encoder.EncodedTexts`) whose states the head reads.
    """
    was_training = model.training
    model.eval()
    n_features = model.fc.in_features
    pooled = np.zeros((len(ids), n_features), dtype=np.float32)
    positions = np.zeros((len(ids), n_features), dtype=np.int64)
    device = next(model.parameters()).device  # a model trained on a GPU stays there
    for batch in length_batches([len(x) for x in ids], EXPLAIN_BATCH):
        x = pad_batch([ids[i] for i in batch], min_len).to(device)  # (B, T)
        vectors = ids.vectors(batch, x.shape[1], device) if hasattr(ids, "vectors") else None  # (B, T, C_in)
        p, pos = model.pool(x, vectors, return_positions=True)  # (B, F*n), (B, F*n)
        pooled[batch] = p.float().cpu().numpy()
        positions[batch] = pos.cpu().numpy()
    model.train(was_training)
    return pooled.astype(np.float64), positions


def _channel(model, ids: list[int]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The n-gram channel's contributions to each class (C, G) for one text's G n-grams, and their token spans.

    Each n-gram's vector through the channel's linear layer, divided by G (the layer's bias apart):
    they sum to ``model.ngram_logits(ids) - bias``. No channel, or no tokens: (C, 0).
    """
    if model.ngram_fc is None:
        return np.zeros((model.fc.out_features, 0)), []
    spans = ngram_spans(len(ids), model.ngram_order)
    buckets = [gram_bucket(ids[s:e], model.ngram_embedding.num_embeddings - 1) for s, e in spans]
    vectors = model.ngram_embedding.weight.detach()[buckets].cpu().double().numpy()  # (G, D)
    w = model.ngram_fc.weight.detach().cpu().double().numpy()  # (C, D)
    return (w @ vectors.T) / max(len(spans), 1), spans  # (C, G)


def _filter_windows(model, positions: np.ndarray, n_tokens: int) -> list[tuple[int, int, int]]:
    """Per filter: (window size, first token, end token) of the real tokens its winning window covers."""
    feature_size = model.fc.in_features // len(model.window_sizes)
    out = []
    for j, start in enumerate(positions):
        k = model.window_sizes[j // feature_size]
        start = min(int(start), n_tokens)
        out.append((k, start, min(start + k, n_tokens)))
    return out


def _class_explanation(clf, text, used, positions, contrib, bias, c, record, channel) -> dict:
    """One class: token scores, n-grams (the convolutions' and the channel's) and the parts that add up to its logit."""
    n = len(used)
    token_scores = np.zeros(n)
    values, spans = channel  # the n-gram channel's (G,) contributions and spans; empty without it
    for (start, end), value in zip(spans, values):
        token_scores[start:end] += value / (end - start)
    ngrams: dict[tuple[int, int], list] = {}
    unattributed = 0.0
    for (k, start, end), value in zip(_filter_windows(clf.model_, positions, n), contrib):
        if value == 0:  # a filter ReLU'd to zero adds nothing, wherever its argmax fell
            continue
        if end <= start:
            unattributed += value
            continue
        token_scores[start:end] += value / (end - start)
        entry = ngrams.setdefault((start, end), [0.0, 0])
        entry[0] += value
        entry[1] += 1
    label = clf.classes_[c]
    probs = {str(t["label"]): t["probability"] for t in record["top_k"]}
    exp = {
        "label": to_python(label),
        "logit": float(bias + contrib.sum() + values.sum()),
        "probability": probs[str(label)],
        "bias": float(bias),
        "token_scores": [float(s) for s in token_scores],
        "ngrams": sorted((_ngram(clf, text, used, s, e, v, cnt) for (s, e), (v, cnt) in ngrams.items()),
                         key=lambda g: -g["contribution"]),
        "unattributed": float(unattributed),
    }
    if clf.model_.ngram_fc is not None:
        exp["channel_ngrams"] = sorted((_ngram(clf, text, used, s, e, v, 0) for (s, e), v in zip(spans, values)),
                                       key=lambda g: -g["contribution"])
    return exp


def _ngram(clf, text: str, used, start: int, end: int, value: float, filters: int) -> dict:
    char_start, char_end = used[start][1], used[end - 1][2]
    return {
        "text": text[char_start:char_end],
        "key": ngram_key(clf, [tok for tok, _, _ in used[start:end]]),
        "token_start": start, "token_end": end,
        "char_start": char_start, "char_end": char_end,
        "contribution": float(value), "filters": filters,
    }


def ngram_key(clf, tokens: list[str]) -> str:
    """The normalised form of an n-gram (its tokens), for counting across texts."""
    return ("" if clf.tokenizer_.name == "char" else " ").join(tokens)


def _walk(clf, text, used, pooled, positions, contrib, bias, channel) -> dict:
    """The seed's shape walk-through for this one text, with the winner of each window size."""
    model = clf.model_
    n = len(used)
    length = max(n, min_length(model.window_sizes))  # texts shorter than the widest window are padded to it
    emb = model.input_size
    feature_size = model.fc.in_features // len(model.window_sizes)
    branches = []
    for b, k in enumerate(model.window_sizes):
        block = slice(b * feature_size, (b + 1) * feature_size)
        best = int(np.argmax(pooled[block]))
        j = b * feature_size + best
        start = min(int(positions[j]), n)
        end = min(start + k, n)
        winners = defaultdict(int)
        for p in positions[block][pooled[block] > 0]:
            winners[(min(int(p), n), min(int(p) + k, n))] += 1
        top = max(winners.items(), key=lambda kv: kv[1], default=None)
        branches.append({
            "window": k, "conv_shape": [1, feature_size, length - k + 1], "pooled_shape": [1, feature_size],
            "text_windows": max(n - k + 1, 1),  # later windows run into padding; the model masks them
            "best_filter": best, "best_value": float(pooled[j]),
            "best_ngram": _span_text(text, used, start, end),
            "active_filters": int((pooled[block] > 0).sum()),
            "most_common_ngram": None if top is None else {**_span_text(text, used, *top[0]), "filters": top[1]},
        })
    return {
        "token_ids_shape": [1, length], "embedding_shape": [1, length, emb], "permuted_shape": [1, emb, length],
        "branches": branches, "concat_shape": [1, model.fc.in_features],
        "logits": [float(x) for x in bias + contrib.sum(axis=1) + channel.sum(axis=1)],
        "labels": [to_python(c) for c in clf.classes_],
    }


def _span_text(text: str, used, start: int, end: int) -> dict:
    if end <= start:
        return {"text": "", "token_start": start, "token_end": end, "padding_only": True}
    return {"text": text[used[start][1]:used[end - 1][2]], "token_start": start, "token_end": end}


def corpus_top_ngrams(clf, texts: Iterable[str], *, top: int = 20) -> dict[str, list[dict]]:
    """The n-grams that most often drive each class over a corpus.

    For every text, the ``DRIVERS_PER_TEXT`` n-grams with the largest positive contribution to its
    predicted class (each predicted label, for multi-label) are counted once. An n-gram's contribution
    in a text is the sum over its places there, the convolutions' and the n-gram channel's alike.

    Returns:
        Per class label (as str), up to ``top`` dicts ``ngram``, ``texts`` (how many texts it drove)
        and ``mean_contribution``, most frequent first.
    """
    counts: dict[str, dict[str, list]] = {str(c): defaultdict(lambda: [0, 0.0]) for c in clf.classes_}
    texts = check_texts(texts, "texts")
    for start in range(0, len(texts), EXPLAIN_BATCH):
        for exp in explain(clf, texts[start:start + EXPLAIN_BATCH]):
            pred = exp["prediction"]
            predicted = {str(x) for x in pred.get("labels", [pred.get("label")])}
            for cls in exp["classes"]:
                if str(cls["label"]) not in predicted:
                    continue
                per_text: dict[str, float] = defaultdict(float)
                for g in cls["ngrams"] + cls.get("channel_ngrams", []):
                    per_text[g["key"]] += g["contribution"]
                drivers = sorted(((k, v) for k, v in per_text.items() if v > 0), key=lambda kv: -kv[1])
                for key, value in drivers[:DRIVERS_PER_TEXT]:
                    entry = counts[str(cls["label"])][key]
                    entry[0] += 1
                    entry[1] += value
    return {label: [{"ngram": key, "texts": n, "mean_contribution": total / n}
                    for key, (n, total) in sorted(per.items(), key=lambda kv: (-kv[1][0], -kv[1][1]))[:top]]
            for label, per in counts.items()}

