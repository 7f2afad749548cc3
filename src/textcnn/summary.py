"""The seed tutorial's shape walk-through, computed on real tensors for any config."""

from __future__ import annotations

import torch

from .model import TextCNN, min_length

L_OUT_FORMULA = "L_out = floor((L_in + 2*padding - dilation*(k-1) - 1) / stride + 1)"


def shape_walk(model: TextCNN, batch_size: int, text_len: int, seed: int = 0) -> list[tuple[str, tuple[int, ...]]]:
    """Runs random token ids (batch_size, text_len) through the model step by step; returns the shapes.

    A model over an encoder's states gets random vectors in their place (the shapes are the same).
    """
    vocab_size = model.embedding.num_embeddings if model.embedding is not None else 1000
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, max(vocab_size, 2), (batch_size, text_len), generator=gen)  # (B, T)
    vectors = None if model.embedding is not None else torch.randn(batch_size, text_len, model.input_size,
                                                                    generator=gen)  # (B, T, H)
    was_training = model.training
    model.eval()
    steps = model.shape_walk(ids, vectors)
    model.train(was_training)
    return [(name, tuple(t.shape)) for name, t in steps]


def parameter_counts(model: TextCNN) -> list[tuple[str, int]]:
    rows = [] if model.embedding is None else [("embedding", model.embedding.weight.numel())]
    if model.static_embedding is not None:
        rows.append(("static embedding (frozen)", model.static_embedding.weight.numel()))
    for k, conv in zip(model.window_sizes, model.convs):
        rows.append((f"conv k={k}", sum(p.numel() for p in conv.parameters())))
    if model.norms is not None:
        rows.append(("batch norms", sum(p.numel() for p in model.norms.parameters())))
    rows.append(("fc", sum(p.numel() for p in model.fc.parameters())))
    if model.ngram_fc is not None:
        rows.append(("n-gram vectors", model.ngram_embedding.weight.numel()))
        rows.append(("n-gram fc", sum(p.numel() for p in model.ngram_fc.parameters())))
    return rows


def render_summary(model: TextCNN, batch_size: int, text_len: int, encoder=None) -> str:
    """The walk-through as text: shapes, the Conv1d length formula with numbers, parameter counts.

    ``encoder`` (a :class:`textcnn.encoder.Encoder`, for a model over its states) adds its shapes first.
    """
    widest = min_length(model.window_sizes)
    if text_len < widest:
        raise ValueError(f"The text length {text_len} is shorter than the widest window {widest}.")
    steps = shape_walk(model, batch_size, text_len)
    width = max(len(name) for name, _ in steps) + 2
    lines = [f"TextCNN forward pass, batch {batch_size}, text length {text_len}", ""]
    if encoder is not None:
        lines = [*encoder_lines(encoder, batch_size, text_len), ""] + lines
    lines += [f"  {name:<{width}}{' x '.join(map(str, shape))}" for name, shape in steps]
    lines += ["", f"Conv1d output length: {L_OUT_FORMULA}",
              "  with padding=0, dilation=1, stride=1 this is L_in - k + 1:"]
    lines += [f"  k={k}: {text_len} - {k} + 1 = {text_len - k + 1}" for k in model.window_sizes]
    counts = parameter_counts(model)
    lines += ["", "Parameters:"]
    lines += [f"  {name:<28}{n:>12,}" for name, n in counts]
    lines.append(f"  {'total':<28}{sum(n for _, n in counts):>12,}")
    if encoder is not None:
        frozen = sum(p.numel() for p in encoder.model().parameters())
        lines.append(f"  {'encoder (frozen, not saved)':<28}{frozen:>12,}")
    return "\n".join(lines)


def encoder_lines(encoder, batch_size: int, text_len: int) -> list[str]:
    """The encoder's part of the walk: word pieces, its last layer's states, the head's input."""
    n = len(encoder.prefix) + text_len + len(encoder.suffix)
    arch = ", ".join(encoder.config.architectures or [encoder.config.model_type])
    steps = [("word pieces + special tokens", (batch_size, n)),
             (f"encoder last layer ({encoder.num_layers} layers)", (batch_size, n, encoder.hidden_size)),
             ("without [CLS]/[SEP]: the head's input", (batch_size, text_len, encoder.hidden_size))]
    lines = [f"Encoder {encoder.source} ({arch}, {encoder.num_layers} layers, hidden size {encoder.hidden_size}, "
             f"frozen; at most {encoder.max_pieces} word pieces)", ""]
    return lines + [f"  {name:<40}{' x '.join(map(str, shape))}" for name, shape in steps]
