"""Tokenizers by name: ``word``, ``char`` and ``jieba``, behind one small protocol.

A tokenizer turns a text into tokens together with their character spans in the original text,
so explanations can point back at the exact characters. The config stores only the name and
options (``spec()``), never the object, and ``make_tokenizer(**spec)`` rebuilds it at load time.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Protocol

from .errors import ConfigError, missing_dependency

# Scripts written without spaces between words: CJK ideographs, kana, and their punctuation.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")
_WORD = re.compile(r"\w+(?:['\u2019-]\w+)*|[^\w\s]")
# The same rule for lower-cased ASCII text, with explicit classes (a third faster than \w there).
_WORD_ASCII_LOWER = re.compile(r"[a-z0-9_]+(?:['-][a-z0-9_]+)*|[^a-z0-9_\s]")
_CHAR = re.compile(r"\S")


class Tokenizer(Protocol):
    name: str

    def tokenize(self, text: str) -> list[str]: ...

    def tokenize_with_spans(self, text: str) -> list[tuple[str, int, int]]: ...

    def spec(self) -> dict: ...


class RegexTokenizer:
    """Splits by a compiled regular expression; the matching runs in C."""

    def __init__(self, name: str, pattern: re.Pattern, lowercase: bool,
                 ascii_lower: re.Pattern | None = None) -> None:
        self.name = name
        self.lowercase = lowercase
        self._findall = pattern.findall
        self._finditer = pattern.finditer
        # Matches exactly what ``pattern`` matches in lower-cased ASCII text, faster.
        self._findall_ascii = (ascii_lower or pattern).findall

    def tokenize(self, text: str) -> list[str]:
        if not self.lowercase:
            return self._findall(text)
        if text.isascii():  # ASCII lower-casing changes no token boundary: one C call for the text
            return self._findall_ascii(text.lower())
        # Lower-casing after matching keeps tokens and offsets right (str.lower can change lengths).
        return [t.lower() for t in self._findall(text)]

    def tokenize_head(self, text: str, limit: int) -> list[str]:
        """``tokenize(text)[:limit]``, reading only as much of a long text as it needs.

        A match depends only on the characters up to two past its end (a connector such as '-' and
        a word character extend a word), so a match cut short by the end of a prefix can be
        followed by at most one token there. When the prefix yields more than ``limit + 1``
        tokens, its first ``limit`` are therefore the text's own.
        """
        size = 8 * limit + 32  # ~2x the usual characters per token; a miss only costs a full scan
        if len(text) > 2 * size:
            head = self.tokenize(text[:size])
            if len(head) > limit + 1:
                return head[:limit]
        return self.tokenize(text)[:limit]

    def tokenize_with_spans(self, text: str) -> list[tuple[str, int, int]]:
        out = []
        for m in self._finditer(text):
            token = m.group()
            out.append((token.lower() if self.lowercase else token, m.start(), m.end()))
        return out

    def spec(self) -> dict:
        return {"name": self.name, "lowercase": self.lowercase}


class JiebaTokenizer:
    """Chinese word segmentation with jieba (``pip install 'textcnn[zh]'``)."""

    name = "jieba"

    def __init__(self, lowercase: bool) -> None:
        try:
            import jieba
        except ImportError as e:
            raise missing_dependency("jieba", "zh", "The 'jieba' tokenizer") from e
        jieba.setLogLevel(60)  # its start-up chatter goes to stderr otherwise
        self._jieba = jieba
        self.lowercase = lowercase

    def tokenize(self, text: str) -> list[str]:
        return [t for t, _, _ in self.tokenize_with_spans(text)]

    def tokenize_with_spans(self, text: str) -> list[tuple[str, int, int]]:
        out = []
        for word, start, end in self._jieba.tokenize(text):
            if word.strip():
                out.append((word.lower() if self.lowercase else word, start, end))
        return out

    def spec(self) -> dict:
        return {"name": self.name, "lowercase": self.lowercase}


_REGISTRY: dict[str, Callable[..., Tokenizer]] = {
    "word": lambda lowercase=True: RegexTokenizer("word", _WORD, lowercase, _WORD_ASCII_LOWER),
    "char": lambda lowercase=True: RegexTokenizer("char", _CHAR, lowercase),
    "jieba": lambda lowercase=True: JiebaTokenizer(lowercase),
}


def available_tokenizers() -> list[str]:
    return sorted(_REGISTRY)


def register_tokenizer(name: str, factory: Callable[..., Tokenizer]) -> None:
    """Adds a tokenizer factory under ``name``; it must accept ``lowercase=`` and return a Tokenizer."""
    _REGISTRY[name] = factory


def make_tokenizer(name: str, lowercase: bool = True) -> Tokenizer:
    if name not in _REGISTRY:
        raise ConfigError(
            f"The 'tokenizer' parameter must be one of 'auto', {', '.join(map(repr, available_tokenizers()))}. "
            f"Got {name!r} instead."
        )
    return _REGISTRY[name](lowercase=lowercase)


def tokenizer_from_spec(spec: dict) -> Tokenizer:
    """Rebuilds a tokenizer from its saved ``spec()``; raises ValueError saying what is wrong with it."""
    if not isinstance(spec, dict):
        raise ValueError('it must be a JSON object such as {"name": "word", "lowercase": true}')
    unknown = sorted(set(spec) - {"name", "lowercase"})
    if unknown:
        raise ValueError(f"it has unknown keys {unknown}; a tokenizer spec holds only 'name' and 'lowercase'")
    name, lowercase = spec.get("name"), spec.get("lowercase", True)
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"'name' is {name!r}, not one of {', '.join(map(repr, available_tokenizers()))} "
                         "(a tokenizer added with register_tokenizer must be registered before loading)")
    if not isinstance(lowercase, bool):
        raise ValueError(f"'lowercase' must be true or false, not {lowercase!r}")
    return _REGISTRY[name](lowercase=lowercase)


def cjk_share(texts: Iterable[str], sample: int = 2000) -> float:
    """Share of non-space characters that are CJK, over the first ``sample`` texts."""
    cjk = total = 0
    for i, text in enumerate(texts):
        if i >= sample:
            break
        cjk += len(_CJK.findall(text))
        total += sum(1 for ch in text if not ch.isspace())
    return cjk / total if total else 0.0


def resolve_tokenizer_name(name: str, texts: list[str]) -> tuple[str, str | None]:
    """Turns 'auto' into a concrete name; returns it with an advice line, or None.

    CJK text has no spaces, so the word tokenizer would make each clause one token.
    """
    share = cjk_share(texts)
    if name == "auto":
        return ("char" if share > 0.5 else "word"), None
    if name == "word" and share > 0.5:
        return name, (
            f"{share:.0%} of the training characters are Chinese or Japanese, which have no spaces: "
            "the 'word' tokenizer makes each clause one token. Use --tokenizer char (or jieba for Chinese words)."
        )
    return name, None
