"""Fast CPU paths: an exact table engine for prediction, and the training switches.

Prediction. The first convolution only ever sees rows of the embedding table, so its products
with every filter offset can be computed once per word. For window size k and offset j < k, word
w's table block (k, j) is ``W_k[:, :, j] @ x_w`` (x_w the word's input vector: its embedding row,
plus the static row in multichannel mode). The convolution at position t is then the sum of k
table blocks, ``sum_j table[ids[t + j], (k, j)]``: lookups and adds instead of multiply-adds, exact
in float32 up to summation order. One table serves two engines:

- many texts (a file, a batch): one ``embedding_bag`` per window size (PyTorch's FBGEMM kernel,
  which prefetches the rows it gathers) over length-sorted batches capped at 32,768 padded tokens,
  so the (texts, positions, filters) sums of long documents stay in cache;
- a few texts (up to ``FUSED_MAX_TEXTS``: single requests, latency): a fused kernel (numba,
  compiled once and cached on disk) that walks each unpadded text once, adds each word's row into a
  ring of running window sums and keeps the maxima, with no per-call PyTorch overhead. Without numba
  (or with ``TEXTCNN_NO_NUMBA=1``), and for batch-norm models, embedding_bag serves these too.

The n-gram channel is linear, so it gets a table too: each bucket's vector through the channel's
linear layer, ``(buckets + 1, classes)``; a text's term is the mean of its n-grams' rows plus the
layer's bias (``embedding_bag`` in mean mode for batches, a small numba kernel for a few texts).

Memory rule: the tables hold ``vocab_size * feature_size * sum(window_sizes)`` float32 numbers
(the seed's 50,000 words, 100 filters, windows 3-6: 343 MB). They are built lazily at the first
prediction (a fraction of a second), rebuilt when the weights change (see :class:`WeightsKey` for
exactly which changes are seen), never saved, and used only when that size is at most
``TEXTCNN_TABLE_MAX_MB`` megabytes (environment variable; default 1024, 0 turns the tables off).
Otherwise, on a GPU and for models not in float32, prediction runs the model's own forward.

Every engine here derives the model function from the helpers in :mod:`textcnn.model` (padding,
valid windows, bias/batch norm/ReLU around the max); the numba kernel, which cannot call torch,
mirrors them and is checked against the model in ``tests/test_engines.py``.

Training. The same idea per batch: the B*T tokens of a batch hold only U distinct words, so the
products of those words with every filter offset are one (U, C_in) @ (C_in, sum(k)*F) GEMM
(2x fewer multiply-adds than the convolution on 35-token texts, 5x on 400-token ones), and the
windows are sums of k rows. Since the max-pool passes gradient to one window per filter, only
the B*F winning sums carry autograd. The embedding gets sparse gradients and SparseAdam (a step
touches only the rows its batch uses, instead of the whole table); everything else keeps Adam.
Batch norm models train through their own forward. bfloat16 autocast is used only where the CPU
has native bfloat16 (AVX512-BF16 or AMX); elsewhere it is emulated and slower than float32.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import operator
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .model import (TextCNN, _invalid_windows, ngram_bucket, ngram_buckets, ngram_count, pad_to_widest, text_lengths,
                    trigram_first)
from .vocab import PAD_ID

DEFAULT_TABLE_MAX_MB = 1024


def table_bytes(model: TextCNN) -> int:
    """Bytes the prediction tables of ``model`` take: vocab * filters * sum(window sizes) * 4, plus
    (n-gram buckets + 1) * classes * 4 with the n-gram channel."""
    vocab = model.embedding.num_embeddings
    filters = model.convs[0].out_channels
    ngrams = 0 if model.ngram_fc is None else model.ngram_embedding.num_embeddings * model.ngram_fc.out_features
    return (vocab * filters * sum(model.window_sizes) + ngrams) * 4


def table_budget_bytes() -> int:
    """The memory rule's budget, from ``TEXTCNN_TABLE_MAX_MB`` (default 1024)."""
    raw = os.environ.get("TEXTCNN_TABLE_MAX_MB", str(DEFAULT_TABLE_MAX_MB))
    try:
        megabytes = float(raw)
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0:
        raise ConfigError(f"The TEXTCNN_TABLE_MAX_MB environment variable must be a number of megabytes >= 0 "
                          f"(0 turns the prediction tables off). Got {raw!r} instead.")
    return int(megabytes * 2**20)


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


class WeightsKey:
    """A fingerprint of the weights the tables copy, cheap enough to check on every prediction.

    The tables copy the embedding tables and the convolutions' weights and biases; batch norm and
    the last layer are read live at each call, so any change to them shows at once. ``matches``
    (a few microseconds) compares, for each copied tensor:

    * its version counter, which PyTorch bumps on every in-place operation on the tensor or a view
      of it, with or without ``torch.no_grad()`` or ``torch.inference_mode()``: optimizer steps,
      ``load_state_dict``, ``w.add_(...)``, ``w[3] = 0``, and so everything textcnn itself does to
      weights (training, max-norm, pretrained vectors, loading);
    * its storage address: catches ``param.data = other`` and ``model.to(...)``;
    * which tensor object the model holds, re-read whenever a parameter was registered with any
      module of the process since: catches ``conv.weight = nn.Parameter(...)`` and
      ``load_state_dict(..., assign=True)``;
    * ``SAMPLES`` of its values (their bits: the largest in each part of the tensor), which catch
      writes that bypass the version counter (through ``param.data`` or a NumPy view) when they
      change a sampled value: ``param.data.mul_(2)``, ``.copy_(other)``, ``.normal_()`` do; an edit
      of a few values (``param.data[7] = 0``, pruning small weights) most likely does not;
    * ``model.weights_version``: after such a write, call ``model.weights_changed()``
      (``clf.model_.weights_changed()``) and the next prediction rebuilds the tables.
    """

    SAMPLES = 2

    def __init__(self, model: TextCNN) -> None:
        self.version, self.registrations = model.weights_version, _REGISTRATIONS[0]
        self.tensors = _table_sources(model)
        self.versions = list(map(_VERSION, self.tensors))
        self.pointers = list(map(torch.Tensor.data_ptr, self.tensors))
        self.probes = [probe for t in self.tensors for probe in _probes(t, self.SAMPLES)]
        self.values = [probe.value for probe in self.probes]

    def matches(self, model: TextCNN) -> bool:
        """Whether ``model`` holds the weights this key was taken from (see the class docstring)."""
        if self.registrations != _REGISTRATIONS[0]:  # rare: read which tensors the model holds
            if not all(map(operator.is_, _table_sources(model), self.tensors)):
                return False
            self.registrations = _REGISTRATIONS[0]
        return (model.weights_version == self.version and list(map(_VERSION, self.tensors)) == self.versions
                and list(map(torch.Tensor.data_ptr, self.tensors)) == self.pointers
                and [probe.value for probe in self.probes] == self.values)


_VERSION = operator.attrgetter("_version")
_REGISTRATIONS = [0]  # parameters registered with any module of this process (nn.Module setattr included)


def _count_registration(module: nn.Module, name: str, param) -> None:
    _REGISTRATIONS[0] += 1


torch.nn.modules.module.register_module_parameter_registration_hook(_count_registration)


def _table_sources(model: TextCNN) -> list[torch.Tensor]:
    """The tensors the tables are computed from."""
    static = [] if model.static_embedding is None else [model.static_embedding.weight]
    ngrams = [] if model.ngram_fc is None else [model.ngram_embedding.weight, model.ngram_fc.weight]
    return [model.embedding.weight, *static, *(p for conv in model.convs for p in (conv.weight, conv.bias)), *ngrams]


def _probes(t: torch.Tensor, n: int) -> list[ctypes.c_int32]:
    """The bits of the largest value in each of ``n`` parts of float32 ``t``, read live from its storage.

    The largest are not zero (the padding row is), so scaling or redrawing the tensor changes them.
    Bits, so a NaN weight still equals itself; ctypes, since reading one is 3x faster than NumPy
    indexing. Each probe keeps a NumPy view, and so the storage it reads, alive.
    """
    flat = t.detach().reshape(-1).numpy()  # a view: shares t's storage
    bounds = np.linspace(0, flat.size, n + 1).astype(np.int64)
    return [ctypes.c_int32.from_buffer(flat, 4 * int(lo + np.abs(flat[lo:hi]).argmax()))
            for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


class TableEngine:
    """Exact inference for a TextCNN in eval mode through per-word tables.

    ``engine(ids)`` takes padded batches (embedding_bag); ``engine.logits_lists(ids)`` takes unpadded
    id lists (the fused numba kernel, split over threads by tokens; ``fused_for(n)`` says when).

    Args:
        model: the trained model (CPU, float32). Its weights are read once; ``is_current`` tells
            whether they have changed since.
    """

    def __init__(self, model: TextCNN) -> None:
        self.model = model
        self.size = table_bytes(model)
        self.key = WeightsKey(model)
        self.kernel = fused_kernel() if model.norms is None else None
        self.ks = np.asarray(model.window_sizes, dtype=np.int64)
        self.kofs = np.concatenate([[0], np.cumsum(self.ks)[:-1]]).astype(np.int64)  # first block of each size
        blocks, n_filters = int(self.ks.sum()), model.convs[0].out_channels
        with torch.no_grad():
            x = model.lookup(torch.arange(model.embedding.num_embeddings))  # (V, C_in): every word's input
            rows = torch.empty(x.shape[0] * blocks + 1, n_filters)  # (V*S + 1, F)
            # word w's products with every (size, offset): row w*S + kofs[i] + j
            torch.mm(x, offset_weights(model), out=rows[:-1].view(x.shape[0], blocks * n_filters))
            rows[-1] = float("-inf")  # a bag that starts here sums to -inf: windows past a text never win
            self.rows = rows  # row w*S + kofs[i] + j, for embedding_bag
            self.table = rows[:-1].numpy().reshape(x.shape[0], blocks * n_filters)  # (V, S*F) view, for the kernel
            self.bias = torch.cat([conv.bias for conv in model.convs]).numpy().copy()  # (F*n,)
            self.ngram_scores = None  # bucket b's term of the logits: row b, (N + 1, C); row 0 is zero
            if model.ngram_fc is not None:
                self.ngram_scores = model.ngram_embedding.weight @ model.ngram_fc.weight.T  # (N + 1, C)

    def is_current(self) -> bool:
        """Whether the weights the tables copy are unchanged since they were built (see :class:`WeightsKey`)."""
        return self.key.matches(self.model)

    def fused_for(self, n_texts: int) -> bool:
        """Whether ``logits_lists`` should serve a call of ``n_texts`` texts: the fused kernel has no
        per-call overhead (single texts: latency), embedding_bag on length-sorted batches has the
        better throughput (FBGEMM's prefetching gather) for many."""
        return self.kernel is not None and n_texts <= FUSED_MAX_TEXTS

    def logits_lists(self, ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Logits (N, C) of unpadded id lists, in order (fused kernel only), ``LIST_CHUNK`` texts at a time."""
        if len(ids) > LIST_CHUNK:
            return torch.cat([self.logits_lists(ids[i : i + LIST_CHUNK]) for i in range(0, len(ids), LIST_CHUNK)])
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))  # (N,)
        starts = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(starts[-1]))
        with torch.no_grad():
            logits = self.model.fc(torch.from_numpy(self._pool_flat(flat, starts)))  # (N, C)
            if self.ngram_scores is None:
                return logits
            return logits + self._ngram_flat(flat, starts)  # (N, C)

    def _ngram_flat(self, flat: np.ndarray, starts: np.ndarray) -> torch.Tensor:
        """The n-gram channel's term (N, C) of texts ``flat[starts[b]:starts[b + 1]]`` (the numba kernel)."""
        bag = np.empty((starts.size - 1, self.ngram_scores.shape[1]), dtype=np.float32)  # (N, C)
        n_buckets = self.ngram_scores.shape[0] - 1
        ngram_kernel()(flat, starts, self.ngram_scores.numpy(), n_buckets, self.model.ngram_order, bag)
        return torch.from_numpy(bag) + self.model.ngram_fc.bias  # (N, C)

    def _pool_flat(self, flat: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Pooled features (N, F*n) of texts ``flat[starts[b]:starts[b + 1]]``, split over threads by tokens."""
        n = starts.size - 1
        out = np.empty((n, self.bias.size), dtype=np.float32)
        args = (flat, starts, self.table, self.ks, self.kofs, self.bias, out)
        threads = min(torch.get_num_threads(), n, int(starts[-1]) // PARALLEL_MIN_TOKENS)
        if threads <= 1:
            self.kernel(flat, starts, 0, n, *args[2:])
            return out
        cuts = [0, *np.searchsorted(starts, np.linspace(0, starts[-1], threads + 1)[1:-1]).tolist(), n]
        pool = _thread_pool()
        futures = [pool.submit(self.kernel, flat, starts, lo, hi, *args[2:])
                   for lo, hi in zip(cuts[1:-1], cuts[2:]) if hi > lo]
        self.kernel(flat, starts, 0, cuts[1], *args[2:])  # the first share on this thread (nogil)
        for future in futures:
            future.result()
        return out

    @torch.no_grad()
    def pool(self, ids: torch.Tensor) -> torch.Tensor:
        """The same as ``model.pool(ids)`` in eval mode: (B, T) ids -> (B, F * n) features."""
        m = self.model
        ids = pad_to_widest(ids, m.window_sizes)  # (B, T)
        lengths = text_lengths(ids)  # (B,)
        blocks, sentinel = int(self.ks.sum()), self.rows.shape[0] - 1
        values = []
        for i, (k, first) in enumerate(zip(m.window_sizes, self.kofs.tolist())):
            # (B, L, k): the row of word t+j at offset j of size i
            bags = ids.unfold(1, k, 1) * blocks + (first + torch.arange(k))
            invalid = _invalid_windows(lengths, k, bags.shape[1])  # (B, L)
            if m.norms is None:  # cheaper than masking the sums: a bag that starts at the sentinel sums to -inf
                bags[:, :, 0].masked_fill_(invalid, sentinel)
            c = _bag_sum(bags, self.rows)  # (B, L, F)
            if m.norms is not None:  # (without, before_max is the identity) masked after batch norm: a negative
                # scale would turn -inf into +inf
                c = m.before_max(c.transpose(1, 2), i).masked_fill(invalid.unsqueeze(1), float("-inf"))  # (B, F, L)
                c = c.transpose(1, 2)  # (B, L, F)
            values.append(m.after_max(c.amax(dim=1), i))  # (B, F)
        return torch.cat(values, dim=1)  # (B, F*n)

    @torch.no_grad()
    def ngram_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """The same as ``model.ngram_logits(ids)``: (B, T) ids -> (B, C), the mean of the n-grams' table rows."""
        if ngram_kernel() is not None:  # the kernel on the unpadded texts: no (B, G) buckets to hash and gather
            lengths = text_lengths(ids).numpy()  # (B,)
            starts = np.zeros(lengths.size + 1, dtype=np.int64)
            np.cumsum(lengths, out=starts[1:])
            # right-padded: row-major order is text order; int32 like the unpadded path, so one compiled signature
            return self._ngram_flat(ids[ids != PAD_ID].to(torch.int32).numpy(), starts)
        buckets = ngram_buckets(ids, self.ngram_scores.shape[0] - 1, self.model.ngram_order)  # (B, G)
        mean = F.embedding_bag(buckets, self.ngram_scores, mode="mean", padding_idx=0)  # (B, C); no n-grams: 0
        return mean + self.model.ngram_fc.bias  # (B, C)

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        logits = self.model.fc(self.pool(ids))  # (B, C)
        return logits if self.ngram_scores is None else logits + self.ngram_logits(ids)  # (B, C)


def offset_weights(model: TextCNN) -> torch.Tensor:
    """The convolutions' weights per offset, (C_in, sum(k) * F): column block kofs[i] + j holds W_i[:, :, j].

    A window's convolution (without bias) is the sum over offsets j of ``x[t + j] @ block(i, j)``.
    """
    return torch.cat([conv.weight.permute(1, 2, 0).reshape(conv.in_channels, -1) for conv in model.convs], dim=1)


# Measured (benchmarks/README.md): for 16 texts the kernel takes 0.60 vs 1.01 ms (35 tokens each) and
# 2.9 vs 3.9 ms (400 tokens); at 32 texts of 35 tokens embedding_bag catches up, and wins for many texts.
FUSED_MAX_TEXTS = 16
LIST_CHUNK = 8192  # texts per kernel call: bounds the pooled features' memory (8192 x F*n floats)
PARALLEL_MIN_TOKENS = 2048  # below this many tokens per thread, one thread beats the hand-off
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _thread_pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) - 1),
                                           thread_name_prefix="textcnn-kernel")
    return _POOL


SMALL_BAGS = 4096  # below this many lookups one serial gather beats embedding_bag's thread start-up


def _bag_sum(bags: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Sums of table rows: bags (B, L, k) -> (B, L, F)."""
    if bags.numel() <= SMALL_BAGS:
        rows = table.index_select(0, bags.reshape(-1))  # (B*L*k, F): small, stays on one thread
        return rows.view(*bags.shape, -1).sum(dim=2)  # (B, L, F)
    out = F.embedding_bag(bags.reshape(-1, bags.shape[2]), table, mode="sum")  # (B*L, F)
    return out.view(bags.shape[0], bags.shape[1], -1)  # (B, L, F)


class Engine(enum.Enum):
    """The engines that serve predictions (:meth:`Predictor.choose` picks one)."""

    PLAIN = "plain"  # the model's own forward
    TABLES = "tables"  # per-word tables, embedding_bag for every call
    TABLES_FUSED = "tables+fused"  # per-word tables, the fused numba kernel for few texts


class Predictor:
    """Chooses and caches the inference path of a model; thread-safe, built lazily.

    ``choose(model, device)`` gives the engine and the reason in words (``path`` only the words);
    ``engine(model, device)`` gives the table engine to call, or None for the model's own forward.
    """

    def __init__(self) -> None:
        self._engine: TableEngine | None = None
        self._lock = threading.Lock()
        self._said: str | None = None

    def __getstate__(self) -> dict:  # copies (clone, deepcopy) rebuild the tables when needed
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def choose(self, model: TextCNN, device: torch.device) -> tuple[Engine, str]:
        """The engine for ``model`` on ``device``, and why (for ``--verbose``)."""
        if model.embedding is None:
            return Engine.PLAIN, ("plain forward over a frozen encoder's states (the tables and the kernel "
                                  "precompute per-word vectors of an embedding table)")
        dtype = str(model.embedding.weight.dtype).removeprefix("torch.")
        if device.type != "cpu":
            return Engine.PLAIN, f"plain {dtype} forward on {device.type} (the tables are a CPU path)"
        if dtype != "float32":
            return Engine.PLAIN, f"plain {dtype} forward (the tables are float32)"
        size, budget = table_bytes(model), table_budget_bytes()
        if size > budget:
            return Engine.PLAIN, (f"plain float32 forward (the tables would take {size / 2**20:.0f} MB, over "
                                  f"TEXTCNN_TABLE_MAX_MB={budget / 2**20:.0f})")
        tables = f"exact per-word tables ({size / 2**20:.0f} MB"
        if model.norms is not None:
            return Engine.TABLES, f"{tables}, embedding_bag; batch norm: no fused kernel)"
        if fused_kernel() is None:
            return Engine.TABLES, f"{tables}, embedding_bag; {no_kernel_reason()})"
        return Engine.TABLES_FUSED, (f"{tables}): embedding_bag on length-sorted batches, "
                                     f"a fused numba kernel for calls of up to {FUSED_MAX_TEXTS} texts")

    def path(self, model: TextCNN, device: torch.device) -> str:
        """The prediction path in words."""
        return self.choose(model, device)[1]

    def engine(self, model: TextCNN, device: torch.device, log=None) -> TableEngine | None:
        """The table engine for ``model`` (built or rebuilt when its weights changed), or None."""
        engine = self._engine
        if (device.type == "cpu" and engine is not None and engine.model is model and self._said is not None
                and engine.size <= table_budget_bytes() and engine.is_current()):
            return engine  # the common case, kept cheap for single texts
        kind, path = self.choose(model, device)
        if path != self._said:
            if log is not None:
                log(f"prediction path: {path}", 2)
            self._said = path
        if kind is Engine.PLAIN:
            return None
        with self._lock:
            engine = self._engine
            if engine is None or engine.model is not model or not engine.is_current():
                engine = self._engine = TableEngine(model)
            return engine


# --- the fused kernel (numba) -------------------------------------------------------------------

# Reassociation and FMA contraction only: no 'ninf'/'nnan', since -inf is a real value here.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


def _pool_kernel_source(ids, starts, lo, hi, table, ks, kofs, bias, out):  # pragma: no cover (runs compiled)
    """Pooled features of texts ``lo..hi``: ``out[b] = relu(max_t conv(b)[t] + bias)`` per window size.

    ``ids[starts[b]:starts[b + 1]]`` are text b's ids (no padding); ``table[w]`` holds word w's
    products with every (window, offset) block: ``table[w, (kofs[i] + j) * F + f]``. Each word's row
    is read once, in order: the word at position t adds its offset-j block to the running sum of the
    window starting at t - j (a ring of k sums per window size), and a window that is complete
    (j == k - 1) updates the max. A text shorter than k has one window, the sum of all its words
    (the model pads with zero rows); an empty text has zeros.
    """
    n_sizes = ks.size
    n_filters = bias.size // n_sizes
    n_blocks = kofs[n_sizes - 1] + ks[n_sizes - 1]
    acc = np.zeros((n_blocks, n_filters), np.float32)  # ring of running window sums
    best = np.empty((n_sizes, n_filters), np.float32)
    for b in range(lo, hi):
        s0 = starts[b]
        n = starts[b + 1] - s0
        for i in range(n_sizes):
            for f in range(n_filters):
                best[i, f] = -np.inf
        for t in range(n):
            row = table[ids[s0 + t]]
            for i in range(n_sizes):
                k = ks[i]
                o = kofs[i]
                for j in range(min(k, t + 1)):
                    a = acc[o + (t - j) % k]
                    col = (o + j) * n_filters
                    if j == 0:
                        for f in range(n_filters):
                            a[f] = row[col + f]
                    else:
                        for f in range(n_filters):
                            a[f] += row[col + f]
                    if j == k - 1:
                        m = best[i]
                        for f in range(n_filters):
                            m[f] = max(m[f], a[f])
        for i in range(n_sizes):
            if n < ks[i]:  # the one window of a short text (slot 0 holds the sum of its n words)
                for f in range(n_filters):
                    best[i, f] = acc[kofs[i], f] if n > 0 else 0.0
            for f in range(n_filters):
                out[b, i * n_filters + f] = max(best[i, f] + bias[i * n_filters + f], 0.0)


def _ngram_kernel_source(ids, starts, scores, n_buckets, order, out):  # pragma: no cover (runs compiled)
    """``out[b]``: the mean of ``scores``' rows over text b's n-gram buckets (zeros for an empty text).

    Text b's ids are ``ids[starts[b]:starts[b + 1]]``; its n-grams are each id, each adjacent pair
    (order >= 2) and each adjacent triple (order 3), hashed by :func:`textcnn.model.ngram_bucket`
    and :func:`textcnn.model.trigram_first` (the same integer arithmetic, compiled).
    """
    n_classes = scores.shape[1]
    acc = np.zeros(n_classes, np.float64)
    for b in range(starts.size - 1):
        s0, s1 = starts[b], starts[b + 1]
        for c in range(n_classes):
            acc[c] = 0.0
        for t in range(s0, s1):
            first = np.int64(ids[t])
            for n in range(1, min(order, s1 - t) + 1):  # the n-grams that start at t: uni, bi, tri
                if n == 1:
                    h = _bucket(first, np.int64(0), n_buckets)
                elif n == 2:
                    h = _bucket(first, np.int64(ids[t + 1]), n_buckets)
                else:
                    h = _bucket(_first3(first, np.int64(ids[t + 1])), np.int64(ids[t + 2]), n_buckets)
                row = scores[h]
                for c in range(n_classes):
                    acc[c] += row[c]
        count = max(_count(s1 - s0, order), 1)
        for c in range(n_classes):
            out[b, c] = acc[c] / count


_bucket, _first3, _count = ngram_bucket, trigram_first, ngram_count  # compiled by _jit for the kernels
_KERNEL = None
_NGRAM_KERNEL = None
_KERNEL_ERROR: str | None = None


def fused_kernel():
    """The compiled kernel, or None when numba is missing or fails, or ``TEXTCNN_NO_NUMBA`` is set.

    Compiled on first use (a few seconds) and cached on disk by numba, so later processes only load
    it (about half a second, with numba's import).
    """
    global _KERNEL, _NGRAM_KERNEL, _KERNEL_ERROR
    if os.environ.get("TEXTCNN_NO_NUMBA"):
        return None
    if _KERNEL is None and _KERNEL_ERROR is None:
        try:
            import numba

            kernel, ngrams = _jit(numba, _pool_kernel_source), _jit(numba, _ngram_kernel_source)
            one = np.ones(1, dtype=np.float32)  # compiles (or loads) now, so a failure falls back here
            kernel(np.zeros(1, np.int32), np.array([0, 1]), 0, 1, np.zeros((1, 1), np.float32),
                   np.array([1]), np.array([0]), one, np.empty((1, 1), np.float32))
            ngrams(np.zeros(1, np.int32), np.array([0, 1]), np.zeros((2, 1), np.float32), 1, 2, np.empty((1, 1), np.float32))
            _KERNEL, _NGRAM_KERNEL = kernel, ngrams
        except Exception as e:  # ImportError, or a numba that cannot build for this platform
            _KERNEL_ERROR = f"numba unavailable: {e}"
    return _KERNEL


def ngram_kernel():
    """The compiled n-gram channel kernel (compiled with :func:`fused_kernel`, None where that is)."""
    return _NGRAM_KERNEL if fused_kernel() is not None else None


def _jit(numba, source):
    """``source`` compiled without the GIL, cached on disk where the install is writable."""
    global _bucket, _first3, _count
    _bucket = numba.njit(ngram_bucket)  # the kernels call the model's own hash, compiled
    _first3, _count = numba.njit(trigram_first), numba.njit(ngram_count)
    try:
        return numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)(source)
    except RuntimeError:  # no writable cache folder (a read-only install): compile per process
        return numba.njit(nogil=True, fastmath=_FASTMATH)(source)


def no_kernel_reason() -> str:
    """Why ``fused_kernel()`` is None (for ``--verbose``)."""
    if os.environ.get("TEXTCNN_NO_NUMBA"):
        return "TEXTCNN_NO_NUMBA is set"
    return _KERNEL_ERROR or "numba unavailable"


def deduplicated_forward(model: TextCNN, ids: torch.Tensor) -> torch.Tensor:
    """``model(ids)`` for training, computed once per distinct word of the batch.

    Each distinct word's products with every filter offset are one matrix product
    (U, C_in) @ (C_in, k*F); the convolution then sums k of those rows per window with
    ``embedding_bag``. A batch of B*T tokens holds U distinct words, so the multiply-adds drop by
    about B*T/U (2x on short texts, 5x on long ones), and the products are large GEMMs instead of
    convolutions. The same function as ``model.forward`` (batch norm excluded), differentiable.
    """
    ids = pad_to_widest(ids, model.window_sizes)  # (B, T)
    words, inverse = torch.unique(ids, return_inverse=True)  # (U,), (B, T)
    x = model.lookup(words)  # (U, C_in)
    lengths = text_lengths(ids)  # (B,)
    n_filters = model.convs[0].out_channels
    products = x @ offset_weights(model)  # (U, sum(k)*F): one GEMM for every window size and offset
    neg = x.new_full((1, n_filters), float("-inf"))  # (1, F)
    values, start = [], 0
    for i, k in enumerate(model.window_sizes):
        block = products[:, start : start + k * n_filters].reshape(-1, n_filters)  # (U*k, F), row u*k+j
        start += k * n_filters
        rows = torch.cat([block, neg])  # (U*k + 1, F): a bag starting at the last row sums to -inf
        bags = inverse.unfold(1, k, 1) * k + torch.arange(k, device=ids.device)  # (B, L, k)
        bags[:, :, 0].masked_fill_(_invalid_windows(lengths, k, bags.shape[1]), rows.shape[0] - 1)
        if bags.shape[1] > WINNERS_MIN_WINDOWS:
            v = _winning_sums(bags, rows)  # (B, F)
        else:
            c = F.embedding_bag(bags.reshape(-1, k), rows, mode="sum")  # (B*L, F)
            v = c.view(ids.shape[0], -1, n_filters).amax(dim=1)  # (B, F)
        values.append(model.after_max(v, i))  # (B, F)
    logits = model.fc(model.dropout(torch.cat(values, dim=1)))  # (B, C)
    return logits if model.ngram_fc is None else logits + _ngram_logits(model, ids)  # (B, C)


def _ngram_logits(model: TextCNN, ids: torch.Tensor) -> torch.Tensor:
    """``model.ngram_logits(ids)`` through ``embedding_bag`` (mean, bucket 0 left out): the gather and the
    mean in one kernel, and a sparse gradient of the rows used, without the (B, G, D) vectors."""
    table = model.ngram_embedding
    buckets = ngram_buckets(ids, table.num_embeddings - 1, model.ngram_order)  # (B, G)
    mean = F.embedding_bag(buckets, table.weight, mode="mean", padding_idx=0, sparse=table.sparse)  # (B, D)
    return model.ngram_fc(mean)  # (B, C)


WINNERS_MIN_WINDOWS = 100  # measured: below ~100 windows the plain backward of all sums is faster


def _winning_sums(bags: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Max over windows of the bag sums, (B, L, k) -> (B, F), with a gradient for the winners only.

    The max-pool passes gradient to one window per filter, so the sums of all B*L windows are
    taken without autograd and only the B*F winning sums are recomputed with it: the backward
    pass touches B*F*k numbers instead of B*L*F*k. (Ties go to the first window.)
    """
    n_filters = rows.shape[1]
    with torch.no_grad():
        sums = F.embedding_bag(bags.reshape(-1, bags.shape[2]), rows, mode="sum")  # (B*L, F)
        win = sums.view(bags.shape[0], bags.shape[1], n_filters).argmax(dim=1)  # (B, F)
    k = bags.shape[2]
    win_bags = bags.gather(1, win.unsqueeze(2).expand(-1, -1, k))  # (B, F, k): the winners' rows
    index = win_bags.transpose(1, 2).reshape(-1, n_filters)  # (B*k, F)
    # gather's backward is a scatter-add: cheap, unlike advanced indexing's accumulate.
    return rows.gather(0, index).view(bags.shape[0], k, n_filters).sum(dim=1)  # (B, F)


def training_forward(model: nn.Module):
    """The fastest exact training forward for ``model``: deduplicated for TextCNN without batch norm."""
    if isinstance(model, TextCNN) and model.norms is None and model.embedding is not None:
        return lambda ids: deduplicated_forward(model, ids)
    return model
