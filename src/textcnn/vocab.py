"""Vocab: token <-> id, built from the training split only.

Id 0 is ``<pad>`` (its embedding row stays zero and padding never wins the max-pool) and id 1 is
``<unk>`` (every token not kept).
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Iterable

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
MIN_COVERAGE = 0.5  # warn when the kept words cover less than this share of the training tokens
MIN_WORDS = 10  # ... or when fewer words than this are kept out of more seen


class Vocab:
    """An ordered token list; ``stoi`` maps tokens to ids."""

    def __init__(self, tokens: list[str]) -> None:
        if tokens[:2] != [PAD, UNK]:
            raise ValueError(f"A vocabulary must start with {PAD!r}, {UNK!r}; got {tokens[:2]!r}.")
        self.itos = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(
        cls,
        token_lists: Iterable[list[str]],
        *,
        min_freq: int = 1,
        max_size: int | None = None,
    ) -> "Vocab":
        """Most frequent tokens first; ties broken by first appearance, so builds are deterministic.

        ``counts`` holds the kept tokens' counts, ``seen`` every token's (for :func:`vocabulary_warning`).
        """
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        kept = [t for t, n in counts.most_common() if n >= min_freq and t not in (PAD, UNK)]
        if max_size is not None:
            kept = kept[: max(max_size - 2, 0)]
        vocab = cls([PAD, UNK, *kept])
        vocab.counts = {t: counts[t] for t in kept}
        vocab.seen = counts
        return vocab

    def extended(self, tokens: Iterable[str], max_size: int | None = None) -> "Vocab":
        """This vocabulary plus the new ``tokens`` (in order, duplicates skipped) up to ``max_size`` in all."""
        extra = [t for t in dict.fromkeys(tokens) if t not in self.stoi]
        if max_size is not None:
            extra = extra[: max(max_size - len(self.itos), 0)]
        vocab = Vocab([*self.itos, *extra])
        vocab.counts = dict(getattr(self, "counts", {}))
        return vocab

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: list[str]) -> list[int]:
        return list(map(self.stoi.get, tokens, itertools.repeat(UNK_ID, len(tokens))))  # map runs in C

    def to_json(self) -> dict:
        return {"tokens": self.itos}

    @classmethod
    def from_json(cls, data: dict) -> "Vocab":
        """The inverse of ``to_json``; raises ValueError saying what is wrong with ``data``."""
        if not isinstance(data, dict) or "tokens" not in data:
            raise ValueError('it must be a JSON object {"tokens": [...]}')
        unknown = sorted(set(data) - {"tokens"})
        if unknown:
            raise ValueError(f"it has unknown keys {unknown}; a vocabulary holds only 'tokens'")
        tokens = data["tokens"]
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("'tokens' must be a list of strings")
        if tokens[:2] != [PAD, UNK]:
            raise ValueError(f"'tokens' must start with {PAD!r} (id {PAD_ID}) and {UNK!r} (id {UNK_ID}); "
                             f"it starts with {tokens[:2]!r}")
        vocab = cls(tokens)
        if len(vocab.stoi) != len(tokens):  # a token kept its last id: some id is not its own
            first = next(i for i, t in enumerate(tokens) if vocab.stoi[t] != i)
            raise ValueError(f"the token {tokens[first]!r} occurs more than once (ids {first} and {vocab.stoi[tokens[first]]})")
        return vocab


def vocabulary_warning(vocab: Vocab, seen: Counter, min_freq: int, max_size: int | None) -> str | None:
    """A warning when the vocabulary keeps few of the training words, naming the setting to change; else None.

    ``seen`` counts every training token. Tokens left out become ``<unk>``: with ``min_freq=2`` on a
    corpus of one-off words the model would see little but ``<unk>``.
    """
    total = sum(seen.values())
    if not total:
        return None
    kept = [t for t in seen if t in vocab.stoi]
    coverage = sum(seen[t] for t in kept) / total
    if coverage >= MIN_COVERAGE and not len(kept) < MIN_WORDS < len(seen):
        return None
    fixes = []
    if min_freq > 1 and any(n < min_freq for n in seen.values()):
        fixes.append(f"lower --min-freq (min_freq={min_freq} drops words seen fewer than {min_freq} times; "
                     "--min-freq 1 keeps every word)")
    if max_size is not None and len(seen) > max_size - 2:
        fixes.append(f"raise --max-vocab-size (max_vocab_size={max_size})")
    advice = " or ".join(fixes) or "train on more text"
    return (f"The vocabulary keeps {len(kept)} of the {len(seen)} distinct training tokens, covering "
            f"{coverage:.0%} of the training tokens; every other token becomes {UNK}, so the model sees little of "
            f"the text. To keep more, {advice}.")
