"""Property tests: every tokenizer answers any Unicode string with a list of non-empty str.

Bounded and derandomized, so the suite stays fast and CI stable.
"""

import importlib.util

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textcnn.tokenizers import available_tokenizers, make_tokenizer

# The hard cases, mixed into random text: lone surrogates, combining marks, right-to-left text and
# marks, emoji with joiners and modifiers, zero-width characters, odd spaces and line ends, CJK.
SPECIAL = ["\ud800", "\udfff", "\udc80", "e\u0301", "\u0301", "\u05d0\u05d1", "\u202e", "\u200f", "\u0627\u0644",
           "\U0001f469\u200d\U0001f469\u200d\U0001f467", "\U0001f44d\U0001f3fd", "\u200b", "\u200c", "\u200d",
           "\ufeff", "\u00a0", "\u2028", "\x85", "\x00", "\u0130", "\u00df", "\ufb01", "\u4e2d\u6587", "'", "-",
           "don't", "a-b", "\u2019"]
ANY_CHAR = st.characters(exclude_categories=())  # every code point, surrogates included
TEXTS = st.lists(st.one_of(st.text(ANY_CHAR, max_size=12), st.sampled_from(SPECIAL)), max_size=12).map("".join)

NAMES = [n for n in available_tokenizers() if n != "jieba" or importlib.util.find_spec("jieba")]


@pytest.mark.parametrize("lowercase", [True, False])
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=150, deadline=None, derandomize=True)
@given(text=TEXTS, limit=st.integers(1, 8))
def test_tokenizers_never_crash_and_give_non_empty_tokens(name, lowercase, text, limit):
    tok = make_tokenizer(name, lowercase=lowercase)
    tokens = tok.tokenize(text)
    assert isinstance(tokens, list) and all(isinstance(t, str) and t for t in tokens)
    spans = tok.tokenize_with_spans(text)
    assert [t for t, _, _ in spans] == tokens
    for token, start, end in spans:
        assert 0 <= start < end <= len(text)
        if name != "jieba":  # jieba drops whitespace tokens but keeps its own spans
            assert token == (text[start:end].lower() if lowercase else text[start:end])
    head = getattr(tok, "tokenize_head", None)
    if head is not None:
        assert head(text * 40, limit) == tok.tokenize(text * 40)[:limit]
