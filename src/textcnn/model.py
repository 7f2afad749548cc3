"""TextCNN (Kim 2014) as the seed tutorial writes it: ids (B, T) -> logits (B, C).

embedding -> permute -> per window size: Conv1d, [BatchNorm1d], ReLU, max over time -> cat ->
dropout -> linear. Two departures from the tutorial, both exact rewrites of the same function:

* The tutorial's ``MaxPool1d(max_text_len - h + 1)`` needs every text padded to ``max_text_len``.
  Here the max is global over time with padding masked out, so any length works and a batch
  gives the same answer as each text alone. Texts shorter than the widest window are padded to
  it; then only the first window (text plus zero padding) is valid, so padding never wins.
* Without batch norm, ``max(relu(conv(x) + b)) == relu(max(conv(x)) + b)``: the bias and ReLU are
  applied after the max, on (B, F) instead of (B, F, L).

Every engine (this forward, ``shape_walk``, the table engine, the numba kernel and the training
forward in :mod:`textcnn.fastpath`, the explanations) derives the function from the helpers here:
:func:`min_length` and :func:`pad_to_widest` (the padding rule), :func:`text_lengths` and
:func:`_invalid_windows` (which windows may win), :meth:`TextCNN.lookup` (the convolutions' input
vectors), :meth:`TextCNN.before_max` and :meth:`TextCNN.after_max` (bias, batch norm and ReLU
around the max), and :func:`ngram_buckets` with :meth:`TextCNN.ngram_logits` (the n-gram channel).
``tests/test_engines.py`` checks every engine against this forward.

The n-gram channel (``ngram_features`` > 0) is a second, linear path from the same ids to the
logits, fastText-like: every token id and every adjacent pair of ids (and triple, with
``ngram_order`` 3) is hashed into one of N buckets (:func:`ngram_bucket`, integer arithmetic that
NumPy, numba and ONNX compute alike), the buckets' learned vectors are averaged, and the channel's
own linear layer maps the mean to a term added to the logits. No dropout and no max-norm there
(Kim's constraint stays on ``fc``).

With an encoder input (:mod:`textcnn.encoder`) there is no embedding table: ``forward(ids, vectors)``
takes the encoder's states (B, T, C_in) as the convolutions' input; the ids (word pieces) still say
where each text ends (padding is PAD_ID), so masking and every helper above work unchanged.

Pure torch: no I/O, tokenizers or losses here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import DEFAULT_EMBEDDING_SIZE, TextCNNConfig, default_ngram_order, default_window_sizes
from .vocab import PAD_ID


def min_length(window_sizes: tuple[int, ...]) -> int:
    """The shortest length a text runs at: the widest window (shorter texts are padded to it)."""
    return max(window_sizes)


def pad_to_widest(ids: torch.Tensor, window_sizes: tuple[int, ...]) -> torch.Tensor:
    """Right-pads ids (B, T) with PAD_ID to at least :func:`min_length` columns."""
    short = min_length(window_sizes) - ids.shape[1]
    return F.pad(ids, (0, short), value=PAD_ID) if short > 0 else ids  # (B, max(T, max_k))


# The n-gram hash: ((first * A + second) mod M * B) mod N, buckets 1..N (0 is "no n-gram", a zero row).
# A unigram is the pair (id, PAD_ID); a bigram's ids are never padding; a trigram (a, b, c) is the pair
# (trigram_first(a, b), c), whose first part is at least TRIGRAM_MARK, above every id, so no trigram
# hashes as a bigram. Every product stays below 2**63 for ids below 2**31 (firsts below 2**32), so
# int64 arithmetic (torch, NumPy, numba, ONNX) gives the same buckets.
NGRAM_A, NGRAM_M, NGRAM_B = 1_000_000_007, 2_147_483_647, 2_654_435_761
TRIGRAM_MARK = 2**31


def ngram_bucket(first, second, n_buckets: int):
    """The bucket (1..n_buckets) of the n-gram (first, second): ints, NumPy arrays or torch tensors alike."""
    return (first * NGRAM_A + second) % NGRAM_M * NGRAM_B % n_buckets + 1


def trigram_first(a, b):
    """The first part of the trigram (a, b, c)'s pair: ints, NumPy arrays or torch tensors alike."""
    return (a * NGRAM_A + b) % NGRAM_M + TRIGRAM_MARK


def gram_bucket(gram, n_buckets: int) -> int:
    """The bucket of one n-gram given as its 1-3 ids (explanations; the batched form is :func:`ngram_buckets`)."""
    if len(gram) == 3:
        return ngram_bucket(trigram_first(gram[0], gram[1]), gram[2], n_buckets)
    return ngram_bucket(gram[0], gram[1] if len(gram) == 2 else 0, n_buckets)


def ngram_spans(length: int, order: int) -> list[tuple[int, int]]:
    """The (start, end) token spans of a text's n-grams, in :func:`ngram_buckets`' order: unigrams, then
    bigrams (order >= 2), then trigrams (order 3)."""
    return [(t, t + n) for n in range(1, order + 1) for t in range(length - n + 1)]


def ngram_count(length: int, order: int) -> int:
    """How many n-grams of orders 1..order a text of ``length`` tokens has."""
    count = 0
    for n in range(1, order + 1):  # a loop, not sum(): numba compiles this function for the kernels
        count += max(length - n + 1, 0)
    return count


def ngram_buckets(ids: torch.Tensor, n_buckets: int, order: int = 2) -> torch.Tensor:
    """Right-padded ids (B, T) -> each text's n-gram buckets (B, G): T unigrams, then T-1 bigrams (order >= 2),
    then T-2 trigrams (order 3); 0 where none."""
    real = ids != PAD_ID  # (B, T)
    grams = [ngram_bucket(ids, torch.zeros_like(ids), n_buckets).masked_fill(~real, 0)]  # (B, T)
    if order >= 2:
        both = real[:, :-1] & real[:, 1:]  # (B, T-1)
        grams.append(ngram_bucket(ids[:, :-1], ids[:, 1:], n_buckets).masked_fill(~both, 0))  # (B, T-1)
    if order >= 3:
        first = trigram_first(ids[:, :-2], ids[:, 1:-1])  # (B, T-2)
        grams.append(ngram_bucket(first, ids[:, 2:], n_buckets).masked_fill(~(both[:, :-1] & real[:, 2:]), 0))
    return torch.cat(grams, dim=1)  # (B, G)


def text_lengths(ids: torch.Tensor) -> torch.Tensor:
    """Real tokens per row of right-padded ids (B, T): (B,)."""
    return (ids != PAD_ID).sum(dim=1)  # (B,)


class TextCNN(nn.Module):
    """The convolutional text classifier.

    Args:
        vocab_size: rows of the embedding table (id 0 is padding); None: no table, the input vectors
            are given to :meth:`forward` (a frozen encoder's token states, :mod:`textcnn.encoder`).
        embedding_size: word-vector size (or the encoder's hidden size), the convolutions' ``in_channels``.
        feature_size: filters per window size, the convolutions' ``out_channels``.
        window_sizes: one Conv1d branch per kernel size.
        num_class: outputs of the last layer.
        dropout_rate: dropout on the pooled features (training only).
        batch_norm: BatchNorm1d after each convolution.
        multichannel: a second, frozen embedding table whose vectors every filter also sees.
        ngram_features: hash buckets of the n-gram channel (the ids' n-grams up to ``ngram_order``); 0: no channel.
        ngram_embedding_size: the size of the n-gram channel's vectors.
        ngram_order: the channel's longest n-grams: 1 (unigrams), 2 (and bigrams) or 3 (and trigrams).
    """

    def __init__(
        self,
        *,
        vocab_size: int | None,
        embedding_size: int,
        feature_size: int,
        window_sizes: tuple[int, ...],
        num_class: int,
        dropout_rate: float = 0.5,
        batch_norm: bool = False,
        multichannel: bool = False,
        ngram_features: int = 0,
        ngram_embedding_size: int = 100,
        ngram_order: int = 2,
    ) -> None:
        super().__init__()
        self.window_sizes = tuple(window_sizes)
        self.embedding = None if vocab_size is None else nn.Embedding(vocab_size, embedding_size, padding_idx=PAD_ID)
        self.static_embedding = None
        if multichannel and vocab_size is not None:
            self.static_embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=PAD_ID)
            self.static_embedding.weight.requires_grad_(False)
        in_channels = self.input_size = embedding_size * (2 if self.static_embedding is not None else 1)
        self.convs = nn.ModuleList(nn.Conv1d(in_channels, feature_size, k) for k in self.window_sizes)
        self.norms = nn.ModuleList(nn.BatchNorm1d(feature_size) for _ in self.window_sizes) if batch_norm else None
        self.dropout = nn.Dropout(dropout_rate)
        self.fc = nn.Linear(feature_size * len(self.window_sizes), num_class)
        self.weights_version = 0  # see weights_changed
        self.reset_embeddings()
        self.ngram_order = ngram_order
        self.ngram_embedding = self.ngram_fc = None  # created last: the CNN's initial weights stay as without
        if ngram_features > 0:
            self.ngram_embedding = nn.Embedding(ngram_features + 1, ngram_embedding_size, padding_idx=0)
            with torch.no_grad():
                self.ngram_embedding.weight.uniform_(-0.25, 0.25)
                self.ngram_embedding.weight[0].zero_()  # bucket 0: no n-gram
            self.ngram_fc = nn.Linear(ngram_embedding_size, num_class)

    def reset_embeddings(self) -> None:
        # Kim 2014: unknown words drawn from U[-0.25, 0.25]; the padding row is zero.
        for table in (self.embedding, self.static_embedding):
            if table is not None:
                with torch.no_grad():
                    table.weight.uniform_(-0.25, 0.25)
                    table.weight[PAD_ID].zero_()

    def weights_changed(self) -> None:
        """Says the weights changed behind PyTorch's back, so caches built from them are rebuilt.

        Needed only after writes that bypass PyTorch's version counters and touch few values
        (``param.data[7] = 0``, a NumPy view): every in-place PyTorch operation on a parameter,
        optimizer steps and ``load_state_dict`` are noticed anyway (see ``textcnn.fastpath.WeightsKey``).
        """
        self.weights_version += 1

    def lookup(self, ids: torch.Tensor, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids (...) -> each token's input vector (..., C_in): its embedding, plus its static one.

        ``vectors`` (..., C_in), given, are the input vectors (an encoder's states; zero at padding).
        """
        if vectors is not None:
            return vectors
        x = self.embedding(ids)  # (..., E)
        if self.static_embedding is not None:
            x = torch.cat([x, self.static_embedding(ids)], dim=-1)  # (..., 2E)
        return x

    def embed(self, ids: torch.Tensor, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids (B, T) [and input vectors (B, T, C_in)] -> the convolutions' input (B, C_in, T'),
        padded to the widest window."""
        if vectors is not None:
            short = min_length(self.window_sizes) - vectors.shape[1]
            vectors = F.pad(vectors, (0, 0, 0, short)) if short > 0 else vectors  # (B, max(T, max_k), C_in)
        return self.lookup(pad_to_widest(ids, self.window_sizes), vectors).transpose(1, 2)  # (B, C_in, T')

    def before_max(self, c: torch.Tensor, i: int) -> torch.Tensor:
        """Window size i's map (B, F, L) from the window sums ``c`` (the convolution without its bias).

        With batch norm, ``relu(bn(c + bias))``; without, ``c`` itself: bias and ReLU commute with
        the max, so :meth:`after_max` applies them to the (B, F) maxima instead.
        """
        if self.norms is None:
            return c
        return F.relu(self.norms[i](c + self.convs[i].bias.unsqueeze(1)))  # (B, F, L)

    def after_max(self, v: torch.Tensor, i: int) -> torch.Tensor:
        """Window size i's pooled features (B, F) from the maxima ``v`` of :meth:`before_max`."""
        if self.norms is None:
            return F.relu(v + self.convs[i].bias)  # (B, F)
        return v

    def feature_map(self, x: torch.Tensor, lengths: torch.Tensor, i: int) -> torch.Tensor:
        """Window size i's map (B, F, L) of the convolutions' input x (B, C_in, T); windows past a text are -inf."""
        c = self.before_max(F.conv1d(x, self.convs[i].weight), i)  # (B, F, T-k+1)
        return c.masked_fill(_invalid_windows(lengths, self.window_sizes[i], c.shape[2]).unsqueeze(1), float("-inf"))

    def pool(self, ids: torch.Tensor, vectors: torch.Tensor | None = None, *, return_positions: bool = False):
        """Max-pooled features (B, F * len(window_sizes)); with positions, also each max's window start."""
        lengths = text_lengths(ids)  # (B,)
        x = self.embed(ids, vectors)  # (B, C_in, T)
        values, positions = [], []
        for i in range(len(self.convs)):
            c = self.feature_map(x, lengths, i)  # (B, F, T-k+1)
            if return_positions:
                v, p = c.max(dim=2)  # (B, F), (B, F)
                positions.append(p)
            else:
                v = c.amax(dim=2)  # (B, F)
            values.append(self.after_max(v, i))  # (B, F)
        pooled = torch.cat(values, dim=1)  # (B, F*n)
        return (pooled, torch.cat(positions, dim=1)) if return_positions else pooled

    def forward(self, ids: torch.Tensor, vectors: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.fc(self.dropout(self.pool(ids, vectors)))  # (B, C)
        return logits if self.ngram_fc is None else logits + self.ngram_logits(ids)  # (B, C)

    def ngram_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """The n-gram channel's term of the logits (B, C): its linear layer on the mean of the text's
        n-gram vectors (ids (B, T), right-padded; a text without tokens gives the layer's bias)."""
        buckets = ngram_buckets(ids, self.ngram_embedding.num_embeddings - 1, self.ngram_order)  # (B, G)
        total = self.ngram_embedding(buckets).sum(dim=1)  # (B, D): bucket 0's row is zero
        count = (buckets != 0).sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
        return self.ngram_fc(total / count)  # (B, C)

    @torch.no_grad()
    def apply_max_norm(self, max_norm: float) -> None:
        """Kim's constraint: rescale each class's weight row of the last layer to L2 norm <= max_norm."""
        w = self.fc.weight  # (C, F*n)
        norms = w.norm(dim=1, keepdim=True).clamp(min=max_norm)  # (C, 1)
        w.mul_(max_norm / norms)

    @torch.no_grad()
    def shape_walk(self, ids: torch.Tensor, vectors: torch.Tensor | None = None) -> list[tuple[str, torch.Tensor]]:
        """The seed's forward pass step by step, as (step, tensor) pairs, for ``textcnn summary``.

        The steps are this model's own (the same helpers as :meth:`pool`), shown in the seed's
        shapes: a fixed-length max-pool (B, F, 1), so ids must be at least as long as the widest window.
        """
        steps = [("token ids", ids)]
        emb = self.lookup(ids, vectors)  # (B, T, C_in)
        steps.append(("embedding" if vectors is None else "encoder states", emb))
        x = emb.permute(0, 2, 1)  # (B, C_in, T)
        steps.append(("permute(0, 2, 1)", x))
        lengths = text_lengths(ids)  # (B,)
        pooled = []
        for i, k in enumerate(self.window_sizes):
            c = self.feature_map(x, lengths, i)  # (B, F, T-k+1)
            steps.append((f"conv k={k}", c))
            p = self.after_max(c.amax(dim=2), i).unsqueeze(2)  # (B, F, 1)
            steps.append((f"relu + max-pool k={k}", p))
            pooled.append(p)
        cat = torch.cat(pooled, dim=1)  # (B, F*n, 1)
        steps.append(("cat(dim=1)", cat))
        flat = cat.view(cat.shape[0], -1)  # (B, F*n)
        steps.append((f"view(-1, {flat.shape[1]})", flat))
        logits = self.fc(self.dropout(flat))  # (B, C)
        steps.append(("dropout, fc", logits))
        if self.ngram_fc is not None:
            buckets = ngram_buckets(ids, self.ngram_embedding.num_embeddings - 1, self.ngram_order)  # (B, G)
            steps.append((f"n-gram buckets ({' + '.join(('uni', 'bi', 'tri')[:self.ngram_order])})", buckets))
            steps.append(("n-gram vectors", self.ngram_embedding(buckets)))  # (B, G, D)
            logits = logits + self.ngram_logits(ids)  # (B, C)
            steps.append(("mean, n-gram fc, + logits", logits))
        return steps


def _invalid_windows(lengths: torch.Tensor, k: int, n_windows: int) -> torch.Tensor:
    """(B, L) mask of windows that start past the text; a text shorter than k keeps window 0."""
    last_start = (lengths - k).clamp(min=0)  # (B,)
    starts = torch.arange(n_windows, device=lengths.device)  # (L,)
    return starts.unsqueeze(0) > last_start.unsqueeze(1)  # (B, L)


def build_model(cfg: TextCNNConfig, vocab_size: int) -> TextCNN:
    """The TextCNN a config describes, with ``vocab_size`` embedding rows (none with an encoder input:
    then ``cfg.embedding_size`` is the encoder's hidden size).

    The initial weights depend only on ``cfg.seed``: they are drawn with the seed set inside
    ``fork_rng``, so the caller's global torch random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return TextCNN(
            vocab_size=None if cfg.encoder else vocab_size, embedding_size=cfg.embedding_size or DEFAULT_EMBEDDING_SIZE,
            feature_size=cfg.feature_size, window_sizes=cfg.window_sizes or default_window_sizes(cfg.tokenizer),
            num_class=cfg.num_class, dropout_rate=cfg.dropout_rate, batch_norm=cfg.batch_norm,
            multichannel=cfg.embedding_mode == "multichannel", ngram_features=cfg.ngram_features,
            ngram_embedding_size=cfg.ngram_embedding_size,
            ngram_order=cfg.ngram_order or default_ngram_order(cfg.tokenizer),
        )
